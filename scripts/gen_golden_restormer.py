"""Generate the Restormer and PromptIR golden fixtures in tests/golden/restormer/
(deterministic, CPU, float32).

    .venv-torch/bin/python scripts/gen_golden_restormer.py

Uses scripts/reference_restormer.py (checked bit-exact against the fork's `Restormer` and
`PromptIR`, see tests/golden/README.md). Each model is small, with seeded random weights, saved
as a BasicSR checkpoint (`params_ema`); inputs are the NAFNet cases' images; outputs are the raw
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
INPUTS = ["input_37x53.npy", "input_16x24.npy", "input_5x7.npy"]

# Heads split every width unevenly across levels; the full-resolution decoder (16 channels)
# keeps level 1's single head.
RESTORMER = dict(dim=8, blocks=(1, 1, 1, 2), refinement=1, heads=(1, 2, 4, 8))
# PromptIR at width 8: prompts (channels, side, features) for prompt1..3 whose sides are below
# and above the feature maps' (37x53 pads to 40x56: 20x28, 10x14 and 5x7 at levels 1-3), so the
# bilinear resize both enlarges and shrinks.
PROMPTIR = dict(dim=8, blocks=(1, 1, 1, 1), refinement=1, heads=(1, 2, 4, 8),
                prompts=((4, 16, 16), (8, 4, 32), (12, 8, 64)), prompt_count=3)
MODELS = [
    ("restormer", "restormer_w8", R.RestormerRef, RESTORMER, 3001),
    ("promptir", "promptir_w8", R.PromptIRRef, PROMPTIR, 3002),
]


def write_cases(net: torch.nn.Module, stem: str, out_dir: Path) -> list[dict]:
    """Runs `net` on each of INPUTS (HWC float32 in tests/golden/) and saves its raw output as
    `output_{stem}_{H}x{W}.npy` in `out_dir`; returns the manifest's cases."""
    cases = []
    for name in INPUTS:
        img = np.load(GOLDEN / name)
        with torch.no_grad():
            out = net(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        h, w = img.shape[:2]
        output = f"output_{stem}_{h}x{w}.npy"
        np.save(out_dir / output, np.ascontiguousarray(out.astype(np.float32)))
        cases.append({"input": f"../{name}", "output": output})
    return cases


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    models = []
    for architecture, stem, cls, config, seed in MODELS:
        net = R.randomize_(cls(**config), seed).eval()
        torch.save({"params_ema": net.state_dict()}, OUT / f"{stem}.pth")
        cases = write_cases(net, stem, OUT)
        models.append({
            "architecture": architecture,
            "model": f"{stem}.pth",
            "param_key": "params_ema",
            "config": {
                **config,
                "hidden": [int((config["dim"] << i) * 2.66) for i in range(4)],
            },
            "parameters": sum(p.numel() for p in net.parameters()),
            "tensors": len(net.state_dict()),
            "cases": cases,
        })
    manifest = {"generator": "scripts/gen_golden_restormer.py", "torch": torch.__version__, "models": models}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {sum(len(m['cases']) for m in models)} cases to {OUT}")


if __name__ == "__main__":
    main()
