#!/usr/bin/env bash
# The CUDA engine on the GPU test host (H100/H200, CUDA 13, PyTorch 2.11, no Rust): the
# core's CUDA unit tests, then scripts/gpu_check.py (parity against the CPU engine and timing
# against PyTorch eager / torch.compile on the same GPU; the engine's kernels under Nsight
# Compute where ncu is installed: scripts/gpu_counters.py). Record the tables in docs/perf.md.
#   CPU host:  scripts/gpu-check.sh --build      (writes target/gpu/, about 30 MB)
#   GPU host:  scripts/gpu-check.sh [gpu_check.py options]   (carry target/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--build" ]; then
    cargo build --release -p maskdcpt
    tests=$(cargo test --release -p maskdcpt-core --lib --no-run 2>&1 | grep -o 'target/release/deps/maskdcpt_core-[0-9a-f]*' | tail -n1)
    mkdir -p target/gpu
    strip -o target/gpu/maskdcpt target/release/maskdcpt
    strip -o target/gpu/core-tests "$tests"
    ls -la target/gpu
    exit 0
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$(mktemp -d)}"
MASKDCPT_REQUIRE_GPU=1 target/gpu/core-tests cuda --test-threads 1 --nocapture 2>&1 | grep -E "max|test |result" || true
python3 scripts/gpu_check.py "$@"
