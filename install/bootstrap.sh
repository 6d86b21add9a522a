#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in ./.venv.
# Idempotent: a second run only installs what changed. Safe on a fresh Debian 12 / Python 3.11 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "bootstrap: need Python >= 3.10 as '$PY' (set PYTHON=...)." >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv || { echo "bootstrap: 'python3 -m venv' failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.bootstrap-stamp
want=$( (cat pyproject.toml install/bootstrap.sh; echo "${DFI_TORCH_INDEX:-}") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # The CPU build of torch first: a plain 'torch' would pull GBs of CUDA packages. DFI_TORCH_INDEX: a GPU
  # build from that index instead (README, "GPUs"; dfi doctor prints the command for the GPU it finds).
  index=(); [ -n "${DFI_TORCH_INDEX:-}" ] && index=(--index-url "$DFI_TORCH_INDEX")
  echo "bootstrap: 1/2 installing torch 2.13.0 (${DFI_TORCH_INDEX:-CPU build}; a few minutes on a fresh machine)"
  .venv/bin/pip install --progress-bar on "torch==2.13.0" "${index[@]}" | { grep -v "^Requirement already satisfied" || true; }
  echo "bootstrap: 2/2 installing gimp-dfi and its dependencies (dlib, pyzmq, Ray, scikit-image, ...)"
  .venv/bin/pip install --progress-bar on -e ".[faces,ray,test]" | { grep -v "^Requirement already satisfied" || true; }
  .venv/bin/python -c "import torch, dfi_engine, dfi_daemon.cli" \
    || { echo "bootstrap: the installation is incomplete (see pip's messages above)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "bootstrap: environment ready in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
