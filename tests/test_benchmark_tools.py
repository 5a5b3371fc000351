"""benchmarks/inference_stages.py cuts both exports at the low-resolution logits: the cut
graphs must compute exactly that tensor, or the stage timings compare different work."""

import importlib.util
import os

import numpy as np
import paddle

from mobileseg_paddle.testing import max_rel_err

from deploy.benchmark import build_pair
from deploy.export import export
from deploy.python.infer import DeployConfig, OnnxRunner, PaddleRunner, PredictorOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "mobileseg",
                      "mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml")


def _stages_module():
    spec = importlib.util.spec_from_file_location(
        "inference_stages", os.path.join(ROOT, "benchmarks", "inference_stages.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cut_exports_output_the_low_resolution_logits(tmp_path):
    stages = _stages_module()
    model, _, _ = build_pair(CONFIG, seed=3)
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 256)).astype(np.float32)
    with paddle.no_grad():
        feats = model.backbone(paddle.to_tensor(x))
        decoded = model.ppseg_head([feats[i] for i in model.backbone_indices])
        expected = model.seg_heads[0](decoded[0]).numpy()
    assert expected.shape == (1, 19, 16, 32) and np.abs(expected).mean() > 0.05

    paddle_dir = os.path.dirname(export(CONFIG, str(tmp_path / "paddle"), model=model,
                                        input_shape=[-1, 3, -1, -1], fmt="paddle",
                                        program="legacy"))
    onnx_dir = os.path.dirname(export(CONFIG, str(tmp_path / "onnx"), model=model,
                                      input_shape=list(x.shape), fmt="onnx"))
    cut_paddle = stages.cut_paddle(paddle_dir, str(tmp_path / "paddle_lowres"))
    cut_onnx = stages.cut_onnx(onnx_dir, str(tmp_path / "onnx_lowres"))

    opts = PredictorOptions(cpu_threads=1)
    got_paddle = PaddleRunner(DeployConfig(os.path.join(cut_paddle, "deploy.yaml")), opts)(x)
    got_onnx = OnnxRunner(DeployConfig(os.path.join(cut_onnx, "deploy.yaml")), opts)(x)
    assert got_paddle.shape == got_onnx.shape == expected.shape
    assert max_rel_err(got_paddle, expected) < 1e-4
    assert max_rel_err(got_onnx, expected) < 1e-4
    # the served exports themselves are untouched
    served = PaddleRunner(DeployConfig(os.path.join(paddle_dir, "deploy.yaml")), opts)(x)
    assert served.shape == (1, 128, 256) and served.dtype == np.int32
