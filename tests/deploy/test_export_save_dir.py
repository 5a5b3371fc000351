"""``mobileseg export --save_dir``: only an export of ours is ever replaced, and then only its own
files; a kill, a second export at the same time or a full disk never leaves a mix or a
half-written folder (the reliability issue's data-loss cases)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from PIL import Image

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers import ROOT, digests, small_disk
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
                      save_dir, "--program", "legacy", "--engine", "onednn", *extra)


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
                      "--program", "pir", "--engine", "onednn")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the old export's model.pdmodel went with it; the user's files stayed
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.json", "model.pdiparams", "notes.txt",
                                       "results"]
    assert (out / "results" / "mask.png").read_bytes() == b"user's result"
    assert DeployConfig(str(out)).files == {"pir": "model.json", "params": "model.pdiparams"}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_kill_during_export_leaves_the_previous_export_loadable(tiny, tmp_path, sig):
    out = tmp_path / "inference"
    assert _export(tiny, out, "--output_op", "none").returncode == 0
    before, want = digests(out), _run_export(out)
    proc = _export_popen(tiny, out, "--output_op", "argmax")
    deadline = time.time() + 240
    while not any(n.startswith(".inference.partial-") for n in os.listdir(tmp_path)):
        assert proc.poll() is None and time.time() < deadline, "the export never started writing"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert digests(out) == before
    np.testing.assert_array_equal(_run_export(out), want)
    if sig == signal.SIGTERM:  # stopped like Ctrl-C: its staging folder removed on the way out
        assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert err.strip().splitlines()[-1] == "mobileseg export: terminated"
        assert sorted(os.listdir(tmp_path)) == ["inference"]
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
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.openvino.pdmodel", "model.pdiparams",
                                       "model.pdmodel"]
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


# --- a kill at every step of the switch-over (the journal, backups, commit, recovery) ---------

# Runs ``_move_into_place(staging, save_dir)`` and SIGKILLs itself right after the STEP-th
# rename/removal that touches a path below ROOT: every moment of the switch-over, one by one.
_KILL_AFTER_STEP = r"""
import os, signal, sys
root, step, staging, save_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
from mobileseg_paddle.deploy import export as E
done = []
def counted(fn):
    def call(*args, **kwargs):
        result = fn(*args, **kwargs)
        if any(isinstance(a, str) and a.startswith(root) for a in args):
            done.append((fn.__name__, args))
            if len(done) == step:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    return call
for name in ("rename", "replace", "remove", "unlink", "rmdir"):
    setattr(os, name, counted(getattr(os, name)))
E._move_into_place(staging, save_dir)
print(len(done))
"""


@pytest.fixture(scope="module")
def two_exports(tiny, tmp_path_factory):
    """Two real exports of the same weights that differ in every file (output_op none/argmax,
    legacy/pir program): (folder of A, folder of B)."""
    root = tmp_path_factory.mktemp("two")
    a, b = root / "a", root / "b"
    assert _export(tiny, a, "--output_op", "none").returncode == 0
    proc = run_module("export", "--config", tiny[0], "--model_path", tiny[1], "--save_dir", b,
                      "--program", "both", "--engine", "onednn")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return a, b


def _switch_killed_at(step, two_exports, tmp_path):
    """A's export in tmp_path/inference (with a user's results/), B's staged beside it, the
    switch-over run in a subprocess killed after ``step`` file operations. Returns (killed,
    the folder, digests of A with the user's files, the same for B)."""
    a, b = two_exports
    out = tmp_path / "inference"
    shutil.copytree(a, out)
    (out / "results").mkdir()
    (out / "results" / "mask.png").write_bytes(b"user's result")
    (out / "notes.txt").write_text("mine")
    user = {k: v for k, v in digests(out).items() if k.startswith(("results", "notes"))}
    staging = tmp_path / ".inference.partial-kill"
    shutil.copytree(b, staging)
    want_a, want_b = dict(digests(a), **user), dict(digests(b), **user)
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_STEP, str(tmp_path), str(step),
                           str(staging), str(out)], capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, PYTHONPATH=ROOT))
    killed = proc.returncode == -signal.SIGKILL
    assert killed or proc.returncode == 0, proc.stderr[-2000:]
    return killed, out, want_a, want_b


