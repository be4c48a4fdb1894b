#!/usr/bin/env bash
# Installs yolo_lrm and its dependencies into the current Python environment.
# torch: where none is installed, take torch==2.13.0 (CPU build; a bare `torch` requirement would pull a
# multi-GB CUDA build). An existing torch (e.g. your CUDA build) is kept. The onnx extra (ONNX export, INT8, ONNX
# Runtime) is installed so that the tests of the CPU engines run, in CI too; the package itself does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test,plots,tensorboard,onnx]"
