#!/usr/bin/env bash
# Issue 20 on one GPU: the few-step distilled demo base (4 steps, cfg 1; teacher: the shipped base at 32 DDIM
# steps, cfg 4) and SSR (2 steps; teacher: the shipped SSR at 16 steps), trained concurrently as two processes
# (`python -m lumiere train distill`), each for MINUTES (default 7) of wall clock.
#
#   MINUTES=7 bash scripts/gpu_train_issue20.sh      # from anywhere; runs in the repo root
#
# Logs: runs/gpu/<name>.log; run folders: runs/gpu/<name>/ (train.jsonl with the distill probes, checkpoints,
# model.safetensors: fp16, its sampling config recorded). RESUME=1 continues both runs from their last checkpoint.
# Runs through scripts/gpu_train.sh (MINUTES, RESUME, PYTHON as there; the results also bundled in
# runs/gpu/bundle). Exits when both have finished: 0 if both trainings did, else 1.
set -u
cd "$(dirname "$0")/.."
bash scripts/gpu_train.sh distill_base:distill:configs/distill_base.json distill_ssr:distill:configs/distill_ssr.json
rc=$?
for name in distill_base distill_ssr; do
  grep '"event": "probe"' "runs/gpu/$name/train.jsonl" 2>/dev/null | tail -n 2
done
exit $rc
