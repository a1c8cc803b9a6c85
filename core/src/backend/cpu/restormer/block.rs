//! One Restormer transformer block, in place, streamed over row bands:
//! `x += attention(LN1(x))`, then `x += ffn(LN2(x))`.
//!
//! Attention (two passes): every band computes LN1 → qkv (1×1) → depthwise 3×3, adds its
//! pixels to each head's q·kᵀ and norm sums, and keeps v; the heads' softmax matrices are then
//! folded into `project_out` and one product adds `project_out · attn · v` to x. Feed-forward
//! (one pass): LN2 → project_in → depthwise 3×3 → GELU gate → project_out, added to x band by
//! band. The 1×1 rows a band's depthwise reads around it are computed once and carried to the
//! next band ([`RowWindow`]), so a band never reads rows of x that an earlier band updated.

use super::super::kernels::attention::AttentionSums;
use super::super::kernels::conv::{Band, depthwise, depthwise_gelu_gate};
use super::super::kernels::layernorm::layer_norm_stats;
use super::super::kernels::matmul::{Epilogue, MatMut, MatRef, MatmulPrecision, PackedLhs, RhsNorm, matmul};
use super::super::row_bands;
use super::weights::{BlockBiases, TransformerWeights};
use crate::error::{Error, Result};
use crate::spec::restormer::LAYER_NORM_EPS;

/// Elements the largest band buffer aims at.
const BAND_ELEMENTS: usize = 1 << 21;

/// Fewest rows per band (each band carries 2 rows of context).
const MIN_BAND_ROWS: usize = 16;

/// Rows per band of a block of `c` channels and `hidden` feed-forward channels on an `h × w` map.
pub fn band_rows(c: usize, hidden: usize, (h, w): (usize, usize)) -> usize {
    (BAND_ELEMENTS / (3 * c).max(2 * hidden).max(1) / w.max(1)).max(MIN_BAND_ROWS).min(h.max(1))
}

/// Scratch lengths `(window, qk, gated, v)` of a block on an `h × w` map in bands of `rows`.
pub fn scratch_len(b: &TransformerWeights, (h, w): (usize, usize), rows: usize) -> [usize; 4] {
    [(3 * b.c).max(2 * b.hidden) * (rows + 2) * w, 2 * b.c * rows * w, b.hidden * rows * w, b.c * h * w]
}

/// Scratch of a block, at least [`scratch_len`] long each.
pub struct BlockScratch<'a> {
    /// Rows of the 1×1 product the depthwise reads.
    pub window: &'a mut [f32],
    /// A band's q and k.
    pub qk: &'a mut [f32],
    /// A band's gated feed-forward features.
    pub gated: &'a mut [f32],
    /// The whole map's v.
    pub v: &'a mut [f32],
}

