"""mobileseg infer (``mobileseg_paddle.deploy.infer``): images in, masks and overlays out, on
Paddle Inference and onnxruntime (the runners themselves: tests/deploy/runners); outputs never
lose data (they stay in --save_dir, never replace an input, one output per input), odd file
names, batches, the overlay's colours; the shape-range collection TensorRT uses.

Weights and BatchNorm statistics are random (``helpers.numerics.randomize_``); the exports come
from tests/deploy/test_export.py's ``exports()``."""

import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
from paddleseg.utils import visualize as paddleseg_visualize
from test_export import exports, reference_model

from helpers import ROOT, digests, small_disk
from mobileseg_paddle import palette, resources
from mobileseg_paddle.deploy import infer as I
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig

SERVED = "paddle_argmax"  # the default export (argmax, [-1, 3, -1, -1]) of MobileNetV2


# ----------------------------------------------------------------------------------------------
# Images in, masks and overlays out


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    return img


def _dygraph_labels(img):
    """Label map of the dygraph model on an image preprocessed as deploy.yaml says."""
    model, _ = reference_model("mobilenetv2")
    x = (cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255 - 0.5) / 0.5
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x.transpose(2, 0, 1)[None]))[0]
    return paddle.argmax(logits, axis=1)[0].numpy()


def test_cli_writes_masks_and_overlays(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    sizes = {"a.png": (96, 160), "b.jpg": (96, 160), "sub/c.png": (120, 200)}
    for i, (rel, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(images / rel), _image(h, w, i))
    out = tmp_path / "out"
    code = I.main(["--config", exports()["mobilenetv2"][SERVED], "--image_path",
                   str(images), "--save_dir", str(out), "--batch_size", "2"])
    assert code == 0
    for rel, (h, w) in sizes.items():
        stem = os.path.splitext(rel)[0]
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and mask.max() < 19
        img = cv2.imread(str(images / rel))
        agree = (mask == _dygraph_labels(img)).mean()
        assert agree > 0.999, f"{rel}: only {agree:.4f} of the pixels agree with dygraph"
        overlay = cv2.imread(str(out / "overlays" / f"{stem}.jpg"))
        assert overlay.shape == (h, w, 3)
    # a list file (paths relative to it, second column ignored) gives the same masks
    (images / "list.txt").write_text("a.png labels/a.png\n\nsub/c.png\n")
    out2 = tmp_path / "out2"
    assert I.main(["--config", exports()["mobilenetv2"][SERVED], "--image_path",
                   str(images / "list.txt"), "--save_dir", str(out2),
                   "--save_overlay", "False"]) == 0
    assert sorted(os.listdir(out2)) == ["masks"]
    for stem in ("a", "sub/c"):
        assert np.array_equal(cv2.imread(str(out2 / "masks" / f"{stem}.png"), 0),
                              cv2.imread(str(out / "masks" / f"{stem}.png"), 0))


def test_every_cpu_engine_writes_the_same_masks(tmp_path, monkeypatch):
    """``--engine`` (PaddleSeg's ``--enable_mkldnn False`` is the plain kernels): the same
    label maps from oneDNN, OpenVINO and the plain kernels, and the working directory stays
    empty (OpenVINO compiles into the user's cache folder)."""
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _image(97, 130, 5))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MOBILESEG_CACHE", str(tmp_path / "cache"))
    masks = {}
    for flags in (["--engine", "onednn"], ["--engine", "openvino"], ["--engine", "plain"],
                  ["--enable_mkldnn", "False"]):
        out = tmp_path / "out" / "_".join(flags)
        assert I.main(["--config", exports()["mobilenetv2"][SERVED], "--image_path",
                       str(images), "--save_dir", str(out), *flags]) == 0
        masks[" ".join(flags)] = cv2.imread(str(out / "masks" / "a.png"), 0)
    first = next(iter(masks.values()))
    for flags, mask in masks.items():
        assert (mask == first).mean() > 0.999, flags
    assert os.listdir(cwd) == []


