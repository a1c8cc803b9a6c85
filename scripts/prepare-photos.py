"""Writes the clean photographs the experiments and the default model train on, with a fixed
split of whole images (licenses in docs/data.md):

- train/ and heldout/ (never seen in training): scikit-image 0.26.0's bundled sample images,
  grey ones replicated to RGB;
- packages/ (training only, with --packages): the photographs of Debian's
  lomiri-wallpapers-16.04 and lomiri-wallpapers-20.04 (the illustrations left out), scaled
  down (Lanczos) to at most 1024 pixels on the long side, where a 96-pixel crop holds as
  much detail as in the sample images.

    python3 -m venv ~/.cache/maskdcpt/venv-photos && ~/.cache/maskdcpt/venv-photos/bin/pip install scikit-image==0.26.0
    ~/.cache/maskdcpt/venv-photos/bin/python scripts/prepare-photos.py runs/photos [--packages]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import skimage
import skimage.data as data
from PIL import Image
from skimage.io import imsave

TRAIN = ["astronaut", "brick", "camera", "clock", "coins", "grass", "gravel", "hubble_deep_field",
         "immunohistochemistry", "retina", "rocket", "text"]
HELDOUT = ["chelsea", "coffee"]
# Debian package -> the photographs it carries under /usr/share/backgrounds.
PACKAGE_PHOTOS = {
    "lomiri-wallpapers-16.04": [
        "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich", "Bridge_by_Sander_Klootwijk",
        "Dragonfly_by_Bolly", "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
        "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
        "Picture_0B_by_freespace", "Picture_1A_by_freespace", "seeding_by_Clements_Engelhardt",
        "sunset_by_Aitzol_Berasategi", "Wine_by_Jakkub_Mede",
    ],
    "lomiri-wallpapers-20.04": ["Kleiber_by_Lukas_Baubkus"],
}
LONG_SIDE = 1024


def write_samples(out: Path) -> None:
    for split, names in (("train", TRAIN), ("heldout", HELDOUT)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            img = getattr(data, name)()
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            imsave(out / split / f"{name}.png", img[..., :3].astype(np.uint8), check_contrast=False)
    print(f"wrote {len(TRAIN)} training and {len(HELDOUT)} held-out images to {out}")


def write_package_photos(out: Path) -> None:
    (out / "packages").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *PACKAGE_PHOTOS], cwd=tmp, check=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "root")], check=True)
        for names in PACKAGE_PHOTOS.values():
            for name in names:
                img = Image.open(Path(tmp) / "root/usr/share/backgrounds" / f"{name}.jpg").convert("RGB")
                img.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
                img.save(out / "packages" / f"{name}.png")
    count = sum(len(names) for names in PACKAGE_PHOTOS.values())
    print(f"wrote {count} training photographs from Debian packages to {out / 'packages'}")


def main() -> None:
    assert skimage.__version__ == "0.26.0", f"expected scikit-image 0.26.0, found {skimage.__version__}"
    out = Path(sys.argv[1])
    write_samples(out)
    if "--packages" in sys.argv[2:]:
        write_package_photos(out)


if __name__ == "__main__":
    main()
