"""Find and run the Python interpreter that has Paddle Lite (``paddlelite`` 2.13rc0, Python <= 3.10).

Two kinds, tried in this order:
- ``MOBILESEG_LITE_PYTHON``: the user's own python3.x with paddlelite and numpy, run directly.
- the Debian 11 root made by ``deploy/lite/setup_env.sh`` (``MOBILESEG_LITE_ROOT``, default
  ``~/.cache/mobileseg/lite-py39``), entered with ``chroot`` in a private mount namespace, where
  the host's ``/`` is bind-mounted at ``/host``: a host path ``p`` is ``/host/p`` inside. The
  mounts vanish with the process. Needs root.

Everything that touches Lite runs ``lite_worker.py`` (paddlelite + numpy only) through
``LiteRuntime.run_worker``; the result comes back as one JSON line.
"""

import json
import os
import signal
import subprocess

from .errors import LiteError

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "lite_worker.py")
SETUP_SCRIPT = os.path.join(HERE, "setup_env.sh")
DEFAULT_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "mobileseg", "lite-py39")
STAMP_NAME = ".mobileseg-lite-stamp"
RESULT_PREFIX = "MOBILESEG_LITE_RESULT "
SETUP_HINT = f"run `bash {os.path.relpath(SETUP_SCRIPT)}` (root) or set MOBILESEG_LITE_PYTHON"


class LiteRuntime:
    """A way to run ``lite_worker.py``: ``python`` directly, or python3 inside ``root``."""

    def __init__(self, python=None, root=None):
        if (python is None) == (root is None):
            raise ValueError("give exactly one of python, root")
        self.python, self.root = python, root
        self._version = None

    @classmethod
    def find(cls):
        """The runtime named by the environment, or the default root; LiteError if none is set up."""
        python = os.environ.get("MOBILESEG_LITE_PYTHON")
        if python:
            if not os.access(python, os.X_OK):
                raise LiteError(f"MOBILESEG_LITE_PYTHON={python}: not an executable file")
            return cls(python=python)
        root = os.environ.get("MOBILESEG_LITE_ROOT", DEFAULT_ROOT)
        if not os.path.isfile(os.path.join(root, STAMP_NAME)):
            raise LiteError(f"no Paddle Lite environment in {root}: {SETUP_HINT}")
        if os.geteuid() != 0:
            raise LiteError(f"entering the Paddle Lite root {root} needs root (chroot); run as "
                            f"root or set MOBILESEG_LITE_PYTHON to a python3.7-3.10 with paddlelite")
        return cls(root=root)

    def __repr__(self):
        return f"LiteRuntime(python={self.python!r})" if self.python else f"LiteRuntime(root={self.root!r})"

    def path(self, host_path):
        """How the worker sees ``host_path``."""
        p = os.path.abspath(host_path)
        return p if self.python else "/host" + p

    def command(self, args):
        """argv that runs ``lite_worker.py args`` (args already translated with ``path``)."""
        if self.python:
            return [self.python, WORKER, *args]
        script = ('mount -t proc proc "$0/proc" && mkdir -p "$0/host" && mount --rbind / "$0/host" '
                  '&& exec chroot "$0" "$@"')
        env = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root",
               "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, self.root,
                *env, "python3", self.path(WORKER), *args]

    def run_worker(self, args, timeout=900):
        """Run the worker; return (result dict, combined log text). LiteError on failure, with the
        worker's own error line when it wrote one, else the tail of its output."""
        try:
            proc = subprocess.run(self.command(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except FileNotFoundError as e:
            raise LiteError(f"cannot start the Lite interpreter ({e.filename}): {SETUP_HINT}")
        except subprocess.TimeoutExpired:
            raise LiteError(f"the Lite worker took over {timeout} s: {' '.join(args[:1])}")
        log = proc.stdout.decode("utf-8", "replace")
        result = None
        for line in log.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX):])
        if result is not None and "error" in result:
            raise LiteError(result["error"])
        if proc.returncode != 0 or result is None:
            tail = "\n".join(log.strip().splitlines()[-8:])
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit {proc.returncode}")
            raise LiteError(f"Paddle Lite failed ({how}) in `{args[0]}`:\n{tail}")
        return result, log

    def version(self):
        """Paddle Lite's version string, e.g. ``v2.13-rc``."""
        if self._version is None:
            self._version = self.run_worker(["version"])[0]["version"]
        return self._version
