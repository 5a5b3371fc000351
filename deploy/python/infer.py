"""PaddleSeg's ``deploy/python/infer.py`` entry: ``python deploy/python/infer.py --config
output/inference/deploy.yaml --image_path images/``.

The same as ``mobileseg infer`` (the code is ``mobileseg_paddle.deploy.infer``)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mobileseg_paddle.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
