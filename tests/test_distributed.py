"""Two data-parallel processes on CPU through ``python -m paddle.distributed.launch`` (Paddle
picks the gloo backend without GPUs) running the same ``mobileseg train`` entry."""

import os
import re
import subprocess
import sys

import numpy as np
import paddle

from train_helpers import ROOT, config_dict, make_data, write_config


def test_two_processes_train_in_step(tmp_path):
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=6, batch_size=2))
    save_dir, log_dir = tmp_path / "out", tmp_path / "log"
    entry = os.path.join(ROOT, "tests", "dist_train_entry.py")
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(log_dir), entry, "train", "--config", cfg, "--device", "cpu",
         "--save_dir", str(save_dir), "--save_interval", "6", "--log_iters", "2"],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for rank in (0, 1):
        env = (log_dir / f"envlog.{rank}").read_text()
        assert "PADDLE_TRAINERS_NUM=2" in env and "PADDLE_DISTRI_BACKEND=gloo" in env
        assert "dp_degree: 2" in (log_dir / f"workerlog.{rank}").read_text()
    # each rank reads half of the 8 images: 2 batches of 2 per epoch, so iteration 6 is in
    # epoch 3 (a single process would still be in epoch 2)
    rank0_log = (log_dir / "workerlog.0").read_text()
    assert re.search(r"epoch: 3, iter: 6/6", rank0_log)

    # gradients are all-reduced: the two replicas hold the same weights (BatchNorm running
    # statistics stay per process, as without SyncBatchNorm)
    checkpoint = paddle.load(str(save_dir / "iter_6" / "model.pdparams"))
    replicas = [paddle.load(str(save_dir / f"rank{r}.pdparams")) for r in (0, 1)]
    weights = [k for k in checkpoint if not re.search(r"_mean$|_variance$", k)]
    for k in weights:
        np.testing.assert_array_equal(replicas[0][k].numpy(), replicas[1][k].numpy())
        np.testing.assert_array_equal(replicas[0][k].numpy(), checkpoint[k].numpy())
    stats = [k for k in checkpoint if k.endswith("_mean")]
    assert any(not np.array_equal(replicas[0][k].numpy(), replicas[1][k].numpy()) for k in stats)
