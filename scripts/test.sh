#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# Sets up what it needs on a fresh Debian machine, then builds, lints and tests everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo --version
# g++ and the C ABI checks' tools (apt, only when missing).
scripts/setup-tools.sh
# libtorch 2.11.0 for the trainer (a cached slim venv from PyPI).
LIBTORCH=$(scripts/setup-libtorch.sh)
export LIBTORCH
# NVRTC 13 from PyPI: the CUDA backend's kernels are compiled to PTX here (no GPU needed), and a
# missing NVRTC fails that test instead of skipping it. GPU tests skip with a message.
LD_LIBRARY_PATH="$(scripts/setup-nvrtc.sh):${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH MASKDCPT_REQUIRE_NVRTC=1
cargo fmt --all --check
cargo build --release --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
scripts/test-onnx.sh
# The TensorRT shim compiles against the TensorRT 11.4 headers (nothing TensorRT runs here).
scripts/test-tensorrt.sh
cargo test --release --workspace
# The products x86-64 CPUs without AVX-512 run (our AVX2 kernels) and those of the gemm crate
# (x86-64 without AVX2): the kernels' tests and the PyTorch fixtures.
for kernels in avx2 portable; do
    MASKDCPT_CPU_KERNELS=$kernels cargo test --release -p maskdcpt-core --lib --test golden -- --skip backend::cuda
done
scripts/test-trainer.sh
# The C ABI: header drift, C/C++ header compiles, install, samples, byte identity, valgrind.
scripts/test-capi.sh
# x86-64 without AVX-512 (qemu as a Haswell): the kernels' AVX2 paths and the PyTorch fixtures.
scripts/test-x86-avx2.sh
# aarch64 (Jetson's CPU) under qemu: the core's tests and the C sample, cross-compiled.
scripts/test-aarch64.sh
