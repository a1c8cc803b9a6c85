//! Direct 3×3 convolutions (zero padding 1): dense (`intro`, `ending`, few channels), the
//! depthwise 3×3 fused with SimpleGate and the channel-attention sums (NAFNet), and the plain
//! and GELU-gated depthwise 3×3 of Restormer's blocks.

use multiversion::multiversion;
use rayon::prelude::*;

use super::activation::gelu_gate;

/// `acc[x] += k[0]·src[x-1] + k[1]·src[x] + k[2]·src[x+1]`, with zeros outside `src`.
/// Inlined into the per-target clones of its callers.
#[inline(always)]
fn row_taps(acc: &mut [f32], src: &[f32], k: [f32; 3]) {
    let w = acc.len();
    debug_assert_eq!(src.len(), w);
    if w == 1 {
        acc[0] += k[1] * src[0];
        return;
    }
    acc[0] += k[1] * src[0] + k[2] * src[1];
    for ((a, s), (l, r)) in acc[1..w - 1].iter_mut().zip(&src[1..w - 1]).zip(src[..w - 2].iter().zip(&src[2..])) {
        *a += k[0] * l + k[1] * s + k[2] * r;
    }
    acc[w - 1] += k[0] * src[w - 2] + k[1] * src[w - 1];
}

/// Rows `[first, first + rows)` of one plane of width `w`, inside an image of `h` rows.
#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [f32],
    first: usize,
    rows: usize,
    h: usize,
    w: usize,
}

impl<'a> Plane<'a> {
    /// Row `r` of the image, or `None` where it is zero padding (or not held).
    #[inline(always)]
    fn row(&self, r: isize) -> Option<&'a [f32]> {
        let local = r - self.first as isize;
        ((0..self.h as isize).contains(&r) && (0..self.rows as isize).contains(&local))
            .then(|| &self.data[local as usize * self.w..(local as usize + 1) * self.w])
    }
}

/// `out` (rows `r0..` of width `w`) `+= conv3×3(plane)` with kernel `k` (row-major 3×3).
#[inline(always)]
fn accumulate_rows(out: &mut [f32], plane: Plane<'_>, r0: usize, k: &[f32]) {
    for (i, acc) in out.chunks_exact_mut(plane.w).enumerate() {
        let row = (r0 + i) as isize;
        for ky in 0..3 {
            if let Some(src) = plane.row(row + ky as isize - 1) {
                row_taps(acc, src, [k[3 * ky], k[3 * ky + 1], k[3 * ky + 2]]);
            }
        }
    }
}

/// One output row of a dense 3×3 conv: `acc = bias + Σ_cin conv(input[cin])[row]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dense_row(acc: &mut [f32], input: &[f32], (h, w): (usize, usize), row: usize, weight: &[f32], bias: f32) {
    acc.fill(bias);
    for (c, k) in weight.chunks_exact(9).enumerate() {
        let plane = Plane { data: &input[c * h * w..(c + 1) * h * w], first: 0, rows: h, h, w };
        accumulate_rows(acc, plane, row, k);
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
        dense_row(acc, &input[..cin * plane], (h, w), row, &weight[o * cin * 9..(o + 1) * cin * 9], bias[o]);
        if let Some(res) = residual {
            let r = &res[o * plane + row * w..o * plane + (row + 1) * w];
            acc.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
    });
}

/// Rows `[r0, r1)` of the 3×3 patches of the planar `c × h × w` map `input` (zero padding 1),
/// one row per channel and tap in the `[cout][cin][ky][kx]` order of a conv weight, so that a
/// dense 3×3 conv is the product of its `cout × 9c` weight with `out`:
/// `out[(ch·9 + ky·3 + kx)·n + (y − r0)·w + x] = input[ch][y + ky − 1][x + kx − 1]`, `n = (r1 − r0)·w`.
pub fn im2col3x3(out: &mut [f32], input: &[f32], c: usize, (h, w): (usize, usize), (r0, r1): (usize, usize)) {
    let n = (r1 - r0) * w;
    assert!(out.len() >= 9 * c * n && input.len() >= c * h * w && r1 <= h);
    out[..9 * c * n].par_chunks_mut(n).enumerate().for_each(|(row, dst)| {
        let (ch, ky, kx) = (row / 9, row % 9 / 3, row % 3);
        for (y, dst) in (r0..r1).zip(dst.chunks_exact_mut(w)) {
            let src_y = (y + ky).checked_sub(1).filter(|&sy| sy < h);
            let Some(sy) = src_y else {
                dst.fill(0.0);
                continue;
            };
            let src = &input[ch * h * w + sy * w..][..w];
            match kx {
                0 => {
                    dst[0] = 0.0;
                    dst[1..].copy_from_slice(&src[..w - 1]);
                }
                1 => dst.copy_from_slice(src),
                _ => {
                    dst[..w - 1].copy_from_slice(&src[1..]);
                    dst[w - 1] = 0.0;
                }
            }
        }
    });
}

