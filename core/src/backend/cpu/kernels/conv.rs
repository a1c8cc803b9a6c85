//! Direct 3×3 convolutions (zero padding 1): dense (`intro`, `ending`, few channels) and the
//! depthwise 3×3 fused with SimpleGate and the channel-attention sums.

use multiversion::multiversion;
use rayon::prelude::*;

/// `acc[x] += k[0]·src[x-1] + k[1]·src[x] + k[2]·src[x+1]`, with zeros outside `src`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn row_taps(acc: &mut [f32], src: &[f32], k: [f32; 3]) {
    let w = acc.len();
    debug_assert_eq!(src.len(), w);
    if w == 1 {
        acc[0] += k[1] * src[0];
        return;
    }
    acc[0] += k[1] * src[0] + k[2] * src[1];
    for x in 1..w - 1 {
        acc[x] += k[0] * src[x - 1] + k[1] * src[x] + k[2] * src[x + 1];
    }
    acc[w - 1] += k[0] * src[w - 2] + k[1] * src[w - 1];
}

/// One output row of a 3×3 conv of one input plane: `acc += conv(plane)[row]`.
/// `plane_rows(r)` returns input row `r`, or `None` outside the plane (zero padding).
fn accumulate_row<'a>(acc: &mut [f32], plane_rows: impl Fn(isize) -> Option<&'a [f32]>, row: usize, k: &[f32]) {
    for ky in 0..3 {
        if let Some(src) = plane_rows(row as isize + ky as isize - 1) {
            row_taps(acc, src, [k[3 * ky], k[3 * ky + 1], k[3 * ky + 2]]);
        }
    }
}

/// Dense 3×3 conv: `out[cout][h][w] = bias + Σ_cin conv(input[cin])`, optionally
/// `+ residual[cout][h][w]`. `weight` is `[cout][cin][3][3]`.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    out: &mut [f32],
    input: &[f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    bias: &[f32],
    (cin, cout): (usize, usize),
    (h, w): (usize, usize),
) {
    let plane = h * w;
    assert!(out.len() >= cout * plane && input.len() >= cin * plane && weight.len() >= cout * cin * 9);
    out[..cout * plane].par_chunks_mut(w).enumerate().for_each(|(i, acc)| {
        let (o, row) = (i / h, i % h);
        acc.fill(bias[o]);
        for c in 0..cin {
            let src = &input[c * plane..(c + 1) * plane];
            let rows = |r: isize| (0..h as isize).contains(&r).then(|| &src[r as usize * w..(r as usize + 1) * w]);
            accumulate_row(acc, rows, row, &weight[(o * cin + c) * 9..(o * cin + c + 1) * 9]);
        }
        if let Some(res) = residual {
            let r = &res[o * plane + row * w..o * plane + (row + 1) * w];
            acc.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
    });
}

/// Rows `[first, first + rows)` of a `2c`-channel map, stored as `2c × rows × w`.
pub struct Band<'a> {
    /// The band's values.
    pub data: &'a [f32],
    /// Image row of the band's first row.
    pub first: usize,
    /// Rows held.
    pub rows: usize,
}