def test_onnx_fixed_size_export_resizes_in_and_back():
    """A static-shape export: the image is resized to the exported size and the output
    (logits here) resized back before the argmax."""
    deploy_dir = exports()["mobilenetv2"]["onnx_128x256"]
    seg = I.Segmenter.from_deploy(deploy_dir)
    img = _image(150, 300, 3)
    label = seg.predict([img])[0]
    assert label.shape == (150, 300)
    x = seg.preprocess(img)
    assert x.shape == (3, 128, 256)
    logits = seg.run(x[None])[0]
    want = np.stack([cv2.resize(c, (300, 150), interpolation=cv2.INTER_LINEAR)
                     for c in logits]).argmax(0)
    assert np.array_equal(label, want)


def test_onnx_and_paddle_runners_agree_on_images():
    img = _image(96, 160, 5)
    paddle_seg = I.Segmenter.from_deploy(exports()["mobilenetv2"]["paddle"])
    onnx_seg = I.Segmenter.from_deploy(exports()["mobilenetv2"]["onnx_dynamic"],
                                       backend="onnxruntime")
    a, b = paddle_seg.predict([img])[0], onnx_seg.predict([img])[0]
    assert a.shape == (96, 160) and (a == b).mean() > 0.999


# ----------------------------------------------------------------------------------------------
# Outputs never lose data


def _infer(*argv, capsys=None):
    code = I.main(["--config", exports()["mobilenetv2"][SERVED], *map(str, argv)])
    return code, capsys.readouterr() if capsys else None


