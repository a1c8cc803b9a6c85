"""CPU benchmark of the transformer engines against PyTorch eager on the released shapes.

    .venv-torch/bin/python scripts/bench_restormer.py [--archs restormer,promptir,swinir] [--sizes 256x256] [--threads 2] [--iters 3] [--onnx]

Builds the fork's released Restormer (dim 48, blocks [4,6,6,8], refinement 4, heads [1,2,4,8];
26,126,644 parameters), PromptIR (the same with biases and three prompt stages; 35,539,290
parameters) and SwinIR (embed 180, six groups of six blocks, 6 heads, windows of 8; 11,455,563
parameters) with seeded random weights (the references' randomize_), caches them in
target/bench-cpu/ as f32 safetensors, then per network and size (multiples of 8):
1. PyTorch eager f32 (`torch.set_num_threads(T)`, inference mode) in its own process:
   warm-up + N timed runs, peak RSS; it also writes its output for one input;
2. `maskdcpt bench` with the same size and threads (median, peak RSS);
3. `maskdcpt restore` of the same input: max |ours - PyTorch|;
4. with --onnx, ONNX Runtime (CPU, all graph optimisations, the same threads; bench_cpu.py's
   worker) on `maskdcpt export-onnx` of the network at that fixed size: median, peak RSS.
Prints a Markdown table; writes nothing outside target/.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_cpu import cpu_info, parse_sizes, run_json, warn_if_busy  # noqa: E402

GEN_TAG = "v1"  # bump when the weight generator changes (invalidates the cache)


# Released shapes: reference module, class, parameters, tensors.
ARCHS = {
    "restormer": ("reference_restormer", "RestormerRef", 26_126_644, 494),
    "promptir": ("reference_restormer", "PromptIRRef", 35_539_290, 830),
    "swinir": ("reference_swinir", "SwinIRRef", 11_455_563, 454),
}


def reference(arch: str):
    """The reference module and class of `arch`."""
    import importlib

    module, cls = ARCHS[arch][:2]
    references = importlib.import_module(module)
    return references, getattr(references, cls)


def prepare(cache: Path, arch: str, seed: int) -> Path:
    path = cache / f"{arch}_released_seed{seed}_{GEN_TAG}.safetensors"
    if path.exists():
        return path
    from gen_golden import write_safetensors

    cache.mkdir(parents=True, exist_ok=True)
    references, cls = reference(arch)
    params, tensors = ARCHS[arch][2:]
    net = references.randomize_(cls(), seed)
    n = sum(p.numel() for p in net.parameters())
    assert (n, len(net.state_dict())) == (params, tensors), n
    tmp = path.with_suffix(".tmp")
    write_safetensors(net.state_dict(), tmp)
    tmp.rename(path)
    print(f"[prep] wrote {path}", file=sys.stderr)
    return path


def torch_worker(args: argparse.Namespace) -> None:
    import torch

    from gen_golden import read_safetensors

    torch.set_num_threads(args.threads)
    net = reference(args.arch)[1]().eval()
    net.load_state_dict(read_safetensors(Path(args.torch_worker)), strict=True)
    image = np.load(args.input)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            t = time.perf_counter()
            y = net(x)
            if i >= args.warmup:
                times.append((time.perf_counter() - t) * 1e3)
    np.save(args.output, y[0].permute(1, 2, 0).contiguous().numpy())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(dict(median_ms=statistics.median(times), min_ms=min(times), peak_rss_mb=rss,
                          torch_version=torch.__version__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="restormer,promptir,swinir", help="comma separated: restormer, promptir, swinir")
    ap.add_argument("--arch", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="256x256", help="comma separated HxW (multiples of 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=ROOT / "target" / "bench-cpu")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "maskdcpt")
    ap.add_argument("--onnx", action="store_true", help="also time ONNX Runtime on the exported network")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_worker:
        torch_worker(args)
        return

    cpu = cpu_info()
    notes: list[str] = []
    rows = []
    for arch, (h, w) in [(a, s) for a in args.archs.split(",") for s in parse_sizes(args.sizes)]:
        weights = prepare(args.cache, arch, args.seed)
        assert h % 8 == 0 and w % 8 == 0, "sizes must be multiples of 8 (no padding)"
        image = args.cache / f"restormer_input_{h}x{w}.npy"
        np.save(image, np.random.default_rng(h * w).random((h, w, 3), dtype=np.float32))
        theirs, ours_out = args.cache / f"{arch}_torch_{h}x{w}.npy", args.cache / f"{arch}_ours_{h}x{w}.npy"
        common = ["--threads", str(args.threads), "--iters", str(args.iters), "--warmup", str(args.warmup)]
        warn_if_busy(f"torch {h}x{w}", notes)
        torch_result = run_json([sys.executable, __file__, "--torch-worker", str(weights), "--arch", arch,
                                 "--input", str(image), "--output", str(theirs), *common])
        warn_if_busy(f"maskdcpt {h}x{w}", notes)
        ours = run_json([str(args.bin), "bench", "-m", str(weights), "--height", str(h), "--width", str(w), *common])
        subprocess.run([str(args.bin), "restore", "-m", str(weights), "-i", str(image), "-o", str(ours_out),
                        "--threads", str(args.threads)], check=True)
        diff = float(np.abs(np.load(ours_out) - np.load(theirs)).max())
        ort_result = None
        if args.onnx:
            model = args.cache / f"{arch}_{h}x{w}.onnx"
            subprocess.run([str(args.bin), "export-onnx", "-m", str(weights), "-o", str(model), "--height", str(h),
                            "--width", str(w)], check=True, capture_output=True)
            warn_if_busy(f"onnxruntime {h}x{w}", notes)
            ort_result = run_json([sys.executable, str(HERE / "bench_cpu.py"), "--ort-worker", str(model), *common])
        rows.append((arch, h, w, torch_result, ours, diff, ort_result))

    print(f"\nCPU: {cpu['model']}, {args.threads} threads; torch {rows[0][3]['torch_version'] if rows else '-'}")
    ort_head, ort_rule = (" ONNX Runtime ms | ONNX Runtime RSS MB |", "---|---|") if args.onnx else ("", "")
    print("\n| network | size | PyTorch eager f32 ms | maskdcpt f32 ms | speed-up | PyTorch RSS MB | maskdcpt RSS MB "
          f"| max abs diff |{ort_head}")
    print(f"|---|---|---|---|---|---|---|---|{ort_rule}")
    for arch, h, w, t, o, diff, r in rows:
        ort_cells = f" {r['median_ms']:.0f} | {r['peak_rss_mb']:.0f} |" if r else ""
        print(f"| {arch} | {h}x{w} | {t['median_ms']:.0f} | {o['median_ms']:.0f} | {t['median_ms'] / o['median_ms']:.2f}x "
              f"| {t['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | {diff:.1e} |{ort_cells}")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
