"""``mobileseg paddleseg SCRIPT [SCRIPT'S FLAGS ...]``: run one of PaddleSeg's own scripts
(``tools/train.py``, ``tools/val.py``, ``tools/predict.py``, ``tools/export.py``,
``deploy/python/infer.py`` ...) with our ``MSP_`` components registered and the runtime fixes
of ``compat.py`` that the installed paddleseg needs applied.

PaddleSeg's scripts have no plugin hook: run directly they cannot build an ``MSP_`` component,
and on paddleseg 2.8.0 a training run with ``--do_eval`` would crash in evaluation before
saving its weights. Here the script runs in this process as ``__main__``, with ``sys.argv`` set
to the script and its flags, as ``python SCRIPT ...`` would, so every flag means what it means
there::

    mobileseg paddleseg PaddleSeg/tools/train.py --config my.yml --do_eval --save_dir out
    mobileseg paddleseg PaddleSeg/tools/export.py --config my.yml --model_path out/best_model/model.pdparams

Several processes (one per device): ``python -m paddle.distributed.launch --devices 0,1 \\
    mobileseg paddleseg PaddleSeg/tools/train.py --config ...`` (launch runs the ``mobileseg``
command in every process; ``mobileseg_paddle/__main__.py paddleseg ...`` works as well).

The exit status is the script's. A script's own errors keep PaddleSeg's tracebacks; ours (a
missing script, an evaluation that failed after the weights were saved) are one line."""

import os
import runpy
import sys

from .errors import UserError

USAGE = "usage: mobileseg paddleseg PATH/TO/SCRIPT.py [the script's own flags ...]"


def run(script, args):
    """Run ``script`` as ``__main__`` with ``args``; return its exit status."""
    if not os.path.isfile(script):
        raise UserError(f"{script}: no such file (expected a PaddleSeg script such as "
                        f"PaddleSeg/tools/train.py)")
    if not script.endswith(".py"):
        raise UserError(f"{script}: expected a Python script (.py)")
    from . import compat, register_all
    register_all()
    compat.apply()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` has it
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:  # argparse, exit(), sys.exit(status)
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def main(argv):
    if not argv:
        raise UserError(f"expected the path of a PaddleSeg script ({USAGE})")
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        print(__doc__.split("\n\n", 1)[1])
        return 0
    return run(argv[0], argv[1:])
