#!/usr/bin/env bash
# Issue 19 on one GPU: the STUNet-80 base (80 frames at 16 fps) and the temporal cascade's two models (keyframe
# base: 20 frames at 4 fps; TSR: 16 frames at 16 fps, known every 4th), trained concurrently as three
# processes, each from the shipped 16-frame demo base, each for MINUTES (default 7) of training.
#
#   MINUTES=7 bash scripts/gpu_train_issue19.sh      # from anywhere; runs in the repo root
#
# Logs: runs/gpu/<name>.log; run folders: runs/gpu/<name>/ (train.jsonl, checkpoints, model.safetensors: fp16).
# RUNS: which configs (default the three above); add windows16_base for the windowed baseline's own 16-frame
# base at 16 fps (the same data and task mixture; the shipped base knows neither 16 fps nor the new words).
# RESUME=1 continues every run from its last checkpoint (exactly: same spec, same data order).
# PYTHON: the interpreter (default .venv/bin/python where it exists, else python3). Exits when all have
# finished: 0 if every training did, else 1.
set -u
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-7}
RUNS=${RUNS:-"long80_base cascade_keyframes cascade_tsr"}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
EXTRA=()
[ "${RESUME:-0}" = 1 ] && EXTRA+=(--resume)
mkdir -p runs/gpu
pids=()
for name in $RUNS; do
  PYTHONUNBUFFERED=1 "$PYTHON" -m lumiere train conditioning --config "configs/$name.json" \
    --max-minutes "$MINUTES" ${EXTRA[@]+"${EXTRA[@]}"} > "runs/gpu/$name.log" 2>&1 &
  pids+=($!)
  echo "[gpu_train_issue19] $name: pid $!, log runs/gpu/$name.log"
done
rc=0
for pid in "${pids[@]}"; do
  wait "$pid" || rc=1
done
for name in $RUNS; do
  echo "== $name"; tail -n 2 "runs/gpu/$name.log"
done
exit $rc
