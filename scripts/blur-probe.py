"""Can the blur kinds be told apart from a 128-pixel crop's power spectrum? Fits a small
perceptron on the spectral signature of `trainer degrade` folders of the three blur classes and
reports its held-out accuracy per class (docs/results.md, "A spectral branch").

The signature is the one maskdcpt-core's `spectrum` module computes (log mean power of the
luminance over 64×64 Hann-windowed tiles, 16 radial × 8 orientation bins, mean removed),
re-implemented with numpy; the perceptron (64 hidden units, ReLU) is trained with Adam on
standardised signatures, as the trainer's spectral branch is.

    for s in packages:101 train:102 heldout:103; do
      trainer degrade --in runs/photos/${s%:*} --out runs/blur-probe/${s%:*} --seed ${s#*:} --crop 128 \\
          --classes motion_blur,defocus_blur,gaussian_blur --per-image $([ ${s%:*} = heldout ] && echo 40 || echo 20)
    done
    python3 scripts/blur-probe.py runs/blur-probe/packages runs/blur-probe/train --held-out runs/blur-probe/heldout
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["motion_blur", "defocus_blur", "gaussian_blur"]
TILE, RADIAL, ANGULAR = 64, 16, 8


def bins() -> np.ndarray:
    """Bin of each frequency of a tile's DFT (−1: none), as maskdcpt-core assigns them."""
    k = np.arange(TILE)
    signed = np.where(k < TILE // 2, k, k - TILE)
    v, u = np.meshgrid(signed, signed, indexing="ij")
    radial = np.floor(np.sqrt(u * u + v * v)).astype(int) // 2
    angle = np.mod(np.arctan2(v, u), np.pi)
    orientation = np.minimum((angle / np.pi * ANGULAR).astype(int), ANGULAR - 1)
    return np.where((radial >= 1) & (radial <= RADIAL), (radial - 1) * ANGULAR + orientation, -1)


BINS = bins()
HANN = np.hanning(TILE)[:, None] * np.hanning(TILE)[None, :]


def signature(path: Path) -> np.ndarray:
    y = np.asarray(Image.open(path).convert("RGB"), np.float64).mean(axis=2) / 255.0
    tiles = [
        y[r : r + TILE, c : c + TILE]
        for r in range(0, y.shape[0] - TILE + 1, TILE)
        for c in range(0, y.shape[1] - TILE + 1, TILE)
    ]
    power = np.mean([np.abs(np.fft.fft2((t - t.mean()) * HANN)) ** 2 for t in tiles], axis=0)
    keep = BINS >= 0
    sums = np.bincount(BINS[keep], power[keep], RADIAL * ANGULAR)
    counts = np.bincount(BINS[keep], minlength=RADIAL * ANGULAR)
    logs = np.log(sums / counts + 1e-10)
    return logs - logs.mean()


def load(folders: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    x, y = [], []
    for folder in folders:
        for entry in json.loads((folder / "manifest.json").read_text()):
            x.append(signature(folder / entry["lq"]))
            y.append(CLASSES.index(entry["class"]))
    return np.array(x), np.array(y)


def fit(x: np.ndarray, y: np.ndarray, steps: int, batch: int, seed: int):
    """Adam (lr 1e-3, betas 0.9/0.99), PyTorch's default linear initialisation."""
    rng = np.random.default_rng(seed)
    d, h = x.shape[1], 64
    p = {
        "w1": rng.uniform(-1, 1, (d, h)) / np.sqrt(d),
        "b1": rng.uniform(-1, 1, h) / np.sqrt(d),
        "w2": rng.uniform(-1, 1, (h, len(CLASSES))) / np.sqrt(h),
        "b2": rng.uniform(-1, 1, len(CLASSES)) / np.sqrt(h),
    }
    m = {k: np.zeros_like(v) for k, v in p.items()}
    s = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, steps + 1):
        i = rng.integers(0, len(y), batch)
        hidden = np.maximum(x[i] @ p["w1"] + p["b1"], 0)
        z = hidden @ p["w2"] + p["b2"]
        prob = np.exp(z - z.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        prob[np.arange(batch), y[i]] -= 1
        g_z = prob / batch
        g_hidden = g_z @ p["w2"].T * (hidden > 0)
        grads = {"w2": hidden.T @ g_z, "b2": g_z.sum(0), "w1": x[i].T @ g_hidden, "b1": g_hidden.sum(0)}
        for k in p:
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            s[k] = 0.99 * s[k] + 0.01 * grads[k] ** 2
            p[k] -= 1e-3 * (m[k] / (1 - 0.9**t)) / (np.sqrt(s[k] / (1 - 0.99**t)) + 1e-8)
    return lambda q: (np.maximum(q @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]).argmax(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train", type=Path, nargs="+")
    ap.add_argument("--held-out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    x, y = load(args.train)
    hx, hy = load([args.held_out])
    centre, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    for standardised in (False, True):
        tx, thx = ((x - centre) / scale, (hx - centre) / scale) if standardised else (x, hx)
        for steps in (300, 1000, 3000):
            predict = fit(tx, y, steps, args.batch, seed=0)
            right = predict(thx) == hy
            per_class = " ".join(f"{c} {right[hy == i].sum()}/{(hy == i).sum()}" for i, c in enumerate(CLASSES))
            label = "standardised" if standardised else "raw"
            print(f"{label:12} {steps:5} steps: train {np.mean(predict(tx) == y):.3f} held-out {right.mean():.3f} ({per_class})")


if __name__ == "__main__":
    main()
