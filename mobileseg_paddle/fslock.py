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
def folder_lock(folder, wait=True):
    """Hold an exclusive lock on ``folder`` (which must exist) for the ``with`` block, which
    gets True; with ``wait=False``, a lock another process holds is not waited for: the block
    gets False."""
    if fcntl is None:
        yield True
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock
