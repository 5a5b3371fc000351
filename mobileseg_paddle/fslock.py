"""One process at a time in a folder: an exclusive ``flock`` on the folder itself, which leaves no
lock file behind (used by export, export recovery and weight downloads). No lock where ``fcntl``
does not exist (Windows)."""

import contextlib
import os

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@contextlib.contextmanager
def folder_lock(folder):
    """Hold an exclusive lock on ``folder`` (which must exist) for the ``with`` block."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
