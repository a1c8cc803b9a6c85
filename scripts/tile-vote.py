"""Would whole images be named better from tiles of the size the head was trained on? For each
image of a `trainer degrade` folder, `maskdcpt classify` on the whole image and on its
non-overlapping TILE×TILE tiles (a grid from the top left corner); prints the top-1 of the
whole image, of the tiles' mean probabilities and of their mean log-probabilities
(docs/results.md, "Tiles of the training size").

    ~/.cache/maskdcpt/venv-photos/bin/python scripts/tile-vote.py runs/eval-all-whole [--tile 128]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from confusion import classify  # noqa: E402  (the scripts folder holds it)


def probabilities(binary: str, model: str | None, image: Path) -> dict[str, float]:
    """The head's probability per class for `image`."""
    return classify(binary, model, image)["probabilities"]


def top(scores: dict[str, float]) -> str:
    return max(scores, key=scores.__getitem__)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--model")
    ap.add_argument("--bin", default="target/release/maskdcpt")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    entries = json.loads((args.folder / "manifest.json").read_text())

    def scores(entry: dict, scratch: Path) -> tuple[str, dict, dict, dict]:
        image = Image.open(args.folder / entry["lq"]).convert("RGB")
        tiles = []
        for y in range(0, image.height - args.tile + 1, args.tile):
            for x in range(0, image.width - args.tile + 1, args.tile):
                path = scratch / f"{Path(entry['lq']).stem}-{y}-{x}.png"
                image.crop((x, y, x + args.tile, y + args.tile)).save(path)
                tiles.append(probabilities(args.bin, args.model, path))
        whole = probabilities(args.bin, args.model, args.folder / entry["lq"])
        tiles = tiles or [whole]
        mean = {k: sum(t[k] for t in tiles) / len(tiles) for k in whole}
        log_mean = {k: sum(math.log(max(t[k], 1e-30)) for t in tiles) / len(tiles) for k in whole}
        return entry["class"], whole, mean, log_mean

    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda e: scores(e, Path(scratch)), entries))
    for column, name in ((1, "whole image"), (2, "mean of tiles"), (3, "mean log of tiles")):
        right = sum(top(r[column]) == r[0] for r in results)
        print(f"{name}: {right}/{len(results)} = {100 * right / len(results):.1f} %")


if __name__ == "__main__":
    main()
