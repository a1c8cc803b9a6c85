"""CUDA engine check on the GPU test host (issue 5): parity against our CPU f32 engine and
timing against PyTorch 2.11 on the same GPU, in one run. Driven by scripts/gpu-check.sh,
which carries the binaries built on a CPU host (target/gpu/). Prints JSON lines while it
goes and a Markdown table last.

Parity (`maskdcpt restore ... -o x.npy`, the raw network output):
* the embedded default model (trained) on natural held-out images (tests/default-model/lq),
* the golden width-8 models (both families) on the golden inputs, upstream NAFNet's also with
  TLC channel attention (`--tlc 32`: windows smaller than every map),
* the released NAFNet shape with seeded random weights (reference_nafnet.randomize_) on a
  natural image (global attention, and TLC with windows of 96 pixels at full resolution) and
  on an adversarial input (pixels scaled to ±1000, which drives the
  bottleneck activations far beyond what an FP16 sum of squares holds).
Bounds (issue 5): FP16 PSNR >= 45 dB against CPU f32 on natural images and no NaN/Inf
anywhere; f32 max |d| <= 1e-3 (times the output's peak where that exceeds 1). Beside the
released-random photo case, PyTorch eager FP16 of the same network on the same image
against the same CPU f32 output (needs Pillow), for what FP16 costs the reference itself.

Engine file (released shape, FP16, 1x1088x1920): `maskdcpt build-engine --backend cuda`
twice, timing the first build (NVRTC + tuning) and the second (file reused), then a restore
with `--engine` against one without.

Timing (released shape, FP16): `maskdcpt bench --backend cuda` (device-resident median), also
with `--fusion launches` (the blocks without the fused tensor-core kernels) and with
`--serial-launches` (no programmatic dependent launch: each kernel starts after the last ends)
and with `--tlc` (upstream NAFNet's windowed attention, training crop 256), next to PyTorch
eager FP16, torch.compile and torch.compile(mode="reduce-overhead"), with peak GPU memory, at
1x256x256, 8x256x256 and 1x1088x1920; every timed choice of the engine (fused kernels or
launches, depthwise variants) with each candidate's time.

Hardware counters (scripts/gpu_counters.py), where Nsight Compute is installed: the engine's
kernels at 1x1088x1920 under ncu (memory and issue throughput, occupancy, top stalls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import gpu_counters  # noqa: E402
import reference_nafnet as R  # noqa: E402

RELEASED = dict(width=64, enc_blocks=[1, 1, 1, 28], middle_blocks=1, dec_blocks=[1, 1, 1, 1])
SHAPES = [(1, 256, 256), (8, 256, 256), (1, 1088, 1920)]


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def restore(binary: str, model: str | None, src: Path, dst: Path, *engine: str) -> np.ndarray:
    cmd = [binary, "restore", "-i", str(src), "-o", str(dst), *engine]
    if model:
        cmd += ["-m", model]
    run(cmd)
    return np.load(dst)


def compare(label: str, ref: np.ndarray, got: np.ndarray, peak: float) -> dict:
    finite = bool(np.isfinite(got).all())
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    mse = float((diff**2).mean()) if finite else float("inf")
    psnr = float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse)) if finite else float("nan")
    return dict(case=label, finite=finite, max_abs=float(diff.max()) if finite else float("nan"), psnr_db=psnr)


def parity(binary: str, work: Path, released: Path, quick: bool) -> tuple[list[dict], dict | None]:
    lq = sorted((ROOT / "tests/default-model/lq").glob("*_0.png"))
    # label, model, input, natural image, engine options of both runs
    cases: list[tuple[str, str | None, Path, bool, list[str]]] = []
    for path in lq[: 4 if quick else len(lq)]:
        cases.append((f"default/{path.stem}", None, path, True, []))
    golden = ROOT / "tests/golden"
    naf, naf_input = str(golden / "nafnet_w8.pth"), golden / "input_96x136.npy"
    cases.append(("golden maskdcpt_w8 96x136", str(golden / "maskdcpt_w8.pth"), naf_input, False, []))
    cases.append(("golden nafnet_w8 29x41", naf, golden / "input_29x41.npy", False, []))
    cases.append(("golden nafnet_w8 96x136 TLC 32", naf, naf_input, False, ["--tlc", "32"]))
    natural = ROOT / "tests/default-model/gt/chelsea_noise_0.png"
    cases.append(("released random, chelsea", str(released), natural, True, []))
    cases.append(("released random, chelsea, TLC 64", str(released), natural, True, ["--tlc", "64"]))
    rng = np.random.default_rng(5)
    loud = work / "adversarial.npy"
    np.save(loud, (rng.uniform(-1, 1, (256, 256, 3)) * 1000).astype(np.float32))
    cases.append(("released random, adversarial ±1000", str(released), loud, False, []))
    rows, reference = [], None
    for label, model, src, natural_image, options in cases:
        ref = restore(binary, model, src, work / "cpu.npy", "--backend", "cpu", *options)
        peak = 1.0 if natural_image else float(np.abs(ref).max())
        if src == natural and not options:
            reference = torch_fp16(label, released, src, ref)
        for precision in ["f32", "fp16"]:
            engine = ["--backend", "cuda", "--precision", precision, *options]
            got = restore(binary, model, src, work / "gpu.npy", *engine)
            row = compare(label, ref, got, peak)
            row["precision"] = precision
            row["peak"] = peak
            if precision == "f32":
                row["pass"] = bool(row["finite"] and row["max_abs"] <= 1e-3 * max(1.0, peak))
            else:
                row["pass"] = bool(row["finite"] and (row["psnr_db"] >= 45 if natural_image else True))
            emit(dict(kind="parity", **row))
            rows.append(row)
    return rows, reference


def torch_fp16(label: str, released: Path, src: Path, ref: np.ndarray) -> dict | None:
    """PyTorch eager FP16 (the reference network in `model.half()` on the GPU, the harness's
    padding) on the PNG `src` against our CPU engine's f32 output `ref`: how far FP16 storage
    moves the reference itself, beside our FP16 row of the same case. None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    img = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32) / 255  # as the CLI reads 8 bits
    row = compare(label, ref, R.run_maskdcpt(torch_model(released), img), 1.0)
    emit(dict(kind="torch_fp16", **row))
    return row


