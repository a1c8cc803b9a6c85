"""CPU benchmark: `maskdcpt bench` against ONNX Runtime on the released config.

Usually run through scripts/bench-cpu.sh (which sets up the venv and builds
the binary). Directly:

    .venv-torch/bin/python scripts/bench_cpu.py [--skip-ours] [--sizes 256x256,720x1280]

What it does:
1. Builds the released MaskDCPT NAFNetBaseline shape (width 64, enc
   [1,1,1,28], middle 1, dec [1,1,1,1]; 67,888,835 params) with seeded random
   weights (scripts/reference_nafnet.randomize_) and caches it in
   target/bench-cpu/ as f32 safetensors (bare keys, MaskDCPT layout).
2. Exports it to ONNX (opset 17, LayerNorm as LayerNormalization, PixelShuffle
   as DepthToSpace) with a fixed input shape per size, and checks ORT against
   torch at the smallest size.
3. For each size (H x W; both must be multiples of 16, i.e. no padding) runs
   ONNX Runtime (CPU EP, intra_op_num_threads=T, inter_op_num_threads=1,
   ORT_ENABLE_ALL, sequential) in a separate process: warm-up + N timed runs.
4. Runs `target/release/maskdcpt bench` with the same size and threads, in f32
   and (if the CPU has avx512_bf16) bf16.
5. Prints a Markdown table. GFLOP/s uses the exact conv FLOPs (2 x MACs) of
   the network at that size (reference_nafnet.count_flops; 126.11 GFLOP at
   256x256). Nothing is written to docs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

RELEASED = dict(width=64, enc_blocks=[1, 1, 1, 28], middle_blocks=1, dec_blocks=[1, 1, 1, 1])
GEN_TAG = "v1"  # bump when the weight generator changes (invalidates the cache)
ORT_VERSION = "1.31.1"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def parse_sizes(s: str) -> list[tuple[int, int]]:
    out = []
    for part in s.split(","):
        h, w = part.lower().split("x")
        out.append((int(h), int(w)))
    return out


def cpu_info() -> dict:
    info = {"model": platform.processor() or "unknown", "flags": set()}
    try:
        txt = Path("/proc/cpuinfo").read_text()
        for line in txt.splitlines():
            if line.startswith("model name") and info["model"] in ("unknown", "", "x86_64"):
                info["model"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not info["flags"]:
                info["flags"] = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu family"):
                info["family"] = line.split(":", 1)[1].strip()
            elif line.startswith("model\t") or line.startswith("model  "):
                info["model_id"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info["logical_cpus"] = len(os.sched_getaffinity(0))
    return info


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Busy CPU time over `seconds`, in units of cores (0 = idle)."""

    def snap():
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = list(map(int, f))
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle

    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return 0.0
    total = t1 - t0
    if total <= 0:
        return 0.0
    ncpu = os.cpu_count() or 1
    return (1.0 - (i1 - i0) / total) * ncpu


def other_busy(seconds: float) -> float:
    """Cores used by OTHER processes over `seconds` (system busy minus ours)."""
    c0 = time.process_time()
    busy = cpu_busy_fraction(seconds)
    return max(0.0, busy - (time.process_time() - c0) / seconds)


def warn_if_busy(label: str, notes: list[str], wait_idle: float = 0.0) -> None:
    """Wait up to `wait_idle` seconds for the machine to be quiet (< 0.3
    cores busy over 2 s), then warn if it still is not."""
    deadline = time.monotonic() + wait_idle
    busy = cpu_busy_fraction(1.0)
    while busy > 0.3 and time.monotonic() < deadline:
        busy = cpu_busy_fraction(2.0)
    if busy > 0.3:
        msg = f"WARNING: {busy:.2f} cores busy just before '{label}': timings may be disturbed"
        print(msg, file=sys.stderr)
        notes.append(msg)


# --------------------------------------------------------------------------
# ORT worker (separate process: clean RSS, no torch threads around)
# --------------------------------------------------------------------------


