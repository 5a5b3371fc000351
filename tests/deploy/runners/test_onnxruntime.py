"""The onnxruntime runner: ONNX exports (static and dynamic shapes, two input sizes) and a bare
.onnx give the dygraph model's outputs (relative error <= 1e-4); the profile option; running
it loads no paddle."""

import json
import subprocess
import sys

import pytest
from test_export import MODELS, exports

from helpers.numerics import max_rel_err
from mobileseg_paddle import resources
from mobileseg_paddle.deploy import runners as R
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.errors import UserError

TOL = 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_matches_dygraph(name, dygraph_case):
    folders = exports()[name]
    dynamic = R.create_runner(DeployConfig(folders["onnx_dynamic"]))
    assert dynamic.backend == "onnxruntime"
    for size, (x, ref) in dygraph_case(name).items():
        err = max_rel_err(dynamic(x), ref)
        assert err <= TOL, f"{name} dynamic ONNX {size}: relative error {err:.2e}"
        if f"onnx_{size[0]}x{size[1]}" in folders:
            static = R.create_runner(DeployConfig(folders[f"onnx_{size[0]}x{size[1]}"]),
                                     "onnxruntime")
            err = max_rel_err(static(x), ref)
            assert err <= TOL, f"{name} static ONNX {size}: relative error {err:.2e}"


def test_bare_onnx_file_and_profile(tmp_path, dygraph_case):
    deploy = DeployConfig(exports()["mobilenetv2"]["onnx_dynamic"])
    files = R.ModelFiles.from_onnx(deploy.file("onnx"))
    x, ref = dygraph_case("mobilenetv2")[(128, 256)]
    opts = R.PredictorOptions(cpu_threads=1, profile_file_prefix=str(tmp_path / "profile"))
    with R.create_runner(files, "auto", opts) as runner:
        assert max_rel_err(runner(x), ref) <= TOL
        with open(runner.end_profiling()) as f:
            events = json.load(f)
    assert any(e.get("cat") == "Node" for e in events)
    with pytest.raises(UserError, match="onnx file not found"):
        R.ModelFiles.from_onnx(str(tmp_path / "none.onnx"))
    with pytest.raises(UserError, match="TensorRT runs with the paddle backend"):
        R.create_runner(files, "auto", R.PredictorOptions(device="gpu", use_trt=True))


def test_running_onnxruntime_loads_no_paddle():
    """The benchmark's onnxruntime workers build their runner through the layer: neither that
    nor running it may load paddle (or paddleseg), or every onnxruntime measurement runs beside
    Paddle's OpenMP and oneDNN libraries."""
    code = ("import sys, numpy as np\n"
            "from mobileseg_paddle.deploy.benchmark import make_runner\n"
            "from mobileseg_paddle.deploy.infer import Segmenter\n"
            "from mobileseg_paddle.deploy.runners import create_runner\n"
            "from mobileseg_paddle.deploy.deploy_yaml import DeployConfig\n"
            f"path = {exports()['mobilenetv2']['onnx_dynamic']!r}\n"
            "make_runner({'kind': 'deploy', 'path': path, 'threads': 1})"
            "(np.zeros((1, 3, 64, 64), np.float32))\n"
            "seg = Segmenter.from_deploy(path)\n"
            "seg.predict([np.zeros((64, 96, 3), np.uint8)])\n"
            "print(sorted(m for m in ('paddle', 'paddleseg') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], env=resources.child_env(),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
