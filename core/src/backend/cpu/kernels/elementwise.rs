//! Memory-bound layout kernels: space-to-depth for the 2×2 stride-2 conv, PixelShuffle(2)
//! fused with the skip addition (bias and SimpleGate are fused into the matrix products), and
//! PromptIR's bilinear resize of its prompts.

use rayon::prelude::*;

/// Space-to-depth by 2 for output rows `[r0, r1)`: `out[4i + 2ky + kx][y − r0][x] =
/// input[i][2y + ky][2x + kx]` for a planar `c × h × w` input (h, w even); `out` is
/// `4c × ((r1 − r0) · w/2)`, matching the `[cout][cin][ky][kx]` order of a 2×2 conv weight.
pub fn space_to_depth(out: &mut [f32], input: &[f32], c: usize, (h, w): (usize, usize), (r0, r1): (usize, usize)) {
    let wo = w / 2;
    let n = (r1 - r0) * wo;
    out[..4 * c * n].par_chunks_mut(n).enumerate().for_each(|(k, o)| {
        let (i, ky, kx) = (k / 4, (k / 2) % 2, k % 2);
        for (y, dst) in (r0..r1).zip(o.chunks_exact_mut(wo)) {
            let src = &input[i * h * w + (2 * y + ky) * w..][..w];
            dst.iter_mut().zip(src.iter().skip(kx).step_by(2)).for_each(|(d, s)| *d = *s);
        }
    });
}

/// `out[c][2y + i][2x + j] += t[4c + 2i + j][y − r0][x]` for low-resolution rows `[r0, r1)`
/// (PixelShuffle(2) added onto `out`): `t` is `4c × ((r1 − r0) · w/2)`, `out` a planar
/// `c × h × w` map.
pub fn add_pixel_shuffle(out: &mut [f32], t: &[f32], c: usize, (h, w): (usize, usize), (r0, r1): (usize, usize)) {
    let wi = w / 2;
    let n = (r1 - r0) * wi;
    out[..c * h * w].par_chunks_mut(h * w).enumerate().for_each(|(ch, plane)| {
        for y in 2 * r0..2 * r1 {
            let row = &mut plane[y * w..(y + 1) * w];
            let (yi, i) = (y / 2 - r0, y % 2);
            for j in 0..2 {
                let src = &t[(4 * ch + 2 * i + j) * n + yi * wi..][..wi];
                row.iter_mut().skip(j).step_by(2).zip(src).for_each(|(d, s)| *d += s);
            }
        }
    });
}

/// Bilinear resize of the planar `c × ih × iw` map `input` to `c × oh × ow` in `out`, as
/// PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` without antialiasing: output
/// pixel `o` samples the input at `(o + ½) · in/out − ½`, clamped at 0, between its two
/// nearest pixels (the last repeated at the edge).
pub fn resize_bilinear(out: &mut [f32], input: &[f32], c: usize, (ih, iw): (usize, usize), (oh, ow): (usize, usize)) {
    assert!(input.len() >= c * ih * iw && out.len() >= c * oh * ow && ih * iw > 0);
    // Per output coordinate: the two input indices and their weights.
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src as usize).min(n_in - 1);
                let i1 = if i0 + 1 < n_in { i0 + 1 } else { i0 };
                let l1 = src - i0 as f32;
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let (rows, cols) = (taps(ih, oh), taps(iw, ow));
    out[..c * oh * ow].par_chunks_mut(oh * ow).enumerate().for_each(|(ch, plane)| {
        let src = &input[ch * ih * iw..(ch + 1) * ih * iw];
        for (row, &(y0, y1, wy0, wy1)) in plane.chunks_exact_mut(ow).zip(&rows) {
            let (a, b) = (&src[y0 * iw..(y0 + 1) * iw], &src[y1 * iw..(y1 + 1) * iw]);
            for (v, &(x0, x1, wx0, wx1)) in row.iter_mut().zip(&cols) {
                *v = wy0 * (wx0 * a[x0] + wx1 * a[x1]) + wy1 * (wx0 * b[x0] + wx1 * b[x1]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up and down: a linear ramp stays linear inside, edges repeat, and a same-size resize is
    /// the identity.
    #[test]
    fn bilinear_resize_follows_the_half_pixel_rule() {
        let input: Vec<f32> = (0..4).map(|x| x as f32).collect(); // one row: 0 1 2 3
        let mut up = vec![0.0; 8];
        resize_bilinear(&mut up, &input, 1, (1, 4), (1, 8));
        // src = (o + 0.5) / 2 - 0.5: -0.25→0, 0.25, 0.75, ..., 3.25→3 (clamped to the edge).
        assert_eq!(up, [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]);
        let mut down = vec![0.0; 2];
        resize_bilinear(&mut down, &input, 1, (1, 4), (1, 2));
        assert_eq!(down, [0.5, 2.5]);
        let square: Vec<f32> = (0..2 * 9).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut same = vec![0.0; 2 * 9];
        resize_bilinear(&mut same, &square, 2, (3, 3), (3, 3));
        assert_eq!(same, square);
    }

    #[test]
    fn shuffle_is_the_inverse_of_space_to_depth() {
        let (c, h, w) = (3, 4, 6);
        let input: Vec<f32> = (0..c * h * w).map(|v| v as f32).collect();
        let mut s2d = vec![0.0; c * h * w];
        space_to_depth(&mut s2d, &input, c, (h, w), (0, h / 2));
        // PixelShuffle channel order 4c + 2i + j matches space-to-depth order 4c + 2ky + kx.
        let mut back = vec![0.0; c * h * w];
        add_pixel_shuffle(&mut back, &s2d, c, (h, w), (0, h / 2));
        assert_eq!(back, input);
        // Band by band gives the same.
        let mut banded = vec![0.0; c * h * w];
        for r in 0..h / 2 {
            let mut part = vec![0.0; c * w * 2];
            space_to_depth(&mut part, &input, c, (h, w), (r, r + 1));
            add_pixel_shuffle(&mut banded, &part, c, (h, w), (r, r + 1));
        }
        assert_eq!(banded, input);
        // Spot check: channel 1, ky 1, kx 0 at (y 1, x 2) comes from input[1][3][4].
        assert_eq!(s2d[(4 + 2) * (h / 2 * w / 2) + 3 + 2], input[h * w + 3 * w + 4]);
    }
}