def ort_worker(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(args.ort_worker, so, providers=["CPUExecutionProvider"])
    init_s = time.perf_counter() - t0
    shape = sess.get_inputs()[0].shape
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = sess.get_inputs()[0].name
    for i in range(args.warmup):
        y = sess.run(None, {name: x})[0]
        if i == 0 and args.save_output:
            np.save(args.save_output, y)
            np.save(args.save_output.replace(".npy", "_input.npy"), x)
    times, utils = [], []
    discarded = 0
    deadline = time.monotonic() + args.max_seconds
    while len(times) < args.iters:
        if args.min_util > 0:
            # wait (bounded) until other processes leave the cores alone
            while other_busy(1.0) > 0.2 and time.monotonic() < deadline:
                pass
        c = time.process_time()
        t = time.perf_counter()
        sess.run(None, {name: x})
        wall = time.perf_counter() - t
        # process CPU time / (wall x threads): well below 1 when other
        # processes steal the cores during the run
        util = (time.process_time() - c) / (wall * args.threads)
        if util < args.min_util and time.monotonic() < deadline:
            discarded += 1
            continue
        times.append(wall * 1e3)
        utils.append(util)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            dict(
                median_ms=statistics.median(times),
                min_ms=min(times),
                iters=len(times),
                threads=args.threads,
                peak_rss_mb=rss_kb / 1024.0,
                session_init_s=init_s,
                times_ms=times,
                cpu_util=utils,
                discarded_disturbed=discarded,
                ort_version=ort.__version__,
            )
        )
    )


# --------------------------------------------------------------------------
# model preparation (torch)
# --------------------------------------------------------------------------


def prepare(cache: Path, seed: int, sizes: list[tuple[int, int]]) -> tuple[Path, dict[tuple[int, int], Path]]:
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"maskdcpt_w64_seed{seed}_{GEN_TAG}"
    st_path = cache / f"{stem}.safetensors"
    onnx_paths = {s: cache / f"{stem}_{s[0]}x{s[1]}.onnx" for s in sizes}
    base_onnx = cache / f"{stem}_base64.onnx"
    need_onnx = [s for s, p in onnx_paths.items() if not p.exists()]
    if st_path.exists() and not need_onnx:
        return st_path, onnx_paths

    import torch

    import reference_nafnet as R
    from gen_golden import read_safetensors, write_safetensors

    torch.set_num_threads(2)
    net = R.build_model("maskdcpt", **RELEASED).eval()
    n, k = R.count_params(net)
    assert (n, k) == (67_888_835, 664), (n, k)
    if st_path.exists():
        sd = read_safetensors(st_path)
        net.load_state_dict(sd, strict=True)
        print(f"[prep] loaded cached weights {st_path}", file=sys.stderr)
    else:
        R.randomize_(net, seed)
        tmp = st_path.with_suffix(".tmp")
        writer = write_safetensors(net.state_dict(), tmp)
        tmp.rename(st_path)
        print(f"[prep] wrote {st_path} ({st_path.stat().st_size / 1e6:.1f} MB, {writer})", file=sys.stderr)

    if need_onnx:
        import onnx

        if not base_onnx.exists():
            # Export once at 64x64; the graph holds no spatial sizes (chunk ->
            # runtime Shape/Slice over channels, PixelShuffle -> DepthToSpace,
            # SCA pool -> GlobalAveragePool), so only the I/O dims change per size.
            x = torch.rand(1, 3, 64, 64)
            tmp = base_onnx.with_suffix(".tmp")
            with torch.no_grad():
                torch.onnx.export(
                    net, (x,), str(tmp), opset_version=17, dynamo=False,
                    input_names=["input"], output_names=["output"], do_constant_folding=True,
                )
            tmp.rename(base_onnx)
            print(f"[prep] exported {base_onnx}", file=sys.stderr)
        for (h, w) in need_onnx:
            m = onnx.load(str(base_onnx))
            for vi in list(m.graph.input) + list(m.graph.output):
                d = vi.type.tensor_type.shape.dim
                d[2].dim_value, d[3].dim_value = h, w
            del m.graph.value_info[:]
            m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
            onnx.checker.check_model(m)
            ops = {}
            for node in m.graph.node:
                ops[node.op_type] = ops.get(node.op_type, 0) + 1
            assert ops.get("LayerNormalization") == 72, ops
            tmp = onnx_paths[(h, w)].with_suffix(".tmp")
            onnx.save(m, str(tmp))
            tmp.rename(onnx_paths[(h, w)])
            print(f"[prep] wrote {onnx_paths[(h, w)]} (fixed 1x3x{h}x{w}; ops {ops})", file=sys.stderr)
    return st_path, onnx_paths


