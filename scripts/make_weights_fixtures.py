"""Regenerates tests/golden/weights/basicsr_tiny.pth, a real torch.save file for the weights tests.

Usage (any recent PyTorch; not needed to run the tests):
    python scripts/make_weights_fixtures.py [OUTPUT]

The file is a BasicSR-style dict {"params": ..., "params_ema": ...}:
- "params" is a real nn.Module state_dict (an OrderedDict with `_metadata`, so the pickle has a
  BUILD) plus extra tensors: a transposed (non-contiguous) view, a strided view at a storage
  offset, and f16 / bf16 / f64 tensors.
- "params_ema" holds the same keys with a `module.` prefix and every value doubled; its `weight`
  is an nn.Parameter (pickled through torch._utils._rebuild_parameter).
core/tests/weights.rs checks the values, so keep them in sync with `expected_params` there.
"""

import collections
import pathlib
import sys

import torch


def params() -> "collections.OrderedDict[str, torch.Tensor]":
    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3, 1, 1) * 0.5 - 1.0)
        conv.bias.copy_(torch.tensor([0.25, -0.75]))
    out = conv.state_dict()  # weight [2,3,1,1], bias [2]
    out["transposed"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # [3,2], stride (1,3)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    out["strided"] = base[1:, ::2]  # [[4,6],[8,10]]: offset 4, stride (4,2)
    out["half"] = torch.tensor([1.5, -2.25, 1000.0], dtype=torch.float16)
    out["brain"] = torch.tensor([1.0, -0.5, 3.0], dtype=torch.bfloat16)
    out["double"] = torch.tensor([[0.125, 2.5]], dtype=torch.float64)
    return out


def params_ema(p: "collections.OrderedDict[str, torch.Tensor]") -> "collections.OrderedDict[str, torch.Tensor]":
    ema = collections.OrderedDict(("module." + k, v * 2) for k, v in p.items())
    ema["module.weight"] = torch.nn.Parameter(p["weight"] * 2)
    return ema


def main() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "tests/golden/weights/basicsr_tiny.pth"
    out.parent.mkdir(parents=True, exist_ok=True)
    p = params()
    torch.save({"params": p, "params_ema": params_ema(p)}, out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
