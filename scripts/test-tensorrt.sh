#!/usr/bin/env bash
# TensorRT compile check (part of scripts/test.sh). No host this project is tested on has
# TensorRT, so this proves what can be proven without it: the C++ shim compiles (warnings are
# errors) against the real TensorRT 11.4 headers, the Rust side builds, lints and tests with
# the `tensorrt` feature, the error on a host without the library names it (in the library
# and in `maskdcpt build-engine`), and the shim's object file references no TensorRT or CUDA
# symbol (both are opened with dlopen at run time).
#
# Headers: $TENSORRT_INCLUDE_DIR if set, else the copy in the source of the crates.io crate
# trtx-sys 0.9.1, fetched (not built) through a throwaway manifest.
set -euo pipefail
cd "$(dirname "$0")/.."

# A C++ compiler and nm, installed on a fresh Debian machine only when missing.
missing=()
for pair in g++:g++ nm:binutils; do
    command -v "${pair%%:*}" > /dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"
fi

if [ -z "${TENSORRT_INCLUDE_DIR:-}" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/src"
    : > "$tmp/src/lib.rs"
    printf '[package]\nname = "fetch-trt-headers"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\ntrtx-sys = "=0.9.1"\n' \
        > "$tmp/Cargo.toml"
    cargo fetch --quiet --manifest-path "$tmp/Cargo.toml"
    registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
    TENSORRT_INCLUDE_DIR=$(ls -d "$registry"/*/trtx-sys-0.9.1*/TensorRT-Headers/TRT-Enterprise-11.4 | head -n 1)
    export TENSORRT_INCLUDE_DIR
fi
version="$TENSORRT_INCLUDE_DIR/NvInferVersion.h"
major=$(sed -n 's/^#define TRT_MAJOR_ENTERPRISE \([0-9]*\).*/\1/p' "$version")
minor=$(sed -n 's/^#define TRT_MINOR_ENTERPRISE \([0-9]*\).*/\1/p' "$version")
echo "TensorRT headers $major.$minor: $TENSORRT_INCLUDE_DIR"
[ "$major.$minor" = "11.4" ] || { echo "expected the TensorRT 11.4 headers" >&2; exit 1; }

cargo build -p maskdcpt-core --features tensorrt
# The TensorRT 10 branches (`NV_TENSORRT_MAJOR < 11`): no 10.x headers are reachable, so
# compile them against a copy of the 11.4 headers that says 10 (11.4 still declares the 10.x
# calls used, as deprecated). This catches mistakes in those lines, not 10.x API differences.
as10=$(mktemp -d)
cp -r "$TENSORRT_INCLUDE_DIR"/. "$as10"/
sed -i 's/^#define TRT_MAJOR_ENTERPRISE 11$/#define TRT_MAJOR_ENTERPRISE 10/' "$as10/NvInferVersion.h"
grep -q '^#define TRT_MAJOR_ENTERPRISE 10$' "$as10/NvInferVersion.h"
g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -Wno-deprecated-declarations \
    -isystem core/src/backend/tensorrt/cuda_stub -isystem "$as10" core/src/backend/tensorrt/shim.cpp
rm -rf "$as10"
cargo clippy -p maskdcpt-core --all-targets --features tensorrt -- -D warnings
cargo test -p maskdcpt-core --features tensorrt --lib backend::tensorrt
# `maskdcpt build-engine` built with the feature: the error names the missing library.
cargo test -p maskdcpt --features tensorrt --test cli build_engine
# libmaskdcpt built with the feature: MASKDCPT_BACKEND_TENSORRT is refused naming the library.
cargo test -p maskdcpt-ffi --features tensorrt --test bad_inputs missing_backends

# The newest compiled shim must leave only libc/libstdc++/libdl symbols undefined.
shim=$(ls -t target/debug/build/maskdcpt-core-*/out/libmaskdcpt_trt_shim.a | head -n 1)
if nm -u "$shim" | grep -E -i 'nvinfer|createInfer|getInferLibVersion|cuda'; then
    echo "the TensorRT shim links TensorRT or CUDA symbols directly (it must dlopen them)" >&2
    exit 1
fi
echo "TensorRT shim: compiled against TensorRT $major.$minor headers, no link-time TensorRT/CUDA symbols"
