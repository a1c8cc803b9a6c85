"""Hardware counters of the CUDA engine's own kernels under Nsight Compute (`ncu`), for
scripts/gpu_check.py: why a kernel takes the time the event profile shows (memory or issue
bound, occupancy, what its warps stall on). Optional: where no `ncu` is found, or it fails
(no access to the counters, a time limit), the check says so and goes on.

One `maskdcpt bench` of the released shape at 1x1088x1920 FP16 runs under ncu, which profiles
the first launches of the kernels named in KERNELS (those of the instance being built, its
timed candidates included: every level's depthwise variants and fused kernels). Launches of
one kernel with one grid are summarised together (median duration)."""

from __future__ import annotations

import csv
import glob
import io
import shutil
import statistics
import subprocess

KERNELS = "regex:^(dw_gate_pool|layer_norm|gate|norm_conv1|ffn|attend_ffn|conv_in|conv_out|shuffle_add)"
METRICS = {
    "gpu__time_duration.sum": "ns",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram %",
    "lts__throughput.avg.pct_of_peak_sustained_elapsed": "L2 %",
    "l1tex__throughput.avg.pct_of_peak_sustained_active": "L1 %",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": "SM %",
    "smsp__issue_active.avg.pct_of_peak_sustained_active": "issue %",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy %",
    "launch__registers_per_thread": "regs",
}
STALLS = "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\\.ratio"
STALL_PREFIX, STALL_SUFFIX = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"


def find_ncu() -> str | None:
    """`ncu` on PATH or in the usual CUDA and Nsight Compute install folders."""
    found = shutil.which("ncu")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/ncu") + glob.glob("/opt/nvidia/nsight-compute/*/ncu")
                        + glob.glob("/usr/local/cuda*/nsight-compute*/ncu"))
    return candidates[-1] if candidates else None


def number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def counters(binary: str, model: str, launches: int, timeout_s: float) -> tuple[list[dict], str]:
    """The summarised counters (one row per kernel and grid, in launch order) and a note on
    what ran; no rows where ncu is missing or fails."""
    ncu = find_ncu()
    if ncu is None:
        return [], "ncu not found: no hardware counters"
    metrics = ",".join([*METRICS, "launch__grid_size", "launch__block_size", STALLS])
    cmd = [ncu, "--csv", "--page", "raw", "--print-units", "base", "--kernel-name", KERNELS, "--launch-count", str(launches),
           "--metrics", metrics, binary, "bench", "--backend", "cuda", "--precision", "fp16", "-m", model,
           "--height", "1088", "--width", "1920", "--iters", "1", "--warmup", "0"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return [], f"ncu ran past {timeout_s:.0f} s: no hardware counters"
    if done.returncode != 0:
        return [], f"ncu failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-400:]}"
    return summarise(done.stdout), f"ncu {ncu}: {launches} launches at most"


def summarise(text: str) -> list[dict]:
    """Rows of ncu's raw CSV page (a header, a units row, one row per launch) grouped by
    kernel, grid and block size."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    table = list(csv.DictReader(io.StringIO("\n".join(lines))))[1:]  # the first row holds units
    groups: dict[tuple, list[dict]] = {}
    for row in table:
        key = (row["Kernel Name"], row.get("launch__grid_size", ""), row.get("launch__block_size", ""))
        groups.setdefault(key, []).append(row)
    summary = []
    for (kernel, grid, block), rows in groups.items():
        entry = dict(kernel=kernel, grid=grid, block=block, launches=len(rows))
        for metric, label in METRICS.items():
            values = [v for v in (number(r.get(metric, "")) for r in rows) if v is not None]
            entry[label] = statistics.median(values) if values else None
        stalls = {}
        for metric in rows[0]:
            if metric.startswith(STALL_PREFIX) and metric.endswith(STALL_SUFFIX):
                values = [v for v in (number(r[metric]) for r in rows) if v is not None]
                if values:
                    stalls[metric[len(STALL_PREFIX):-len(STALL_SUFFIX)]] = statistics.median(values)
        entry["stalls"] = sorted(stalls.items(), key=lambda kv: -kv[1])[:3]
        summary.append(entry)
    return summary


def print_table(rows: list[dict], note: str) -> None:
    print(f"\nhardware counters ({note})")
    if not rows:
        return
    labels = list(METRICS.values())
    print(f"\n| kernel | grid | block | launches | {' | '.join(labels)} | top stalls (warps per issue) |")
    print("|---|---|---|---|" + "---|" * len(labels) + "---|")
    for r in rows:
        cells = " | ".join("-" if r[label] is None else f"{r[label]:.4g}" for label in labels)
        stalls = ", ".join(f"{name} {value:.2f}" for name, value in r["stalls"])
        print(f"| {r['kernel']} | {r['grid']} | {r['block']} | {r['launches']} | {cells} | {stalls} |")
