#!/usr/bin/env bash
# CPU benchmark of `maskdcpt bench` against ONNX Runtime 1.31.1 on the released
# MaskDCPT NAFNet shape (random weights). Prints a Markdown table; writes
# nothing outside target/ and .venv-torch/.
#
#   scripts/bench-cpu.sh                 # 256x256 and 1280x720, 2 threads
#   scripts/bench-cpu.sh --skip-ours     # ONNX Runtime only (no cargo build)
#   scripts/bench-cpu.sh --sizes 256x256 --iters 5 --threads 2
#
# All options are passed to scripts/bench_cpu.py (see --help there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv-torch
PY="$VENV/bin/python"

# --- venv (idempotent; may be shared with other scripts) ---------------------
if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    "$VENV/bin/pip" install -q numpy
    # The slim install above does not import on every host; fall back to torch's full dependencies.
    "$PY" -c 'import torch' >/dev/null 2>&1 || "$VENV/bin/pip" install -q torch==2.11.0
fi
if ! "$PY" - <<'PYEOF' >/dev/null 2>&1
import onnx, onnxruntime
assert onnxruntime.__version__ == "1.31.1", onnxruntime.__version__
PYEOF
then
    "$VENV/bin/pip" install -q onnx onnxruntime==1.31.1
fi

# --- our binary ---------------------------------------------------------------
skip_ours=0
for a in "$@"; do
    [ "$a" = "--skip-ours" ] && skip_ours=1
done
if [ "$skip_ours" = 0 ]; then
    cargo build --release -p maskdcpt
fi

# OpenBLAS variables do not affect ONNX Runtime or our binary; keep the
# environment plain so both sides see the same machine.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
exec "$PY" scripts/bench_cpu.py "$@"
