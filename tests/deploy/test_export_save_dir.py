"""``mobileseg export --save_dir``: only an export of ours is ever replaced, and then only its own
files; a kill, a second export at the same time or a full disk never leaves a mix or a
half-written folder (the reliability issue's data-loss cases)."""

import os
import signal
import subprocess
import time

import numpy as np
import paddle
import pytest

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import digests, small_disk
from helpers.train_helpers import config_dict, run_module, write_config
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.deploy import export as E
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy.runners import PredictorOptions, create_runner
from mobileseg_paddle.errors import UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, weights) of a small MobileSeg (no dataset files needed to export)."""
    root = tmp_path_factory.mktemp("tiny")
    config = write_config(root / "tiny.yml", config_dict(root / "data"))
    model, _ = build_model(config, drop_pretrained=True)
    weights = str(root / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    return config, weights


def _export(tiny, save_dir, *extra):
    config, weights = tiny
    return run_module("export", "--config", config, "--model_path", weights, "--save_dir",
                      save_dir, "--program", "legacy", *extra)


def _run_export(folder, shape=(1, 3, 64, 64)):
    """The exported program's output for a fixed input (Paddle Inference, no oneDNN)."""
    runner = create_runner(DeployConfig(str(folder)), opts=PredictorOptions(enable_mkldnn=False))
    return runner(np.random.default_rng(0).standard_normal(shape).astype("float32"))


def _error_line(proc):
    lines = [s for s in proc.stderr.splitlines() if s.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_folder_with_someone_elses_deploy_yaml_is_never_touched(tiny, tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "deploy.yaml").write_text("Deploy:\n  model: their_model.pdmodel\n")
    (project / "src" / "main.py").write_text("print('user code')\n")
    before = digests(project)
    line = _error_line(_export(tiny, project))
    assert line.startswith(f"mobileseg export: error: --save_dir {project} is not empty and "
                           f"holds no export of mobileseg")
    assert digests(project) == before
    assert sorted(os.listdir(tmp_path)) == ["project"]  # no staging folder left either


def test_exporting_into_the_checkpoint_folder_keeps_the_checkpoint(tiny, tmp_path):
    ckpt = tmp_path / "best_model"
    ckpt.mkdir()
    weights = ckpt / "model.pdparams"
    weights.write_bytes(open(tiny[1], "rb").read())
    before = digests(ckpt)
    line = _error_line(run_module("export", "--config", tiny[0], "--model_path", weights,
                                  "--save_dir", ckpt))
    assert "holds no export of mobileseg" in line
    assert digests(ckpt) == before


def test_reexport_replaces_only_our_files(tiny, tmp_path):
    out = tmp_path / "inference"
    assert _export(tiny, out).returncode == 0
    (out / "results").mkdir()
    (out / "results" / "mask.png").write_bytes(b"user's result")
    (out / "notes.txt").write_text("mine")
    proc = run_module("export", "--config", tiny[0], "--model_path", tiny[1], "--save_dir", out,
                      "--program", "pir")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the old export's model.pdmodel went with it; the user's files stayed
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.json", "model.pdiparams", "notes.txt",
                                       "results"]
    assert (out / "results" / "mask.png").read_bytes() == b"user's result"
    assert DeployConfig(str(out)).files == {"pir": "model.json", "params": "model.pdiparams"}


def test_kill_during_export_leaves_the_previous_export_loadable(tiny, tmp_path):
    out = tmp_path / "inference"
    assert _export(tiny, out, "--output_op", "none").returncode == 0
    before, want = digests(out), _run_export(out)
    proc = _export_popen(tiny, out, "--output_op", "argmax")
    deadline = time.time() + 240
    while not any(n.startswith(".inference.partial-") for n in os.listdir(tmp_path)):
        assert proc.poll() is None and time.time() < deadline, "the export never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert digests(out) == before
    np.testing.assert_array_equal(_run_export(out), want)
    # the next export cleans the killed one's staging folder up and completes
    assert _export(tiny, out, "--output_op", "argmax").returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["inference"]
    assert _run_export(out).dtype == np.int32


def _export_popen(tiny, out, *extra):
    config, weights = tiny
    return run_module("export", "--config", config, "--model_path", weights, "--save_dir", out,
                      "--program", "legacy", *extra, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)


def test_two_exports_into_one_folder_at_once_end_with_one_complete_export(tiny, tmp_path):
    out = tmp_path / "inference"
    procs = [_export_popen(tiny, out, "--output_op", op) for op in ("none", "argmax")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    deploy = DeployConfig(str(out))
    result = _run_export(out)
    # whichever finished last: its deploy.yaml and its program, never one with the other's
    if deploy.output_op == "argmax":
        assert result.dtype == np.int32 and result.shape == (1, 64, 64)
    else:
        assert result.dtype == np.float32 and result.shape == (1, 4, 64, 64)
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.pdiparams", "model.pdmodel"]
    assert sorted(os.listdir(tmp_path)) == ["inference"]


def test_a_full_disk_is_one_error_and_leaves_nothing(tiny, tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        line = _error_line(_export(tiny, disk / "inference"))
        assert line.startswith(f"mobileseg export: error: --save_dir {disk / 'inference'}: "
                               f"cannot write the export: No space left on device"), line
        assert os.listdir(disk) == []


def test_library_call_refuses_before_building(tmp_path):
    """The check runs before the model is built, so a wrong folder fails at once."""
    (tmp_path / "x.txt").write_text("keep")
    with pytest.raises(UserError, match="holds no export of mobileseg"):
        E.export(os.path.join(os.path.dirname(__file__), "missing.yml"), str(tmp_path))
    assert (tmp_path / "x.txt").read_text() == "keep"
