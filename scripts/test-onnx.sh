#!/usr/bin/env bash
# ONNX export parity (part of scripts/test.sh): exports the golden models with
# `maskdcpt export-onnx` (dynamic and fixed shapes, both families, fp32 and fp16, TLC
# attention, and the fork's Restormer, PromptIR and SwinIR), checks each file with onnx.checker
# (full check) and runs it in ONNX Runtime 1.31.1 against the raw output of `maskdcpt restore`
# on the same input, and fixed-shape exports against the PyTorch fixtures themselves. Needs
# target/release/maskdcpt.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${MASKDCPT_ONNX_VENV:-$HOME/.cache/maskdcpt/venv-onnx}"
if ! "$venv/bin/python" -c 'import onnx, numpy, onnxruntime as o; assert o.__version__ == "1.31.1"' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check onnx onnxruntime==1.31.1 numpy
fi

bin=target/release/maskdcpt
golden=tests/golden
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# compare ONNX INPUT EXPECTED TOLERANCE: runs the model in ONNX Runtime against EXPECTED.
compare() {
    if "$venv/bin/python" scripts/check_onnx.py "$1" "$2" "$3" --tol "$4"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
}

# check NAME MODEL INPUT TOLERANCE EXPORT-FLAGS... (INPUT in tests/golden, or a path): the
# export against `maskdcpt restore`.
check() {
    local name=$1 model=$2 input=$3 tol=$4
    shift 4
    [ -f "$input" ] || input="$golden/$input"
    "$bin" export-onnx -m "$golden/$model" -o "$work/$name.onnx" "$@" 2>/dev/null
    "$bin" restore -m "$golden/$model" -i "$input" -o "$work/$name.npy"
    compare "$work/$name.onnx" "$input" "$work/$name.npy" "$tol"
}

check maskdcpt-dynamic-37x53 maskdcpt_w8.pth input_37x53.npy 1e-4 --dynamic
check maskdcpt-dynamic-96x136 maskdcpt_w8.pth input_96x136.npy 1e-4 --dynamic
check maskdcpt-fixed-96x136 maskdcpt_w8.pth input_96x136.npy 1e-4 --height 96 --width 136
check maskdcpt-f16-weights-37x53 maskdcpt_w8_f16.safetensors input_37x53.npy 1e-4 --dynamic
check nafnet-dynamic-29x41 nafnet_w8.pth input_29x41.npy 1e-4 --dynamic
check nafnet-fixed-16x24 nafnet_w8.pth input_16x24.npy 1e-4 --height 16 --width 24
# Images smaller than the reflect pad (MaskDCPT pads to 16: 11 past a 5-pixel side, 15 past a
# 1-pixel one) mirror on, and a 1-pixel side repeats, as in `maskdcpt restore`.
for size in 5x3 1x7 1x1; do
    "$venv/bin/python" -c "import numpy as n, sys; h, w = map(int, sys.argv[1].split('x')); \
n.save(sys.argv[3], n.load(sys.argv[2])[:h, :w])" "$size" "$golden/input_37x53.npy" "$work/input_$size.npy"
    check "maskdcpt-dynamic-$size" maskdcpt_w8.pth "$work/input_$size.npy" 1e-4 --dynamic
done
check maskdcpt-fixed-5x3 maskdcpt_w8.pth "$work/input_5x3.npy" 1e-4 --height 5 --width 3
# float16 activations: rounding, not parity; the bound catches a broken graph.
check maskdcpt-fp16-96x136 maskdcpt_w8.pth input_96x136.npy 5e-2 --dynamic --fp16

# against_reference MODEL INPUT FIXTURE EXPORT-FLAGS...: the export in float32 (1e-4) and with
# float16 activations (5e-2) against the PyTorch fixture itself (paths in tests/golden).
against_reference() {
    local model=$1 input=$2 fixture=$3
    shift 3
    for precision in f32:1e-4 fp16:5e-2; do
        local flags=("$@")
        [ "${precision%%:*}" = fp16 ] && flags+=(--fp16)
        "$bin" export-onnx -m "$golden/$model" -o "$work/reference.onnx" "${flags[@]}" 2>/dev/null
        compare "$work/reference.onnx" "$golden/$input" "$golden/$fixture" "${precision#*:}"
    done
}

# TLC channel attention (fixed sizes only).
against_reference nafnet_w8.pth input_96x136.npy output_nafnet_w8_tlc32_96x136.npy --height 96 --width 136 --tlc 32
# The fork's transformers; the SwinIR safetensors reads its heads and windows of 4 from metadata.
for model in restormer/restormer_w8.pth restormer/promptir_w8.pth swinir/swinir_w12.pth \
    swinir/swinir_w12_heads.safetensors; do
    name=$(basename "${model%.*}")
    check "$name-dynamic-37x53" "$model" input_37x53.npy 1e-4 --dynamic
    for size in 5x3 1x1; do
        check "$name-dynamic-$size" "$model" "$work/input_$size.npy" 1e-4 --dynamic
    done
    against_reference "$model" input_37x53.npy "$(dirname "$model")/output_${name}_37x53.npy" --height 37 --width 53
done

echo "onnx export: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
