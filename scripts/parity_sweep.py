"""Random-architecture parity sweep: `maskdcpt restore --backend cpu` against the PyTorch
reference (scripts/reference_nafnet.py) on networks and images no fixture has.

    python scripts/parity_sweep.py [--seed S] [--cases N] [--large] [--onnx] [--tlc] [--restormer] [--swinir] [--jpeg] [--bin target/release/maskdcpt]

Each case draws a family (MaskDCPT or upstream NAFNet), a width, 1-4 levels with 0-2 blocks
per encoder, decoder and bottleneck group (at least one block in all), seeded random weights
at a realistic scale (reference_nafnet.randomize_), an image of random size (3-90 pixels a
side, or 100-400 with --large; a third of them scaled beyond [0, 1]) and, for a quarter, tiling
with whole-image channel attention (`--tile N --sca global`, which is exact). It prints a line
per case and exits 1 when any output is more than 1e-4 (relative to its peak, where that
exceeds 1) from the reference or any restore fails. With --onnx each model is also exported
(`maskdcpt export-onnx`, dynamic and at the image's fixed size) and run in ONNX Runtime against
the same reference. With --tlc each case is also restored with `--tlc T` (a random training crop
of 16-64 pixels, so that windows are smaller than the maps) against the reference with
upstream NAFNet's TLC windows (reference_nafnet.use_tlc_), and with --onnx also exported with
them at the image's fixed size; and with `--tlc-sampled T` (MaskDCPT's NAFNet class) against
use_tlc_(sampled=True), where a size the reference refuses (windows of no sample) must be
refused too. With --restormer a third of the cases are the MaskDCPT fork's Restormer or PromptIR
instead (scripts/reference_restormer.py: even dim 4-16, or 24-48 with --large, 1-2 blocks per
level, 0-2 refinement blocks, heads dividing every width, feed-forward expansion 1.5-2.66;
PromptIR with random prompt widths, counts and sides), restored whole or with
`--tile N --sca global` (which runs it whole), and exported with --onnx; they have no TLC. With --swinir
a third of the cases (of those left) are the fork's SwinIR (scripts/reference_swinir.py: six
groups of 0-2 blocks, the first at least 1, random heads per group and window side, written
into the safetensors metadata, random MLP ratio, qkv bias and patch norm), restored the same ways.
With --jpeg each case's image (clipped to [0, 1]) is also written as a JPEG by OpenCV at a
random quality (10-95), chroma subsampling (4:1:1, 4:2:0, 4:2:2, 4:4:0, 4:4:4) and, for a
third, progressive, and restored from that file against the reference run on
`cv2.imread(path, cv2.IMREAD_COLOR)` / 255, as the reference's data loader reads it.
Needs torch and numpy (CPU), onnxruntime for --onnx and opencv-python(-headless) for --jpeg.
"""

from __future__ import annotations

import argparse
import copy
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_nafnet as R  # noqa: E402
import reference_restormer as RR  # noqa: E402
import reference_swinir as RS  # noqa: E402
from gen_golden_swinir import save_safetensors  # noqa: E402


def draw_spec(rng: random.Random, large: bool) -> dict:
    while True:
        levels = rng.randint(1, 4)
        spec = dict(
            width=rng.choice([32, 48, 64] if large else [8, 16, 24, 32]),
            enc_blocks=[rng.randint(0, 2) for _ in range(levels)],
            middle_blocks=rng.randint(0, 2),
            dec_blocks=[rng.randint(0, 2) for _ in range(levels)],
        )
        # A network without blocks has the same keys in both layouts: the CLI refuses it.
        if sum(spec["enc_blocks"]) + spec["middle_blocks"] + sum(spec["dec_blocks"]) > 0:
            return spec


def draw_restormer(rng: random.Random, large: bool) -> dict:
    dim = rng.choice([24, 32, 48] if large else [4, 8, 12, 16])
    # Heads divide each level's width; the full-resolution decoder keeps level 0's.
    heads = [rng.choice([h for h in (1, 2, 4, 8) if (dim << level) % h == 0]) for level in range(4)]
    return dict(
        dim=dim,
        blocks=[rng.randint(1, 2) for _ in range(4)],
        refinement=rng.randint(0, 2),
        heads=heads,
        expansion=rng.choice([1.5, 2.0, 2.66]),
    )


def draw_prompts(rng: random.Random, dim: int) -> dict:
    # (channels, side, features) for prompt1..3; the features are the decoder's widths.
    sides = [1, 2, 3, 5, 8, 16]
    prompts = [(rng.randint(1, 12), rng.choice(sides), dim << (level + 1)) for level in range(3)]
    return dict(prompts=prompts, prompt_count=rng.randint(1, 5))


