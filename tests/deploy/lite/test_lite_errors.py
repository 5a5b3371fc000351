"""Bad input on the Python side of the Lite path: one clear message and exit status 2; and the
command line end to end (``mobileseg lite`` convert, segment, bench) on a small MobileNetV2
conversion."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from PIL import Image

from helpers import ROOT
from helpers.lite import require_lite_runtime
from mobileseg_paddle import resources
from mobileseg_paddle.deploy.export import save_paddle_programs
from mobileseg_paddle.deploy.lite import manifest as mf
from mobileseg_paddle.deploy.lite.convert import check_ops
from mobileseg_paddle.deploy.lite.lite_env import LiteRuntime
from mobileseg_paddle.deploy.lite.predict import run_nb
from mobileseg_paddle.deploy.lite.program_compat import read_program, write_program
from mobileseg_paddle.errors import UserError

pytestmark = pytest.mark.lite

PREFIX = "mobileseg lite: error: "
CONFIG = os.path.join(ROOT, "configs", "mobileseg",
                      "mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml")


def cli(*args):
    """Run ``mobileseg lite``; return (exit code, stdout, stderr lines)."""
    proc = subprocess.run([sys.executable, "-m", "mobileseg_paddle", "lite", *map(str, args)],
                          env=resources.child_env(), capture_output=True)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode().strip().splitlines()


def assert_one_error(result, *must_contain):
    code, _, err = result
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(PREFIX), err
    for text in must_contain:
        assert text in err[0], err[0]


@pytest.mark.parametrize("args, named", [
    (["--config", "nowhere.yml", "--save_dir", "x"], "--config nowhere.yml"),
    (["--config", CONFIG, "--model_path", "nowhere.pdparams", "--save_dir", "x"],
     "--model_path nowhere.pdparams"),
    (["--config", CONFIG, "--save_dir", "x", "--input_shape", "1,3,256"], "--input_shape"),
    (["--config", CONFIG, "--save_dir", "x", "--input_shape", "2,3,256,256"], "1,3,H,W"),
    (["--config", CONFIG, "--save_dir", "x", "--input_shape", "1", "3", "x", "256"],
     "--input_shape"),
    (["--config", CONFIG, "--save_dir", "x", "--valid_targets", "mips"], "--valid_targets"),
    (["--config", CONFIG], "--save_dir"),
    (["segment", "--model_dir", "x"], "--image"),
])
def test_convert_rejects_bad_arguments(args, named):
    assert_one_error(cli(*args), named)


def test_help_lists_the_commands_and_flags():
    code, out, _ = cli("--help")
    assert code == 0 and "convert" in out and "segment" in out and "bench" in out
    code, out, _ = cli("convert", "--help")
    for flag in ("--config", "--model_path", "--save_dir", "--input_shape", "--valid_targets"):
        assert flag in out


def test_missing_lite_environment_names_the_setup_script(tmp_path, monkeypatch):
    monkeypatch.delenv("MOBILESEG_LITE_PYTHON", raising=False)
    monkeypatch.setenv("MOBILESEG_LITE_ROOT", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="setup_env.sh") as e:
        LiteRuntime.find()
    script = resources.path("deploy", "lite", "setup_env.sh")  # a checkout's or a wheel's copy
    assert script in str(e.value) and os.path.isfile(script)
    monkeypatch.setenv("MOBILESEG_LITE_PYTHON", str(tmp_path / "python3.9"))
    with pytest.raises(UserError, match="MOBILESEG_LITE_PYTHON"):
        LiteRuntime.find()


def test_weights_of_another_model_fail_and_leave_save_dir_untouched(tmp_path):
    require_lite_runtime()
    weights = str(tmp_path / "other.pdparams")
    paddle.save({"conv.weight": paddle.zeros([4, 3, 3, 3])}, weights)
    save_dir = tmp_path / "lite"
    save_dir.mkdir()
    (save_dir / "keep.txt").write_text("old")
    assert_one_error(cli("--config", CONFIG, "--model_path", weights, "--save_dir", save_dir,
                         "--valid_targets", "x86"), "--model_path", "missing keys")
    assert os.listdir(save_dir) == ["keep.txt"]
    assert [n for n in os.listdir(tmp_path) if "partial" in n] == []


# --- an op Lite has no kernel for -------------------------------------------------------------

class Tiny(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        return paddle.nn.functional.relu(self.conv(x))


def test_unsupported_ops_are_listed_in_one_error(tmp_path):
    runtime = require_lite_runtime()
    save_paddle_programs(Tiny(), str(tmp_path), [1, 3, 8, 8], program="legacy")
    prefix = str(tmp_path / "model")
    program = read_program(prefix + ".pdmodel")
    for op in program.blocks[0].ops:  # pretend two ops are ones Lite never heard of
        if op.type in ("relu", "conv2d"):
            op.type = f"mobileseg_fake_{op.type}"
    write_program(program, prefix + ".pdmodel")
    with pytest.raises(UserError) as e:
        check_ops(runtime, prefix + ".pdmodel", prefix + ".pdiparams", "arm")
    message = str(e.value)
    assert "no arm kernel for 2 op(s)" in message
    assert "mobileseg_fake_conv2d, mobileseg_fake_relu" in message
    assert len(message.splitlines()) == 1
    # convert's call: every target is checked, and no .nb is written for any
    result = runtime.opt(prefix + ".pdmodel", prefix + ".pdiparams",
                         {"arm": prefix + "_arm", "x86": prefix + "_x86"})
    assert {t: r["unsupported"] for t, r in result["reports"].items()} == {
        t: ["mobileseg_fake_conv2d", "mobileseg_fake_relu"] for t in ("arm", "x86")}
    assert result["models"] == {}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".nb")]


# --- a converted model, and what goes wrong when running it --------------------------------------

@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    require_lite_runtime()
    work = tmp_path_factory.mktemp("lite_cli")
    save_dir = work / "mv2_64"
    code, out, err = cli("--config", CONFIG, "--save_dir", save_dir, "--input_shape",
                         "1", "3", "64", "64", "--valid_targets", "x86")  # paddleseg's style
    assert code == 0, err
    assert "random" in out  # no --model_path: the user is told
    return save_dir


def _copy(model_dir, tmp_path):
    return shutil.copytree(model_dir, tmp_path / "copy")


def test_cli_segment_writes_mask_and_overlay(small_model, tmp_path):
    image = tmp_path / "street.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    code, out, err = cli("segment", "--model_dir", small_model, "--image", image,
                         "--out_dir", tmp_path / "out")
    assert code == 0, err
    mask = Image.open(tmp_path / "out" / "street_mask.png")
    assert mask.mode == "P" and mask.size == (120, 90)
    assert np.array(mask).max() < 19
    assert cv2.imread(str(tmp_path / "out" / "street_overlay.png")).shape == (90, 120, 3)


def test_cli_bench_prints_the_latency(small_model):
    code, out, err = cli("bench", "--model_dir", small_model, "--warmup", "1", "--repeats", "3")
    assert code == 0, err
    assert out.startswith("Lite x86, 1 thread: median ")


def test_missing_image(small_model, tmp_path):
    assert_one_error(cli("segment", "--model_dir", small_model, "--image", tmp_path / "no.png",
                         "--out_dir", tmp_path), "no.png")


def test_missing_model(tmp_path):
    require_lite_runtime()
    assert_one_error(cli("bench", "--model_dir", tmp_path / "nothing"), "manifest.json")


def test_missing_nb(small_model, tmp_path):
    model_dir = _copy(small_model, tmp_path)
    os.remove(model_dir / "model_x86.nb")
    assert_one_error(cli("bench", "--model_dir", model_dir), "model_x86.nb")


def test_manifest_from_another_lite_version(small_model, tmp_path):
    model_dir = _copy(small_model, tmp_path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["lite_version"] = "v2.12"
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_one_error(cli("bench", "--model_dir", model_dir), "v2.12", "v2.13-rc",
                     "convert it again")


def test_wrong_input_size(small_model):
    with pytest.raises(UserError, match=r"\[1, 3, 256, 256\].*\[1, 3, 64, 64\]"):
        run_nb(small_model, np.zeros((1, 3, 256, 256), np.float32))


def test_arm_only_model_cannot_run_on_the_host(small_model, tmp_path):
    model_dir = _copy(small_model, tmp_path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["models"] = {"arm": "model_arm.nb"}
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_one_error(cli("bench", "--model_dir", model_dir), "--valid_targets x86")


# --- a hostile manifest.json: one error naming the file and the field, nothing read outside ---------

def _valid_manifest(output_op="none"):
    return mf.make_manifest("v2.13-rc", {"x86": "model_x86.nb"}, [1, 3, 64, 64], [0.5] * 3,
                            [0.5] * 3, 19, {}, {"config": CONFIG, "model_path": None},
                            output_op=output_op)


def _model_dir(tmp_path, manifest=None, text=None):
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model_x86.nb").write_bytes(b"not read by these tests")
    text = text if text is not None else json.dumps(manifest or _valid_manifest())
    (model_dir / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return model_dir


def _set(manifest, dotted, value):
    *parents, key = dotted.split(".")
    for p in parents:
        manifest = manifest[p]
    manifest[key] = value


def test_valid_manifests_are_read(tmp_path):
    for op in mf.OUTPUT_OPS:
        model_dir = _model_dir(tmp_path, _valid_manifest(op))
        manifest = mf.read_manifest(str(model_dir))
        assert mf.model_file(manifest, str(model_dir), "x86") == str(model_dir / "model_x86.nb")


@pytest.mark.parametrize("dotted, value", [
    # 1. num_classes: an int (not bool) in 1..256
    ("num_classes", 0), ("num_classes", 257), ("num_classes", -3), ("num_classes", 19.5),
    ("num_classes", True), ("num_classes", "19"), ("num_classes", None), ("num_classes", 10 ** 30),
    # 2. model file names: plain names inside the folder
    ("models.x86", "../model_x86.nb"), ("models.x86", "/etc/passwd"), ("models.x86", "sub/m.nb"),
    ("models.x86", "..\\m.nb"), ("models.x86", ".."), ("models.x86", ""), ("models.x86", 7),
    ("models.x86", ["model_x86.nb"]), ("models.x86", "m\0.nb"), ("models", []), ("models", {}),
    # 3. mean / std: 3 finite numbers, std without zeros
    ("input.mean", [0.5, 0.5]), ("input.mean", [0.5, 0.5, "0.5"]), ("input.mean", [True, 0, 0]),
    ("input.mean", [0.5, 0.5, float("nan")]), ("input.mean", 0.5), ("input.std", [0.5, 0, 0.5]),
    ("input.std", [0.5, 0.5, float("inf")]), ("input.std", [0.5, 0.5, 10 ** 400]),
    ("input.std", [0.5, 0.5, -0.0]), ("input.std", [False, 1, 1]), ("input.std", None),
    # 4. output.shape consistent with input.shape and num_classes
    ("output.shape", [1, 2, 64, 64]), ("output.shape", [1, 19, 32, 64]),
    ("output.shape", [1, 19, 64]), ("output.shape", [True, 19, 64, 64]), ("output.shape", "1x19"),
    ("output.kind", "probabilities"), ("output.dtype", "uint8"),
    # the other fields a runner reads
    ("input.shape", [1, 3, 64, True]), ("input.shape", [2, 3, 64, 64]),
    ("input.shape", [1, 1, 64, 64]), ("input.shape", [1, 3, 100000, 100000]),
    ("input.shape", [1, 3, 0, 64]), ("lite_version", 2.13), ("format", "other/1"),
    ("precision", ["fp16"]), ("precision", {"arm": "int4"}), ("source", "x"),
    ("source", {"config": 3}),
])
def test_bad_manifest_field_is_one_error_naming_it(tmp_path, dotted, value):
    manifest = _valid_manifest()
    _set(manifest, dotted, value)
    model_dir = _model_dir(tmp_path, manifest)
    with pytest.raises(UserError) as e:
        mf.model_file(mf.read_manifest(str(model_dir)), str(model_dir), "x86")
    message = str(e.value)
    assert message.startswith(str(model_dir / "manifest.json") + ": "), message
    assert f"field '{dotted}'" in message and "expected" in message, message
    assert len(message.splitlines()) == 1 and len(message) < 400, message


@pytest.mark.parametrize("dotted, value", [
    ("output.shape", [1, 19, 64, 64]), ("output.shape", [1, 64, 32]), ("num_classes", 0)])
def test_bad_labels_manifest_field(tmp_path, dotted, value):
    manifest = _valid_manifest("argmax")
    _set(manifest, dotted, value)
    with pytest.raises(UserError, match=f"field '{dotted}'"):
        mf.read_manifest(str(_model_dir(tmp_path, manifest)))


@pytest.mark.parametrize("text", ["", "[]", "null", "{", "\"x\"", "[" * 100000 + "]" * 100000,
                                  b"\xff\xfe{}"])
def test_unreadable_manifest_is_one_error(tmp_path, text):
    model_dir = _model_dir(tmp_path, text=text)
    with pytest.raises(UserError, match="manifest.json"):
        mf.read_manifest(str(model_dir))


def test_huge_manifest_is_not_loaded(tmp_path):
    model_dir = _model_dir(tmp_path, text=" " * (mf.MAX_MANIFEST_BYTES + 1) + "{}")
    with pytest.raises(UserError, match="bytes, not a manifest"):
        mf.read_manifest(str(model_dir))


def test_model_file_checks_names_of_a_manifest_not_read_from_disk(tmp_path):
    (tmp_path / "secret.nb").write_bytes(b"outside")
    model_dir = _model_dir(tmp_path)
    manifest = mf.read_manifest(str(model_dir))
    for name in ("../secret.nb", str(tmp_path / "secret.nb")):
        manifest["models"]["x86"] = name
        with pytest.raises(UserError, match="field 'models.x86'.*plain file name"):
            mf.model_file(manifest, str(model_dir), "x86")


@pytest.mark.parametrize("op, output, ok", [
    ("none", np.zeros((1, 19, 64, 64), np.float32), True),
    ("none", np.zeros((1, 2, 64, 64), np.float32), False),     # another model's classes
    ("none", np.zeros((1, 19, 32, 32), np.float32), False),    # another model's size
    ("none", np.zeros((19, 64, 64), np.float32), False),
    ("none", np.zeros((1, 19, 64, 64), np.int64), False),      # labels where logits are said
    ("argmax", np.zeros((1, 64, 64), np.int64), True),
    ("argmax", np.zeros((1, 64, 64), np.int32), True),
    ("argmax", np.zeros((1, 32, 64), np.int64), False),
    ("argmax", np.zeros((1, 64, 64), np.float32), False),
])
def test_labels_of_checks_the_run_output_against_the_manifest(op, output, ok):
    manifest = _valid_manifest(op)
    if ok:
        assert mf.labels_of(manifest, output).shape == (64, 64)
    else:
        with pytest.raises(UserError, match=r"output\.shape \[1, (19, )?64, 64\]"):
            mf.labels_of(manifest, output)


def test_cli_segment_with_a_hostile_manifest(small_model, tmp_path):
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((40, 50, 3), np.uint8))
    model_dir = _copy(small_model, tmp_path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    for dotted, value in [("models.x86", "../copy/model_x86.nb"), ("num_classes", 1000),
                          ("input.std", [0, 0, 0]), ("output.shape", [1, 2, 64, 64])]:
        bad = json.loads(json.dumps(manifest))
        _set(bad, dotted, value)
        (model_dir / "manifest.json").write_text(json.dumps(bad))
        assert_one_error(cli("segment", "--model_dir", model_dir, "--image", image, "--out_dir",
                             tmp_path / "out"), "manifest.json", f"field '{dotted}'")
    assert not (tmp_path / "out").exists()


def test_cli_segment_output_of_another_shape_than_the_manifest_says(small_model, tmp_path):
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((40, 50, 3), np.uint8))
    model_dir = _copy(small_model, tmp_path)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["num_classes"], manifest["output"]["shape"] = 2, [1, 2, 64, 64]  # consistent, wrong
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_one_error(cli("segment", "--model_dir", model_dir, "--image", image, "--out_dir",
                         tmp_path / "out"), "float32[1, 19, 64, 64]", "output.shape [1, 2, 64, 64]")
    assert not (tmp_path / "out").exists()
