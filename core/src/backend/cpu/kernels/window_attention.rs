//! Multi-head self-attention within one window of tokens (SwinIR's, without position bias):
//! `out_h = v_h · softmax(scale · q_hᵀ k_h)ᵀ` for each head, on channel-major `q`, `k`, `v`
//! (a row per channel, the window's tokens contiguous), with an `exp` that vectorises.
//!
//! The scores are kept transposed (`scores[j][i]`: key `j`, query `i`), so every loop runs
//! along contiguous rows of tokens: the products as sums of rows held in registers, two output
//! rows at a time sharing each row load, the softmax as running maxima and sums over rows.

use multiversion::multiversion;

/// One window's query, key and value rows: `3 · channels` rows of the window's tokens (q,
/// then k, then v).
pub struct Qkv<'a> {
    /// The rows, `row_stride` apart.
    pub data: &'a mut [f32],
    /// Distance between rows.
    pub row_stride: usize,
}

/// Writes the attention of the window's `tokens` tokens into `out` (`channels` rows of
/// `tokens`, `row_stride` apart); `heads` split the channels evenly, `scores` holds at least
/// `tokens²` values. Scales q in place first, as PyTorch does (`q = q · scale`).
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn attend(
    qkv: Qkv<'_>,
    out: &mut [f32],
    (channels, heads, tokens): (usize, usize, usize),
    row_stride: usize,
    scores: &mut [f32],
) {
    let head_dim = channels / heads;
    assert!(heads > 0 && head_dim * heads == channels && tokens > 0);
    assert!(qkv.data.len() >= (3 * channels - 1) * qkv.row_stride + tokens);
    assert!(out.len() >= (channels - 1) * row_stride + tokens && scores.len() >= tokens * tokens);
    let scale = (head_dim as f32).powf(-0.5);
    let stride = qkv.row_stride;
    let (q, kv) = qkv.data.split_at_mut(channels * stride);
    let row = |r: usize| r * stride..r * stride + tokens;
    for h in 0..heads {
        let dims = h * head_dim..(h + 1) * head_dim;
        for d in dims.clone() {
            q[row(d)].iter_mut().for_each(|v| *v *= scale);
        }
        // scores[j][i] = Σ_d k[d][j] · q[d][i]
        let q = &*q;
        let k = |t: usize, j: usize| kv[(h * head_dim + t) * stride + j];
        let q_row = |t: usize| &q[row(h * head_dim + t)];
        let mut pairs = scores[..tokens * tokens].chunks_exact_mut(2 * tokens);
        for (pair, rows) in pairs.by_ref().enumerate() {
            let (a, b) = rows.split_at_mut(tokens);
            let j = 2 * pair;
            combine_pair((a, b), head_dim, |t| (k(t, j), k(t, j + 1)), q_row);
        }
        let last = pairs.into_remainder();
        if !last.is_empty() {
            combine(last, head_dim, |t| k(t, tokens - 1), q_row);
        }
        softmax_over_keys(&mut scores[..tokens * tokens], tokens);
        // out[d][i] = Σ_j v[d][j] · p[j][i]
        let p = &scores[..tokens * tokens];
        let p_row = |j: usize| &p[j * tokens..(j + 1) * tokens];
        let mut d = dims.start;
        while d + 1 < dims.end {
            let (va, vb) = (&kv[row(channels + d)], &kv[row(channels + d + 1)]);
            let (head, tail) = out.split_at_mut((d + 1) * row_stride);
            let pair = (&mut head[d * row_stride..d * row_stride + tokens], &mut tail[..tokens]);
            combine_pair(pair, tokens, |j| (va[j], vb[j]), p_row);
            d += 2;
        }
        if d < dims.end {
            let vrow = &kv[row(channels + d)];
            combine(&mut out[d * row_stride..d * row_stride + tokens], tokens, |j| vrow[j], p_row);
        }
    }
}

/// `out[i] = Σ_t coef(t) · row(t)[i]`, with the sums for a block of `out` held in registers.
#[inline(always)]
fn combine<'a>(out: &mut [f32], terms: usize, coef: impl Fn(usize) -> f32, row: impl Fn(usize) -> &'a [f32]) {
    let mut start = 0;
    start = combine_blocks::<64>(out, start, terms, &coef, &row);
    start = combine_blocks::<16>(out, start, terms, &coef, &row);
    for (i, o) in out.iter_mut().enumerate().skip(start) {
        *o = (0..terms).fold(0.0, |acc, t| coef(t).mul_add(row(t)[i], acc));
    }
}

/// [`combine`] for two outputs over the same rows, `coefs(t)` giving each one's coefficient:
/// each row value is loaded once for both, and the two sets of sums are independent chains.
#[inline(always)]
fn combine_pair<'a>(
    (a, b): (&mut [f32], &mut [f32]),
    terms: usize,
    coefs: impl Fn(usize) -> (f32, f32),
    row: impl Fn(usize) -> &'a [f32],
) {
    const B: usize = 64;
    let mut start = 0;
    while start + B <= a.len() {
        let (mut acc_a, mut acc_b) = ([0.0f32; B], [0.0f32; B]);
        for t in 0..terms {
            let (ca, cb) = coefs(t);
            let r: &[f32; B] = row(t)[start..start + B].try_into().expect("a block of the row");
            for ((x, y), &v) in acc_a.iter_mut().zip(acc_b.iter_mut()).zip(r) {
                *x = ca.mul_add(v, *x);
                *y = cb.mul_add(v, *y);
            }
        }
        a[start..start + B].copy_from_slice(&acc_a);
        b[start..start + B].copy_from_slice(&acc_b);
        start += B;
    }
    if start < a.len() {
        combine(&mut a[start..], terms, |t| coefs(t).0, |t| &row(t)[start..]);
        combine(&mut b[start..], terms, |t| coefs(t).1, |t| &row(t)[start..]);
    }
}

