//! LayerNorm over the channels of each pixel (biased variance, two passes like PyTorch).
//!
//! Only the per-pixel statistics are computed here; the normalisation itself
//! (`(x − μ) · rstd · weight + bias`) is applied by the matrix product that consumes the
//! result, while it packs its right-hand side (see `matmul::RhsNorm`), so the normalised map
//! is never written out.

use multiversion::multiversion;
use rayon::prelude::*;

/// Pixels per work item.
const CHUNK: usize = 512;

/// Per-pixel mean and reciprocal standard deviation over channels.
pub struct NormStats {
    /// Mean over channels, one per pixel.
    pub mean: Vec<f32>,
    /// `1 / sqrt(variance + eps)`, one per pixel.
    pub rstd: Vec<f32>,
}

/// Statistics of `n` pixels of the `c`-channel map `x` (channel stride `x_stride`).
pub fn layer_norm_stats(x: &[f32], x_stride: usize, c: usize, n: usize, eps: f32) -> NormStats {
    assert!(c > 0 && x.len() >= (c - 1) * x_stride + n);
    let mut mean = vec![0.0f32; n];
    let mut rstd = vec![0.0f32; n];
    mean.par_chunks_mut(CHUNK).zip(rstd.par_chunks_mut(CHUNK)).enumerate().for_each(|(i, (m, r))| {
        stats(m, r, x, x_stride, c, i * CHUNK, eps);
    });
    NormStats { mean, rstd }
}

/// Statistics of the first `mean.len()` pixels of `x` (as [`layer_norm_stats`]), on the
/// calling thread.
pub fn layer_norm_stats_into(mean: &mut [f32], rstd: &mut [f32], x: &[f32], x_stride: usize, c: usize, eps: f32) {
    assert!(c > 0 && rstd.len() == mean.len() && x.len() >= (c - 1) * x_stride + mean.len());
    stats(mean, rstd, x, x_stride, c, 0, eps);
}

/// Normalises `n` pixels of the `c`-channel map `x` (channel stride `stride`) in place:
/// `(x − mean) · rstd · weight[channel] + bias[channel]`.
pub fn layer_norm_in_place(x: &mut [f32], stride: usize, n: usize, (weight, bias): (&[f32], &[f32]), eps: f32) {
    let c = weight.len();
    assert!(bias.len() == c && x.len() >= c * stride && n <= stride);
    let s = layer_norm_stats(x, stride, c, n, eps);
    x.par_chunks_mut(stride).take(c).zip(weight.par_iter().zip(bias)).for_each(|(row, (&w, &b))| {
        row[..n].iter_mut().zip(s.mean.iter().zip(&s.rstd)).for_each(|(v, (&m, &r))| *v = (*v - m) * r * w + b);
    });
}

/// Mean and reciprocal standard deviation over `c` channels for pixels `p0..p0+mean.len()`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn stats(mean: &mut [f32], rstd: &mut [f32], x: &[f32], stride: usize, c: usize, p0: usize, eps: f32) {
    let len = mean.len();
    mean.fill(0.0);
    for ch in 0..c {
        let row = &x[ch * stride + p0..ch * stride + p0 + len];
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
    }
    let inv_c = 1.0 / c as f32;
    mean.iter_mut().for_each(|m| *m *= inv_c);
    rstd.fill(0.0);
    for ch in 0..c {
        let row = &x[ch * stride + p0..ch * stride + p0 + len];
        rstd.iter_mut().zip(row).zip(mean.iter()).for_each(|((s, v), m)| {
            let d = v - m;
            *s += d * d;
        });
    }
    rstd.iter_mut().for_each(|s| *s = 1.0 / (*s * inv_c + eps).sqrt());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_match_a_float64_reference() {
        let (c, n, stride) = (5, 1000, 1100);
        let x: Vec<f32> = (0..c * stride).map(|i| (i as f32 * 0.013).sin() * 300.0 + 1000.0).collect();
        let s = layer_norm_stats(&x, stride, c, n, 1e-5);
        for p in [0, 511, 512, 999] {
            let vals: Vec<f64> = (0..c).map(|ch| x[ch * stride + p] as f64).collect();
            let mu = vals.iter().sum::<f64>() / c as f64;
            let var = vals.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / c as f64;
            assert!((s.mean[p] as f64 - mu).abs() < 1e-3, "mean at {p}");
            assert!((s.rstd[p] as f64 * (var + 1e-5).sqrt() - 1.0).abs() < 1e-4, "rstd at {p}");
        }
    }
}
