"""The command lines, run as users run them: a missing config is exit status 2 and exactly one
line on stderr that names the file, with nothing from paddle's import before it (its "No
ccache found" warning is filtered in mobileseg_paddle/__init__.py). Every command, PaddleSeg's
or ours, words it the same way."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.parametrize("argv, expected", [
    (["-m", "mobileseg_paddle", "export"], "mobileseg export: error: --config {}: file not found"),
    ([os.path.join(ROOT, "deploy", "export.py")],
     "mobileseg export: error: --config {}: file not found"),
    (["-m", "mobileseg_paddle", "train"], "mobileseg train: error: --config {}: file not found"),
    ([os.path.join(ROOT, "deploy", "python", "infer.py"), "--image_path", "x.png"],
     "mobileseg infer: error: deploy.yaml not found: {}"),
    (["-m", "mobileseg_paddle", "quant"], "mobileseg quant: error: --config {}: file not found"),
    ([os.path.join(ROOT, "deploy", "slim", "quant", "ptq.py")],
     "mobileseg quant: error: --config {}: file not found"),
    ([os.path.join(ROOT, "deploy", "slim", "quant", "qat_train.py")],
     "mobileseg train: error: --config {}: file not found"),
    ([os.path.join(ROOT, "deploy", "slim", "quant", "qat_export.py")],
     "mobileseg quant: error: --config {}: file not found"),
], ids=["mobileseg-export", "deploy/export.py", "mobileseg-train", "deploy/python/infer.py",
        "mobileseg-quant", "deploy/slim/quant/ptq.py", "deploy/slim/quant/qat_train.py",
        "deploy/slim/quant/qat_export.py"])
def test_missing_config_is_one_stderr_line(tmp_path, argv, expected):
    missing = str(tmp_path / "missing.yml")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the code's filter only
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, *argv, "--config", missing], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [expected.format(missing)], proc.stderr
