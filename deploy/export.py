"""PaddleSeg's ``deploy/``-style entry: ``python deploy/export.py --config ... --save_dir ...``.

The same as ``mobileseg export`` (the code is ``mobileseg_paddle.deploy.export``)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout

from mobileseg_paddle.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
