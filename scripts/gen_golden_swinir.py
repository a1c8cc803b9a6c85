"""Generate the SwinIR golden fixtures in tests/golden/swinir/ (deterministic, CPU, float32).

    .venv-torch/bin/python scripts/gen_golden_swinir.py

Uses scripts/reference_swinir.py (checked bit-exact against the fork's `SwinIR`, see
tests/golden/README.md). Two small models with seeded random weights:
- `swinir_w12.pth`: a BasicSR checkpoint with the fork's defaults for what the weights do not
  say (6 heads, windows of 8); the outputs are of its `params`, which the fork's SwinIR 5D
  config reads and maskdcpt reads by default for a SwinIR, and its `params_ema` holds other
  weights (seed + 100);
- `swinir_w12_heads.safetensors`: other heads per group and windows of 4, which the
  `swinir.num_heads` / `swinir.window_size` metadata carry.
Inputs are the NAFNet cases' images; outputs are the raw network outputs cropped to H x W.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_swinir as R  # noqa: E402
from gen_golden_restormer import write_cases  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
OUT = GOLDEN / "swinir"

# Six residual groups, as the fork builds them (its decode groups read depths[i + 3]).
DEFAULTS = dict(embed_dim=12, depths=(1, 2, 1, 1, 2, 1), heads=(6,) * 6, window=8, mlp_ratio=2.0)
METADATA = dict(embed_dim=12, depths=(2, 1, 1, 2, 1, 1), heads=(2, 3, 1, 4, 6, 2), window=4, mlp_ratio=1.5)
MODELS = [("swinir_w12.pth", DEFAULTS, 4001), ("swinir_w12_heads.safetensors", METADATA, 4002)]


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors layout: a little-endian u64 header length, the JSON header, the data."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset, blobs = 0, []
    for key, t in tensors.items():
        blob = t.detach().contiguous().numpy().astype("<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    models = []
    for file, config, seed in MODELS:
        net = R.randomize_(R.SwinIRRef(**config), seed).eval()
        if file.endswith(".pth"):
            ema = R.randomize_(R.SwinIRRef(**config), seed + 100)
            torch.save({"params": net.state_dict(), "params_ema": ema.state_dict()}, OUT / file)
        else:
            metadata = {"swinir.num_heads": ",".join(map(str, config["heads"])),
                        "swinir.window_size": str(config["window"])}
            save_safetensors(OUT / file, net.state_dict(), metadata)
        cases = write_cases(net, Path(file).stem, OUT)
        models.append({
            "model": file,
            "param_key": None,
            "config": {**config, "mlp_hidden": int(config["embed_dim"] * config["mlp_ratio"])},
            "parameters": sum(p.numel() for p in net.parameters()),
            "tensors": len(net.state_dict()),
            "cases": cases,
        })
    manifest = {"generator": "scripts/gen_golden_swinir.py", "torch": torch.__version__, "models": models}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {sum(len(m['cases']) for m in models)} cases to {OUT}")


if __name__ == "__main__":
    main()
