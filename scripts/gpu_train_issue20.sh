#!/usr/bin/env bash
# Issue 20 on one GPU: the few-step distilled demo base (4 steps, cfg 1; teacher: the shipped base at 32 DDIM
# steps, cfg 4) and SSR (2 steps; teacher: the shipped SSR at 16 steps), trained concurrently as two processes
# (`python -m lumiere train distill`), each for MINUTES (default 7) of wall clock.
#
#   MINUTES=7 bash scripts/gpu_train_issue20.sh      # from anywhere; runs in the repo root
#
# Logs: runs/gpu/<name>.log; run folders: runs/gpu/<name>/ (train.jsonl with the distill probes, checkpoints,
# model.safetensors: fp16, its sampling config recorded). RESUME=1 continues both runs from their last checkpoint.
# PYTHON: the interpreter (default .venv/bin/python where it exists, else python3). Exits when both have
# finished: 0 if both trainings did, else 1.
set -u
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-7}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RUNS="distill_base distill_ssr"
EXTRA=()
[ "${RESUME:-0}" = 1 ] && EXTRA+=(--resume)
mkdir -p runs/gpu
pids=()
for name in $RUNS; do
  PYTHONUNBUFFERED=1 "$PYTHON" -m lumiere train distill --config "configs/$name.json" \
    --max-minutes "$MINUTES" ${EXTRA[@]+"${EXTRA[@]}"} > "runs/gpu/$name.log" 2>&1 &
  pids+=($!)
  echo "[gpu_train_issue20] $name: pid $!, log runs/gpu/$name.log"
done
rc=0
for pid in "${pids[@]}"; do
  wait "$pid" || rc=1
done
for name in $RUNS; do
  echo "== $name"; tail -n 2 "runs/gpu/$name.log"
  grep '"event": "probe"' "runs/gpu/$name/train.jsonl" 2>/dev/null | tail -n 2
done
exit $rc