def test_a_kill_at_any_step_of_the_switch_over_leaves_one_complete_export(two_exports, tmp_path):
    """Killed after each rename/removal in turn, the folder always loads afterwards (the load
    recovers it) as exactly the previous export or exactly the new one, the user's files
    untouched, nothing left beside it; before the new deploy.yaml is in, it is the previous."""
    a, b = two_exports
    out_a, out_b = _run_export(a), _run_export(b)
    seen, step = [], 1
    while True:
        case = tmp_path / f"step{step}"
        case.mkdir()
        killed, out, want_a, want_b = _switch_killed_at(step, two_exports, case)
        if not killed:  # past the last step: the switch completed
            assert digests(out) == want_b
            break
        deploy = DeployConfig(str(out))  # recovers
        got = digests(out)
        assert got in (want_a, want_b), (step, sorted(got))
        version = "A" if got == want_a else "B"
        np.testing.assert_array_equal(_run_export(out), out_a if version == "A" else out_b)
        assert deploy.output_op == ("none" if version == "A" else "argmax")
        assert sorted(os.listdir(case)) == ["inference"], step  # staging and backups gone
        seen.append(version)
        step += 1
    # journal, 4 backups (deploy.yaml first), 4 of the 5 new files in: the previous export; the
    # 5th (deploy.yaml, the commit) and the clean-up after it: the new one
    assert seen[:9] == ["A"] * 9 and set(seen[9:]) == {"B"}, seen


def test_the_next_export_recovers_a_killed_switch_over(tiny, two_exports, tmp_path):
    killed, out, want_a, _ = _switch_killed_at(2, two_exports, tmp_path)  # old deploy.yaml away
    assert killed and not (out / "deploy.yaml").exists()
    assert _export(tiny, out, "--output_op", "argmax").returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["inference"]
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.openvino.pdmodel", "model.pdiparams",
                                       "model.pdmodel", "notes.txt", "results"]
    assert (out / "results" / "mask.png").read_bytes() == b"user's result"
    assert _run_export(out).dtype == np.int32


_KILL_CLI_AFTER_OLD_YAML_MOVED = r"""
import os, signal, sys
save_dir = os.path.abspath(sys.argv[1])
real = os.rename
def rename(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if str(src) == os.path.join(save_dir, "deploy.yaml"):  # the old deploy.yaml moved away
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
from mobileseg_paddle import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def test_mobileseg_infer_loads_the_previous_export_after_a_kill_at_the_worst_moment(
        tiny, tmp_path):
    """The real ``mobileseg export``, killed right after it moved the previous deploy.yaml
    away (the probe's failure: the folder held only the marker and model files); then the real
    ``mobileseg infer`` runs the previous export, whose files are all back, byte for byte."""
    out = tmp_path / "inference"
    assert _export(tiny, out, "--output_op", "none").returncode == 0
    before = digests(out)
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(image)

    def infer(save_dir):
        proc = run_module("infer", "--config", out, "--image_path", image, "--save_dir",
                          save_dir, "--device", "cpu", "--enable_mkldnn", "False")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return digests(save_dir)

    want = infer(tmp_path / "r1")
    config, weights = tiny
    proc = subprocess.run([sys.executable, "-c", _KILL_CLI_AFTER_OLD_YAML_MOVED, str(out),
                           "export", "--config", config, "--model_path", weights, "--save_dir",
                           str(out), "--program", "legacy", "--output_op", "argmax"],
                          capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "deploy.yaml").exists()  # killed at that moment indeed
    assert infer(tmp_path / "r2") == want
    assert digests(out) == before
    assert sorted(os.listdir(tmp_path)) == ["a.png", "inference", "r1", "r2"]


def test_a_marker_of_an_older_version_is_one_error_and_re_export_works(tiny, tmp_path):
    """A marker without a journal (left by a version before the journal) cannot be recovered:
    loading says so in one line; exporting into the folder replaces the export files."""
    out = tmp_path / "inference"
    assert _export(tiny, out).returncode == 0
    (out / "deploy.yaml").unlink()
    (out / ".mobileseg-export-incomplete").write_text("")
    with pytest.raises(UserError) as e:
        DeployConfig(str(out))
    assert str(e.value) == (f"{out}: holds an interrupted export (`mobileseg export` was stopped "
                            f"while replacing its files): re-export the model into it")
    assert _export(tiny, out, "--output_op", "softmax").returncode == 0
    assert sorted(os.listdir(out)) == ["deploy.yaml", "model.openvino.pdmodel", "model.pdiparams",
                                       "model.pdmodel"]
    assert DeployConfig(str(out)).output_op == "softmax"


def test_a_user_file_named_like_a_new_export_file_is_not_replaced(tiny, tmp_path):
    out = tmp_path / "inference"
    assert _export(tiny, out).returncode == 0  # legacy: no model.json
    (out / "model.json").write_text("the user's own json")
    before = digests(out)
    proc = run_module("export", "--config", tiny[0], "--model_path", tiny[1], "--save_dir", out,
                      "--program", "both", "--engine", "onednn")
    line = _error_line(proc)
    assert line == (f"mobileseg export: error: --save_dir {out}: model.json is not a file of the "
                    f"export there (its deploy.yaml does not name it) and would be replaced; "
                    f"move it away or choose another folder")
    assert digests(out) == before
    assert sorted(os.listdir(tmp_path)) == ["inference"]
