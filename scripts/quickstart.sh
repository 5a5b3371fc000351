#!/usr/bin/env bash
# The offline quick start: sets up the environment (first run only), generates a small synthetic
# dataset, trains MobileSeg-MobileNetV2 through PaddleSeg's trainer on the CPU, evaluates mIoU and
# writes overlays. Extra arguments go to `mobileseg quickstart` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
exec "$VENV_PY" -m mobileseg_paddle quickstart "$@"
