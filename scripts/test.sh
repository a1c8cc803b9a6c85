#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# Sets up what it needs on a fresh Debian machine, then builds, lints and tests everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo --version
cargo fmt --all --check
cargo build --release --workspace --all-targets
cargo clippy --workspace --all-targets -- -D warnings
scripts/test-onnx.sh
# The TensorRT shim compiles against the TensorRT 11.4 headers (nothing TensorRT runs here).
scripts/test-tensorrt.sh
cargo test --release --workspace
# The C ABI: header drift, C/C++ header compiles, install, samples, byte identity, valgrind.
scripts/test-capi.sh