def torch_model(released: Path) -> torch.nn.Module:
    net = R.build_model("maskdcpt", **RELEASED)
    net.load_state_dict(torch.load(released))
    return net.cuda().half().eval()


def time_torch(fn, x: torch.Tensor, warmup: int, iters: int) -> tuple[float, float]:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn(x)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), torch.cuda.max_memory_allocated() / 2**20


def timing(binary: str, released: Path, modes: list[str], iters: int, budget_s: float) -> list[dict]:
    rows = []
    net = torch_model(released)
    start = time.time()
    for n, h, w in SHAPES:
        def bench(*extra: str) -> dict:
            out = run([binary, "bench", "--backend", "cuda", "--precision", "fp16", "-m", str(released),
                       "--height", str(h), "--width", str(w), "--batch", str(n), "--iters", str(iters),
                       "--warmup", "2", *extra])
            return json.loads(out.strip().splitlines()[-1])
        ours = bench()
        launches = bench("--fusion", "launches")
        serial = bench("--serial-launches")
        # Upstream NAFNet's GoPro evaluation (TLC, crop 256: windows of 384 at full resolution,
        # which only 1088x1920 exceeds; smaller shapes keep the global mean).
        tlc = bench("--tlc")
        row = dict(shape=f"{n}x{h}x{w}", ours_ms=ours["device_median_ms"], ours_host_ms=ours["median_ms"],
                   ours_launches_ms=launches["device_median_ms"], ours_serial_ms=serial["device_median_ms"],
                   ours_tlc_ms=tlc["device_median_ms"],
                   ours_overlap=ours["device_launch_overlap"],
                   ours_mb=ours["device_memory_mb"], device=ours["device"], profile=ours["device_profile"],
                   choices=ours["device_choices"])
        x = torch.rand(n, 3, h, w, device="cuda", dtype=torch.half)
        for mode in modes:
            if time.time() - start > budget_s:
                row[mode] = None
                continue
            torch._dynamo.reset()
            if mode == "eager":
                fn = net
            elif mode == "compile":
                fn = torch.compile(net)
            else:
                fn = torch.compile(net, mode="reduce-overhead")
            t0 = time.time()
            ms, mb = time_torch(fn, x, warmup=3, iters=iters)
            row[mode] = ms
            row[f"{mode}_mb"] = mb
            row[f"{mode}_setup_s"] = time.time() - t0
        timed = [row[m] for m in modes if row.get(m) is not None]
        # The budget may have left this shape without a PyTorch time: ours is still reported.
        best = min(timed) if timed else None
        row["best_torch_ms"] = best
        row["ratio"] = None if best is None else row["ours_ms"] / best
        emit(dict(kind="timing", **row))
        rows.append(row)
    return rows