/// Rows `[first, first + rows)` of a feature map, channel by channel: channel `i`'s rows start
/// at `data[i · stride]`.
pub struct Band<'a> {
    /// The band's values.
    pub data: &'a [f32],
    /// Image row of the band's first row.
    pub first: usize,
    /// Rows held.
    pub rows: usize,
    /// Elements from one channel's rows to the next's (at least `rows · w`).
    pub stride: usize,
}

impl<'a> Band<'a> {
    /// Channel `ch` of the band, inside an `h × w` image.
    fn plane(&self, ch: usize, (h, w): (usize, usize)) -> Plane<'a> {
        Plane {
            data: &self.data[ch * self.stride..ch * self.stride + self.rows * w],
            first: self.first,
            rows: self.rows,
            h,
            w,
        }
    }

    /// Panics unless the band holds the rows a 3×3 conv of rows `[r0, r1)` reads, for `c` channels.
    fn check(&self, c: usize, (h, w): (usize, usize), (r0, r1): (usize, usize)) {
        assert!(self.stride >= self.rows * w && self.data.len() >= (c - 1) * self.stride + self.rows * w);
        assert!(
            self.first <= r0.saturating_sub(1) && self.first + self.rows >= (r1 + 1).min(h),
            "band misses halo rows"
        );
    }
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
    assert!(g.len() >= c * plane);
    u.check(2 * c, (h, w), (r0, r1));
    let band_plane = |ch: usize| u.plane(ch, (h, w));
    g[..c * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .map(|(i, gi)| {
            let dst = &mut gi[r0 * w..r1 * w];
            let mut other = vec![0.0f32; dst.len()];
            let k = |ch: usize| &weight[ch * 9..ch * 9 + 9];
            dw_gate_rows(
                dst,
                &mut other,
                (band_plane(i), band_plane(i + c)),
                r0,
                (k(i), k(i + c)),
                (bias[i], bias[i + c]),
            )
        })
        .collect()
}

/// `dst = (dw(a) + bias_a) · (dw(b) + bias_b)` over rows `r0..`; `other` is scratch of
/// `dst`'s size. Returns the sum of `dst`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dw_gate_rows(
    dst: &mut [f32],
    other: &mut [f32],
    (a, b): (Plane<'_>, Plane<'_>),
    r0: usize,
    (ka, kb): (&[f32], &[f32]),
    (bias_a, bias_b): (f32, f32),
) -> f64 {
    dst.fill(bias_a);
    accumulate_rows(dst, a, r0, ka);
    other.fill(bias_b);
    accumulate_rows(other, b, r0, kb);
    dst.iter_mut().zip(other.iter()).for_each(|(d, o)| *d *= o);
    dst.chunks(a.w).map(|row| sum_lanes(row) as f64).sum()
}

/// Depthwise 3×3 (plus `bias`, if any) of the `c` channels of `u`, rows `[r0, r1)`: channel
/// `i`'s `(r1 − r0) · w` values go to `out[i · out_stride..]`. Rows of `u` outside the image
/// are zero padding.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    out: &mut [f32],
    out_stride: usize,
    u: &Band<'_>,
    (weight, bias): (&[f32], Option<&[f32]>),
    c: usize,
    (h, w): (usize, usize),
    (r0, r1): (usize, usize),
) {
    let n = (r1 - r0) * w;
    u.check(c, (h, w), (r0, r1));
    assert!(out_stride >= n && out.len() >= (c - 1) * out_stride + n && weight.len() >= 9 * c);
    assert!(bias.is_none_or(|b| b.len() >= c));
    out.par_chunks_mut(out_stride).take(c).enumerate().for_each(|(i, dst)| {
        let b = bias.map_or(0.0, |b| b[i]);
        dw_rows(&mut dst[..n], u.plane(i, (h, w)), r0, &weight[i * 9..i * 9 + 9], b);
    });
}

