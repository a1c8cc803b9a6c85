#!/usr/bin/env python3
"""Compares two `maskdcpt restore` outputs of one model written on two machines (CPU kinds):
images byte for byte (at most one level apart), `.npy` files value for value (f32, the same
header), and exits 1 past the tolerance.

Usage: same_output.py MODEL-NAME WHERE REFERENCE OTHER [TOLERANCE]
  (TOLERANCE: the largest |difference| allowed, in levels for images, default 0 for .npy)."""
import array
import sys


def npy_values(path):
    data = open(path, "rb").read()
    header = data.index(b"\n") + 1
    return data[:header], array.array("f", data[header:])


def main():
    model, where, reference, other = sys.argv[1:5]
    if reference.endswith(".npy"):
        tolerance = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        (head_a, a), (head_b, b) = npy_values(reference), npy_values(other)
        if head_a != head_b or len(a) != len(b):
            sys.exit(f"{model}: {where} wrote another .npy header or size")
        unit = "values"
    else:
        tolerance = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
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
