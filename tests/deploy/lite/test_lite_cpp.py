"""The C++ pre/post-processing library (deploy/lite/cpp), built by CMake, against the Python
pipeline (mobileseg_paddle/deploy/lite/pipeline.py = paddleseg's transforms and
mobileseg_paddle.palette) on the same images: same model input within 1e-6, identical label map,
mask and overlay from the same logits; and the demo's bad-input handling. The same checks run for
an aarch64 build under qemu when the cross compiler and qemu-user are installed (always in CI)."""

import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers.cpp import ANDROID_DIR, STUB_DIR, TARGETS, cmake_build, tool
from mobileseg_paddle import palette
from mobileseg_paddle.deploy.lite import manifest as mf
from mobileseg_paddle.deploy.lite.pipeline import labels_from_logits, preprocess, visualize

pytestmark = pytest.mark.cpp

LITE_VERSION = "v2.13-rc"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
IMAGE_SIZES = {"down": (200, 300), "up": (61, 97), "half": (512, 512), "same": (128, 160)}
MODEL_SIZES = {"down": (128, 160), "up": (128, 160), "half": (256, 256), "same": (128, 160)}


@pytest.fixture(scope="module", params=TARGETS)
def demo_host(request, tmp_path_factory):
    """argv prefix that runs mobileseg_demo_host (under qemu for aarch64)."""
    return tool(tmp_path_factory, request.param, "mobileseg_demo_host")


def _image(path, h, w, seed):
    """A PNG with smooth gradients, sharp edges and noise (exercises interpolation)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1),
                    ((xx // 7 + yy // 5) % 2) * 200.0], axis=-1)
    img += rng.normal(0, 20, img.shape)
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
    return str(path)


def _model_dir(path, h, w, num_classes=19, lite_version=LITE_VERSION, output_op="none"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_arm.nb").write_bytes(b"not loaded by the host tool")
    manifest = mf.make_manifest(lite_version, {"arm": "model_arm.nb"}, [1, 3, h, w], MEAN, STD,
                                num_classes, {}, {}, output_op=output_op)
    mf.write_manifest(manifest, str(path))
    return str(path)


def _run(argv):
    proc = subprocess.run([str(a) for a in argv], capture_output=True)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.mark.parametrize("case", sorted(IMAGE_SIZES))
def test_model_input_matches_python_pipeline(demo_host, tmp_path, case):
    (ih, iw), (mh, mw) = IMAGE_SIZES[case], MODEL_SIZES[case]
    image = _image(tmp_path / "frame.png", ih, iw, seed=len(case))
    model_dir = _model_dir(tmp_path / "model", mh, mw)
    code, out, err = _run([*demo_host, "--model_dir", model_dir, "--image", image,
                           "--lite_version", LITE_VERSION, "--dump_input", tmp_path / "x.npy"])
    assert code == 0, err
    got = np.load(tmp_path / "x.npy")
    expected = preprocess(image, mh, mw, MEAN, STD)
    assert got.shape == expected.shape == (1, 3, mh, mw)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-6
    # paddleseg's default run (OpenCV with Intel IPP) differs from OpenCV's own algorithm by
    # rounding only (see deploy/lite/pipeline.py)
    with_ipp = paddleseg_default_preprocess(image, mh, mw)
    assert np.abs(got - with_ipp).max() <= 5e-5


def paddleseg_default_preprocess(image, h, w):
    from paddleseg.transforms import Compose, Normalize, Resize
    assert cv2.ipp.useIPP()  # preprocess restored the global setting
    transforms = Compose([Resize(target_size=(w, h)), Normalize(mean=MEAN, std=STD)])
    return transforms({"img": image})["img"][np.newaxis]


def test_labels_mask_and_overlay_match_python(demo_host, tmp_path):
    h, w, classes = 64, 80, 19
    image = _image(tmp_path / "street.png", 150, 210, seed=3)
    model_dir = _model_dir(tmp_path / "model", h, w, classes)
    rng = np.random.default_rng(7)
    # coarse values, so that many pixels tie between classes: the first maximum must win
    logits = rng.integers(0, 4, (1, classes, h, w)).astype(np.float32)
    np.save(tmp_path / "logits.npy", logits)
    code, _, err = _run([*demo_host, "--model_dir", model_dir, "--image", image,
                         "--lite_version", LITE_VERSION, "--output", tmp_path / "logits.npy",
                         "--out_dir", tmp_path / "out", "--dump_labels", tmp_path / "labels.npy"])
    assert code == 0, err
    expected_labels = labels_from_logits(logits)
    assert len(np.unique(expected_labels)) == classes
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), expected_labels)

    full, overlay = visualize(image, expected_labels)
    mask = Image.open(tmp_path / "out" / "street_mask.png")
    assert mask.mode == "P" and mask.size == (210, 150)
    np.testing.assert_array_equal(np.array(mask), full)
    colors = np.array(mask.getpalette()[:3 * 256], dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(colors, palette.color_map(256))
    got_overlay = cv2.imread(str(tmp_path / "out" / "street_overlay.png"))
    np.testing.assert_array_equal(got_overlay, overlay)


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_label_output_gives_the_same_pictures(demo_host, tmp_path, dtype):
    """A model converted with --output_op argmax: the graph's label map is drawn as is."""
    h, w, classes = 48, 40, 7
    image = _image(tmp_path / "street.png", 90, 70, seed=4)
    model_dir = _model_dir(tmp_path / "model", h, w, classes, output_op="argmax")
    labels = np.random.default_rng(2).integers(0, classes, (1, h, w)).astype(dtype)
    np.save(tmp_path / "labels_in.npy", labels)
    if dtype == "int32":  # the manifest says which integer type the graph writes
        text = open(os.path.join(model_dir, "manifest.json")).read()
        open(os.path.join(model_dir, "manifest.json"), "w").write(text.replace("int64", "int32"))
    code, _, err = _run([*demo_host, "--model_dir", model_dir, "--image", image,
                         "--lite_version", LITE_VERSION, "--output", tmp_path / "labels_in.npy",
                         "--out_dir", tmp_path / "out", "--dump_labels", tmp_path / "labels.npy"])
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), labels[0].astype(np.uint8))
    full, overlay = visualize(image, labels[0].astype(np.uint8))
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "out" / "street_mask.png")), full)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "street_overlay.png")), overlay)


