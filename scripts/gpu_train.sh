#!/usr/bin/env bash
# Train several models at once on one GPU (each its own process, all for MINUTES), then bundle what came out.
#
#   MINUTES=7 bash scripts/gpu_train.sh NAME:STAGE:CONFIG [NAME:STAGE:CONFIG ...]
#
# Each run writes runs/gpu/NAME/ (its config's `out` should be that folder) and logs to runs/gpu/NAME.log; the
# CPU threads are shared out evenly. At the end the exported models, loss/probe logs and logs are packed into
# BUNDLE_DIR (default runs/gpu/bundle) as one tar split into 15 MiB pieces: `cat gpu.tar.* | tar -x` in the
# repository root, then `python scripts/pack_weights.py unpack runs/gpu/NAME/model.xzw` for each model. Runs that fail do not stop the others; their exit codes are in runs/gpu/rc.txt.
set -u
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-7}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
EXTRA=()
[ "${RESUME:-0}" = 1 ] && EXTRA+=(--resume)  # RESUME=1: every run continues exactly from its last checkpoint
for kv in ${SET:-}; do EXTRA+=(--set "$kv"); done  # SET="batch_size=2 threads=1": every run (a CPU check)
BUNDLE_DIR=${BUNDLE_DIR:-runs/gpu/bundle}
export PYTHONUNBUFFERED=1
[[ $# -ge 1 ]] || { echo "usage: MINUTES=7 bash scripts/gpu_train.sh NAME:STAGE:CONFIG ..." >&2; exit 2; }
mkdir -p runs/gpu "$BUNDLE_DIR"
: >runs/gpu/rc.txt
# MPS=1: CUDA MPS, so the runs' kernels share the GPU at once instead of taking time slices (each run is
# launch-bound at the demo size); kept only if a CUDA client then works within a minute, else switched off
if [ "${MPS:-0}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/lumiere-mps CUDA_MPS_LOG_DIRECTORY=/tmp/lumiere-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d && timeout 60 $PY -c "import torch; torch.ones(8, device='cuda').sum().item()"; then
    echo "MPS: on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS: failed to start, off"
  fi
elif [ "${MPS:-0}" = 1 ]; then
  echo "MPS: nvidia-cuda-mps-control not found, off"
fi
CORES=$(nproc)
THREADS=$(( CORES / $# > 0 ? CORES / $# : 1 ))
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
names=()
pids=()
for job in "$@"; do
  IFS=: read -r name stage config <<<"$job"
  names+=("$name")
  ( OMP_NUM_THREADS=$THREADS $PY -m lumiere train "$stage" --config "$config" --out "runs/gpu/$name" \
      --threads "$THREADS" --max-minutes "$MINUTES" ${EXTRA[@]+"${EXTRA[@]}"} >"runs/gpu/$name.log" 2>&1
    echo "$name $?" >>runs/gpu/rc.txt ) &
  pids+=($!)
done
( sleep "$($PY -c "print(int($MINUTES * 60 + 60))")"
  for name in "${names[@]}"; do [[ -d runs/gpu/$name ]] && touch "runs/gpu/$name/STOP"; done ) &
watchdog=$!
wait "${pids[@]}"
kill "$watchdog" 2>/dev/null
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control
cat runs/gpu/rc.txt
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
files=(runs/gpu/rc.txt)
for name in "${names[@]}"; do
  tail -c 2000 "runs/gpu/$name.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -3 | sed "s/^/[$name] /"
  for f in "runs/gpu/$name.log" "runs/gpu/$name/train.jsonl"; do [[ -f $f ]] && files+=("$f"); done
done
for name in "${names[@]}"; do  # the models, half-precision weights packed ~15 % smaller (bit-exact)
  [[ -f runs/gpu/$name/model.safetensors ]] && \
    $PY scripts/pack_weights.py pack "runs/gpu/$name/model.xzw" "runs/gpu/$name/model.safetensors" &
done
wait
for name in "${names[@]}"; do [[ -f runs/gpu/$name/model.xzw ]] && files+=("runs/gpu/$name/model.xzw"); done
tar -cf - "${files[@]}" | split -b 15m -d - "$BUNDLE_DIR/gpu.tar."
ls -la "$BUNDLE_DIR"
! grep -qv ' 0$' runs/gpu/rc.txt  # exit 0 only if every training did
