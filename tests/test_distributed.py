"""Two data-parallel processes on CPU through ``python -m paddle.distributed.launch`` (Paddle
picks the gloo backend without GPUs) running the same ``mobileseg train`` entry."""

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from helpers.train_helpers import ROOT, config_dict, make_data, write_config

pytestmark = pytest.mark.slow  # trains, traces or exports real models
# the ports paddle.distributed.launch picks for the workers' TCP store (its default,
# 35100-64000, overlaps the ephemeral range: see _free_port)
LAUNCH_PORTS = {"PORT_RANGE": "20000:32000"}


def test_two_processes_train_in_step(tmp_path):
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=6, batch_size=2))
    save_dir, log_dir = tmp_path / "out", tmp_path / "log"
    entry = os.path.join(ROOT, "tests", "helpers", "dist_train_entry.py")
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(log_dir), entry, "train", "--config", cfg, "--device", "cpu",
         "--save_dir", str(save_dir), "--save_interval", "6", "--log_iters", "2"],
        capture_output=True, text=True, timeout=240,
        env=dict(os.environ, **LAUNCH_PORTS))
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


# --- two nodes on loopback: ``launch --nnodes 2`` twice, one process each ------------------------

ENTRY = os.path.join(ROOT, "tests", "helpers", "dist_train_entry.py")
NODE_DEATH_LIMIT = 60  # seconds the surviving node may take to exit


