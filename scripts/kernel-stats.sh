#!/usr/bin/env bash
# Static cost of the CUDA engine's kernels on a CPU-only host: compiles core's kernels.cu as
# NVRTC would (FP16 storage unless --f32) with nvcc and ptxas 13.0 from PyPI wheels (cached
# venv, no GPU or driver needed), then prints one row per kernel: registers, spilled bytes,
# static SASS instructions and how many of them are FP32 FMAs, half-to-float conversions
# (HADD2.F32), global loads and stores. Static counts are per thread and include every path
# (a kernel's fast and checked paths both count); docs/perf.md says how they were read.
# Usage: scripts/kernel-stats.sh [--arch sm_90] [--f32] [KERNEL-NAME-PATTERN]
set -euo pipefail
arch=sm_90
defines=(-DMASKDCPT_FP16)
pattern=.
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --f32) defines=(); shift ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) pattern="$1"; shift ;;
    esac
done
venv="${MASKDCPT_CUDA_TOOLS_VENV:-$HOME/.cache/maskdcpt/venv-cuda-tools-13.0}"
tools="$venv/lib/python3*/site-packages/nvidia/cu13"
if ! ls $tools/bin/nvdisasm > /dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    # nvdisasm 13.0 is not on PyPI; 13.5 reads sm_75..sm_90 cubins of ptxas 13.0.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps nvidia-cuda-nvcc==13.0.88 \
        nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 \
        nvidia-cuda-nvdisasm==13.5.37 >&2
fi
bin=$(ls -d $tools/bin | head -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source="$(cd "$(dirname "$0")/.." && pwd)/core/src/backend/cuda/kernels.cu"
"$bin/nvcc" -cubin -arch="$arch" "${defines[@]}" -std=c++17 -o "$work/k.cubin" "$source" \
    -Xptxas -v 2> "$work/ptxas.txt"
"$bin/nvdisasm" -c "$work/k.cubin" > "$work/k.sass"
printf '%-22s %5s %6s %6s %6s %6s %5s %5s\n' kernel regs spill instr FFMA cvt LDG STG
awk '
    /Compiling entry function/ { match($0, /\047[^\047]+\047/); name = substr($0, RSTART + 1, RLENGTH - 2) }
    /spill stores/ { spill[name] = $5 }
    /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); regs[name] = substr($0, RSTART + 5, RLENGTH - 5) }
    END { for (n in regs) print n, regs[n], spill[n] }
' "$work/ptxas.txt" | sort > "$work/resources.txt"
while read -r name regs spill; do
    [[ "$name" =~ $pattern ]] || continue
    awk -v f="$name" '$0 == f ":" { on = 1; next } on && /^[A-Za-z_][A-Za-z0-9_]*:$/ { on = 0 } on' "$work/k.sass" \
        | grep -oP '/\*[0-9a-f]{4}\*/\s+\K[^;]+' > "$work/body.txt" || true
    count() { grep -cE "$1" "$work/body.txt" || true; }
    printf '%-22s %5s %6s %6s %6s %6s %5s %5s\n' "$name" "$regs" "$spill" "$(wc -l < "$work/body.txt")" \
        "$(count '^(@!?U?P[T0-9]+ )?FFMA')" "$(count 'HADD2\.F32')" "$(count '^(@!?U?P[T0-9]+ )?LDG')" \
        "$(count '^(@!?U?P[T0-9]+ )?STG')"
done < "$work/resources.txt"
