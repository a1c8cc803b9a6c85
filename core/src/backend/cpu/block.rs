//! One NAFBlock on the CPU, streamed over row bands of the feature map.
//!
//! Phase A (all bands): LN1 → conv1 → depthwise + gate into a full-map buffer `g`, summing
//! each channel. Then the channel-attention vector follows.
//! Phase B (all bands): `y = x + β·conv3(s ⊙ g)`, `out = y + γ·conv5(gate(conv4(LN2(y))))`,
//! written in place over `x`. Both LayerNorms are applied by the next product while it packs
//! its input (only their per-pixel statistics are computed here), the gate is fused into
//! conv4's store and s, β, γ into conv3/conv5. Only `g` is full size; the rest is band-sized,
//! and the result does not depend on the band height except for the order of the SCA sums.
//! With windowed attention (TLC) `g` is scaled per pixel between the phases instead.

use super::kernels::conv::{Band, depthwise_gate};
use super::kernels::layernorm::layer_norm_stats;
use super::kernels::matmul::{Epilogue, MatMut, MatRef, RhsNorm, matmul};
use super::kernels::window::{scale_by_window, window_means};
use super::prepared::BlockWeights;
use super::row_bands;
use crate::tlc::{MapPool, Samples};

/// Scratch a block needs on an `h × w` map with bands of `band_rows` rows.
pub struct BlockScratch<'a> {
    /// Full-map gate output, `c × h × w`.
    pub g: &'a mut [f32],
    /// Band matrix, `2c × (band_rows + 2) × w`.
    pub u: &'a mut [f32],
    /// Window means and their attention, `2c × (h − rows + 1) × (w − cols + 1)` (windowed
    /// attention only).
    pub window: &'a mut [f32],
}

/// Element counts of (`g`, `u`, `window`) for channels `c`, map `h × w`, `band_rows` and the
/// block's attention `pool`.
pub fn scratch_len(c: usize, (h, w): (usize, usize), band_rows: usize, pool: MapPool) -> (usize, usize, usize) {
    let rows = (band_rows + 2).min(h);
    let window = pool.sides((h, w)).map_or(0, |(rows, cols)| 2 * c * rows.means() * cols.means());
    (c * h * w, 2 * c * rows * w, window)
}

/// Runs the block in place on the planar `c × h × w` map `x`.
pub fn run_block(
    bw: &BlockWeights,
    x: &mut [f32],
    (h, w): (usize, usize),
    band_rows: usize,
    pool: MapPool,
    s: BlockScratch<'_>,
    threads: usize,
) {
    let (c, hw) = (bw.c, h * w);
    let x = &mut x[..c * hw];
    let mut sums = vec![0.0f64; c];
    for (r0, r1) in row_bands(h, band_rows) {
        let (e0, e1) = (r0.saturating_sub(1), (r1 + 1).min(h));
        let ne = (e1 - e0) * w;
        let xe = MatRef { data: &x[e0 * w..], row_stride: hw };
        let stats = layer_norm_stats(xe.data, hw, c, ne, bw.eps);
        let norm = RhsNorm { mean: &stats.mean, rstd: &stats.rstd, weight: &bw.norm1.0, bias: &bw.norm1.1 };
        let conv1 = Epilogue { bias: Some(&bw.conv1.1), rhs_norm: Some(norm), ..Default::default() };
        let u = &mut s.u[..2 * c * ne];
        matmul(MatMut { data: u, row_stride: ne }, &bw.conv1.0, xe, ne, conv1, threads);
        let band = Band { data: u, first: e0, rows: e1 - e0, stride: ne };
        let part = depthwise_gate(s.g, &band, &bw.dw.0, &bw.dw.1, c, (h, w), (r0, r1));
        sums.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    let attention = match pool.sides((h, w)) {
        None => Some(channel_attention(bw, &sums, hw)),
        Some(sides) => {
            windowed_attention(bw, s.g, (h, w), sides, s.window, threads);
            None
        }
    };
    for (r0, r1) in row_bands(h, band_rows) {
        let (off, n) = (r0 * w, (r1 - r0) * w);
        let rows = (c - 1) * hw + n;
        let xb = &mut x[off..off + rows];
        let e3 = Epilogue {
            accumulate: true,
            bias: Some(&bw.conv3_beta.1),
            rhs_scale: attention.as_deref(),
            rhs_norm: None,
        };
        let g = MatRef { data: &s.g[off..], row_stride: hw };
        matmul(MatMut { data: xb, row_stride: hw }, &bw.conv3_beta.0, g, n, e3, threads);
        let stats = layer_norm_stats(xb, hw, c, n, bw.eps);
        let norm = RhsNorm { mean: &stats.mean, rstd: &stats.rstd, weight: &bw.norm2.0, bias: &bw.norm2.1 };
        // conv4 with SimpleGate fused into its store: `u` receives the c gated channels.
        let u = &mut s.u[..c * n];
        let e4 = Epilogue { bias: Some(&bw.conv4.1), rhs_norm: Some(norm), ..Default::default() };
        matmul(MatMut { data: u, row_stride: n }, &bw.conv4.0, MatRef { data: xb, row_stride: hw }, n, e4, threads);
        let e5 = Epilogue { accumulate: true, bias: Some(&bw.conv5_gamma.1), ..Default::default() };
        matmul(
            MatMut { data: xb, row_stride: hw },
            &bw.conv5_gamma.0,
            MatRef { data: u, row_stride: n },
            n,
            e5,
            threads,
        );
    }
}

/// The channel-attention vector `s = W_sca · mean(g) + b_sca`, applied as a per-row scale of
/// conv3's input.
fn channel_attention(bw: &BlockWeights, sums: &[f64], hw: usize) -> Vec<f32> {
    let c = bw.c;
    let mean: Vec<f32> = sums.iter().map(|s| (s / hw as f64) as f32).collect();
    (0..c)
        .map(|i| bw.sca.1[i] + bw.sca.0[i * c..(i + 1) * c].iter().zip(&mean).map(|(w, m)| w * m).sum::<f32>())
        .collect()
}

/// Scales each pixel of the planar `g` by its window's attention `W_sca · mean + b_sca`.
fn windowed_attention(
    bw: &BlockWeights,
    g: &mut [f32],
    (h, w): (usize, usize),
    window: (Samples, Samples),
    scratch: &mut [f32],
    threads: usize,
) {
    let (c, n) = (bw.c, window.0.means() * window.1.means());
    let (means, attention) = scratch[..2 * c * n].split_at_mut(c * n);
    window_means(means, g, c, (h, w), window);
    let sca = bw.sca_windowed.as_ref().expect("windowed attention weights are prepared with a TLC pool");
    let e = Epilogue { bias: Some(&bw.sca.1), ..Default::default() };
    matmul(MatMut { data: attention, row_stride: n }, sca, MatRef { data: means, row_stride: n }, n, e, threads);
    scale_by_window(g, attention, c, (h, w), window);
}