# --- bad input: one "error:" line naming what is wrong, exit code 1 -----------------------------

def _bad_cases(tmp_path):
    image = _image(tmp_path / "ok.png", 40, 50, seed=1)
    good = _model_dir(tmp_path / "good", 32, 32)
    old = _model_dir(tmp_path / "old", 32, 32, lite_version="v2.12")
    no_nb = _model_dir(tmp_path / "no_nb", 32, 32)
    os.remove(os.path.join(no_nb, "model_arm.nb"))
    broken = _model_dir(tmp_path / "broken", 32, 32)
    with open(os.path.join(broken, "manifest.json"), "w") as f:
        f.write('{"format": "mobileseg-lite-manifest/1", "lite_version": ')
    no_field = _model_dir(tmp_path / "no_field", 32, 32)
    text = open(os.path.join(no_field, "manifest.json")).read().replace('"num_classes"', '"nc"')
    open(os.path.join(no_field, "manifest.json"), "w").write(text)
    (tmp_path / "not_an_image.png").write_bytes(b"hello")
    np.save(tmp_path / "bad_logits.npy", np.zeros((1, 5, 32, 32), np.float32))
    labels_dir = _model_dir(tmp_path / "labels", 32, 32, 3, output_op="argmax")
    np.save(tmp_path / "bad_labels.npy", np.full((1, 32, 32), 3, np.int64))
    base = ["--image", image, "--lite_version", LITE_VERSION]
    return {
        "missing model": (["--model_dir", tmp_path / "nowhere", *base], "manifest.json"),
        "missing image": (["--model_dir", good, "--image", tmp_path / "nope.png",
                           "--lite_version", LITE_VERSION], "nope.png"),
        "not an image": (["--model_dir", good, "--image", tmp_path / "not_an_image.png",
                          "--lite_version", LITE_VERSION], "not_an_image.png"),
        "other Lite version": (["--model_dir", old, *base], "v2.12"),
        "wrong input size": (["--model_dir", good, *base, "--input_size", "256x256"],
                             "input size 256x256"),
        "bad input size": (["--model_dir", good, *base, "--input_size", "256"], "--input_size"),
        "missing .nb": (["--model_dir", no_nb, *base], "model_arm.nb"),
        "no x86 model": (["--model_dir", good, *base, "--target", "x86"], "'x86'"),
        "corrupt manifest": (["--model_dir", broken, *base], "not valid JSON"),
        "missing field": (["--model_dir", no_field, *base], "'num_classes'"),
        "wrong logits": (["--model_dir", good, *base, "--output", tmp_path / "bad_logits.npy",
                          "--out_dir", tmp_path / "o"], "[1, 5, 32, 32]"),
        "logits for a label model": (["--model_dir", labels_dir, *base, "--output",
                                      tmp_path / "bad_logits.npy", "--out_dir", tmp_path / "o"],
                                     "expected int64[1, 32, 32]"),
        "label out of range": (["--model_dir", labels_dir, *base, "--output",
                                tmp_path / "bad_labels.npy", "--out_dir", tmp_path / "o"],
                               "label 3 at pixel 0"),
        "unknown option": (["--model_dir", good, *base, "--thread", "1"], "--thread"),
    }


