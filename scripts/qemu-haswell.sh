#!/usr/bin/env bash
# Runs a program under qemu-x86_64 as a Haswell CPU (AVX2+FMA, no AVX-512), without the
# emulator's notes on the features it does not emulate (scripts/test-x86-avx2.sh's test runner).
set -uo pipefail
qemu-x86_64 -cpu Haswell "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2)