def draw_swinir(rng: random.Random, large: bool) -> dict:
    head_dim = rng.choice([4, 6, 8] if large else [1, 2, 3])
    heads = [rng.choice([1, 2, 3, 6]) for _ in range(6)]
    # Every group's heads divide the width.
    width = head_dim * 6
    return dict(
        embed_dim=width,
        depths=[rng.randint(1, 2)] + [rng.randint(0, 2) for _ in range(5)],
        heads=heads,
        window=rng.choice([2, 4, 5, 8]),
        mlp_ratio=rng.choice([1.0, 1.5, 2.0]),
        qkv_bias=rng.random() < 0.8,
        patch_norm=rng.random() < 0.8,
    )


def run_transformer(net: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    """The harness's reflect padding to a multiple of 8 or the window (numpy's, which keeps
    mirroring where a pad is longer than the side, as maskdcpt does and PyTorch refuses), run,
    crop."""
    h, w = img.shape[:2]
    multiple = getattr(net, "window", RR.SIZE_MULTIPLE)
    padded = np.pad(img, ((0, (-h) % multiple), (0, (-w) % multiple), (0, 0)), mode="reflect")
    with torch.no_grad():
        out = net.network(torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].contiguous())
    return out[0, :, :h, :w].permute(1, 2, 0).numpy()


def cli(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())


def restore(binary: str, work: Path, flags: list[str], model: str = "model.pth", image: str = "in.npy") -> np.ndarray:
    cli([binary, "restore", "-m", str(work / model), "-i", str(work / image), "-o", str(work / "out.npy"),
         "--backend", "cpu", *flags])
    return np.load(work / "out.npy")


def write_jpeg(rng: random.Random, img: np.ndarray, path: Path) -> tuple[str, np.ndarray]:
    """Writes `img` as an 8-bit JPEG with OpenCV at random settings; returns them and the
    image as the reference's loader reads the file back (RGB, / 255)."""
    import cv2

    quality = rng.randint(10, 95)
    sampling = rng.choice(["411", "420", "422", "440", "444"])
    progressive = rng.random() < 1 / 3
    bgr = np.rint(np.clip(img, 0, 1)[..., ::-1] * 255).astype(np.uint8)
    options = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive),
               cv2.IMWRITE_JPEG_SAMPLING_FACTOR, getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{sampling}")]
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr), options)
    read = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
    return f"q{quality} {sampling}{' progressive' if progressive else ''}", np.ascontiguousarray(read)


