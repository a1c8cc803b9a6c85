#!/usr/bin/env bash
# Installs libtorch 2.11.0 (the version tch 0.24.0 binds) from PyPI into a cached venv and
# prints its path for LIBTORCH on stdout. Slim: the torch wheel without its Python
# dependencies, plus the two CUDA runtime wheels libtorch_cpu.so links (PyPI has no CPU-only
# Linux wheel). Also installs the fontconfig headers the trainer's plots build against.
# Usage: export LIBTORCH=$(scripts/setup-libtorch.sh)
set -euo pipefail
venv="${MASKDCPT_LIBTORCH_VENV:-$HOME/.cache/maskdcpt/venv-libtorch-2.11.0}"
if ! ls "$venv"/lib/python3.*/site-packages/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 \
        nvidia-cuda-cupti==13.0.85 >&2
fi
if ! pkg-config --exists fontconfig 2>/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -q libfontconfig1-dev pkg-config >&2
fi
ls -d "$venv"/lib/python3.*/site-packages/torch | head -n1
