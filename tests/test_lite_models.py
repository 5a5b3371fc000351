"""The five MobileSeg models through Paddle Lite at 1x3x256x256: the x86 .nb matches our dygraph
model (relative error <= 1e-4, random weights and BN statistics) and the ARM .nb is produced with
every op supported."""

import json
import os

import numpy as np
import paddle
import pytest

from deploy.lite.convert import check_ops, convert
from deploy.lite.model_source import build_model, load_config
from deploy.lite.predict import run_nb
from deploy.lite.testing import require_lite_runtime
from mobileseg_paddle.testing import max_rel_err, randomize_

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    model = build_model(load_config(config_path(name)))
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
            "reference": reference}


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
                                  "layout": "NCHW"}
    assert manifest["num_classes"] == 19
    # GhostNet is the only model with a flatten; none of the five uses relu6 except MobileNetV2
    fixes = manifest["compat_fixes"]
    assert (fixes["flatten_contiguous_range_xshape"] > 0) == (converted["name"] == "ghostnet")
    assert (fixes["relu6_threshold"] > 0) == (converted["name"] == "mobilenetv2")
    leftovers = [n for n in os.listdir(os.path.dirname(converted["dir"])) if "partial" in n]
    assert leftovers == []
