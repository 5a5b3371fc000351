"""deploy/python/infer.py: exported models give the dygraph model's outputs (relative error
<= 1e-4) on Paddle Inference (oneDNN on and off) and onnxruntime (static and dynamic shapes,
two input sizes); images in, masks and overlays out; the TensorRT configuration as far as a
CPU build of Paddle allows (see test_tensorrt_*).

Weights and BatchNorm statistics are random (``mobileseg_paddle.testing.randomize_``); the
exports come from tests/test_export.py's ``exports()``."""

import functools
import os

import cv2
import numpy as np
import paddle
import pytest

from mobileseg_paddle.testing import max_rel_err
from test_export import MODELS, SIZES, exports, reference_model

from deploy.python import infer as I

TOL = 1e-4


@functools.lru_cache(maxsize=None)
def case(name):
    """{size: (input, dygraph logits)} for model ``name``."""
    model, _ = reference_model(name)
    rng = np.random.default_rng(7)
    out = {}
    for h, w in SIZES:
        x = rng.standard_normal((1, 3, h, w)).astype("float32")
        with paddle.no_grad():
            out[(h, w)] = (x, model(paddle.to_tensor(x))[0].numpy())
    return out


@pytest.mark.parametrize("name", MODELS)
def test_paddle_inference_matches_dygraph(name):
    deploy = I.DeployConfig(exports()[name]["paddle"])
    for onednn in (True, False):
        runner = I.PaddleRunner(deploy, I.PredictorOptions(enable_mkldnn=onednn))
        for size, (x, ref) in case(name).items():
            out = runner(x)
            assert out.shape == ref.shape
            err = max_rel_err(out, ref)
            assert err <= TOL, f"{name} oneDNN={onednn} {size}: relative error {err:.2e}"