def test_bad_input_is_one_clear_error(demo_host, tmp_path):
    for case, (args, must_name) in _bad_cases(tmp_path).items():
        code, out, err = _run([*demo_host, *args])
        lines = err.strip().splitlines()
        assert code == 1, f"{case}: exit {code}, stderr {err!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {err!r}"
        assert must_name in lines[0], f"{case}: {lines[0]!r} does not name {must_name!r}"


# --- the Android demo program, built on the host against a Lite test double ----------------------

@pytest.fixture(scope="module")
def stub_demo(tmp_path_factory):
    """mobileseg_lite_demo from deploy/lite/android, linked to tests/cpp/lite_stub."""
    work = tmp_path_factory.mktemp("android_demo_stub")
    lite = work / "lite" / "cxx"
    (lite / "include").mkdir(parents=True)
    (lite / "lib").mkdir()
    shutil.copy(os.path.join(STUB_DIR, "paddle_api.h"), lite / "include")
    proc = subprocess.run(["g++", "-std=c++14", "-O1", "-shared", "-fPIC", "-I", STUB_DIR,
                           os.path.join(STUB_DIR, "paddle_api_stub.cc"), "-o",
                           str(lite / "lib" / "libpaddle_light_api_shared.so")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout.decode()
    build = work / "build"
    cmake_build(ANDROID_DIR, build, [f"-DPADDLE_LITE_DIR={lite}"])
    return str(build / "mobileseg_lite_demo")


@pytest.fixture(scope="module")
def stub_lite_lib(stub_demo):
    return os.path.join(os.path.dirname(os.path.dirname(stub_demo)), "lite", "cxx", "lib",
                        "libpaddle_light_api_shared.so")


def _stub_model_dir(path, h, w, classes, output_op="none"):
    model_dir = _model_dir(path, h, w, classes, output_op=output_op)
    with open(os.path.join(model_dir, "model_arm.nb"), "w") as f:
        f.write(f"STUB classes={classes}{' labels' if output_op == 'argmax' else ''}\n")
    return model_dir


@pytest.mark.parametrize("output_op", ["none", "argmax"])
def test_android_demo_runs_and_reports_latency(stub_demo, tmp_path, output_op):
    image = _image(tmp_path / "road.png", 60, 100, seed=5)
    model_dir = _stub_model_dir(tmp_path / "model", 32, 40, classes=4, output_op=output_op)
    code, out, err = _run([stub_demo, "--model_dir", model_dir, "--image", image, "--out_dir",
                           tmp_path / "out", "--warmup", "2", "--repeats", "5",
                           "--power_mode", "low", "--input_size", "32x40"])
    assert code == 0, err
    assert "latency: average" in out and "over 5 runs after 2 warm-up" in out
    assert "threads 1, power mode low" in out
    mask = np.array(Image.open(tmp_path / "out" / "road_mask.png"))
    # the stub's logits are 4 vertical stripes at 40 columns, shown on the 100-column image
    stripes = cv2.resize((np.arange(40) * 4 // 40).astype(np.uint8)[None].repeat(32, 0),
                         (100, 60), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(mask, stripes)
    assert os.path.isfile(tmp_path / "out" / "road_overlay.png")


def test_android_demo_bad_input(stub_demo, tmp_path):
    image = _image(tmp_path / "road.png", 60, 100, seed=5)
    model_dir = _stub_model_dir(tmp_path / "model", 32, 40, classes=4)
    broken = _model_dir(tmp_path / "broken", 32, 40)  # .nb that Lite cannot load
    base = ["--model_dir", model_dir, "--image", image]
    cases = {
        "power mode": ([*base, "--power_mode", "turbo"], "--power_mode turbo"),
        "threads": ([*base, "--threads", "0"], "--threads 0"),
        "missing image": (["--model_dir", model_dir, "--image", tmp_path / "x.png"], "x.png"),
        "missing model": (["--model_dir", tmp_path / "none", "--image", image],
                          "manifest.json"),
        "wrong input size": ([*base, "--input_size", "256x256"], "input size 256x256"),
        "unloadable model": (["--model_dir", broken, "--image", image], "could not load"),
    }
    for case, (args, must_name) in cases.items():
        code, _, err = _run([stub_demo, *args])
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (case, err)
        assert must_name in lines[0], (case, lines[0])


def test_android_demo_refuses_a_library_of_another_release(stub_demo, tmp_path, monkeypatch):
    image = _image(tmp_path / "road.png", 60, 100, seed=5)
    model_dir = _stub_model_dir(tmp_path / "model", 32, 40, classes=4)
    monkeypatch.setenv("MOBILESEG_STUB_LITE_VERSION", "v2.12")
    code, _, err = _run([stub_demo, "--model_dir", model_dir, "--image", image])
    assert code == 1
    assert "the Lite library reports v2.12" in err


# --- run_with_adb.sh against a fake adb that maps the phone's /data/local/tmp to a folder --------

FAKE_ADB = r"""#!/usr/bin/env bash
[[ "$1" == "-s" ]] && shift 2
map() { echo "${1//\/data\/local\/tmp/$FAKE_DEVICE_ROOT/data/local/tmp}"; }
case "$1" in
    get-state) echo device ;;
    push) cp "$2" "$(map "$3")" ;;
    pull) cp "$(map "$2")" "$3" ;;
    shell) bash -c "$(map "$2")" ;;
    *) exit 1 ;;
esac
"""


def _run_with_adb(tmp_path, *args):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "adb").write_text(FAKE_ADB)
    (bin_dir / "adb").chmod(0o755)
    (tmp_path / "device" / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
               FAKE_DEVICE_ROOT=str(tmp_path / "device"))
    env.pop("ANDROID_NDK", None)
    proc = subprocess.run(["bash", os.path.join(ANDROID_DIR, "run_with_adb.sh"),
                           *map(str, args)], env=env, cwd=tmp_path, capture_output=True)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_run_with_adb_pushes_runs_and_pulls(stub_demo, stub_lite_lib, tmp_path):
    image = _image(tmp_path / "road.png", 60, 100, seed=5)
    model_dir = _stub_model_dir(tmp_path / "model", 32, 40, classes=4)
    code, out, err = _run_with_adb(tmp_path, "--demo", stub_demo, "--lite_lib", stub_lite_lib,
                                   "--model_dir", model_dir, "--image", image, "--out_dir",
                                   tmp_path / "pulled", "--", "--repeats", "3", "--warmup", "1")
    assert code == 0, out + err
    assert "over 3 runs after 1 warm-up" in out
    pushed = tmp_path / "device" / "data" / "local" / "tmp" / "mobileseg"
    assert sorted(os.listdir(pushed / "model")) == ["manifest.json", "model_arm.nb"]
    assert (pushed / "libpaddle_light_api_shared.so").exists()
    assert sorted(os.listdir(tmp_path / "pulled")) == ["road_mask.png", "road_overlay.png"]


def test_run_with_adb_bad_input(stub_demo, stub_lite_lib, tmp_path):
    image = _image(tmp_path / "road.png", 60, 100, seed=5)
    model_dir = _stub_model_dir(tmp_path / "model", 32, 40, classes=4)
    base = ["--demo", stub_demo, "--lite_lib", stub_lite_lib, "--image", image]
    code, out, err = _run_with_adb(tmp_path, *base, "--model_dir", tmp_path / "none")
    assert code == 2 and err.strip().startswith("error: --model_dir") and len(err.splitlines()) == 1
    code, out, err = _run_with_adb(tmp_path, *base, "--model_dir", model_dir, "--",
                                   "--power_mode", "turbo")
    assert code == 1  # the demo's own exit code and message come through
    assert "error: --power_mode turbo" in out