/// [`combine`] over the blocks of `B` values from `start` on; returns where they end.
#[inline(always)]
fn combine_blocks<'a, const B: usize>(
    out: &mut [f32],
    mut start: usize,
    terms: usize,
    coef: &impl Fn(usize) -> f32,
    row: &impl Fn(usize) -> &'a [f32],
) -> usize {
    while start + B <= out.len() {
        let mut acc = [0.0f32; B];
        for t in 0..terms {
            let c = coef(t);
            let r: &[f32; B] = row(t)[start..start + B].try_into().expect("a block of the row");
            acc.iter_mut().zip(r).for_each(|(a, &v)| *a = c.mul_add(v, *a));
        }
        out[start..start + B].copy_from_slice(&acc);
        start += B;
    }
    start
}

/// Softmax of each query's column of `scores[j][i]` (`tokens × tokens`) over the keys `j`.
#[inline(always)]
fn softmax_over_keys(scores: &mut [f32], tokens: usize) {
    let mut max = [f32::NEG_INFINITY; MAX_TOKENS];
    let mut sum = [0.0f32; MAX_TOKENS];
    for chunk in (0..tokens).step_by(MAX_TOKENS) {
        let width = MAX_TOKENS.min(tokens - chunk);
        let (max, sum) = (&mut max[..width], &mut sum[..width]);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        for srow in scores.chunks_exact(tokens) {
            max.iter_mut().zip(&srow[chunk..chunk + width]).for_each(|(m, &s)| *m = m.max(s));
        }
        for srow in scores.chunks_exact_mut(tokens) {
            let part = &mut srow[chunk..chunk + width];
            part.iter_mut().zip(max.iter()).zip(sum.iter_mut()).for_each(|((s, &m), t)| {
                *s = exp(*s - m);
                *t += *s;
            });
        }
        sum.iter_mut().for_each(|t| *t = 1.0 / *t);
        for srow in scores.chunks_exact_mut(tokens) {
            srow[chunk..chunk + width].iter_mut().zip(sum.iter()).for_each(|(s, &r)| *s *= r);
        }
    }
}

/// Queries whose softmax statistics are held at once.
const MAX_TOKENS: usize = 256;

/// `e^x` in single precision without branches (Cephes `expf`: `x = n·ln 2 + r`, a degree-5
/// polynomial for `e^r`, `2^n` from the exponent bits; `n` rounded with the 1.5·2²³ shifter, so
/// everything stays in vector registers), within 2 ulp (tested); inputs are clamped to
/// [−87.3, 88.3], so results stay normal and finite.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
    let x = x.clamp(-87.3, 88.3);
    // t = 1.5·2²³ + n: n = round(x / ln 2) sits in the low mantissa bits.
    let t = x.mul_add(std::f32::consts::LOG2_E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let poly = P.iter().fold(0.0f32, |acc, &p| acc.mul_add(r, p));
    let er = (poly * r).mul_add(r, r) + 1.0;
    // (n + 127) << 23: the shift keeps the low 9 bits, where t's bits hold n.
    er * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() * f32::EPSILON;
            worst = worst.max((exp(x) as f64 - exact).abs() / ulp as f64);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37 && exp(1e4).is_finite());
    }

    /// Every head's output matches a float64 evaluation of the formula, also with more
    /// queries than the softmax holds at once.
    #[test]
    fn attention_matches_a_float64_reference() {
        for (channels, heads, tokens) in [(6, 2, 5), (12, 3, 64), (4, 1, 300)] {
            let stride = tokens + 3;
            let values: Vec<f32> = (0..3 * channels * stride).map(|i| ((i as f32) * 0.377).sin() * 2.0).collect();
            let mut qkv = values.clone();
            let mut out = vec![0.0; channels * stride];
            let mut scores = vec![0.0; tokens * tokens];
            attend(
                Qkv { data: &mut qkv, row_stride: stride },
                &mut out,
                (channels, heads, tokens),
                stride,
                &mut scores,
            );
            let hd = channels / heads;
            let at = |r: usize, t: usize| values[r * stride + t] as f64;
            let mut worst = 0.0f64;
            for h in 0..heads {
                for i in 0..tokens {
                    let logits: Vec<f64> = (0..tokens)
                        .map(|j| (0..hd).map(|d| at(h * hd + d, i) * at(channels + h * hd + d, j)).sum::<f64>())
                        .map(|s| s / (hd as f64).sqrt())
                        .collect();
                    let m = logits.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = (0..tokens).map(|j| e[j] / z * at(2 * channels + h * hd + d, j)).sum();
                        worst = worst.max((out[(h * hd + d) * stride + i] as f64 - want).abs());
                    }
                }
            }
            assert!(worst < 1e-5, "{channels} channels, {heads} heads, {tokens} tokens: max |Δ| {worst}");
        }
    }
}
