#!/usr/bin/env bash
# GPU checks and rows for bench/RESULTS.md: run on a machine with a CUDA GPU, from the checkout,
# with a Python that has CUDA torch, onnx and onnxruntime (PYTHONPATH set to the checkout if
# bncheck is not installed). Every section runs even when one before it failed; the exit status
# says whether any did. About 9 minutes on one H100. Record the figures in bench/gpu_results.md,
# which `make bench` copies into bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
failed=0
# Byte-compiled first, as an installed package is: the GPU image sets PYTHONDONTWRITEBYTECODE,
# so every bncheck process would otherwise compile its own modules again.
"$PY" -m compileall -q bncheck bench
section() { echo; echo "## $1"; shift; "$@" || { echo "(section failed: exit $?)"; failed=1; }; }

section "tests that use the GPU when there is one (CUDA tap accuracy, half precision, policy)" \
    timeout 240 "$PY" -m pytest -q -rs tests/test_moments.py \
    tests/test_real_world_variants.py -k "moments or offset or half or precision"
# compare exits 1 when it finds a mismatch, as it should here.
section "a new user's compare of the batch-size-1 fixture, text report" bash -c \
    "timeout 60 $PY -m bncheck compare fixtures/models/pix_bs1.full.pt --allow-pickle \
    --data fixtures/data/pix_inputs.npy --device ${BENCH_DEVICE:-cuda}; [ \$? -eq 1 ]"
section "every command on cpu and on cuda" timeout 300 "$PY" bench/gpu_cli.py
section "compare and recalibrate against plain torch, ResNet-50 layout" timeout 420 "$PY" bench/gpu.py
section "where a healthy compare spends its time (cProfile, top 30 by own time)" bash -c \
    "timeout 120 $PY -m cProfile -s tottime -m bncheck compare bench/_work_gpu/r50.pt \
    --allow-pickle --data bench/_work_gpu/x.npy --device ${BENCH_DEVICE:-cuda} --batch-size 64 \
    --train-batch-size 32 --format json 2>&1 | grep -A30 'Ordered by'"
exit $failed
