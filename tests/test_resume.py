"""Kill training with SIGKILL after a checkpoint, resume it, and end at the requested iteration
with every checkpoint complete; the resumed run continues the iteration count and LR schedule."""

import os
import re
import signal
import subprocess
import time

import paddle
import pytest

import mobileseg_paddle.register  # noqa: F401  (registers the MSP_ components)
from helpers.train_helpers import config_dict, make_data, run_module, train_log_values, write_config
from mobileseg_paddle import cli, compat
from mobileseg_paddle.errors import UserError

pytestmark = pytest.mark.slow  # trains, traces or exports real models

ITERS, INTERVAL = 40, 5


def _complete_checkpoints(save_dir):
    """The iter_N folders, after checking that each is complete and loads."""
    found = {}
    for name in os.listdir(save_dir):
        match = re.fullmatch(r"iter_(\d+)", name)
        if not match:
            continue
        path = os.path.join(save_dir, name)
        try:
            compat.check_checkpoint(path)
        except UserError:
            assert os.listdir(path) == [], f"{path} is partly written"  # the trainer's mkdir
            continue
        paddle.load(os.path.join(path, "model.pdparams"))
        paddle.load(os.path.join(path, "model.pdopt"))
        found[int(match.group(1))] = path
    return found


def test_resume_after_sigkill(tmp_path):
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=ITERS, batch_size=2))
    save_dir = tmp_path / "out"
    common = ["train", "--config", cfg, "--device", "cpu", "--save_dir", save_dir,
              "--save_interval", INTERVAL, "--log_iters", 1, "--keep_checkpoint_max", 100]

    with open(tmp_path / "first.log", "w") as log:
        proc = run_module(*common, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if (save_dir / f"iter_{INTERVAL}" / "model.pdopt").exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    saved = _complete_checkpoints(save_dir)
    last = max(saved)
    assert INTERVAL <= last < ITERS

    resumed = run_module(*common, "--resume_model", saved[last])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    iters_logged = [int(m) for m in re.findall(rf"iter: (\d+)/{ITERS}", resumed.stdout)]
    assert iters_logged[0] == last + 1 and iters_logged[-1] == ITERS

    # the LR of each logged iteration follows the schedule of an uninterrupted run
    from paddleseg.cvlibs import SegBuilder
    schedule = SegBuilder(cli.load_config(cfg)).lr_scheduler
    expected = []
    for _ in range(ITERS):
        expected.append(schedule.get_lr())
        schedule.step()
    logged = train_log_values(resumed.stdout, "lr")
    assert logged == pytest.approx(expected[last:], abs=1e-6)

    final = _complete_checkpoints(save_dir)
    assert set(range(INTERVAL, ITERS + 1, INTERVAL)) <= set(final)
    assert not [p for p in os.listdir(save_dir) if p.startswith(".")]  # no staging left
