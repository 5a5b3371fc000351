#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with the pinned, tested package set.
# Usage: source scripts/setup_venv.sh   (sets VENV_PY)   or   bash scripts/setup_venv.sh
# VENV=/path chooses the folder (default: .venv in the checkout). PYTHON chooses the interpreter
# that makes it (default python3; Python 3.8 to 3.11).
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$_root/.venv}"
PYTHON="${PYTHON:-python3}"
_stamp="$VENV/.mobileseg-requirements.sha256"
_want="$(cat "$_root/requirements.txt" "$_root/setup.py" "$_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "[setup] installing the pinned packages of requirements.txt (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$_root/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$_root"
  "$VENV/bin/python" -m pip check
  echo "$_want" > "$_stamp"
fi
VENV_PY="$VENV/bin/python"
export VENV_PY
