"""PaddleSeg's ``deploy/slim/quant/ptq.py``-style entry: ``python deploy/slim/quant/ptq.py
--config ... --model_path ... --save_dir ...`` writes an INT8 export.

The same as ``mobileseg quant`` (the code is ``mobileseg_paddle.deploy.quant``)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)  # a checkout

from mobileseg_paddle.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["quant", *sys.argv[1:]]))
