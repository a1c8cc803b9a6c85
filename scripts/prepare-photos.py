"""Writes the clean photographs the experiments and the default model train on, from
scikit-image 0.26.0's bundled sample images (licenses in docs/data.md), with a fixed split
of whole images: train/ and heldout/ (never seen in training). Grey images become RGB.

    python3 -m venv ~/.cache/maskdcpt/venv-photos && ~/.cache/maskdcpt/venv-photos/bin/pip install scikit-image==0.26.0
    ~/.cache/maskdcpt/venv-photos/bin/python scripts/prepare-photos.py runs/photos
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage
import skimage.data as data
from skimage.io import imsave

TRAIN = ["astronaut", "brick", "camera", "clock", "coins", "grass", "gravel", "hubble_deep_field",
         "immunohistochemistry", "retina", "rocket", "text"]
HELDOUT = ["chelsea", "coffee"]


def main() -> None:
    assert skimage.__version__ == "0.26.0", f"expected scikit-image 0.26.0, found {skimage.__version__}"
    out = Path(sys.argv[1])
    for split, names in (("train", TRAIN), ("heldout", HELDOUT)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            img = getattr(data, name)()
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            imsave(out / split / f"{name}.png", img[..., :3].astype(np.uint8), check_contrast=False)
    print(f"wrote {len(TRAIN)} training and {len(HELDOUT)} held-out images to {out}")


if __name__ == "__main__":
    main()
