#!/usr/bin/env python3
"""Checks an ONNX file exported by `maskdcpt export-onnx` against an expected output.

    check_onnx.py MODEL.onnx INPUT.npy EXPECTED.npy [--tol 1e-4]

INPUT is an H×W×3 float32 RGB image, EXPECTED the raw `.npy` output of `maskdcpt restore`
or a PyTorch fixture, on it. Runs `onnx.checker.check_model(full_check=True)`, then ONNX Runtime (CPU), and fails
if max |ONNX Runtime − expected| exceeds the tolerance. Prints one line of results.
"""
import argparse
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("expected")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    onnx.checker.check_model(onnx.load(args.model), full_check=True)
    image = np.load(args.input).astype(np.float32)
    expected = np.load(args.expected).astype(np.float32)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    nchw = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
    got = session.run(["output"], {"input": nchw})[0][0].transpose(1, 2, 0)
    if got.shape != expected.shape:
        print(f"FAIL {args.model}: output shape {got.shape}, expected {expected.shape}")
        return 1
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    verdict = "ok" if diff <= args.tol else "FAIL"
    print(f"{verdict} {args.model}: checker full_check passed; onnxruntime {ort.__version__} "
          f"max |diff| vs expected = {diff:.3e} (tolerance {args.tol:g})")
    return 0 if diff <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