def engine_file(binary: str, work: Path, released: Path) -> dict:
    """Builds the released shape's engine file twice (written, then reused) and checks that a
    restore through it equals one without it."""
    path = work / "released.cuda-engine"
    cmd = [binary, "build-engine", "--backend", "cuda", "--fp16", "-m", str(released), "-o", str(path),
           "--max", "1088x1920", "--cache-dir", str(work / "cache")]
    seconds, messages = [], []
    for _ in range(2):
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds.append(time.time() - t0)
        messages.append(done.stderr.strip())
        if done.returncode != 0:
            raise RuntimeError(f"build-engine failed:\n{done.stderr}")
    image = work / "engine-in.npy"
    np.save(image, np.random.default_rng(5).random((1088, 1920, 3), dtype=np.float32))
    fp16 = ["--backend", "cuda", "--precision", "fp16"]
    plain = restore(binary, str(released), image, work / "plain.npy", *fp16)
    reused = restore(binary, str(released), image, work / "reused.npy", *fp16, "--engine", str(path))
    row = dict(kind="engine_file", first_s=seconds[0], second_s=seconds[1], first=messages[0], second=messages[1],
               bytes=path.stat().st_size, max_abs_vs_plain=float(np.abs(plain - reused).max()),
               reused="reused" in messages[1])
    row["pass"] = row["reused"] and "written" in messages[0] and row["max_abs_vs_plain"] <= 2e-3
    emit(row)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/gpu/maskdcpt"))
    ap.add_argument("--modes", default="eager,compile,reduce-overhead")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--budget-s", type=float, default=300, help="stop starting torch.compile runs after this")
    ap.add_argument("--quick", action="store_true", help="fewer parity images")
    ap.add_argument("--skip-parity", action="store_true", help="timing only (the unit tests still compare)")
    ap.add_argument("--ncu-launches", type=int, default=200, help="kernel launches ncu profiles (0: no counters)")
    ap.add_argument("--ncu-timeout-s", type=float, default=150, help="give up on the counters after this")
    args = ap.parse_args()
    emit(dict(kind="host", gpu=torch.cuda.get_device_name(), torch=torch.__version__))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        released = work / "released.pth"
        net = R.randomize_(R.build_model("maskdcpt", **RELEASED), seed=2026)
        torch.save(net.state_dict(), released)
        parity_rows, reference = ([], None) if args.skip_parity else parity(args.bin, work, released, args.quick)
        engine_row = engine_file(args.bin, work, released)
        timing_rows = timing(args.bin, released, args.modes.split(","), args.iters, args.budget_s)
        counter_rows, counter_note = [], "not asked for"
        if args.ncu_launches > 0:
            counter_rows, counter_note = gpu_counters.counters(args.bin, str(released), args.ncu_launches,
                                                               args.ncu_timeout_s)
            emit(dict(kind="counters", note=counter_note, rows=counter_rows))
    print("\n| parity case | precision | max abs diff | PSNR dB (peak) | pass |\n|---|---|---|---|---|")
    for r in parity_rows:
        print(f"| {r['case']} | {r['precision']} | {r['max_abs']:.3e} | {r['psnr_db']:.1f} ({r['peak']:.3g}) | {r['pass']} |")
    if reference is not None:
        print(f"\nPyTorch eager FP16 on '{reference['case']}', against our CPU f32 output: max abs diff "
              f"{reference['max_abs']:.3e}, PSNR {reference['psnr_db']:.1f} dB (the reference's own FP16 cost)")
    modes = args.modes.split(",")
    print(f"\n| shape | ours ms (host e2e) | ours, unfused launches | ours, serial launches | ours, TLC 256 "
          f"| {' | '.join(modes)} | ours / best | ours MB | torch MB (per mode) |")
    print("|---|---|---|---|---|" + "---|" * len(modes) + "---|---|---|")
    for r in timing_rows:
        cells = " | ".join("-" if r.get(m) is None else f"{r[m]:.2f}" for m in modes)
        mbs = "/".join("-" if r.get(f"{m}_mb") is None else f"{r[f'{m}_mb']:.0f}" for m in modes)
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"| {r['shape']} | {r['ours_ms']:.2f} ({r['ours_host_ms']:.1f}) | {r['ours_launches_ms']:.2f} "
              f"| {r['ours_serial_ms']:.2f} | {r['ours_tlc_ms']:.2f} | {cells} "
              f"| {ratio} | {r['ours_mb']:.0f} | {mbs} |")
    print("\n| shape | device ms per op kind (one run launched op by op) |\n|---|---|")
    for r in timing_rows:
        kinds: dict[str, float] = {}
        for o in r["profile"]:
            kind = o["op"].rsplit(" L", 1)[0]
            kinds[kind] = kinds.get(kind, 0.0) + o["ms"]
        print(f"| {r['shape']} | {', '.join(f'{k} {ms:.2f}' for k, ms in kinds.items())} |")
    print("\n| shape | device ms per op kind and level (Ln: 1/2^n resolution), launches |\n|---|---|")
    for r in timing_rows:
        ops = ", ".join(f"{o['op']} {o['ms']:.2f} ({o['launches']})" for o in r["profile"])
        print(f"| {r['shape']} | {ops} |")
    print("\n| shape | timed choices: level, shape, each candidate's ms per run (* taken) |\n|---|---|")
    for r in timing_rows:
        for c in r["choices"]:
            cands = ", ".join(f"{'*' if i == c['chosen'] else ''}{k['ops']} {k['ms']:.3f}"
                              for i, k in enumerate(c["candidates"]))
            print(f"| {r['shape']} | {c['choice']} L{c['level']} {'x'.join(map(str, c['shape']))}: {cands} |")
    e = engine_row
    print(f"\nengine file (1x1088x1920 FP16, {e['bytes']} bytes): first build {e['first_s']:.2f} s, "
          f"second {e['second_s']:.2f} s ({'reused' if e['reused'] else 'NOT reused'}), "
          f"restore with it vs without: max |d| {e['max_abs_vs_plain']:.2e}, pass {e['pass']}")
    gpu_counters.print_table(counter_rows, counter_note)
    failed = [r for r in parity_rows if not r["pass"]]
    print(f"\nparity: {len(parity_rows) - len(failed)}/{len(parity_rows)} pass")
    sys.exit(1 if failed or not e["pass"] else 0)


if __name__ == "__main__":
    main()
