"""The five MobileSeg models through Paddle Lite at 1x3x256x256: the x86 .nb matches our dygraph
model (relative error <= 1e-4, random weights and BN statistics); the ARM .nb, FP32 and FP16, run
on Lite's ARM kernels (the armv8 light API built from source, under qemu-aarch64 -cpu max, with
a poisoning allocator so that a kernel reading memory it did not write fails every time) within
the bounds of ``mobileseg lite check``: FP32 relative L2 <= 1e-4 and an identical argmax, FP16
<= 1e-2 and >= 99 % agreement; and the legacy program traced in this (PIR) process is the one a
fresh ``FLAGS_enable_pir_api=0`` process writes (why convert needs no export child process)."""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT
from helpers.arm import poisoned, require_arm
from helpers.lite import require_lite_runtime
from helpers.numerics import max_rel_err, randomize_
from helpers.paddle_files import program_signature, read_params
from mobileseg_paddle import resources
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.deploy.lite.check import check
from mobileseg_paddle.deploy.lite.convert import check_ops, convert
from mobileseg_paddle.deploy.lite.predict import run_nb
from mobileseg_paddle.deploy.lite.program_compat import apply_fixes, read_program, write_program

pytestmark = pytest.mark.lite

MODELS = ["mobilenetv2", "mobilenetv3", "litehrnet18", "shufflenetv2", "ghostnet"]
SHAPE = [1, 3, 256, 256]


def config_path(name):
    return os.path.join(ROOT, "configs", "mobileseg",
                        f"mobileseg_{name}_cityscapes_1024x512_80k.yml")


