"""``mobileseg paddleseg SCRIPT ...``: PaddleSeg's own tools/train.py, val.py, predict.py and
export.py, unpacked from the vendored source that matches the installed paddleseg (v2.8.0 in
the main environment, develop in its CI step), run on our config and components."""

import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import ROOT, vendor
from helpers.train_helpers import config_dict, make_data, run_module, write_config
from mobileseg_paddle import cli, compat, paddleseg_tools

pytestmark = pytest.mark.slow  # trains, traces or exports real models


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    which = vendor.installed_paddleseg()
    if which is None:
        pytest.fail("the installed paddleseg is neither of the vendored sources")
    return os.path.join(vendor.unpack(which, tmp_path_factory.mktemp("src")), "tools")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    data = make_data(root / "data", num_train=4, num_val=2)
    return root, data, write_config(root / "c.yml", config_dict(data, iters=4, batch_size=2))


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_tool_alone_cannot_build_our_model(tools, setup):
    root, _, cfg = setup
    proc = subprocess.run([sys.executable, os.path.join(tools, "train.py"), "--config", cfg,
                           "--device", "cpu", "--save_dir", str(root / "plain")],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "The specified component (MSP_MobileSeg) was not found" in proc.stderr


def test_train_val_predict_export(tools, setup, tmp_path, capsys):
    root, data, cfg = setup
    out = tmp_path / "out"
    log = _ok(run_module("paddleseg", os.path.join(tools, "train.py"), "--config", cfg,
                         "--device", "cpu", "--save_dir", out, "--save_interval", "2",
                         "--log_iters", "2", "--do_eval", "--seed", "1"))
    # on 2.8.0 this evaluation is the one that crashed without compat's metrics fix
    assert len(re.findall(r"\[EVAL\] #Images: 2 mIoU: \d", log)) == 2
    for it in (2, 4):
        compat.check_checkpoint(str(out / f"iter_{it}"))
    weights = out / "best_model" / "model.pdparams"
    assert weights.is_file()
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # checkpoints fix: no staging

    log = _ok(run_module("paddleseg", os.path.join(tools, "val.py"), "--config", cfg,
                         "--device", "cpu", "--model_path", weights))
    tool_miou = float(re.search(r"\[EVAL\] #Images: 2 mIoU: ([\d.]+)", log).group(1))
    ours = cli.run_val(cli.build_parser().parse_args(
        ["val", "--config", cfg, "--device", "cpu", "--model_path", str(weights)]))
    assert tool_miou == pytest.approx(ours["miou"], abs=5e-5)  # the tool prints 4 decimals

    _ok(run_module("paddleseg", os.path.join(tools, "predict.py"), "--config", cfg,
                   "--device", "cpu", "--model_path", weights, "--image_path", data / "images",
                   "--save_dir", tmp_path / "tool_pred"))
    assert cli.main(["predict", "--config", cfg, "--device", "cpu", "--model_path", weights,
                     "--image_path", data / "images", "--save_dir", tmp_path / "our_pred"]) == 0
    names = sorted(os.listdir(data / "images"))
    assert sorted(os.listdir(tmp_path / "tool_pred" / "pseudo_color_prediction")) == names
    for name in names:
        tool_mask = np.asarray(Image.open(tmp_path / "tool_pred" / "pseudo_color_prediction" / name))
        our_mask = np.asarray(Image.open(tmp_path / "our_pred" / "pseudo_color_prediction" / name))
        np.testing.assert_array_equal(tool_mask, our_mask)

    exported = tmp_path / "export"
    _ok(run_module("paddleseg", os.path.join(tools, "export.py"), "--config", cfg,
                   "--model_path", weights, "--save_dir", exported, timeout=400))
    deploy = yaml.safe_load((exported / "deploy.yaml").read_text())["Deploy"]
    assert deploy["output_op"] == "argmax" and deploy["params"] == "model.pdiparams"
    # the exported program is the trained model (argmax of its main logit)
    from paddleseg.cvlibs import SegBuilder
    model = SegBuilder(cli.load_config(cfg)).model
    model.set_dict(paddle.load(str(weights)))
    model.eval()
    program = paddle.jit.load(str(exported / "model"))
    x = paddle.randn([1, 3, 64, 96])
    np.testing.assert_array_equal(program(x).numpy(), model(x)[0].argmax(1).numpy())


def test_two_processes_through_launch(tools, setup, tmp_path):
    _, _, cfg = setup
    log_dir, save_dir = tmp_path / "log", tmp_path / "out"
    entry = os.path.join(ROOT, "mobileseg_paddle", "__main__.py")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(log_dir), entry, "paddleseg", os.path.join(tools, "train.py"),
         "--config", cfg, "--device", "cpu", "--save_dir", str(save_dir),
         "--save_interval", "4", "--log_iters", "2", "--do_eval"],
        capture_output=True, text=True, timeout=300, env=env)
    logs = [(log_dir / f"workerlog.{rank}").read_text() for rank in (0, 1)]
    assert proc.returncode == 0, proc.stdout[-2000:] + logs[0][-2000:] + logs[1][-2000:]
    assert all("dp_degree: 2" in text for text in logs)
    # each rank reads 2 of the 4 images, one batch per epoch: iteration 2 is in epoch 2
    assert re.search(r"epoch: 2, iter: 2/4", logs[0])
    assert "[EVAL] #Images: 2 mIoU:" in logs[0]
    compat.check_checkpoint(str(save_dir / "iter_4"))


def test_runner_contract(tmp_path, capsys):
    """The script runs as __main__ with its argv, our components registered and the fixes the
    installed paddleseg needs applied; its exit status is returned and sys.argv restored."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "from paddleseg.cvlibs import manager\n"
        "from mobileseg_paddle import compat\n"
        "print(__name__, sys.argv[1:], 'MSP_MobileSeg' in manager.MODELS.components_dict,\n"
        "      compat.applied() == {f for f, n in compat.needed().items() if n})\n"
        "sys.exit(int(sys.argv[-1]))\n")
    argv = list(sys.argv)
    assert paddleseg_tools.run(str(script), ["--config", "x.yml", "3"]) == 3
    assert sys.argv == argv
    assert capsys.readouterr().out.split() == ["__main__", "['--config',", "'x.yml',", "'3']",
                                               "True", "True"]


@pytest.mark.parametrize("argv, message", [
    ([], "expected the path of a PaddleSeg script (usage: mobileseg paddleseg PATH/TO/SCRIPT.py"),
    (["no/such/train.py", "--config", "c.yml"],
     "no/such/train.py: no such file (expected a PaddleSeg script such as "),
])
def test_runner_errors_are_one_line(argv, message, capsys):
    assert cli.main(["paddleseg", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mobileseg paddleseg: error: {message}") and len(err.splitlines()) == 1


def test_runner_help(capsys):
    assert cli.main(["paddleseg", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(paddleseg_tools.USAGE) and "paddle.distributed.launch" in out
