"""PaddleSeg's ``deploy/slim/quant/qat_train.py``-style entry: ``python
deploy/slim/quant/qat_train.py --config ... --model_path ... --save_dir ...`` fine-tunes trained
weights with quantization-aware training through PaddleSeg's trainer.

The same as ``mobileseg train --quant`` (``mobileseg_paddle.qat``); ``qat_export.py`` (or
``mobileseg quant``) then writes the INT8 export of a checkpoint."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)  # a checkout

from mobileseg_paddle.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", "--quant", *sys.argv[1:]]))
