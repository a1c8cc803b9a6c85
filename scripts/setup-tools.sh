#!/usr/bin/env bash
# Debian packages the tests use, installed on a fresh machine only when missing: g++ (the CUDA
# kernels' CPU emulation in the Rust tests, the C++ sample), and cmake, valgrind, pkg-config,
# python3 and binutils for the C ABI checks (scripts/test-capi.sh).
set -euo pipefail
missing=()
for pair in cmake:cmake valgrind:valgrind pkg-config:pkg-config g++:g++ python3:python3 readelf:binutils; do
    command -v "${pair%%:*}" > /dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"
fi
