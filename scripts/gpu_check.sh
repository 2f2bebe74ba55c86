#!/usr/bin/env bash
# The GPU check: TensorRT engines, parity with PyTorch, latency, PPN parallelism, end-to-end latency.
# Needs a CUDA GPU. Installs the TensorRT extra into the venv when it is missing. Under 8 minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory venv
if ! .venv/bin/python -c "import tensorrt, onnxconverter_common" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --no-build-isolation -e '.[tensorrt]'
fi
export PYTHONUNBUFFERED=1
exec timeout 480 .venv/bin/python -m racestack.gpu_check "$@"