/// Depthwise 3×3 + bias on the `2c` channels of `u`, then SimpleGate (`a[i]·a[i+c]`), written
/// to rows `[r0, r1)` of the planar `c × h × w` map `g`. Rows of `u` outside the image are
/// zero padding. Returns the per-channel sums of the written gate values.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_gate(
    g: &mut [f32],
    u: &Band<'_>,
    weight: &[f32],
    bias: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (r0, r1): (usize, usize),
) -> Vec<f64> {
    let plane = h * w;
    assert!(g.len() >= c * plane && u.data.len() >= 2 * c * u.rows * w);
    assert!(u.first <= r0.saturating_sub(1) && u.first + u.rows >= (r1 + 1).min(h), "band misses halo rows");
    g[..c * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .map(|(i, gi)| {
            let mut a = vec![0.0f32; w];
            let mut b = vec![0.0f32; w];
            let mut sum = 0.0f64;
            for row in r0..r1 {
                for (acc, ch) in [(&mut a, i), (&mut b, i + c)] {
                    acc.fill(bias[ch]);
                    let src = &u.data[ch * u.rows * w..(ch + 1) * u.rows * w];
                    let rows = |r: isize| {
                        let local = r - u.first as isize;
                        ((0..h as isize).contains(&r) && (0..u.rows as isize).contains(&local))
                            .then(|| &src[local as usize * w..(local as usize + 1) * w])
                    };
                    accumulate_row(acc, rows, row, &weight[ch * 9..ch * 9 + 9]);
                }
                let dst = &mut gi[row * w..(row + 1) * w];
                sum += gate_into(dst, &a, &b);
            }
            sum
        })
        .collect()
}

/// `dst = a · b` element-wise; returns the sum of `dst`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn gate_into(dst: &mut [f32], a: &[f32], b: &[f32]) -> f64 {
    let mut sum = 0.0f32;
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x * y;
        sum += *d;
    }
    sum as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_conv(input: &[f32], k: &[f32], h: usize, w: usize) -> Vec<f32> {
        let mut out = vec![0.0; h * w];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut s = 0.0;
                for ky in -1..=1isize {
                    for kx in -1..=1isize {
                        let (sy, sx) = (y + ky, x + kx);
                        if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                            s += k[((ky + 1) * 3 + kx + 1) as usize] * input[(sy * w as isize + sx) as usize];
                        }
                    }
                }
                out[(y * w as isize + x) as usize] = s;
            }
        }
        out
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7311).sin()).collect()
    }

    #[test]
    fn dense_conv_matches_naive_on_odd_sizes() {
        for (h, w) in [(1, 1), (1, 5), (4, 1), (5, 7)] {
            let (cin, cout) = (2, 3);
            let input = values(cin * h * w, 1.0);
            let weight = values(cout * cin * 9, 2.0);
            let bias = [0.5, -0.25, 0.125];
            let mut out = vec![0.0; cout * h * w];
            conv3x3(&mut out, &input, None, &weight, &bias, (cin, cout), (h, w));
            for o in 0..cout {
                let mut want = vec![bias[o]; h * w];
                for c in 0..cin {
                    let part = naive_conv(&input[c * h * w..(c + 1) * h * w], &weight[(o * cin + c) * 9..][..9], h, w);
                    want.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                }
                for (g, e) in out[o * h * w..(o + 1) * h * w].iter().zip(&want) {
                    assert!((g - e).abs() < 1e-5, "{h}x{w}");
                }
            }
        }
    }

    #[test]
    fn banded_depthwise_gate_equals_whole_image() {
        let (c, h, w) = (3, 6, 5);
        let u = values(2 * c * h * w, 3.0);
        let weight = values(2 * c * 9, 4.0);
        let bias = values(2 * c, 5.0);
        let whole = Band { data: &u, first: 0, rows: h };
        let mut g_whole = vec![0.0; c * h * w];
        let sums_whole = depthwise_gate(&mut g_whole, &whole, &weight, &bias, c, (h, w), (0, h));
        let mut g_band = vec![0.0; c * h * w];
        let mut sums_band = vec![0.0; c];
        for (r0, r1) in [(0usize, 2usize), (2, 5), (5, 6)] {
            let (e0, e1) = (r0.saturating_sub(1), (r1 + 1).min(h));
            let band: Vec<f32> = (0..2 * c).flat_map(|ch| u[ch * h * w + e0 * w..ch * h * w + e1 * w].to_vec()).collect();
            let part = depthwise_gate(&mut g_band, &Band { data: &band, first: e0, rows: e1 - e0 }, &weight, &bias, c, (h, w), (r0, r1));
            sums_band.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        assert_eq!(g_whole, g_band);
        for (a, b) in sums_whole.iter().zip(&sums_band) {
            assert!((a - b).abs() < 1e-5);
        }
        // Check one value against the naive definition.
        let dw = |ch: usize| {
            let mut v = naive_conv(&u[ch * h * w..(ch + 1) * h * w], &weight[ch * 9..ch * 9 + 9], h, w);
            v.iter_mut().for_each(|x| *x += bias[ch]);
            v
        };
        let (a, b) = (dw(1), dw(1 + c));
        assert!((g_whole[h * w + 7] - a[7] * b[7]).abs() < 1e-5);
    }
}
