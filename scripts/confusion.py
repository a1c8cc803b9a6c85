"""What the classification head gets wrong on a `trainer degrade` folder: for each class, the
images it names correctly and, for the others, the class it named with the image's level
and degradation. Uses `maskdcpt classify --json` (the library's head), so it reflects the
shipped model unless -m is given.

    python3 scripts/confusion.py runs/eval-all [--model MODEL] [--bin target/release/maskdcpt]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
from pathlib import Path


def classify(binary: str, model: str | None, image: Path) -> dict:
    """`maskdcpt classify --json` of `image` (one thread): its `top` class and `probabilities`."""
    cmd = [binary, "classify", "--json", "--threads", "1", "-i", str(image)] + (["-m", model] if model else [])
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--bin", default="target/release/maskdcpt")
    args = ap.parse_args()
    right: collections.Counter[str] = collections.Counter()
    wrong: dict[str, list[str]] = collections.defaultdict(list)
    for entry in json.loads((args.folder / "manifest.json").read_text()):
        top = classify(args.bin, args.model, args.folder / entry["lq"])["top"]
        if top == entry["class"]:
            right[entry["class"]] += 1
        else:
            wrong[entry["class"]].append(f"{top} (level {entry['level']}: {entry['description']})")
    for name in sorted(set(right) | set(wrong)):
        print(f"{name}: {right[name]}/{right[name] + len(wrong[name])} right" + "".join(f"\n  as {w}" for w in wrong[name]))


if __name__ == "__main__":
    main()