def run_onnx(binary: str, work: Path, img: np.ndarray, shape: list[str], model: str = "model.pth") -> np.ndarray:
    import onnxruntime as ort

    cli([binary, "export-onnx", "-m", str(work / model), "-o", str(work / "model.onnx"), *shape])
    session = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
    try:
        out = session.run(None, {"input": img.transpose(2, 0, 1)[None]})[0]
    except Exception as e:  # ONNX Runtime's own error types
        raise RuntimeError(str(e)) from e
    return out[0].transpose(1, 2, 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--large", action="store_true", help="widths 32-64, images of 100-400 pixels a side")
    ap.add_argument("--onnx", action="store_true", help="also export each model and run it in ONNX Runtime")
    ap.add_argument("--tlc", action="store_true", help="also restore each case with TLC channel attention")
    ap.add_argument("--restormer", action="store_true", help="a third of the cases are Restormers")
    ap.add_argument("--swinir", action="store_true", help="a third of the cases (of those left) are SwinIRs")
    ap.add_argument("--jpeg", action="store_true", help="also restore each image from a JPEG written and read by OpenCV")
    ap.add_argument("--bin", default=str(HERE.parent / "target/release/maskdcpt"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    failures, checked, worst = 0, 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for case in range(args.cases):
            restormer = args.restormer and rng.random() < 1 / 3
            swinir = not restormer and args.swinir and rng.random() < 1 / 3
            family = rng.choice(["restormer", "promptir"]) if restormer else rng.choice(["maskdcpt", "nafnet"])
            model = "model.pth"
            if swinir:
                family, spec, model = "swinir", draw_swinir(rng, args.large), "model.safetensors"
                net = RS.randomize_(RS.SwinIRRef(**spec).eval(), seed=args.seed * 1000 + case)
                metadata = {"swinir.num_heads": ",".join(map(str, spec["heads"])),
                            "swinir.window_size": str(spec["window"])}
                save_safetensors(work / model, net.state_dict(), metadata)
            elif restormer:
                spec = draw_restormer(rng, args.large)
                if family == "promptir":
                    spec.update(draw_prompts(rng, spec["dim"]))
                    # The noise-level blocks take level 2's heads: they must split their widths.
                    spec["heads"][2] = 1
                cls = RR.PromptIRRef if family == "promptir" else RR.RestormerRef
                net = RR.randomize_(cls(**spec).eval(), seed=args.seed * 1000 + case)
            else:
                spec = draw_spec(rng, args.large)
                net = R.randomize_(R.build_model(family, **spec), seed=args.seed * 1000 + case)
            if not swinir:
                torch.save({"params": net.state_dict()}, work / "model.pth")
            lo, hi = (100, 400) if args.large else (3, 90)
            h, w = rng.randint(lo, hi), rng.randint(lo, hi)
            img = np.random.default_rng(args.seed * 1000 + case).random((h, w, 3), dtype=np.float32)
            if rng.random() < 1 / 3:
                img = img * rng.choice([5.0, 50.0]) - 1
            np.save(work / "in.npy", img)
            run_ref = {"maskdcpt": R.run_maskdcpt, "nafnet": R.run_nafnet}.get(family, run_transformer)
            transformer = restormer or swinir
            ref = run_ref(net, img)
            tiling = []
            if rng.random() < 0.25:
                tiles = [64, 100, 128] if args.large else [16, 32, 48]
                tiling = ["--tile", str(rng.choice(tiles)), "--sca", "global"]
            runs = [(f"restore {' '.join(tiling)}", lambda: restore(args.bin, work, tiling, model), ref)]
            if args.onnx:
                for shape in (["--dynamic"], ["--height", str(h), "--width", str(w)]):
                    run = lambda shape=shape: run_onnx(args.bin, work, img, shape, model)  # noqa: E731
                    runs.append((f"onnx {shape[0]}", run, ref))
            if args.jpeg:
                settings, read = write_jpeg(rng, img, work / "in.jpg")
                runs.append((f"restore from JPEG {settings} {' '.join(tiling)}",
                             lambda: restore(args.bin, work, tiling, model, "in.jpg"), run_ref(net, read)))
            if args.tlc and not transformer:
                train = rng.choice([16, 24, 32, 48, 64])
                flags = ["--tlc", str(train), *tiling]
                ref_tlc = run_ref(R.use_tlc_(copy.deepcopy(net), train), img)
                moved = float(np.abs(ref_tlc - ref).max())  # how far TLC moves the reference
                what = f"restore {' '.join(flags)} (TLC moves it {moved:.1e})"
                runs.append((what, lambda flags=flags: restore(args.bin, work, flags), ref_tlc))
                if args.onnx:  # TLC exports need a fixed size
                    fixed = ["--height", str(h), "--width", str(w), "--tlc", str(train)]
                    runs.append((f"onnx {' '.join(fixed[4:])}", lambda fixed=fixed: run_onnx(args.bin, work, img, fixed), ref_tlc))
                sampled = ["--tlc-sampled", str(train), *tiling]
                try:
                    ref_sampled = run_ref(R.use_tlc_(copy.deepcopy(net), train, sampled=True), img)
                except RuntimeError:  # windows of no sample: the reference refuses the size
                    ref_sampled = None
                runs.append((f"restore {' '.join(sampled)}", lambda f=sampled: restore(args.bin, work, f), ref_sampled))
            for what, run, ref in runs:
                label = f"{family} {spec} {h}x{w} {what}"
                checked += 1
                try:
                    out = run()
                except RuntimeError as e:
                    refused = ref is None and "no samples" in str(e)
                    failures += not refused
                    print(f"{'ok  ' if refused else 'FAIL'} {label}: {'both refuse' if refused else e}", flush=True)
                    continue
                if ref is None:
                    failures += 1
                    print(f"FAIL {label}: the reference refuses this size, maskdcpt did not", flush=True)
                    continue
                diff = float(np.abs(out - ref).max()) if out.shape == ref.shape else float("inf")
                rel = diff / max(1.0, float(np.abs(ref).max()))
                worst = max(worst, rel)
                bad = rel > 1e-4
                failures += bad
                print(f"{'BAD ' if bad else 'ok  '}{label}: max |d| {diff:.2e}, relative {rel:.2e}", flush=True)
    print(f"{checked - failures}/{checked} within 1e-4; worst relative difference {worst:.2e}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
