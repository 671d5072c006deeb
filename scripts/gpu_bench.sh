#!/usr/bin/env bash
# The GPU run of the layer benchmark (issue 15): `python -m invcap.bench` on CUDA at batch 4096, in
# float32 and bfloat16 (mixed precision for the training step; operations without a bfloat16 kernel,
# such as the triangular solves, are recorded as unsupported), the training step and train_captioning
# itself -> results/bench_inn_cuda.json. Run from anywhere on a machine with a CUDA GPU:
#   bash scripts/gpu_bench.sh
# Check it on a CPU first (tiny sizes, measures nothing):
#   BENCH_DEVICE=cpu BENCH_QUICK=1 BENCH_OUT=/tmp/bench.json bash scripts/gpu_bench.sh
# BENCH_DRY_RUN=1 prints the bench's command line instead of running it (tests/test_bench.py runs
# that line in-process on the CPU).
# Settings: PY (python with torch; default .venv/bin/python, else python3), BENCH_DEPS (folder for
# nflows, default .bench-deps), BENCH_NO_INSTALL=1 (do not pip-install nflows there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=${BENCH_DEVICE:-cuda}
OUT=${BENCH_OUT:-results/bench_inn_cuda.json}
DEPS=${BENCH_DEPS:-.bench-deps}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ ! -f "$DEPS/nflows/transforms/lu.py" ] && [ "${BENCH_NO_INSTALL:-0}" != 1 ]; then
  "$PY" -m pip install --quiet --no-deps --target "$DEPS" nflows \
    || echo "nflows could not be installed into $DEPS: the bench runs without its peer"
fi
if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('CUDA:', torch.cuda.get_device_name(0) if ok else 'none'); sys.exit(0 if ok else 3)" \
    || { echo "no CUDA device visible to torch: nothing measured (use BENCH_DEVICE=cpu to check the script)"; exit 3; }
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
fi
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  sizes=(--quick)
else
  sizes=(--batch 4096 --train-batch 4096)
fi
cmd=("$PY" -m invcap.bench --device "$DEVICE" --dtypes float32,bfloat16 --threads "${BENCH_THREADS:-2}"
     --deps "$DEPS" --out "$OUT" "${sizes[@]}")
if [ "${BENCH_DRY_RUN:-0}" = 1 ]; then
  echo "${cmd[@]}"
  exit 0
fi
"${cmd[@]}"
