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
# EVAL=1 then runs the eval's whole_clip section on the device (models gathered under runs/gpu/models with the
# eval's file names; the shipped base joins them for the windows when windows16_base was not trained):
# runs/gpu/whole_clip.json and .log.
# RESUME=1 continues every run from its last checkpoint (exactly: same spec, same data order).
# Runs through scripts/gpu_train.sh (MINUTES, RESUME, PYTHON as there; the results also bundled in
# runs/gpu/bundle). Exits when all have finished: 0 if every training did, else 1.
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-"long80_base cascade_keyframes cascade_tsr"}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
jobs=()
for name in $RUNS; do jobs+=("$name:conditioning:configs/$name.json"); done
PYTHON=$PYTHON bash scripts/gpu_train.sh "${jobs[@]}"
rc=$?
if [ "${EVAL:-0}" = 1 ]; then
  mkdir -p runs/gpu/models
  cp models/lumiere/lumiere_demo_base.safetensors runs/gpu/models/
  for name in long80_base cascade_keyframes cascade_tsr windows16_base; do
    f="runs/gpu/$name/model.safetensors"
    [ -f "$f" ] && cp "$f" "runs/gpu/models/lumiere_$name.safetensors"
  done
  PYTHONUNBUFFERED=1 "$PYTHON" -m lumiere eval --sections whole_clip --models runs/gpu/models --device cuda \
    --out runs/gpu/whole_clip.json > runs/gpu/whole_clip.log 2>&1 || rc=1
  echo "== eval whole_clip (rc so far $rc)"; tail -n 12 runs/gpu/whole_clip.log
fi
exit $rc