def verify_ort_output(st_path: Path, out_npy: Path) -> tuple[float, float]:
    """ORT's first output vs the torch reference on the same input."""
    import torch

    import reference_nafnet as R
    from gen_golden import read_safetensors

    torch.set_num_threads(2)
    net = R.build_model("maskdcpt", **RELEASED).eval()
    net.load_state_dict(read_safetensors(st_path), strict=True)
    x = np.load(str(out_npy).replace(".npy", "_input.npy"))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    y = np.load(out_npy)
    return float(np.abs(ref - y).max()), float(np.abs(ref).max())


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def run_json(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    for line in reversed(p.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in output of {' '.join(cmd)}:\n{p.stdout[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256x256,720x1280", help="comma separated HxW (multiples of 16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10, help="timed runs for sizes up to 512x512")
    ap.add_argument("--iters-large", type=int, default=3, help="timed runs for larger sizes")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=ROOT / "target" / "bench-cpu")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "maskdcpt")
    ap.add_argument("--precisions", default="auto", help="auto | f32 | f32,bf16 ... (ours only)")
    ap.add_argument("--skip-ours", action="store_true", help="time ONNX Runtime only")
    ap.add_argument("--skip-ort", action="store_true", help="time maskdcpt only")
    ap.add_argument("--no-verify", action="store_true", help="skip the ORT-vs-torch output check")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each timed run wait up to this many seconds for other load to stop (0: no wait)")
    ap.add_argument("--min-util", type=float, default=0.0,
                    help="ORT only: wait for a quiet machine before each iteration and re-run iterations whose CPU "
                         "utilisation (process CPU time / (wall x threads)) is below this, e.g. 0.95 on a shared host")
    ap.add_argument("--max-seconds", type=float, default=1800.0,
                    help="time budget per size for --min-util re-runs; after it iterations are kept as they come")
    ap.add_argument("--json-out", type=Path, help="also write raw results here")
    # internal
    ap.add_argument("--ort-worker", help=argparse.SUPPRESS)
    ap.add_argument("--save-output", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.ort_worker:
        ort_worker(args)
        return

    sizes = parse_sizes(args.sizes)
    for h, w in sizes:
        if h % 16 or w % 16:
            sys.exit(f"size {h}x{w}: both must be multiples of 16 (the ONNX graph has no padding)")
    cpu = cpu_info()
    if args.precisions == "auto":
        precisions = ["f32"] + (["bf16"] if "avx512_bf16" in cpu["flags"] else [])
    else:
        precisions = args.precisions.split(",")
    if not args.skip_ours and not args.bin.exists():
        sys.exit(f"{args.bin} not found (build it with cargo build --release -p maskdcpt, or pass --skip-ours)")

    import reference_nafnet as R

    st_path, onnx_paths = prepare(args.cache, args.seed, sizes)
    notes: list[str] = []
    results = []
    verified = None
    for (h, w) in sizes:
        iters = args.iters if h * w <= 512 * 512 else args.iters_large
        flops = R.count_flops(h, w, **RELEASED)
        row = dict(height=h, width=w, gflop=flops / 1e9, ort=None, ours={})
        if not args.skip_ort:
            save = None
            if not args.no_verify and verified is None:
                save = str(args.cache / f"ort_out_{h}x{w}.npy")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--ort-worker", str(onnx_paths[(h, w)]),
                   "--threads", str(args.threads), "--iters", str(iters), "--warmup", str(max(1, args.warmup)),
                   "--min-util", str(args.min_util), "--max-seconds", str(args.max_seconds)]
            if save:
                cmd += ["--save-output", save]
            warn_if_busy(f"ORT {h}x{w}", notes, args.wait_idle)
            print(f"[ort] {h}x{w}: {iters} iters, {args.threads} threads ...", file=sys.stderr)
            row["ort"] = run_json(cmd)
            util = statistics.median(row["ort"]["cpu_util"])
            print(f"[ort] {h}x{w}: median {row['ort']['median_ms']:.1f} ms, min {row['ort']['min_ms']:.1f} ms, "
                  f"CPU utilisation {util:.2f} of {args.threads} threads", file=sys.stderr)
            if row["ort"].get("discarded_disturbed"):
                print(f"[ort] {h}x{w}: re-ran {row['ort']['discarded_disturbed']} disturbed iterations", file=sys.stderr)
            if util < 0.85:
                notes.append(f"WARNING: ORT {h}x{w} ran at {util:.2f} CPU utilisation (other load on the machine)")
            if save:
                d, mx = verify_ort_output(st_path, Path(save))
                verified = (h, w, d, mx)
                print(f"[verify] ORT vs torch at {h}x{w}: max|diff| {d:.2e} (max|out| {mx:.2f})", file=sys.stderr)
                if d > 1e-3 * max(1.0, mx):
                    sys.exit("ORT output does not match the torch reference")
        if not args.skip_ours:
            for prec in precisions:
                cmd = [str(args.bin), "bench", "-m", str(st_path), "--height", str(h), "--width", str(w),
                       "--iters", str(iters), "--threads", str(args.threads)]
                if prec != "f32" or len(precisions) > 1:
                    cmd += ["--precision", prec]
                warn_if_busy(f"maskdcpt {prec} {h}x{w}", notes, args.wait_idle)
                print(f"[ours] {h}x{w} {prec} ...", file=sys.stderr)
                row["ours"][prec] = run_json(cmd)
                print(f"[ours] {h}x{w} {prec}: median {row['ours'][prec]['median_ms']:.1f} ms", file=sys.stderr)
                gm = row["ours"][prec].get("gmacs")
                if gm is not None and abs(2 * gm * 1e9 - flops) > 0.01 * flops:
                    notes.append(f"NOTE: maskdcpt reports {2 * gm:.2f} GFLOP at {h}x{w}, this script counts "
                                 f"{flops / 1e9:.2f} (GFLOP/s columns use the latter)")
        results.append(row)

    # ---------------- report ----------------
    import onnxruntime

    flags = cpu["flags"]
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    print()
    print(f"CPU: {cpu['model']} (family {cpu.get('family', '?')}, model {cpu.get('model_id', '?')}), "
          f"{cpu['logical_cpus']} logical CPUs available; ISA: {', '.join(isa)}")
    print(f"Model: MaskDCPT NAFNetBaseline w64 enc [1,1,1,28] mid 1 dec [1,1,1,1], random weights (seed {args.seed}); "
          f"threads {args.threads}; ONNX Runtime {onnxruntime.__version__} CPU EP (intra {args.threads}, inter 1, "
          f"ORT_ENABLE_ALL), opset 17; warm-up {args.warmup}.")
    if args.min_util > 0 and not args.skip_ort:
        print(f"ORT iterations were timed only when the machine was otherwise idle and kept only at >= "
              f"{args.min_util:.2f} CPU utilisation (--min-util).")
    if verified:
        print(f"ORT output checked against the PyTorch reference at {verified[0]}x{verified[1]}: "
              f"max|diff| {verified[2]:.2e}.")
    print()
    print("| size (W×H) | GFLOP | ours precision | ORT median ms | ORT min ms | ours median ms | ours min ms "
          "| ratio ours/ORT | ours GFLOP/s | ORT GFLOP/s | ours peak RSS MB | ORT peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def f(v, nd=1):
        return "–" if v is None else f"{v:.{nd}f}"

    for r in results:
        o = r["ort"] or {}
        gfl = r["gflop"]
        ort_gfs = gfl / (o["median_ms"] / 1e3) if o else None
        rows = list(r["ours"].items()) or [("–", {})]
        for prec, u in rows:
            ratio = u["median_ms"] / o["median_ms"] if (u and o) else None
            ours_gfs = gfl / (u["median_ms"] / 1e3) if u else None
            print(f"| {r['width']}×{r['height']} | {gfl:.1f} | {prec} | {f(o.get('median_ms'))} | {f(o.get('min_ms'))} "
                  f"| {f(u.get('median_ms'))} | {f(u.get('min_ms'))} | {f(ratio, 2)} | {f(ours_gfs)} | {f(ort_gfs)} "
                  f"| {f(u.get('peak_rss_mb'), 0)} | {f(o.get('peak_rss_mb'), 0)} |")
    print()
    print("GFLOP = exact conv FLOPs (2×MACs) of the network at that size; GFLOP/s from the median. "
          "ratio < 1 means maskdcpt is faster. Iterations: "
          + ", ".join(f"{r['width']}×{r['height']}: {(r['ort'] or next(iter(r['ours'].values()), {})).get('iters', '?')}" for r in results)
          + ".")
    for n_ in notes:
        print(n_)
    if args.json_out:
        args.json_out.write_text(json.dumps(dict(cpu=cpu["model"], isa=isa, results=results, notes=notes), indent=2))


if __name__ == "__main__":
    main()
