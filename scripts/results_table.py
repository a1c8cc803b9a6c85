"""Markdown tables from `trainer eval --json` reports. With two reports of runs on the same
folders (docs/results.md): input, run A and run B, PSNR / SSIM per class, and classifier
top-1. With one (docs/model-card.md): input and restored PSNR / SSIM, the gain and top-1.

    python3 scripts/results_table.py runs/small-finetune-eval.json runs/small-scratch-eval.json
    python3 scripts/results_table.py runs/default-model-96-eval.json
"""

from __future__ import annotations

import json
import sys


def top1(s: dict) -> str:
    return "-" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"


def single(report: dict) -> None:
    for folder in report["folders"]:
        print(f"\n`{folder['dir']}` ({folder['all']['images']} images)\n")
        print("| class | n | input PSNR / SSIM | restored PSNR / SSIM | gain (dB) | classifier top-1 |")
        print("|---|---|---|---|---|---|")
        for name, s in list(folder["by_class"].items()) + [("**all**", folder["all"])]:
            print(f"| {name} | {s['images']} | {s['input_psnr']:.2f} / {s['input_ssim']:.4f} "
                  f"| {s['psnr']:.2f} / {s['ssim']:.4f} | {s['psnr'] - s['input_psnr']:+.2f} | {top1(s)} |")


def main() -> None:
    if len(sys.argv) == 2:
        single(json.load(open(sys.argv[1])))
        return
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
    for fa, fb in zip(a["folders"], b["folders"]):
        print(f"\n`{fa['dir']}`\n")
        print("| class | n | input PSNR / SSIM | pre-trained init | scratch init | top-1 pre-trained | top-1 scratch |")
        print("|---|---|---|---|---|---|---|")
        rows = list(fa["by_class"].items()) + [("**all**", fa["all"])]
        for name, sa in rows:
            sb = fb["by_class"].get(name, fb["all"]) if name != "**all**" else fb["all"]
            print(f"| {name} | {sa['images']} | {sa['input_psnr']:.2f} / {sa['input_ssim']:.4f} "
                  f"| {sa['psnr']:.2f} / {sa['ssim']:.4f} | {sb['psnr']:.2f} / {sb['ssim']:.4f} "
                  f"| {top1(sa)} | {top1(sb)} |")


if __name__ == "__main__":
    main()
