#!/usr/bin/env python3
"""Compares two `maskdcpt restore` outputs of one golden model written on two kinds of CPU:
images byte for byte (at most one level apart), `.npy` files value for value (f32, the same
header) within F32_TOLERANCE, and exits 1 past the tolerance.

Usage: same_output.py MODEL WHERE REFERENCE OTHER
  (MODEL: the checkpoint's path under tests/golden, which sets the tolerance)."""
import array
import sys

# The largest |difference| the f32 outputs may have across ISAs: none, since our products give
# the same bits on each, except where Restormer's and PromptIR's attention sums go through the
# gemm crate, whose order of additions depends on the ISA.
F32_TOLERANCE = {"restormer/restormer_w8.pth": 1e-5, "restormer/promptir_w8.pth": 1e-5}


def npy_values(path):
    data = open(path, "rb").read()
    header = data.index(b"\n") + 1
    return data[:header], array.array("f", data[header:])


def main():
    model, where, reference, other = sys.argv[1:5]
    if reference.endswith(".npy"):
        tolerance = F32_TOLERANCE.get(model, 0.0)
        (head_a, a), (head_b, b) = npy_values(reference), npy_values(other)
        if head_a != head_b or len(a) != len(b):
            sys.exit(f"{model}: {where} wrote another .npy header or size")
        unit = "values"
    else:
        tolerance = 1
        a, b = open(reference, "rb").read(), open(other, "rb").read()
        if len(a) != len(b):
            sys.exit(f"{model}: {where} wrote another image ({len(b)} bytes, {len(a)} here)")
        unit = "bytes"
    worst = max((abs(x - y) for x, y in zip(a, b)), default=0)
    differing = sum(x != y for x, y in zip(a, b))
    print(f"{model}, {where}: {differing} of {len(a)} {unit} differ, by at most {worst:.3g}")
    if worst > tolerance:
        sys.exit(f"{model}: {where} differs by {worst:.3g}, more than {tolerance:g}")


main()