def test_list_entries_above_the_list_stay_inside_save_dir(tmp_path, capsys):
    """A list file naming ``../img/x.png`` once made the mask path ``masks/../img/x.png``:
    with --save_dir the list's parent, that is the input image itself."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lists").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "x.png"), _image(96, 160, 1))
    cv2.imwrite(str(tmp_path / "lists" / "y.png"), _image(96, 160, 2))
    (tmp_path / "lists" / "list.txt").write_text("../img/x.png\ny.png\n")
    before = digests(tmp_path)
    code, out = _infer("--image_path", tmp_path / "lists" / "list.txt", "--save_dir", tmp_path,
                       capsys=capsys)
    assert code == 0 and "wrote 2 masks" in out.out
    after = digests(tmp_path)
    assert {p: h for p, h in after.items() if p in before} == before  # inputs untouched
    new = sorted(p for p in after if p not in before)
    assert new == ["masks/img/x.png", "masks/lists/y.png", "overlays/img/x.jpg",
                   "overlays/lists/y.jpg"]
    for rel in ("img/x.png", "lists/y.png"):
        mask = cv2.imread(str(tmp_path / "masks" / rel), cv2.IMREAD_UNCHANGED)
        agree = (mask == _dygraph_labels(cv2.imread(str(tmp_path / rel)))).mean()
        assert agree > 0.999, f"{rel}: only {agree:.4f} of the pixels agree with dygraph"


def test_images_differing_in_extension_or_case_get_one_mask_each(tmp_path, capsys):
    """x.png and x.jpg in one folder once gave one mask (the second overwrote the first)
    while the log said "wrote 2 masks"."""
    images = tmp_path / "images"
    images.mkdir()
    names = ["x.png", "x.jpg", "X.bmp", "y.png"]
    for i, name in enumerate(names):
        cv2.imwrite(str(images / name), _image(96, 160, 10 + i))
    code, out = _infer("--image_path", images, "--save_dir", tmp_path / "out", capsys=capsys)
    assert code == 0 and "wrote 4 masks" in out.out
    masks = sorted(os.listdir(tmp_path / "out" / "masks"))
    assert masks == ["X.bmp.png", "x.jpg.png", "x.png.png", "y.png"]
    assert len(os.listdir(tmp_path / "out" / "overlays")) == 4
    for name, mask_name in zip(sorted(names), masks):
        mask = cv2.imread(str(tmp_path / "out" / "masks" / mask_name), cv2.IMREAD_UNCHANGED)
        agree = (mask == _dygraph_labels(cv2.imread(str(images / name)))).mean()
        assert agree > 0.999, f"{name} -> {mask_name}: {agree:.4f} of the pixels agree"


def test_output_names_are_unique_ignoring_case():
    root = "/data"
    files = [f"/data/{n}" for n in ("a.png", "x.jpg", "x.png", "x.jpg.png", "A.PNG.png",
                                    "sub/b.png", "Sub/b.jpg")]
    names = I.output_names(files, root)
    assert len({n.casefold() for n in names}) == len(files)
    assert names == ["a", "x.jpg", "x.png", "x.jpg~2", "A.PNG", "sub/b.png", "Sub/b.jpg"]
    assert all(not n.startswith("..") and not os.path.isabs(n) for n in names)


def test_output_that_would_be_an_input_is_refused(tmp_path, capsys):
    """--image_path save_dir/masks: each mask would replace its own input."""
    masks = tmp_path / "out" / "masks"
    masks.mkdir(parents=True)
    cv2.imwrite(str(masks / "x.png"), _image(96, 160, 4))
    before = digests(tmp_path)
    code, out = _infer("--image_path", masks, "--save_dir", tmp_path / "out", capsys=capsys)
    assert code == 2
    errors = [line for line in out.err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("mobileseg infer: error: --save_dir")
    assert "would overwrite the input image" in errors[0] and "x.png" in errors[0]
    assert digests(tmp_path) == before and sorted(os.listdir(tmp_path / "out")) == ["masks"]


def test_file_name_not_utf8_is_skipped_with_one_warning(tmp_path):
    """OpenCV crashes (SIGSEGV) on a path holding undecodable bytes: such a file is skipped
    with one warning line, the others are processed. Run as the PaddleSeg-style entry script,
    so that a crash is a failed test, not a dead test session."""
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "good.png"), _image(96, 160, 5))
    ok, png = cv2.imencode(".png", _image(96, 160, 6))
    with open(os.path.join(os.fsencode(images), b"bad\xff.png"), "wb") as f:
        f.write(png.tobytes())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "python", "infer.py"),
                           "--config", exports()["mobilenetv2"][SERVED], "--image_path",
                           str(images), "--save_dir", str(out)],
                          env=resources.child_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if "bad" in line]
    assert len(warnings) == 1 and "warning" in warnings[0] and "UTF-8" in warnings[0]
    assert "\\xff" in warnings[0]
    assert "wrote 1 masks" in proc.stdout
    assert os.listdir(out / "masks") == ["good.png"]


def test_batch_size_2_on_the_default_export(tmp_path):
    """The default export has a dynamic batch: batches of 2 (and the remainder, and images of
    another size apart) give the masks of single images."""
    assert DeployConfig(exports()["mobilenetv2"][SERVED]).input_shape == [-1, 3, -1, -1]
    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in enumerate([(96, 160)] * 3 + [(120, 200)] * 2):
        cv2.imwrite(str(images / f"{i}.png"), _image(h, w, 20 + i))
    for bs in (1, 2, 3):
        assert _infer("--image_path", images, "--save_dir", tmp_path / f"bs{bs}",
                      "--batch_size", bs, "--save_overlay", "False")[0] == 0
    assert DeployConfig(exports()["mobilenetv2"]["onnx_dynamic"]).input_shape[0] == -1
    for i in range(5):
        want = cv2.imread(str(tmp_path / "bs1" / "masks" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        for bs in (2, 3):
            got = cv2.imread(str(tmp_path / f"bs{bs}" / "masks" / f"{i}.png"),
                             cv2.IMREAD_UNCHANGED)
            assert np.array_equal(got, want), f"image {i}, batch size {bs}"


def test_a_huge_image_runs_at_the_bounded_size_and_comes_back_full_size():
    """A dynamic export's size policy: the longer side is scaled down to max_side, so the
    network never sees more pixels than that, and the label map is the image's size again."""
    deploy = DeployConfig(exports()["mobilenetv2"][SERVED])
    max_side = deploy.size_policy["max_side"]
    seen = []

    class Recording:
        def __init__(self, runner):
            self.runner, self.backend = runner, runner.backend

        def __call__(self, batch):
            seen.append(batch.shape)
            return self.runner(batch)

    seg = I.Segmenter(deploy, Recording(I.create_runner(deploy)))
    img = _image(max_side // 8, max_side + 600, 7)  # wide: only the long side is over
    (label,) = seg.predict([img])
    assert label.shape == img.shape[:2]
    assert seen == [(1, 3, round(img.shape[0] * max_side / img.shape[1]), max_side)]
    small = _image(96, 160, 8)
    seg.predict([small])
    assert seen[-1] == (1, 3, 96, 160)  # an image within the bound runs at its own size


# ----------------------------------------------------------------------------------------------
# The overlay's colours


def _overlay_error(overlay_path, image_path, mask, colors):
    """Mean absolute difference of a written (JPEG) overlay from paddleseg's ``visualize`` of
    the mask with ``colors`` (a flat r g b list)."""
    want = paddleseg_visualize.visualize(str(image_path), mask, colors, weight=0.6)
    return np.abs(cv2.imread(str(overlay_path)).astype(int) - want.astype(int)).mean()


def test_overlay_colours_are_paddleseg_s_or_custom(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(96, 160, 7))
    default = paddleseg_visualize.get_color_map_list(256)
    custom = [0, 255, 0, 255, 0, 255, 10, 20, 30] * 7  # 21 classes
    assert I.main(["--config", exports()["mobilenetv2"][SERVED], "--image_path", str(image),
                   "--save_dir", str(tmp_path / "default")]) == 0
    assert I.main(["--config", exports()["mobilenetv2"][SERVED], "--image_path", str(image),
                   "--save_dir", str(tmp_path / "custom"),
                   "--custom_color", *map(str, custom)]) == 0
    mask = cv2.imread(str(tmp_path / "default" / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert len(np.unique(mask)) > 3
    with_custom = paddleseg_visualize.get_color_map_list(256, custom)
    # JPEG costs a few levels; the other palette is far off
    assert _overlay_error(tmp_path / "default" / "overlays" / "a.jpg", image, mask,
                          default) < 5
    assert _overlay_error(tmp_path / "default" / "overlays" / "a.jpg", image, mask,
                          with_custom) > 15
    assert _overlay_error(tmp_path / "custom" / "overlays" / "a.jpg", image, mask,
                          with_custom) < 5
    assert _overlay_error(tmp_path / "custom" / "overlays" / "a.jpg", image, mask,
                          default) > 15
    voc = [0, 0, 0] + default[:-3]  # VOC's palette: black class 0
    assert _overlay_error(tmp_path / "default" / "overlays" / "a.jpg", image, mask, voc) > 15
    assert palette.color_map()[0].tolist() == default[:3]


# ----------------------------------------------------------------------------------------------
# Shape ranges (TensorRT dynamic shapes)


def test_collect_shape_ranges_on_cpu(tmp_path):
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    path = I.collect_shape_ranges(deploy, [_image(96, 160, 0), _image(128, 192, 1)],
                                  str(tmp_path / "shape.pbtxt"))
    text = open(path).read()
    entry = text[text.index('name: "x"'):].split("}")[0]
    assert "min_shape: 96" in entry and "max_shape: 128" in entry
    assert "min_shape: 160" in entry and "max_shape: 192" in entry


def test_full_disk_is_one_error_and_no_truncated_file(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        cv2.imwrite(str(images / f"{i}.png"), _image(256, 320, 40 + i))
    with small_disk(tmp_path / "disk", "48k") as disk:
        status, captured = _infer("--image_path", images, "--save_dir", disk, capsys=capsys)
        lines = [s for s in captured.err.splitlines() if s.strip()]
        assert status == 2 and len(lines) == 1, captured.err
        assert lines[0].startswith("mobileseg infer: error: cannot write ") and (
            "No space left on device" in lines[0]), lines
        written = [os.path.join(d, f) for d, _, fs in os.walk(disk) for f in fs]
        assert not [p for p in written if os.path.basename(p).startswith(".")], written
        for p in written:  # what is there is a whole image
            assert cv2.imread(p, cv2.IMREAD_UNCHANGED) is not None, p
