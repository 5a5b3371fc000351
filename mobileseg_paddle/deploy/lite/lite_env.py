"""The runtime client: find the Python interpreter that has Paddle Lite (``paddlelite`` 2.13rc0,
Python <= 3.10) and run ``lite_worker.py`` in it.

Two kinds, tried in this order:
- ``MOBILESEG_LITE_PYTHON``: the user's own python3.x with paddlelite and numpy, run directly.
- the Debian 11 root made by ``deploy/lite/setup_env.sh`` (``MOBILESEG_LITE_ROOT``, default
  ``~/.cache/mobileseg/lite-py39``), entered with ``chroot`` in a private mount namespace, where
  the host's ``/`` is bind-mounted at ``/host``: a host path ``p`` is ``/host/p`` inside. The
  mounts vanish with the process. Needs root.

One worker process per request: the request goes in as JSON on stdin, the result comes back as
one JSON line on stdout (see ``lite_worker.py``). The methods take and return host paths and
numpy arrays.
"""

import json
import os
import signal
import subprocess

from mobileseg_paddle import resources
from mobileseg_paddle.errors import UserError

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lite_worker.py")
SETUP_SCRIPT = resources.path("deploy", "lite", "setup_env.sh")  # a checkout's or a wheel's copy
DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "mobileseg", "lite-py39")
STAMP_NAME = ".mobileseg-lite-stamp"
RESULT_PREFIX = "MOBILESEG_LITE_RESULT "
SETUP_HINT = f"run `sudo bash {SETUP_SCRIPT}` or set MOBILESEG_LITE_PYTHON"


class LiteRuntime:
    """A way to run ``lite_worker.py``: ``python`` directly, or python3 inside ``root``."""

    def __init__(self, python=None, root=None):
        if (python is None) == (root is None):
            raise ValueError("give exactly one of python, root")
        self.python, self.root = python, root
        self._version = None

    @classmethod
    def find(cls):
        """The runtime named by the environment, or the default root; UserError if none is set up."""
        python = os.environ.get("MOBILESEG_LITE_PYTHON")
        if python:
            if not os.access(python, os.X_OK):
                raise UserError(f"MOBILESEG_LITE_PYTHON={python}: not an executable file")
            return cls(python=python)
        root = os.environ.get("MOBILESEG_LITE_ROOT", DEFAULT_ROOT)
        if not os.path.isfile(os.path.join(root, STAMP_NAME)):
            raise UserError(f"no Paddle Lite environment in {root}: {SETUP_HINT}")
        if os.geteuid() != 0:
            raise UserError(f"entering the Paddle Lite root {root} needs root (chroot); run as "
                            f"root or set MOBILESEG_LITE_PYTHON to a python3.7-3.10 with paddlelite")
        return cls(root=root)

    def __repr__(self):
        return f"LiteRuntime(python={self.python!r})" if self.python else f"LiteRuntime(root={self.root!r})"

    def path(self, host_path):
        """How the worker sees ``host_path``."""
        p = os.path.abspath(host_path)
        return p if self.python else "/host" + p

    def command(self):
        """argv that runs ``lite_worker.py``."""
        if self.python:
            return [self.python, WORKER]
        script = ('mount -t proc proc "$0/proc" && mkdir -p "$0/host" && mount --rbind / "$0/host" '
                  '&& exec chroot "$0" "$@"')
        env = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root",
               "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, self.root,
                *env, "python3", self.path(WORKER)]

    def run_worker(self, request, timeout=900):
        """Run one request (paths already translated with ``path``); return (result dict, the
        worker's combined output). UserError on failure, with the worker's own error line when
        it wrote one, else the tail of its output."""
        try:
            proc = subprocess.run(self.command(), input=json.dumps(request).encode(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except FileNotFoundError as e:
            raise UserError(f"cannot start the Lite interpreter ({e.filename}): {SETUP_HINT}") from None
        except subprocess.TimeoutExpired:
            raise UserError(f"the Lite worker took over {timeout} s: {request['cmd']}") from None
        log = proc.stdout.decode("utf-8", "replace")
        result = None
        for line in log.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
        if result is not None and "error" in result:
            raise UserError(result["error"])
        if proc.returncode != 0 or result is None:
            tail = "\n".join(line for line in log.strip().splitlines()[-8:]
                             if not line.startswith(RESULT_PREFIX))
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit {proc.returncode}")
            raise UserError(f"Paddle Lite failed ({how}) in `{request['cmd']}`:\n{tail}")
        if "version" in result:
            self._version = result["version"]
        return result, log

    # --- the requests -----------------------------------------------------------------------

    def version(self):
        """Paddle Lite's version string, e.g. ``v2.13-rc`` (known after any request)."""
        if self._version is None:
            self.run_worker({"cmd": "version"})
        return self._version

    def opt(self, model_file, param_file, outputs, check_only=False, fp16=(), folded=()):
        """Op report of every target of ``outputs`` ({target: out prefix}), then, only if no
        target lacks a kernel (and not ``check_only``), opt -> prefix.nb per target (FP16
        kernels for the targets in ``fp16``). ``folded``: ops without kernels of their own that
        opt folds into others (the quant ops of an INT8 program), not counted as unsupported.
        Returns {"version", "reports": {target: {"ops", "unsupported"}}, "models": {target:
        .nb path}}."""
        result, _ = self.run_worker({
            "cmd": "opt", "model_file": self.path(model_file), "param_file": self.path(param_file),
            "outputs": {t: self.path(p) for t, p in outputs.items()}, "check_only": check_only,
            "fp16": list(fp16), "folded": list(folded)})
        result["models"] = {t: outputs[t] + ".nb" for t in result["models"]}
        return result

    def run(self, nb, x, threads=1, expect_version=None):
        """(Lite version, outputs of ``nb`` for input ``x``); outputs is None when the version is
        not ``expect_version`` (the model is then not loaded)."""
        import numpy as np

        from .lite_worker import decode_array, encode_array
        result, _ = self.run_worker({"cmd": "run", "nb": self.path(nb), "threads": threads,
                                     "input": encode_array(np.asarray(x, np.float32)),
                                     "expect_version": expect_version})
        outputs = result.get("outputs")
        return result["version"], None if outputs is None else [decode_array(o) for o in outputs]

    def bench(self, nb, shape, threads=1, warmup=10, repeats=50, expect_version=None):
        """Latency of ``nb`` on a random input of ``shape``: dict with version, median_ms,
        mean_ms, min_ms ... (only version when it is not ``expect_version``)."""
        result, _ = self.run_worker({"cmd": "bench", "nb": self.path(nb), "shape": list(shape),
                                     "threads": threads, "warmup": warmup, "repeats": repeats,
                                     "expect_version": expect_version})
        return result
