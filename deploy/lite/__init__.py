"""Paddle Lite deployment: checkpoint -> ``.nb`` for ARM phones (and x86 for host checks),
a manifest beside it, host-side runner and benchmark. The C++ demo is in ``cpp/`` and
``android/``; the Python <= 3.10 interpreter Lite needs is set up by ``setup_env.sh``.

Public API (imports are lazy so that ``import deploy.lite`` stays light)::

    from deploy.lite import convert, run_nb, LiteError, LiteRuntime
"""

from .errors import LiteError
from .lite_env import LiteRuntime


def convert(*args, **kwargs):
    """See ``deploy.lite.convert.convert``."""
    from .convert import convert as _convert
    return _convert(*args, **kwargs)


def run_nb(*args, **kwargs):
    """See ``deploy.lite.predict.run_nb``."""
    from .predict import run_nb as _run_nb
    return _run_nb(*args, **kwargs)


def main(argv=None):
    """The command line (``python -m deploy.lite``, ``mobileseg lite``); returns the exit status."""
    from .__main__ import main as _main
    return _main(argv)


__all__ = ["LiteError", "LiteRuntime", "convert", "run_nb", "main"]
