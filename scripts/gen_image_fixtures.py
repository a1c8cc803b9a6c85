"""Image-decoding fixtures (tests/images/): lossy WebP files and the pixels libwebp decodes
them to (through Pillow), which the command's reader must give bit for bit.

    python scripts/gen_image_fixtures.py   # needs numpy and Pillow built with WebP

Each case is a seeded smooth pattern with noise, saved by Pillow as lossy WebP (odd sizes,
one with an alpha plane) and decoded back to RGB by Pillow, the decode stored as a PNG.
"""

from pathlib import Path

import numpy as np
from PIL import Image, features

OUT = Path(__file__).resolve().parent.parent / "tests" / "images"

# (name, height, width, quality, with alpha)
CASES = [("lossy_q80", 29, 37, 80, False), ("lossy_q10_alpha", 23, 41, 10, True)]


def pattern(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    planes = [128 + 100 * np.sin(x / 7 + c) * np.cos(y / 5 - c) for c in range(3)]
    noisy = np.stack(planes, -1) + rng.normal(0, 15, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def main() -> None:
    assert features.check("webp"), "Pillow without WebP"
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, height, width, quality, alpha) in enumerate(CASES):
        rgb = pattern(seed, height, width)
        pixels = np.dstack([rgb, rgb[..., 0]]) if alpha else rgb
        webp = OUT / f"{name}.webp"
        Image.fromarray(pixels).save(webp, quality=quality)
        decoded = Image.open(webp).convert("RGB")
        decoded.save(OUT / f"{name}_libwebp.png")
        print(f"{webp.name}: {webp.stat().st_size} bytes, libwebp {features.version('webp')}")


if __name__ == "__main__":
    main()