def _free_port():
    """A free port below the ephemeral range. A client that retries connect() to a local port
    of that range until the server listens can connect to itself, when the kernel picks the
    same number as its source port: that is how a run failed once (Paddle's TCP store: worker 1
    "connected" before worker 0 listened, then "Stop_waiting response is expected", and worker
    0 could not bind the port)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        first_ephemeral = int(f.read().split()[0])
    for port in random.sample(range(10000, first_ephemeral), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000-{first_ephemeral - 1}")


class TwoNodes:
    """Two ``paddle.distributed.launch --nnodes 2`` processes on 127.0.0.1, each in its own
    session; ``close`` SIGKILLs whatever is left of them (launch and workers)."""

    def __init__(self, tmp, name, train_args, env=None):
        port = _free_port()
        env = dict(env or {}, **LAUNCH_PORTS)
        self.log_dirs = [tmp / f"{name}-node{r}" for r in (0, 1)]
        self.procs = []
        for rank in (0, 1):
            out = open(tmp / f"{name}-launch{rank}.out", "w")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2",
                 "--master", f"127.0.0.1:{port}", "--rank", str(rank), "--nproc_per_node", "1",
                 "--host", "127.0.0.1", "--log_dir", str(self.log_dirs[rank]), ENTRY, "train",
                 *map(str, train_args)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, **(env or {}))))
            out.close()
        self.outs = [tmp / f"{name}-launch{r}.out" for r in (0, 1)]
        self.known = {p.pid for p in self.procs}

    def workers(self, rank):
        """The worker processes the launch of node ``rank`` started (its children)."""
        pid = self.procs[rank].pid
        kids = set()
        for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}") else []:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids |= {int(k) for k in f.read().split()}
            except OSError:
                pass
        self.known |= kids
        return kids

    def signal_node(self, rank, sig, launch=True, workers=True):
        targets = (self.workers(rank) if workers else set()) | (
            {self.procs[rank].pid} if launch else set())
        for pid in targets:
            try:
                os.killpg(pid, sig)  # each is a session (and group) leader
            except (ProcessLookupError, PermissionError):
                pass

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        return [p.returncode for p in self.procs]

    def wait_for(self, path, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                self.workers(self.procs.index(p))
            if path.exists():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        raise AssertionError(f"{path} did not appear\n{self.tail()}")

    def log(self, rank):
        return (self.log_dirs[rank] / "workerlog.0").read_text()

    def assert_survivor_exits(self, what):
        """Node 0 exits non-zero within NODE_DEATH_LIMIT seconds of node 1 having ``what``."""
        start = time.monotonic()
        try:
            self.procs[0].wait(timeout=NODE_DEATH_LIMIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"node 0 still running {NODE_DEATH_LIMIT} s after node 1 "
                                 f"{what}\n{self.tail()}") from None
        assert time.monotonic() - start < NODE_DEATH_LIMIT
        assert self.procs[0].returncode != 0

    def tail(self, n=3000):
        return "\n".join(f"--- {o.name}\n{o.read_text()[-n:]}" for o in self.outs if o.exists())

    def close(self):
        for pid in set(self.known):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _train_args(cfg, save_dir, *extra):
    return ["--config", cfg, "--device", "cpu", "--save_dir", save_dir, "--log_iters", "1", *extra]


def _iters_logged(text):
    return [int(m) for m in re.findall(r"\[TRAIN\] epoch: \d+, iter: (\d+)/", text)]


def _assert_replicas_equal(save_dir, ckpt):
    checkpoint = paddle.load(str(save_dir / ckpt / "model.pdparams"))
    replicas = [paddle.load(str(save_dir / f"rank{r}.pdparams")) for r in (0, 1)]
    weights = [k for k in checkpoint if not re.search(r"_mean$|_variance$", k)]
    assert weights
    for k in weights:
        np.testing.assert_array_equal(replicas[0][k].numpy(), replicas[1][k].numpy())
        np.testing.assert_array_equal(replicas[0][k].numpy(), checkpoint[k].numpy())


@pytest.fixture
def two_nodes():
    started = []

    def start(*args, **kwargs):
        nodes = TwoNodes(*args, **kwargs)
        started.append(nodes)
        return nodes
    yield start
    for nodes in started:
        nodes.close()


def test_two_nodes_train_in_step(tmp_path, two_nodes):
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=6, batch_size=2))
    save_dir = tmp_path / "out"  # shared, as a network file system: rank 0 writes checkpoints
    nodes = two_nodes(tmp_path, "run", _train_args(cfg, save_dir, "--save_interval", "6"))
    codes = nodes.wait(240)
    assert codes == [0, 0], nodes.tail()
    for rank in (0, 1):
        env = (nodes.log_dirs[rank] / "envlog.0").read_text()
        assert "PADDLE_TRAINERS_NUM=2" in env and f"PADDLE_TRAINER_ID={rank}" in env
        assert "PADDLE_DISTRI_BACKEND=gloo" in env
        assert "dp_degree: 2" in nodes.log(rank)
    assert re.search(r"epoch: 3, iter: 6/6", nodes.log(0))  # each rank reads half the images
    _assert_replicas_equal(save_dir, "iter_6")


def _last_complete_checkpoint(save_dir):
    from mobileseg_paddle import compat
    from mobileseg_paddle.errors import UserError
    for name in sorted((n for n in os.listdir(save_dir) if compat.is_iter_dir(n)),
                       key=compat.iteration_of, reverse=True):
        try:
            compat.check_checkpoint(str(save_dir / name))
            return name
        except UserError:
            continue
    raise AssertionError(f"no complete checkpoint in {save_dir}: {os.listdir(save_dir)}")


def test_killed_node_fails_the_other_and_training_resumes(tmp_path, two_nodes):
    iters = 30
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=iters, batch_size=2))
    save_dir = tmp_path / "out"
    args = _train_args(cfg, save_dir, "--save_interval", "5")
    nodes = two_nodes(tmp_path, "run", args)
    nodes.wait_for(save_dir / "iter_10" / "model.pdopt")
    nodes.signal_node(1, signal.SIGKILL)  # the whole node: its launch and its worker
    nodes.assert_survivor_exits("died")
    survivor = nodes.outs[0].read_text()
    # gloo notices the closed sockets at the next all-reduce and the worker aborts
    assert re.search(r"Connection reset by peer|TIMEOUT self_rank = 0 pair_rank = 1|"
                     r"mobileseg train: error: ", survivor), nodes.tail()
    assert max(_iters_logged(nodes.log(0))) < iters

    last = _last_complete_checkpoint(save_dir)
    n = int(last.split("_")[1])
    resumed = two_nodes(tmp_path, "resume",
                        _train_args(cfg, save_dir, "--save_interval", "5",
                                    "--resume_model", save_dir / last))
    codes = resumed.wait(240)
    assert codes == [0, 0], resumed.tail()
    logged = _iters_logged(resumed.log(0))
    assert logged == list(range(n + 1, iters + 1)), logged
    _assert_replicas_equal(save_dir, f"iter_{iters}")


def test_hung_node_fails_the_other_through_the_watchdog(tmp_path, two_nodes):
    """A node that stops without closing its sockets (SIGSTOP: a frozen host or a partition):
    gloo would wait 30 minutes; mobileseg_paddle.distributed's watchdog ends the survivor."""
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=1000, batch_size=2))
    save_dir = tmp_path / "out"
    nodes = two_nodes(tmp_path, "run", _train_args(cfg, save_dir, "--save_interval", "5"),
                      env={"MOBILESEG_DIST_TIMEOUT": "15"})
    nodes.wait_for(save_dir / "iter_5" / "model.pdopt")
    nodes.signal_node(1, signal.SIGSTOP, launch=False)
    nodes.assert_survivor_exits("hung")
    assert re.search(r"mobileseg train: error: rank 0: no training step finished for 15 s: "
                     r"a peer replica is dead or hung", nodes.outs[0].read_text()), nodes.tail()


def test_killed_launch_stops_its_worker(tmp_path, two_nodes):
    """SIGKILL of a launch process group leaves its worker (a session of its own) running; the
    watchdog ends it, and then the other node fails as for a dead node."""
    data = make_data(tmp_path / "data", num_train=8, num_val=2)
    cfg = write_config(tmp_path / "c.yml", config_dict(data, iters=1000, batch_size=2))
    save_dir = tmp_path / "out"
    nodes = two_nodes(tmp_path, "run", _train_args(cfg, save_dir, "--save_interval", "5"))
    nodes.wait_for(save_dir / "iter_5" / "model.pdopt")
    workers = nodes.workers(1)
    assert workers
    nodes.signal_node(1, signal.SIGKILL, workers=False)
    deadline = time.monotonic() + NODE_DEATH_LIMIT
    while time.monotonic() < deadline and any(map(_running, workers)):
        time.sleep(0.5)
    assert not any(map(_running, workers)), "node 1's worker outlived its launch"
    assert "mobileseg train: error: rank 1: the launch process of this node" in nodes.log(1)
    nodes.procs[0].wait(timeout=NODE_DEATH_LIMIT)
    assert nodes.procs[0].returncode != 0
