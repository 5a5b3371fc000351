"""One palette, one overlay: a label map holding every class id 0..255 and a real photo go through
the four painters of a label map, whose colour masks and overlays must be pixel-identical:
  (a) paddleseg's visualize / get_pseudo_color_map: what `mobileseg predict` writes,
  (b) mobileseg_paddle.palette via deploy.infer.overlay: what `mobileseg infer` writes,
  (c) pipeline.save_results: what the Lite host runner writes,
  (d) the C++ demo's painting step (WriteLabelImages, through mobileseg_paint_host), on the host
      and for aarch64 under qemu.
Every comparison is against (a), paddleseg itself."""

import subprocess

import cv2
import numpy as np
import pytest
from matplotlib import cbook
from paddleseg.utils import visualize as paddleseg_visualize
from PIL import Image

from helpers.cpp import TARGETS, tool
from mobileseg_paddle import palette
from mobileseg_paddle.deploy import infer
from mobileseg_paddle.deploy.lite import pipeline

NUM_CLASSES = 256


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """(image path, BGR image, uint8 label map of the image's size)."""
    folder = tmp_path_factory.mktemp("palette")
    # A real photo (600 x 512), stored losslessly: the C++ demo decodes JPEG with stb_image,
    # whose pixels differ slightly from OpenCV's libjpeg, and this test is about the colours.
    image = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    path = str(folder / "grace_hopper.png")
    cv2.imwrite(path, image)
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    # 16-pixel blocks cycling through every class id, and per-pixel noise in the bottom quarter
    labels = ((yy // 16) * ((w + 15) // 16) + xx // 16) % NUM_CLASSES
    labels[3 * h // 4:] = np.random.default_rng(0).integers(0, NUM_CLASSES, (h - 3 * h // 4, w))
    labels = labels.astype(np.uint8)
    assert h != w and set(np.unique(labels)) == set(range(NUM_CLASSES))
    return path, image, labels


@pytest.fixture(scope="module")
def paddleseg_outputs(scene, tmp_path_factory):
    """(overlay BGR, mask PNG path) exactly as paddleseg.core.predict computes and saves them."""
    path, _, labels = scene
    color_map = paddleseg_visualize.get_color_map_list(256)  # predict's, without --custom_color
    overlay = paddleseg_visualize.visualize(path, labels, color_map, weight=0.6)
    mask_path = tmp_path_factory.mktemp("predict") / "grace_hopper.png"
    paddleseg_visualize.get_pseudo_color_map(labels, color_map).save(mask_path)
    return overlay, mask_path


def _mask(path):
    """(class indices, 256 palette colours, RGB pixels) of a palette PNG."""
    with Image.open(path) as image:
        assert image.mode == "P"
        colors = np.array(image.getpalette()[:3 * 256], np.uint8).reshape(-1, 3)
        return np.array(image), colors, np.array(image.convert("RGB"))


def _assert_same_mask(path, reference_path):
    for got, expected in zip(_mask(path), _mask(reference_path)):
        np.testing.assert_array_equal(got, expected)


def test_class_0_is_dark_red(scene, paddleseg_outputs):
    assert paddleseg_visualize.get_color_map_list(256)[:3] == [128, 0, 0]
    assert palette.color_map()[0].tolist() == [128, 0, 0]
    _, _, labels = scene
    _, _, rgb = _mask(paddleseg_outputs[1])
    assert (rgb[labels == 0] == (128, 0, 0)).all()


def test_infer_and_lite_runner_paint_as_paddleseg(scene, paddleseg_outputs, tmp_path):
    path, _, labels = scene
    overlay, mask_path = paddleseg_outputs

    # (b) mobileseg infer: its overlay call with its command-line default
    args = infer.build_parser().parse_args(["--config", "unused", "--image_path", "unused"])
    infer_overlay = infer.overlay(infer.read_image(path), labels.astype(np.int32),
                                  palette.color_map(max(NUM_CLASSES, 256)),
                                  1 - args.overlay_alpha)
    np.testing.assert_array_equal(infer_overlay, overlay)
    palette.pseudo_color_image(labels).save(tmp_path / "palette_mask.png")
    _assert_same_mask(tmp_path / "palette_mask.png", mask_path)

    # (c) the Lite host runner's files
    lite_mask, lite_overlay = pipeline.save_results(path, labels, str(tmp_path / "lite"), "lite")
    np.testing.assert_array_equal(cv2.imread(lite_overlay), overlay)
    _assert_same_mask(lite_mask, mask_path)


def test_the_comparison_catches_a_wrong_palette_or_blend(scene, paddleseg_outputs):
    """The equalities above are not trivially true: VOC's palette (black class 0), a 0.5 blend or
    colours in RGB order all give other pixels on this image."""
    _, image, labels = scene
    overlay, _ = paddleseg_outputs
    colors = palette.color_map()
    voc = np.vstack([[0, 0, 0], colors[:-1]])
    assert (palette.overlay(image, labels, voc) != overlay).any()
    assert (palette.overlay(image, labels, weight=0.5) != overlay).any()
    assert (palette.overlay(image, labels, colors[:, ::-1]) != overlay).any()


@pytest.fixture(scope="module", params=TARGETS)
def paint_host(request, tmp_path_factory):
    """argv prefix that runs mobileseg_paint_host (under qemu for aarch64)."""
    return tool(tmp_path_factory, request.param, "mobileseg_paint_host")


def _paint_with_cpp(paint_host, scene, out_dir, *extra):
    path, _, labels = scene
    np.save(out_dir / "labels.npy", labels)
    proc = subprocess.run([*paint_host, "--image", path, "--labels", str(out_dir / "labels.npy"),
                           "--out_dir", str(out_dir), *extra], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return out_dir / "grace_hopper_mask.png", cv2.imread(str(out_dir / "grace_hopper_overlay.png"))


@pytest.mark.cpp
def test_cpp_demo_paints_as_paddleseg(paint_host, scene, paddleseg_outputs, tmp_path):
    overlay, mask_path = paddleseg_outputs
    cpp_mask, cpp_overlay = _paint_with_cpp(paint_host, scene, tmp_path)
    np.testing.assert_array_equal(cpp_overlay, overlay)
    _assert_same_mask(cpp_mask, mask_path)


def _opencv_blend_is_fused():
    """Whether this OpenCV blends 8-bit images as a * alpha + (b * beta) with one rounding (a
    fused multiply-add: AVX2 on x86, NEON on aarch64), as the C++ library always does."""
    a, b = (v.ravel().astype(np.uint8) for v in np.mgrid[0:256, 0:256])
    alpha, beta = np.float32(0.3), np.float32(0.7)
    # the exact a * alpha plus the float32 b * beta fit a float64: one rounding to float32
    fused = (a.astype(np.float64) * alpha + b.astype(np.float32) * beta).astype(np.float32)
    expected = np.clip(np.rint(fused), 0, 255).astype(np.uint8)
    return np.array_equal(cv2.addWeighted(a, 0.3, b, 0.7, 0).ravel(), expected)


@pytest.mark.cpp
@pytest.mark.parametrize("weight", [0.3, 0.9])
def test_cpp_blend_rounds_as_opencv(paint_host, scene, tmp_path, weight):
    """At weights where image and colour values meet exact halves, rounding an unfused sum
    differs from cv2.addWeighted; 0.6 has no such halves."""
    if not _opencv_blend_is_fused():
        pytest.skip("this CPU's OpenCV blends without a fused multiply-add")
    _, image, labels = scene
    _, cpp_overlay = _paint_with_cpp(paint_host, scene, tmp_path, "--weight", str(weight))
    np.testing.assert_array_equal(cpp_overlay, palette.overlay(image, labels, weight=weight))


@pytest.mark.parametrize("num_classes", [0, 1, 19, 256, 300])
@pytest.mark.parametrize("custom_color", [None, [255, 255, 255, 0, 0, 0], [9, 8],
                                          [7] * 3 * 258])
def test_color_map_equals_paddleseg(num_classes, custom_color):
    """Custom colours go into paddleseg's flat r g b list: a partial triple changes only its first
    channels, a longer list adds classes."""
    expected = paddleseg_visualize.get_color_map_list(num_classes, custom_color)
    if len(expected) % 3:  # a list paddleseg's visualize cannot use: one clear error here
        with pytest.raises(ValueError, match="r g b triples"):
            palette.color_map(num_classes, custom_color)
        return
    got = palette.color_map(num_classes, custom_color)
    assert got.dtype == np.uint8 and got.shape[1] == 3
    assert got.reshape(-1).tolist() == expected
    # paddleseg's flat list as colours paints the same
    label = np.arange(len(got))[None]
    np.testing.assert_array_equal(palette.colorize(label, expected), palette.colorize(label, got))
