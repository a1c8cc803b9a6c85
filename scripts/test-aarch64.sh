#!/usr/bin/env bash
# The library on aarch64 (Jetson's CPU), run by scripts/test.sh after the Rust tests (needs
# target/release/maskdcpt): the core is cross-compiled and its unit tests (but the CUDA
# backend's, whose kernels are compiled and emulated on this host), golden parity tests (every
# network against the PyTorch fixtures: our NEON products and the gemm crate's, the kernels' NEON
# and portable versions) and weight-reader tests run under qemu-aarch64; then libmaskdcpt.a and the
# `maskdcpt` command are cross-built, the C sample linked against the library for aarch64, and
# both run under qemu on every golden checkpoint family, their outputs within one level per byte
# of `maskdcpt restore` on this host, and the command's raw f32 output (`.npy`) the same bits as
# this host's for NAFNet and SwinIR (within 1e-5 for Restormer and PromptIR, whose attention
# sums run in another order per vector width).
# Sets up what it needs when missing: the Rust target (rustup), qemu-user and the aarch64 cross
# gcc with its C library (apt).
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
missing=()
for pair in qemu-aarch64:qemu-user aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu; do
    command -v "${pair%%:*}" > /dev/null || missing+=("${pair#*:}")
done
[ -e "$sysroot/lib/libc.so.6" ] || missing+=(libc6-dev-arm64-cross)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc

echo "== core tests on aarch64 (qemu)"
cargo test --release --target "$target" -p maskdcpt-core --lib --test golden --test weights -- --skip backend::cuda
echo "== the golden tests on aarch64 with the gemm crate's products (qemu)"
MASKDCPT_CPU_KERNELS=portable cargo test --release --target "$target" -p maskdcpt-core --test golden

echo "== C sample and maskdcpt on aarch64 (qemu) vs maskdcpt restore on this host"
cargo build --release --target "$target" -p maskdcpt-ffi -p maskdcpt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
aarch64-linux-gnu-gcc -std=c99 -Wall -Wextra -Werror -O2 -Iinclude samples/restore_image.c \
    "target/$target/release/libmaskdcpt.a" -lpthread -ldl -lm -o "$tmp/restore_image"
python3 scripts/sample_ppm.py "$tmp/in.ppm"
for model in maskdcpt_w8.pth nafnet_w8.pth restormer/restormer_w8.pth restormer/promptir_w8.pth \
    swinir/swinir_w12_heads.safetensors; do
    for out in host.ppm host.npy; do
        target/release/maskdcpt restore -m "tests/golden/$model" -i "$tmp/in.ppm" -o "$tmp/$out" --threads 2
    done
    qemu-aarch64 -L "$sysroot" "$tmp/restore_image" "tests/golden/$model" "$tmp/in.ppm" "$tmp/sample.ppm" --threads 2
    for out in cli.ppm cli.npy; do
        qemu-aarch64 -L "$sysroot" "target/$target/release/maskdcpt" restore -m "tests/golden/$model" -i "$tmp/in.ppm" \
            -o "$tmp/$out" --threads 2
    done
    python3 scripts/same_output.py "$model" "the aarch64 C sample" "$tmp/host.ppm" "$tmp/sample.ppm"
    python3 scripts/same_output.py "$model" "the aarch64 maskdcpt" "$tmp/host.ppm" "$tmp/cli.ppm"
    python3 scripts/same_output.py "$model" "the aarch64 maskdcpt's f32 output" "$tmp/host.npy" "$tmp/cli.npy"
done
