"""A watchdog for multi-process training started by ``python -m paddle.distributed.launch``.

What Paddle 3.3.1 does by itself (CPU, gloo): when a peer process dies, its sockets are closed
and the survivors' next all-reduce fails at once (``gloo::IoException ... Connection reset by
peer`` or ``TIMEOUT ... pair_rank``), the worker aborts and its launch exits non-zero. Two cases
it does not cover, which this module does:

* the launch process of this node dies (SIGKILL) but its worker, started in its own process
  group, is not killed with it and keeps training unattended;
* a peer stops without closing its sockets (a frozen node, a network partition): gloo's
  collectives then wait for Paddle's 30-minute default.

``start(model)`` starts one daemon thread (only when the launch runs more than one process)
that checks, once a second, that the launch parent is alive and that the model ran a forward
pass within ``MOBILESEG_DIST_TIMEOUT`` seconds (default 300; counted from the first forward
pass, so building and the first batch are not limited). Otherwise it prints one line
``mobileseg train: error: ...`` and ends the process with status 3 (``os._exit``: the main
thread is blocked inside a collective and cannot be interrupted).
"""

import os
import sys
import threading
import time

EXIT_PEER_LOST = 3
TIMEOUT_ENV = "MOBILESEG_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


def world_size():
    try:
        return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    except ValueError:
        return 1


def _timeout():
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        return DEFAULT_TIMEOUT


def _fail(message):
    sys.stdout.flush()
    sys.stderr.write(f"mobileseg train: error: {message}\n")
    sys.stderr.flush()
    os._exit(EXIT_PEER_LOST)


class Watchdog:
    def __init__(self, timeout, parent, interval=1.0):
        self.timeout, self.parent, self.interval = timeout, parent, interval
        self.last_progress = None  # set by the first forward pass
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mobileseg-dist-watchdog",
                                       daemon=True)

    def progress(self, *_):
        self.last_progress = time.monotonic()

    def stop(self):
        self._stop.set()

    def _run(self):
        rank = os.environ.get("PADDLE_TRAINER_ID", "?")
        while not self._stop.wait(self.interval):
            if os.getppid() != self.parent:
                _fail(f"rank {rank}: the launch process of this node (pid {self.parent}) died; "
                      f"stopping this replica")
            last = self.last_progress
            if last is not None and time.monotonic() - last > self.timeout:
                _fail(f"rank {rank}: no training step finished for {self.timeout:g} s: a peer "
                      f"replica is dead or hung ({os.environ.get('PADDLE_TRAINER_ENDPOINTS', '')}"
                      f"); resume from the last checkpoint with --resume_model "
                      f"(limit: {TIMEOUT_ENV})")


def start(model):
    """The watchdog for ``model``'s training when this is one of several processes, else None."""
    if world_size() <= 1:
        return None
    dog = Watchdog(_timeout(), os.getppid())
    model.register_forward_post_hook(lambda layer, inputs, outputs: dog.progress())
    dog.thread.start()
    return dog