/// Runs block `b` on the `c × h × w` map `x` in place, in bands of `rows` rows.
pub fn run_block(
    b: &TransformerWeights,
    x: &mut [f32],
    (h, w): (usize, usize),
    rows: usize,
    s: BlockScratch<'_>,
    precision: MatmulPrecision,
    threads: usize,
) -> Result<()> {
    let (c, hw) = (b.c, h * w);
    let x = &mut x[..c * hw];
    let bias = |pick: fn(&BlockBiases) -> &[f32]| b.biases.as_ref().map(pick);

    // Attention, pass 1: q·kᵀ sums and v.
    let mut sums = AttentionSums::new(c, b.heads);
    let mut window = RowWindow::new(s.window, w, rows);
    for (r0, r1) in row_bands(h, rows) {
        let (a, z) = window.advance(r0, (r1 + 1).min(h), 3 * c);
        let qkv = (&b.qkv, bias(|b| &b.qkv));
        pointwise(window.rows_mut(a), x, hw, (a, z), w, qkv, &b.norm1, threads);
        let band = window.band();
        let n = (r1 - r0) * w;
        let dw_bias = bias(|b| &b.qkv_dw);
        depthwise(s.qk, n, &band, (&b.qkv_dw, dw_bias), 2 * c, (h, w), (r0, r1));
        let v_band = Band { data: &band.data[2 * c * band.stride..], ..band };
        let v_dw = (&b.qkv_dw[18 * c..], dw_bias.map(|d| &d[2 * c..]));
        depthwise(&mut s.v[r0 * w..], hw, &v_band, v_dw, c, (h, w), (r0, r1));
        sums.add(&s.qk[..c * n], &s.qk[c * n..2 * c * n], n, n);
    }
    // Pass 2: x += project_out · blockdiag(attn) · v.
    let folded = sums.fold_into(&b.temperature, &b.project_out);
    let folded = PackedLhs::new(&folded, c, c, precision).map_err(Error::Unsupported)?;
    let add = |bias| Epilogue { accumulate: true, bias, ..Default::default() };
    let (dst, v) = (MatMut { data: x, row_stride: hw }, MatRef { data: s.v, row_stride: hw });
    matmul(dst, &folded, v, hw, add(bias(|b| &b.project_out)), threads);

    // Feed-forward, band by band.
    let mut window = RowWindow::new(s.window, w, rows);
    for (r0, r1) in row_bands(h, rows) {
        let (a, z) = window.advance(r0, (r1 + 1).min(h), 2 * b.hidden);
        let project_in = (&b.project_in, bias(|b| &b.project_in));
        pointwise(window.rows_mut(a), x, hw, (a, z), w, project_in, &b.norm2, threads);
        let n = (r1 - r0) * w;
        let dw = (&b.ffn_dw[..], bias(|b| &b.ffn_dw));
        depthwise_gelu_gate(s.gated, &window.band(), dw, b.hidden, (h, w), (r0, r1));
        let dst = MatMut { data: &mut x[r0 * w..], row_stride: hw };
        let out = add(bias(|b| &b.ffn_out));
        matmul(dst, &b.ffn_out, MatRef { data: s.gated, row_stride: n }, n, out, threads);
    }
    Ok(())
}

/// `dst = bias + lhs · LayerNorm(x rows [a, z))` (`x`: channels `hw` apart, rows of width `w`).
#[allow(clippy::too_many_arguments)]
fn pointwise(
    dst: MatMut<'_>,
    x: &[f32],
    hw: usize,
    (a, z): (usize, usize),
    w: usize,
    (lhs, bias): (&PackedLhs, Option<&[f32]>),
    (scale, shift): &(Vec<f32>, Vec<f32>),
    threads: usize,
) {
    let n = (z - a) * w;
    if n == 0 {
        return;
    }
    let rhs = MatRef { data: &x[a * w..], row_stride: hw };
    let stats = layer_norm_stats(rhs.data, hw, scale.len(), n, LAYER_NORM_EPS);
    let norm = RhsNorm { mean: &stats.mean, rstd: &stats.rstd, weight: scale, bias: shift };
    matmul(dst, lhs, rhs, n, Epilogue { rhs_norm: Some(norm), bias, ..Default::default() }, threads);
}

/// Rows `[first, end)` of a per-pixel product that a band's 3×3 depthwise reads, channel
/// planes `stride` apart. Each band keeps the rows it shares with the one before (its row of
/// context above and its first row) and computes only the rows below them.
struct RowWindow<'a> {
    buf: &'a mut [f32],
    w: usize,
    stride: usize,
    channels: usize,
    first: usize,
    end: usize,
}

impl<'a> RowWindow<'a> {
    fn new(buf: &'a mut [f32], w: usize, band_rows: usize) -> Self {
        RowWindow { buf, w, stride: (band_rows + 2) * w, channels: 0, first: 0, end: 0 }
    }