@pytest.fixture(scope="module", params=MODELS)
def converted(request, tmp_path_factory):
    runtime = require_lite_runtime()
    name = request.param
    work = tmp_path_factory.mktemp(f"lite_{name}")
    model = build_model(config_path(name), None, drop_pretrained=True)[0]
    randomize_(model, seed=0)
    model.eval()
    weights = str(work / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype("float32")
    with paddle.no_grad():
        reference = model(paddle.to_tensor(x))[0].numpy()
    save_dir = str(work / "lite")
    manifest = convert(config_path(name), weights, save_dir, SHAPE, "arm,x86", runtime=runtime,
                       log=lambda message: None)
    return {"name": name, "runtime": runtime, "dir": save_dir, "manifest": manifest, "x": x,
            "reference": reference, "weights": weights, "work": work}


def test_x86_nb_matches_dygraph(converted):
    outputs = run_nb(converted["dir"], converted["x"], runtime=converted["runtime"])
    assert len(outputs) == 1
    assert outputs[0].shape == converted["reference"].shape == (1, 19, 256, 256)
    assert max_rel_err(outputs[0], converted["reference"]) <= 1e-4


def test_arm_nb_has_every_op_supported(converted):
    runtime, save_dir = converted["runtime"], converted["dir"]
    report = check_ops(runtime, os.path.join(save_dir, "model.pdmodel"),
                       os.path.join(save_dir, "model.pdiparams"), "arm")
    assert report["unsupported"] == []
    assert {"conv2d", "depthwise_conv2d", "batch_norm", "bilinear_interp_v2"} <= set(report["ops"])
    nb = os.path.join(save_dir, converted["manifest"]["models"]["arm"])
    assert os.path.getsize(nb) > 1_000_000  # the weights are in it


def test_manifest_describes_the_model(converted):
    with open(os.path.join(converted["dir"], "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest == converted["manifest"]
    assert manifest["lite_version"] == converted["runtime"].version() == "v2.13-rc"
    assert manifest["models"] == {"arm": "model_arm.nb", "x86": "model_x86.nb"}
    assert manifest["input"]["shape"] == SHAPE
    assert manifest["input"]["mean"] == [0.5, 0.5, 0.5]
    assert manifest["input"]["std"] == [0.5, 0.5, 0.5]
    assert manifest["output"] == {"kind": "logits", "shape": [1, 19, 256, 256],
                                  "dtype": "float32", "layout": "NCHW"}
    assert manifest["precision"] == {"arm": "fp32", "x86": "fp32"}
    assert manifest["num_classes"] == 19
    # GhostNet is the only model with a flatten; none of the five uses relu6 except MobileNetV2
    fixes = manifest["compat_fixes"]
    assert (fixes["flatten_contiguous_range_xshape"] > 0) == (converted["name"] == "ghostnet")
    assert (fixes["relu6_threshold"] > 0) == (converted["name"] == "mobilenetv2")
    leftovers = [n for n in os.listdir(os.path.dirname(converted["dir"])) if "partial" in n]
    assert leftovers == []


def test_argmax_output_is_the_label_map_of_the_logits(converted):
    """--output_op argmax: an int64 (1, H, W) label map in the graph (Paddle-Lite-Demo's
    segmentation demo reads that), equal to the argmax of the logits model's output."""
    save_dir = str(converted["work"] / "lite_argmax")
    manifest = convert(config_path(converted["name"]), converted["weights"], save_dir, SHAPE,
                       "x86", runtime=converted["runtime"], log=lambda message: None,
                       output_op="argmax")
    assert manifest["output"] == {"kind": "labels", "shape": [1, 256, 256], "dtype": "int64"}
    labels = run_nb(save_dir, converted["x"], runtime=converted["runtime"])
    logits = run_nb(converted["dir"], converted["x"], runtime=converted["runtime"])[0]
    assert len(labels) == 1 and labels[0].dtype == np.int64 and labels[0].shape == (1, 256, 256)
    np.testing.assert_array_equal(labels[0][0], np.argmax(logits[0], axis=0))
    assert len(np.unique(labels[0])) > 1  # a real label map, not a constant


@pytest.fixture(scope="module")
def arm():
    return require_arm()


def test_arm_nb_on_arm_kernels_matches_dygraph(converted, arm, monkeypatch):
    poisoned(monkeypatch, arm)
    result = check(converted["dir"], "dygraph", arm["runtime"], log=lambda message: None)
    assert result["precision"] == "fp32" and result["reference"] == "dygraph"
    assert result["rel_l2"] <= 1e-4 and result["agreement"] == 1.0 and result["passed"]


def test_fp16_arm_nb_within_the_fp16_bounds(converted, arm, monkeypatch):
    save_dir = str(converted["work"] / "lite_fp16")
    manifest = convert(config_path(converted["name"]), converted["weights"], save_dir, SHAPE,
                       "arm", runtime=converted["runtime"], log=lambda message: None,
                       precision="fp16")
    assert manifest["precision"] == {"arm": "fp16"}
    poisoned(monkeypatch, arm)
    result = check(save_dir, "dygraph", arm["runtime"], log=lambda message: None)
    print(f"{converted['name']} FP16: relative L2 {result['rel_l2']:.2e}, "
          f"agreement {100 * result['agreement']:.3f}%")
    assert result["rel_l2"] <= 1e-2 and result["agreement"] >= 0.99 and result["passed"]
    assert result["rel_l2"] > 1e-5  # FP16 arithmetic did run


# --- in this process or in a fresh one -------------------------------------------------------

# convert's own export step, in a process started with the legacy program format (what
# convert did before: a child process with FLAGS_enable_pir_api=0)
FRESH_EXPORT = """
import sys
import paddle
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.deploy.lite.convert import export_program
assert not paddle.framework.use_pir_api()
model = build_model(sys.argv[1], sys.argv[2], drop_pretrained=True)[0]
export_program(model, sys.argv[3], [int(s) for s in sys.argv[4:]])
"""

def test_in_process_export_equals_a_fresh_pir_off_process(converted):
    fresh = converted["work"] / "fresh"
    fresh.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_EXPORT, config_path(converted["name"]),
         converted["weights"], str(fresh), *map(str, SHAPE)],
        env=resources.child_env(FLAGS_enable_pir_api="0"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout.decode("utf-8", "replace")[-3000:]
    fresh_program = read_program(str(fresh / "model.pdmodel"))
    fresh_fixes = apply_fixes(fresh_program)  # convert's program had the pass applied
    assert fresh_fixes == converted["manifest"]["compat_fixes"]
    fresh_fixed = str(fresh / "fixed.pdmodel")
    write_program(fresh_program, fresh_fixed)
    ours, ours_ops, ours_names = program_signature(os.path.join(converted["dir"], "model.pdmodel"))
    theirs, theirs_ops, theirs_names = program_signature(fresh_fixed)
    assert [op[0] for op in ours_ops] == [op[0] for op in theirs_ops]  # the op lists
    differ = [i for i, (a, b) in enumerate(zip(ours_ops, theirs_ops)) if a != b]
    assert not differ, (f"{len(differ)} ops differ in attributes, wiring or shapes; the first, "
                        f"#{differ[0]}: {ours_ops[differ[0]]} != {theirs_ops[differ[0]]}")
    # the same parameter values, matched through the wiring (not by name)
    ours_params = read_params(ours, os.path.join(converted["dir"], "model.pdiparams"))
    theirs_params = read_params(theirs, str(fresh / "model.pdiparams"))
    ours_params = {ours_names[n]: a for n, a in ours_params.items()}
    theirs_params = {theirs_names[n]: a for n, a in theirs_params.items()}
    assert sorted(ours_params) == sorted(theirs_params)
    unequal = [i for i in ours_params if not np.array_equal(ours_params[i], theirs_params[i])]
    assert not unequal, f"{len(unequal)} of {len(ours_params)} parameters differ"
