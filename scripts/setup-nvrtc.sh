#!/usr/bin/env bash
# Installs NVRTC 13.0 from PyPI (nvidia-cuda-nvrtc, no GPU or driver needed) into a cached venv
# and prints the folder holding libnvrtc.so.13, so CPU-only hosts can compile every CUDA
# kernel of the cuda backend to PTX (a real compile check; see core/src/backend/cuda).
# Usage: export LD_LIBRARY_PATH="$(scripts/setup-nvrtc.sh):$LD_LIBRARY_PATH"
set -euo pipefail
venv="${MASKDCPT_NVRTC_VENV:-$HOME/.cache/maskdcpt/venv-nvrtc-13.0.88}"
if ! ls "$venv"/lib/python3.*/site-packages/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps nvidia-cuda-nvrtc==13.0.88 >&2
fi
ls -d "$venv"/lib/python3.*/site-packages/nvidia/cu13/lib | head -n1
