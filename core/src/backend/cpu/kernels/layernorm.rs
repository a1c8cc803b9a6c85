//! LayerNorm over the channels of each pixel (biased variance, two-pass like PyTorch), reading a
//! planar map and writing a contiguous `c × n` matrix ready to be the right-hand side of a GEMM.

use multiversion::multiversion;
use rayon::prelude::*;

/// Pixels per work item of the statistics pass.
const CHUNK: usize = 512;

/// `out[ch][p] = (x[ch][p] − μ[p]) / sqrt(σ²[p] + eps) · weight[ch] + bias[ch]` for `n` pixels;
/// `x` has channel stride `x_stride`, `out` is `c × n` contiguous.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    out: &mut [f32],
    x: &[f32],
    x_stride: usize,
    c: usize,
    n: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) {
    assert!(out.len() >= c * n && (c == 0 || x.len() >= (c - 1) * x_stride + n));
    let mut mean = vec![0.0f32; n];
    let mut rstd = vec![0.0f32; n];
    mean.par_chunks_mut(CHUNK).zip(rstd.par_chunks_mut(CHUNK)).enumerate().for_each(|(i, (m, r))| {
        stats(m, r, x, x_stride, c, i * CHUNK, eps);
    });
    out[..c * n].par_chunks_mut(n).enumerate().for_each(|(ch, o)| {
        normalize(o, &x[ch * x_stride..ch * x_stride + n], &mean, &rstd, weight[ch], bias[ch]);
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

#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn normalize(out: &mut [f32], x: &[f32], mean: &[f32], rstd: &[f32], w: f32, b: f32) {
    for (((o, v), m), r) in out.iter_mut().zip(x).zip(mean).zip(rstd) {
        *o = (v - m) * r * w + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_pixel_over_channels() {
        let (c, n, stride) = (5, 1000, 1100);
        let x: Vec<f32> = (0..c * stride).map(|i| (i as f32 * 0.013).sin() * 300.0 + 1000.0).collect();
        let weight: Vec<f32> = (0..c).map(|i| 1.0 + i as f32 * 0.1).collect();
        let bias: Vec<f32> = (0..c).map(|i| i as f32 * -0.2).collect();
        let mut out = vec![0.0; c * n];
        layer_norm(&mut out, &x, stride, c, n, &weight, &bias, 1e-5);
        for p in [0, 511, 512, 999] {
            let vals: Vec<f64> = (0..c).map(|ch| x[ch * stride + p] as f64).collect();
            let mu = vals.iter().sum::<f64>() / c as f64;
            let var = vals.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / c as f64;
            for ch in 0..c {
                let want = (vals[ch] - mu) / (var + 1e-5).sqrt() * weight[ch] as f64 + bias[ch] as f64;
                assert!((out[ch * n + p] as f64 - want).abs() < 1e-4, "p {p} ch {ch}");
            }
        }
    }
}
