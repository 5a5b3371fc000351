"""The pinned environment survives paddle2onnx run with its DEFAULT options.

``paddle2onnx`` (command line, and ``paddle2onnx.export`` without ``optimize_tool="None"``)
folds constants with Polygraphy after setting ``POLYGRAPHY_AUTOINSTALL_DEPS=1``: Polygraphy then
pip-installs what it lazy-imports and finds missing, ``onnx_graphsurgeon>=0.3.27`` (whose latest
release pulls the latest ml_dtypes, which needs numpy 2: numpy was upgraded to 2.x and ``import
cv2`` broke) and ``sympy`` (for onnxruntime's symbolic shape inference). requirements.txt pins
them at versions that work with numpy 1.26.4, so that Polygraphy finds them and installs nothing.

pip is kept off every index while paddle2onnx runs (PIP_NO_INDEX, empty PIP_FIND_LINKS): with
the pins installed Polygraphy never calls it, so this changes nothing; without them the test
fails on the installation command it logged instead of replacing packages of the environment
it runs in (and it never needs the network)."""

import os
import subprocess
import sys

import pytest

from helpers.train_helpers import config_dict, write_config

pytestmark = pytest.mark.slow  # exports a model, then runs paddle2onnx and Polygraphy

# Static: paddle2onnx 2.1.0 converts adaptive pooling for static shapes only. 128 keeps the
# 1/32 feature map (4x4) at least as large as the context module's largest bin (4): smaller
# inputs give an AveragePool with stride 0, on which ONNX shape inference dies with SIGFPE.
INPUT_SHAPE = [1, 3, 128, 128]


def _pip_freeze():
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"],
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.splitlines()


def test_default_paddle2onnx_installs_nothing(tmp_path):
    from mobileseg_paddle.deploy import export as E

    config = write_config(tmp_path / "tiny.yml", config_dict(tmp_path / "no-data"))
    model_dir = tmp_path / "paddle"
    E.export(config, str(model_dir), input_shape=INPUT_SHAPE, program="pir")
    assert (model_dir / "model.json").is_file() and (model_dir / "model.pdiparams").is_file()

    before = _pip_freeze()
    script = os.path.join(os.path.dirname(sys.executable), "paddle2onnx")
    assert os.path.isfile(script), f"no paddle2onnx console script next to {sys.executable}"
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    onnx_file = tmp_path / "model.onnx"
    run = subprocess.run([script, "--model_dir", str(model_dir), "--model_filename", "model.json",
                          "--params_filename", "model.pdiparams", "--save_file", str(onnx_file)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    after = _pip_freeze()

    attempted = [line for line in log.splitlines() if "Running installation command" in line]
    assert not attempted, ("Polygraphy tried to pip-install packages missing from this "
                           "environment (install requirements.txt):\n" + "\n".join(attempted))
    assert after == before, "pip freeze changed:\n" + "\n".join(
        [f"- {x}" for x in before if x not in after] + [f"+ {x}" for x in after if x not in before])
    assert run.returncode == 0, log[-4000:]
    assert "Skip folding" not in log, log[-4000:]  # Polygraphy's folding ran with the pins

    import onnx
    onnx.checker.check_model(onnx.load(str(onnx_file)), full_check=True)

    probe = subprocess.run(
        [sys.executable, "-c", "import cv2, numpy, paddleseg; "
         "assert int(numpy.__version__.split('.')[0]) < 2, numpy.__version__; "
         "print(numpy.__version__, cv2.__version__)"],
        capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-4000:]