def test_pir_program_matches_dygraph():
    """The PIR program (model.json): oneDNN on (run without the placement pass, see
    make_paddle_config) and off."""
    deploy = I.DeployConfig(exports()["mobilenetv2"]["paddle"])
    for onednn in (True, False):
        runner = I.PaddleRunner(deploy, I.PredictorOptions(program="pir", enable_mkldnn=onednn))
        for size, (x, ref) in case("mobilenetv2").items():
            err = max_rel_err(runner(x), ref)
            assert err <= TOL, f"PIR oneDNN={onednn} {size}: relative error {err:.2e}"


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_matches_dygraph(name):
    folders = exports()[name]
    dynamic = I.OnnxRunner(I.DeployConfig(folders["onnx_dynamic"]))
    for size, (x, ref) in case(name).items():
        err = max_rel_err(dynamic(x), ref)
        assert err <= TOL, f"{name} dynamic ONNX {size}: relative error {err:.2e}"
        if f"onnx_{size[0]}x{size[1]}" in folders:
            static = I.OnnxRunner(I.DeployConfig(folders[f"onnx_{size[0]}x{size[1]}"]))
            err = max_rel_err(static(x), ref)
            assert err <= TOL, f"{name} static ONNX {size}: relative error {err:.2e}"


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
    code = I.main(["--config", exports()["mobilenetv2"]["paddle_argmax"], "--image_path",
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
    assert I.main(["--config", exports()["mobilenetv2"]["paddle_argmax"], "--image_path",
                   str(images / "list.txt"), "--save_dir", str(out2),
                   "--save_overlay", "False"]) == 0
    assert sorted(os.listdir(out2)) == ["masks"]
    for stem in ("a", "sub/c"):
        assert np.array_equal(cv2.imread(str(out2 / "masks" / f"{stem}.png"), 0),
                              cv2.imread(str(out / "masks" / f"{stem}.png"), 0))


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
# oneDNN interpolation


def test_onednn_marks_only_exact_interpolations():
    with open(os.path.join(exports()["litehrnet18"]["paddle"], "model.pdmodel"), "rb") as f:
        marked = I.mark_onednn_interpolations(f.read())
    from paddle.base import core

    desc = core.ProgramDesc(marked)  # keep it referenced: blocks and ops point into it
    block = desc.block(0)
    ops = [block.op(i) for i in range(block.op_size())]
    interp = [op for op in ops if op.type().endswith("_interp_v2")]
    on = [op for op in interp if op.has_attr("use_mkldnn") and op.attr("use_mkldnn")]
    assert on and all(op.type() == "bilinear_interp_v2" and not op.attr("align_corners")
                      for op in on)
    # Lite-HRNet's head upsamples with align_corners=True and its weighting with nearest:
    # oneDNN computes both differently, so they stay on Paddle's kernels
    assert any(op.attr("align_corners") for op in interp if op not in on)
    assert any(op.type() == "nearest_interp_v2" for op in interp)


# ----------------------------------------------------------------------------------------------
# GPU and TensorRT: a CPU build of Paddle refuses enable_tensorrt_engine ("To use
# Paddle-TensorRT, please compile with TENSORRT first"), so the configuration is checked on a
# recorder standing in for paddle.inference.Config; the shape-range collection that TensorRT
# dynamic shapes are built from runs for real on the CPU.


class RecordingConfig:
    """Records the calls made on a paddle.inference.Config."""

    def __init__(self, *args):
        self.calls = [("__init__", args, {})]

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self if name == "pass_builder" else None
        return record

    def called(self, name):
        return [(a, k) for n, a, k in self.calls if n == name]


def _trt_config(deploy, **kw):
    opts = I.PredictorOptions(device="gpu", use_trt=True, **kw)
    return I.make_paddle_config(deploy, opts, config_cls=RecordingConfig)


def test_tensorrt_configuration(tmp_path):
    import paddle.inference as pi

    deploy = I.DeployConfig(exports()["mobilenetv2"]["paddle"])
    shape_file = tmp_path / "shape.pbtxt"
    shape_file.write_text("")
    cache = tmp_path / "engines"
    cfg = _trt_config(deploy, precision="fp16", shape_range_file=str(shape_file),
                      trt_cache_dir=str(cache), trt_use_static=True, min_subgraph_size=5,
                      max_batch_size=2)
    assert cfg.called("__init__") == [((os.path.join(deploy.dir, "model.pdmodel"),
                                        os.path.join(deploy.dir, "model.pdiparams")), {})]
    assert cfg.called("enable_use_gpu") == [((512, 0), {})]
    assert cfg.called("set_optim_cache_dir") == [((str(cache),), {})] and cache.is_dir()
    assert cfg.called("enable_tensorrt_engine") == [((), dict(
        workspace_size=1 << 30, max_batch_size=2, min_subgraph_size=5,
        precision_mode=pi.PrecisionType.Half, use_static=True, use_calib_mode=False))]
    assert cfg.called("enable_tuned_tensorrt_dynamic_shape") == [((str(shape_file), True), {})]
    assert not cfg.called("enable_mkldnn") and not cfg.called("disable_gpu")

    int8 = _trt_config(deploy, precision="int8", trt_calib_mode=True,
                       shape_range_file=str(shape_file))
    (_, kwargs), = int8.called("enable_tensorrt_engine")
    assert kwargs["precision_mode"] == pi.PrecisionType.Int8 and kwargs["use_calib_mode"]
    fp32 = _trt_config(deploy, shape_range_file=str(shape_file))
    (_, kwargs), = fp32.called("enable_tensorrt_engine")
    assert kwargs["precision_mode"] == pi.PrecisionType.Float32

    # a dynamic-shape export needs the shape ranges; a fixed-shape one does not
    with pytest.raises(I.DeployError, match="shape ranges"):
        _trt_config(deploy)
    deploy.input_shape, deploy.dynamic_hw = [1, 3, 128, 256], False
    assert not _trt_config(deploy).called("enable_tuned_tensorrt_dynamic_shape")
    with pytest.raises(I.DeployError, match="not found"):
        _trt_config(deploy, shape_range_file=str(tmp_path / "missing.pbtxt"))


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks the CPU build's refusal")
def test_gpu_and_tensorrt_refused_on_a_cpu_build():
    with pytest.raises(I.DeployError, match="CPU build"):
        I.check_device(I.PredictorOptions(device="gpu"))
    deploy = I.DeployConfig(exports()["mobilenetv2"]["paddle"])
    with pytest.raises(I.DeployError, match="paddlepaddle-gpu"):
        I.PaddleRunner(deploy, I.PredictorOptions(device="gpu", use_trt=True))


def test_collect_shape_ranges_on_cpu(tmp_path):
    deploy = I.DeployConfig(exports()["mobilenetv2"]["paddle"])
    path = I.collect_shape_ranges(deploy, [_image(96, 160, 0), _image(128, 192, 1)],
                                  str(tmp_path / "shape.pbtxt"))
    text = open(path).read()
    entry = text[text.index('name: "x"'):].split("}")[0]
    assert "min_shape: 96" in entry and "max_shape: 128" in entry
    assert "min_shape: 160" in entry and "max_shape: 192" in entry


# ----------------------------------------------------------------------------------------------
# Benchmark report (its timing runs are not tests; the statistics and the outputs are)


def test_benchmark_statistics_table_and_plot(tmp_path):
    from deploy import benchmark as B

    stats = B.summarize([0.010, 0.012, 0.011, 0.050])
    assert stats["runs"] == 4 and stats["median_ms"] == pytest.approx(11.5)
    assert stats["fps"] == pytest.approx(1000 / 11.5) and stats["min_ms"] == pytest.approx(10)
    rows = []
    for backend, ms in (("paddle", 80.0), ("onnxruntime", 100.0), ("official", 400.0)):
        rows.append(dict(model="mobilenetv2", backbone="MobileNetV2_x1_0", backend=backend,
                         threads=2, status="ok", **B.summarize([ms / 1000] * 3)))
    rows.append(dict(model="ghostnet", backbone="GhostNet_x1_0", backend="paddle", threads=2,
                     status="failed", error="boom"))
    machine = dict(cpu="test CPU", isa=["avx2"], usable_cpus=2, memory_gb=8,
                   load_average=[0.1, 0, 0], load_average_end=[0.2, 0, 0],
                   versions={"paddlepaddle": "x"})
    protocol = dict(preset="phone", note="n", input_shape=[1, 3, 256, 256], warmup=1,
                    repeats=3, turns=1)
    table = B.format_table(rows, machine, protocol).splitlines()
    head = next(line for line in table if line.startswith("| Model"))
    assert "published Snapdragon 855 FPS" in head
    mv2 = next(line for line in table if line.startswith("| mobilenetv2"))
    assert "| 27.01 |" in mv2 and "12.50 (80.0" in mv2
    assert "| 5.00x |" in mv2 and "| 1.25x |" in mv2  # vs paddleseg's export, vs onnxruntime
    assert "failed: boom" in next(line for line in table if line.startswith("| ghostnet"))
    png = B.plot_fps(rows, str(tmp_path / "fps.png"), "test")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
