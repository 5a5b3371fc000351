"""Helpers of the tests (not part of the installed package)."""

import contextlib
import hashlib
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(message):
    """A test without a part of its set-up (a tool, ../shared, root): skipped, failed when
    CI=true (CI must run every test)."""
    import pytest
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def small_disk(folder, size):
    """A tmpfs of ``size`` (e.g. "64k") mounted on ``folder`` for the duration: a full disk,
    for real. Needs root: skipped without it, failed when CI=true."""
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        missing(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def digests(folder):
    """{path relative to ``folder``: sha256} of every file below it (to show nothing changed)."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out