    /// Moves to the band starting at row `r0` that needs rows up to `stop`, for `channels`
    /// channels: drops the rows above `r0 − 1`, and returns the rows `[a, z)` to compute.
    fn advance(&mut self, r0: usize, stop: usize, channels: usize) -> (usize, usize) {
        let keep = r0.saturating_sub(1).max(self.first);
        let kept = self.end.saturating_sub(keep);
        if kept > 0 && keep > self.first {
            let (from, w) = ((keep - self.first) * self.w, self.w);
            for ch in 0..channels {
                let base = ch * self.stride;
                self.buf.copy_within(base + from..base + from + kept * w, base);
            }
        }
        self.channels = channels;
        self.first = keep;
        let a = self.end.max(keep);
        self.end = stop;
        assert!((self.end - self.first) * self.w <= self.stride, "band taller than its window");
        (a, stop)
    }

    /// Where rows from `a` go.
    fn rows_mut(&mut self, a: usize) -> MatMut<'_> {
        let offset = (a - self.first) * self.w;
        MatMut { data: &mut self.buf[offset..], row_stride: self.stride }
    }

    /// The rows held.
    fn band(&self) -> Band<'_> {
        let len = (self.channels - 1) * self.stride + (self.end - self.first) * self.w;
        Band { data: &self.buf[..len], first: self.first, rows: self.end - self.first, stride: self.stride }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7311).sin() * scale).collect()
    }

    fn block(c: usize, heads: usize, hidden: usize) -> TransformerWeights {
        let pack = |rows: usize, cols: usize, seed: f32| {
            let w = values(rows * cols, seed, 1.0 / (cols as f32).sqrt());
            PackedLhs::new(&w, rows, cols, MatmulPrecision::F32).unwrap()
        };
        TransformerWeights {
            c,
            heads,
            hidden,
            norm1: (values(c, 1.0, 0.1).iter().map(|v| 1.0 + v).collect(), values(c, 2.0, 0.1)),
            temperature: values(heads, 3.0, 0.5).iter().map(|v| 1.0 + v).collect(),
            qkv: pack(3 * c, c, 4.0),
            qkv_dw: values(27 * c, 5.0, 0.3),
            project_out: values(c * c, 6.0, 0.4),
            norm2: (values(c, 7.0, 0.1).iter().map(|v| 1.0 + v).collect(), values(c, 8.0, 0.1)),
            project_in: pack(2 * hidden, c, 9.0),
            ffn_dw: values(18 * hidden, 10.0, 0.3),
            ffn_out: pack(c, hidden, 11.0),
            biases: Some(BlockBiases {
                qkv: values(3 * c, 12.0, 0.1),
                qkv_dw: values(3 * c, 13.0, 0.1),
                project_out: values(c, 14.0, 0.1),
                project_in: values(2 * hidden, 15.0, 0.1),
                ffn_dw: values(2 * hidden, 16.0, 0.1),
                ffn_out: values(c, 17.0, 0.1),
            }),
        }
    }

    fn run(b: &TransformerWeights, x: &[f32], map: (usize, usize), rows: usize) -> Vec<f32> {
        let [window, qk, gated, v] = scratch_len(b, map, rows);
        let (mut window, mut qk, mut gated, mut v) = (vec![0.0; window], vec![0.0; qk], vec![0.0; gated], vec![0.0; v]);
        let scratch = BlockScratch { window: &mut window, qk: &mut qk, gated: &mut gated, v: &mut v };
        let mut out = x.to_vec();
        run_block(b, &mut out, map, rows, scratch, MatmulPrecision::F32, 2).unwrap();
        out
    }

    /// Bands of any height give the one-band result: each band's depthwise reads the rows
    /// around it as they were before the block, whether computed by it or carried over.
    #[test]
    fn bands_of_any_height_equal_one_band() {
        let (c, h, w) = (6, 11, 7);
        let b = block(c, 2, 5);
        let x = values(c * h * w, 12.0, 1.0);
        let whole = run(&b, &x, (h, w), h);
        assert!(whole.iter().zip(&x).any(|(a, b)| (a - b).abs() > 1e-2), "the block changes its input");
        for rows in [1, 2, 3, 5, 10] {
            let banded = run(&b, &x, (h, w), rows);
            let diff = banded.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "{rows} rows per band: max |Δ| {diff}");
        }
    }
}