/// Restormer's gated feed-forward core: `out[i] = gelu(dw(u[i])) · dw(u[i + c])` over rows
/// `[r0, r1)` (`c × (r1 − r0) · w`), depthwise 3×3 plus `bias` (if any), GELU with `erf`.
pub fn depthwise_gelu_gate(
    out: &mut [f32],
    u: &Band<'_>,
    (weight, bias): (&[f32], Option<&[f32]>),
    c: usize,
    (h, w): (usize, usize),
    (r0, r1): (usize, usize),
) {
    let n = (r1 - r0) * w;
    u.check(2 * c, (h, w), (r0, r1));
    assert!(out.len() >= c * n && weight.len() >= 18 * c && bias.is_none_or(|b| b.len() >= 2 * c));
    let b = |ch: usize| bias.map_or(0.0, |b| b[ch]);
    out[..c * n].par_chunks_mut(n).enumerate().for_each(|(i, dst)| {
        let mut gate = vec![0.0f32; n];
        dw_rows(dst, u.plane(i, (h, w)), r0, &weight[i * 9..i * 9 + 9], b(i));
        dw_rows(&mut gate, u.plane(i + c, (h, w)), r0, &weight[(i + c) * 9..(i + c) * 9 + 9], b(i + c));
        gelu_gate(dst, &gate);
    });
}

/// `dst = bias + conv3×3(plane)` over rows `r0..` with kernel `k`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dw_rows(dst: &mut [f32], plane: Plane<'_>, r0: usize, k: &[f32], bias: f32) {
    dst.fill(bias);
    accumulate_rows(dst, plane, r0, k);
}

/// Sum of `xs` in 16 independent lanes (so it vectorises), then across lanes.
#[inline(always)]
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, x)| *l += x);
    }
    lanes.iter().sum::<f32>() + tail
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

    /// A dense conv as weights times patches equals the direct conv, band by band.
    #[test]
    fn patches_times_weights_equal_the_direct_conv() {
        for (h, w) in [(1, 1), (3, 1), (5, 7), (6, 4)] {
            let (cin, cout) = (3, 2);
            let input = values(cin * h * w, 6.0);
            let weight = values(cout * cin * 9, 7.0);
            let mut direct = vec![0.0; cout * h * w];
            conv3x3(&mut direct, &input, None, &weight, &[0.0; 2], (cin, cout), (h, w));
            let bands = [(0, h / 2), (h / 2, h)];
            for (r0, r1) in bands.into_iter().filter(|(a, b)| a < b) {
                let n = (r1 - r0) * w;
                let mut patches = vec![f32::NAN; 9 * cin * n];
                im2col3x3(&mut patches, &input, cin, (h, w), (r0, r1));
                for o in 0..cout {
                    for p in 0..n {
                        let got: f32 = (0..9 * cin).map(|k| weight[o * 9 * cin + k] * patches[k * n + p]).sum();
                        let want = direct[o * h * w + r0 * w + p];
                        assert!((got - want).abs() < 1e-5, "{h}x{w} rows {r0}..{r1}: {got} vs {want}");
                    }
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
        let whole = Band { data: &u, first: 0, rows: h, stride: h * w };
        let mut g_whole = vec![0.0; c * h * w];
        let sums_whole = depthwise_gate(&mut g_whole, &whole, &weight, &bias, c, (h, w), (0, h));
        let mut g_band = vec![0.0; c * h * w];
        let mut sums_band = vec![0.0; c];
        for (r0, r1) in [(0usize, 2usize), (2, 5), (5, 6)] {
            let (e0, e1) = (r0.saturating_sub(1), (r1 + 1).min(h));
            let band: Vec<f32> =
                (0..2 * c).flat_map(|ch| u[ch * h * w + e0 * w..ch * h * w + e1 * w].to_vec()).collect();
            let part = depthwise_gate(
                &mut g_band,
                &Band { data: &band, first: e0, rows: e1 - e0, stride: (e1 - e0) * w },
                &weight,
                &bias,
                c,
                (h, w),
                (r0, r1),
            );
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
