"""Generate the Restormer golden fixtures in tests/golden/restormer/ (deterministic, CPU, float32).

    .venv-torch/bin/python scripts/gen_golden_restormer.py

Uses scripts/reference_restormer.py (checked bit-exact against the fork's `Restormer`, see
tests/golden/README.md). The model is a small Restormer with seeded random weights saved as a
BasicSR checkpoint (`params_ema`); inputs are the NAFNet cases' images; outputs are the raw
network outputs cropped to H x W (not clamped).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_restormer as R  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
OUT = GOLDEN / "restormer"

# Heads split every width unevenly across levels; the full-resolution decoder (16 channels)
# keeps level 1's single head.
CONFIG = dict(dim=8, blocks=(1, 1, 1, 2), refinement=1, heads=(1, 2, 4, 8))
SEED = 3001
INPUTS = ["input_37x53.npy", "input_16x24.npy", "input_5x7.npy"]


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    net = R.randomize_(R.RestormerRef(**CONFIG), SEED).eval()
    torch.save({"params_ema": net.state_dict()}, OUT / "restormer_w8.pth")
    cases = []
    for name in INPUTS:
        img = np.load(GOLDEN / name)
        with torch.no_grad():
            out = net(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        h, w = img.shape[:2]
        output = f"output_restormer_w8_{h}x{w}.npy"
        np.save(OUT / output, np.ascontiguousarray(out.astype(np.float32)))
        cases.append({"input": f"../{name}", "output": output})
    manifest = {
        "generator": "scripts/gen_golden_restormer.py",
        "torch": torch.__version__,
        "model": "restormer_w8.pth",
        "param_key": "params_ema",
        "config": {**CONFIG, "hidden": [int((CONFIG["dim"] << i) * 2.66) for i in range(4)]},
        "parameters": sum(p.numel() for p in net.parameters()),
        "tensors": len(net.state_dict()),
        "cases": cases,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
