"""Paddle Lite deployment: checkpoint -> ``.nb`` for ARM phones (and x86 for host checks),
a manifest beside it, host-side runner and benchmark. The C++ demo is in ``deploy/lite/cpp``
and ``deploy/lite/android``; the Python <= 3.10 interpreter Lite needs is set up by
``deploy/lite/setup_env.sh`` (see deploy/lite/README.md for the modules).

Public API (imports are lazy so that ``import mobileseg_paddle.deploy.lite`` stays light)::

    from mobileseg_paddle.deploy.lite import convert, run_nb, UserError, LiteRuntime
"""

from mobileseg_paddle.errors import UserError

from .lite_env import LiteRuntime


def convert(*args, **kwargs):
    """See ``mobileseg_paddle.deploy.lite.convert.convert``."""
    from .convert import convert as _convert
    return _convert(*args, **kwargs)


def run_nb(*args, **kwargs):
    """See ``mobileseg_paddle.deploy.lite.predict.run_nb``."""
    from .predict import run_nb as _run_nb
    return _run_nb(*args, **kwargs)


def main(argv=None):
    """The command line (``mobileseg lite``, ``python -m mobileseg_paddle.deploy.lite``); returns
    the exit status."""
    from .__main__ import main as _main
    return _main(argv)


__all__ = ["UserError", "LiteRuntime", "convert", "run_nb", "main"]
