"""PaddleSeg's ``deploy/slim/quant/qat_export.py``-style entry: ``python
deploy/slim/quant/qat_export.py --config ... --model_path <checkpoint of qat_train.py> --save_dir
...`` writes the INT8 export of quantization-aware training's weights.

The same as ``mobileseg quant`` (``mobileseg_paddle.deploy.quant``): the convolutions' input
scales as training learned them (``--qat_scales calibrated``: found again on the training images,
``--num_calib``, ``--algo``)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)  # a checkout

from mobileseg_paddle.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["quant", *sys.argv[1:]]))
