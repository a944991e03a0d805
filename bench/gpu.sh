#!/usr/bin/env bash
# GPU rows for bench/RESULTS.md: run on a machine with a CUDA GPU, from the checkout, with a
# Python that has CUDA torch, onnx and onnxruntime (PYTHONPATH set to the checkout if bncheck is
# not installed). Prints a Markdown table to paste under "GPU rows" in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONPATH=${PYTHONPATH:-$PWD}
"$PY" -m pytest -q tests/test_moments.py -k large_offset   # the CUDA tap accuracy check runs here
"$PY" bench/gpu.py
