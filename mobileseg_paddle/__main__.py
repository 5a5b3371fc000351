"""``python -m mobileseg_paddle COMMAND ...`` (same as the ``mobileseg`` command).

Also runnable as a script, which is what ``python -m paddle.distributed.launch`` needs:
``python -m paddle.distributed.launch --nproc_per_node 2 mobileseg_paddle/__main__.py train ...``
"""

import os
import sys

if not __package__:  # run as a file: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mobileseg_paddle.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
