"""Markdown tables for docs/results.md from `trainer eval --json` reports of two runs on the
same folders: input, run A and run B, PSNR / SSIM per class, and classifier top-1.

    python3 scripts/results_table.py runs/small-finetune-eval.json runs/small-scratch-eval.json
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
    for fa, fb in zip(a["folders"], b["folders"]):
        print(f"\n`{fa['dir']}`\n")
        print("| class | n | input PSNR / SSIM | pre-trained init | scratch init | top-1 pre-trained | top-1 scratch |")
        print("|---|---|---|---|---|---|---|")
        rows = list(fa["by_class"].items()) + [("**all**", fa["all"])]
        for name, sa in rows:
            sb = fb["by_class"].get(name, fb["all"]) if name != "**all**" else fb["all"]

            def top1(s):
                return "-" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"

            print(f"| {name} | {sa['images']} | {sa['input_psnr']:.2f} / {sa['input_ssim']:.4f} "
                  f"| {sa['psnr']:.2f} / {sa['ssim']:.4f} | {sb['psnr']:.2f} / {sb['ssim']:.4f} "
                  f"| {top1(sa)} | {top1(sb)} |")


if __name__ == "__main__":
    main()
