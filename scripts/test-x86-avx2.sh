#!/usr/bin/env bash
# The library on an x86-64 CPU without AVX-512, run by scripts/test.sh: the core's CPU kernel
# tests and golden parity tests (every network against the PyTorch fixtures) under
# `qemu-x86_64 -cpu Haswell` (AVX2 and FMA, no AVX-512). There the engine's own choices run as on
# such a CPU: our AVX2 products (`native` finds no AVX-512) and the AVX2 versions of the other
# kernels, which `MASKDCPT_CPU_KERNELS=avx2` on an AVX-512 host does not reach. Then
# `maskdcpt restore` (needs target/release/maskdcpt) of each golden checkpoint family there: the
# same f32 output as on this host (bit for bit; within 1e-5 for Restormer and PromptIR, whose
# attention sums go through the gemm crate). About 5 minutes.
# Sets up qemu-user (apt) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-x86_64 > /dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update && $sudo apt-get install -y qemu-user
fi
# qemu names each Haswell feature its emulator lacks (none that the kernels use) on every start.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="scripts/qemu-haswell.sh"
echo "== core CPU kernels and golden tests on Haswell (qemu, no AVX-512)"
cargo test --release -p maskdcpt-core --lib -- backend::cpu::kernels
cargo test --release -p maskdcpt-core --test golden

echo "== maskdcpt restore on Haswell (qemu) vs on this host"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 scripts/sample_ppm.py "$tmp/in.ppm"
for model in maskdcpt_w8.pth nafnet_w8.pth restormer/restormer_w8.pth restormer/promptir_w8.pth \
    swinir/swinir_w12_heads.safetensors; do
    target/release/maskdcpt restore -m "tests/golden/$model" -i "$tmp/in.ppm" -o "$tmp/host.npy" --threads 2
    scripts/qemu-haswell.sh target/release/maskdcpt restore -m "tests/golden/$model" -i "$tmp/in.ppm" \
        -o "$tmp/haswell.npy" --threads 2
    python3 scripts/same_output.py "$model" "maskdcpt on Haswell, f32 output" "$tmp/host.npy" "$tmp/haswell.npy"
done
