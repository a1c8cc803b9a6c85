"""Writes the clean photographs the experiments and the default model train on, with a fixed
split of whole images (licenses in docs/data.md):

- train/ and heldout/ (never seen in training): scikit-image 0.26.0's bundled sample images,
  grey ones replicated to RGB;
- packages/ (training only, with --packages): the photographs of Debian's
  lomiri-wallpapers-16.04 and lomiri-wallpapers-20.04 (the illustrations left out), scaled
  down (Lanczos) to at most 1024 pixels on the long side, where a 96-pixel crop holds as
  much detail as in the sample images;
- fit/ (with --fit): the photographs of Debian's plasma-workspace-wallpapers (2560×1600
  versions, the illustrations left out), scaled the same way. The network and its head never
  train on them: `trainer fit-spectrum` fits the head's spectral branch on them, so that it
  learns how the head answers on photographs it has not seen.

    python3 -m venv ~/.cache/maskdcpt/venv-photos && ~/.cache/maskdcpt/venv-photos/bin/pip install scikit-image==0.26.0
    ~/.cache/maskdcpt/venv-photos/bin/python scripts/prepare-photos.py runs/photos [--packages] [--fit]
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
# Debian package -> the photographs it carries (`usr/share/backgrounds/NAME.jpg`).
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
# The same for the photographs the spectral branch is fitted on
# (`usr/share/wallpapers/NAME/contents/images/2560x1600.jpg`).
FIT_PHOTOS = {
    "plasma-workspace-wallpapers": [
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
        "OneStandsOut", "Path", "summer_1am",
    ],
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


def write_package_photos(out: Path, packages: dict[str, list[str]], path: str) -> None:
    """Writes the photographs `packages` carry at `path` (formatted with their name) to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *packages], cwd=tmp, check=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "root")], check=True)
        for names in packages.values():
            for name in names:
                img = Image.open(Path(tmp) / "root" / path.format(name=name)).convert("RGB")
                img.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
                img.save(out / f"{name}.png")
    count = sum(len(names) for names in packages.values())
    print(f"wrote {count} photographs from Debian packages to {out}")


def main() -> None:
    assert skimage.__version__ == "0.26.0", f"expected scikit-image 0.26.0, found {skimage.__version__}"
    out = Path(sys.argv[1])
    write_samples(out)
    if "--packages" in sys.argv[2:]:
        write_package_photos(out / "packages", PACKAGE_PHOTOS, "usr/share/backgrounds/{name}.jpg")
    if "--fit" in sys.argv[2:]:
        write_package_photos(out / "fit", FIT_PHOTOS, "usr/share/wallpapers/{name}/contents/images/2560x1600.jpg")


if __name__ == "__main__":
    main()
