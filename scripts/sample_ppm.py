#!/usr/bin/env python3
"""Writes the C ABI checks' test image: a deterministic 45x30 RGB pattern as binary PPM.

    sample_ppm.py OUT.ppm

45x30 is not a multiple of 8 or 16, so every network pads it. Used by scripts/test-capi.sh and
scripts/test-aarch64.sh.
"""
import sys

w, h = 45, 30
pixels = bytes((x * 5 + y * 7 + c * 80 + (x * y) % 13) % 256 for y in range(h) for x in range(w) for c in range(3))
open(sys.argv[1], "wb").write(b"P6\n%d %d\n255\n" % (w, h) + pixels)
