//! `maskdcpt bench`: build the engine once, time restores of a deterministic synthetic image,
//! print one JSON line.

use std::time::Instant;

use maskdcpt_core::backend::cpu::product_kernels;
use maskdcpt_core::backend::{TileSize, build_engine};
use maskdcpt_core::image::{Image, round_up};
use serde_json::json;

use crate::args::{BackendArg, BenchArgs, Sca};
use crate::error::{CliError, Result};

/// Runs the benchmark and prints its JSON line to stdout.
pub fn run(args: &BenchArgs) -> Result<()> {
    let model = crate::model::load_or_default(args.model.as_deref(), args.param_key.as_deref())?;
    let threads = match args.engine.threads {
        Some(t) => t as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut options = args.engine.to_options()?;
    options.threads = Some(threads);
    let engine = build_engine(&model, &options)?;
    // The engine holds its own copy of the weights: release the checkpoint (and its mapping).
    let architecture = model.architecture().clone();
    drop(model);

    let (height, width) = (args.height as usize, args.width as usize);
    let input = Image::new(width, height, synthetic_pixels(width, height)?)?;
    let batch = vec![input; args.batch as usize];
    for _ in 0..args.warmup {
        engine.restore_batch(&batch)?;
    }
    let mut times_ms = Vec::with_capacity(args.iters as usize);
    for _ in 0..args.iters {
        let start = Instant::now();
        let output = engine.restore_batch(&batch)?;
        times_ms.push(start.elapsed().as_secs_f64() * 1e3);
        drop(output);
    }
    let stats = Stats::of(&mut times_ms);
    // GPU engines: the same shape with input and output kept on the device (what PyTorch
    // timings of a resident tensor measure).
    let device = engine.device_timing(batch.len(), width, height, args.iters as usize)?;

    let multiple = architecture.size_multiple();
    let gmacs = architecture.macs(round_up(height, multiple), round_up(width, multiple)) as f64 / 1e9;
    let line = json!({
        "model": crate::model::describe(args.model.as_deref()),
        "height": height,
        "width": width,
        "batch": args.batch,
        "backend": match args.engine.backend {
            BackendArg::Cpu => "cpu",
            BackendArg::Cuda => "cuda",
        },
        "iters": args.iters,
        "warmup": args.warmup,
        "threads": threads,
        "precision": args.engine.precision.name(),
        // The CPU engine's matrix products: our AVX-512 or AVX2 kernels, or the gemm crate.
        "cpu_products": matches!(args.engine.backend, BackendArg::Cpu).then(|| product_kernels(options.precision)).flatten(),
        "tile": args.engine.tile.map(|tile| match tile {
            TileSize::Pixels(pixels) => json!(pixels),
            TileSize::Auto => json!("auto"),
        }),
        "local_tiles": engine.local_tiles(width, height)?.map(|t| json!({"tile": t.tile, "overlap": t.overlap, "blend": t.blend})),
        "memory_limit_mb": args.engine.memory_limit_mb,
        "sca": args.engine.tile.map(|_| match args.engine.sca {
            Sca::Global => "global",
            Sca::Local => "local",
        }),
        "tlc_train_size": args.engine.attention.tlc,
        "tlc_sampled_train_size": args.engine.attention.tlc_sampled,
        "median_ms": stats.median,
        "min_ms": stats.min,
        "mean_ms": stats.mean,
        "gmacs": gmacs,
        "gflops": 2.0 * gmacs * args.batch as f64 / (stats.median / 1e3),
        "peak_rss_mb": peak_rss_mb(),
        "device": device.as_ref().map(|d| d.device.clone()),
        "device_median_ms": device.as_ref().map(|d| d.median_ms),
        "device_min_ms": device.as_ref().map(|d| d.min_ms),
        "device_memory_mb": device.as_ref().map(|d| d.memory_bytes as f64 / (1 << 20) as f64),
        "device_launch_overlap": device.as_ref().map(|d| d.launch_overlap),
        "device_profile": device.as_ref().map(|d| {
            d.profile.iter().map(|(what, ms, count)| json!({"op": what, "ms": ms, "launches": count})).collect::<Vec<_>>()
        }),
        "device_choices": device.as_ref().map(|d| {
            d.choices
                .iter()
                .map(|c| {
                    json!({
                        "choice": c.what,
                        "level": c.level,
                        "shape": [c.shape.0, c.shape.1, c.shape.2],
                        "candidates": c.candidates.iter().map(|(ops, ms)| json!({"ops": ops, "ms": ms})).collect::<Vec<_>>(),
                        "chosen": c.chosen,
                    })
                })
                .collect::<Vec<_>>()
        }),
    });
    println!("{line}");
    Ok(())
}

/// `height × width × 3` values in [0, 1) from a fixed-seed xorshift generator.
fn synthetic_pixels(width: usize, height: usize) -> Result<Vec<f32>> {
    let len = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| CliError::Invalid(format!("{width}×{height} is too large")))?;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| CliError::Invalid(format!("cannot allocate a {width}×{height} input image")))?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    data.extend((0..len).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    }));
    Ok(data)
}

/// Summary of the timed runs, in milliseconds.
struct Stats {
    median: f64,
    min: f64,
    mean: f64,
}

impl Stats {
    /// Statistics of a non-empty sample (sorted in place).
    fn of(times: &mut [f64]) -> Self {
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if !n.is_multiple_of(2) { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
        Stats { median, min: times[0], mean: times.iter().sum::<f64>() / n as f64 }
    }
}

/// Peak resident set size of this process in MiB (`VmHWM`), where `/proc` has it (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_samples() {
        let s = Stats::of(&mut [3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.mean), (2.0, 1.0, 2.0));
        let s = Stats::of(&mut [4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.mean), (2.5, 1.0, 2.5));
    }

    #[test]
    fn synthetic_pixels_are_deterministic_and_in_range() {
        let a = synthetic_pixels(5, 4).unwrap();
        assert_eq!(a, synthetic_pixels(5, 4).unwrap());
        assert_eq!(a.len(), 60);
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    }
}
