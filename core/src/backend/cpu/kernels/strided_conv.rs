//! A dense `k × k` convolution with a stride and zero padding `k / 2` (the classification
//! head's image embedding: 3 channels in, 7×7, stride 2), rows in parallel.

use rayon::prelude::*;

/// Output size of a `k × k` conv with `stride` and zero padding `k / 2` over `n` pixels.
pub fn strided_len(n: usize, k: usize, stride: usize) -> usize {
    (n + 2 * (k / 2) - k) / stride + 1
}

/// `out[cout][oy][ox] = bias[cout] + Σ_cin,ky,kx weight[cout][cin][ky][kx] ·
/// input[cin][oy·stride + ky − k/2][ox·stride + kx − k/2]`, zeros outside the input; `out` is
/// `cout × strided_len(h) × strided_len(w)`.
pub fn conv_strided(
    out: &mut [f32],
    input: &[f32],
    (weight, bias): (&[f32], &[f32]),
    (cin, cout): (usize, usize),
    (h, w): (usize, usize),
    (k, stride): (usize, usize),
) {
    let (oh, ow) = (strided_len(h, k, stride), strided_len(w, k, stride));
    let pad = k / 2;
    assert!(out.len() == cout * oh * ow && input.len() == cin * h * w && weight.len() == cout * cin * k * k);
    // Output columns whose tap `kx` reads inside the row: ox·stride + kx − pad ∈ [0, w).
    let columns = |kx: usize| {
        let first = pad.saturating_sub(kx).div_ceil(stride);
        let end = if w + pad > kx { ((w + pad - kx - 1) / stride + 1).min(ow) } else { 0 };
        first..end.max(first)
    };
    out.par_chunks_mut(ow).enumerate().for_each(|(i, acc)| {
        let (o, oy) = (i / oh, i % oh);
        acc.fill(bias[o]);
        for ci in 0..cin {
            for ky in 0..k {
                let Some(iy) = (oy * stride + ky).checked_sub(pad).filter(|&iy| iy < h) else { continue };
                let src = &input[(ci * h + iy) * w..(ci * h + iy + 1) * w];
                for kx in 0..k {
                    let tap = weight[((o * cin + ci) * k + ky) * k + kx];
                    for ox in columns(kx) {
                        acc[ox] += tap * src[ox * stride + kx - pad];
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        c: (usize, usize),
        hw: (usize, usize),
        ks: (usize, usize),
    ) -> Vec<f32> {
        let ((cin, cout), (h, w), (k, stride)) = (c, hw, ks);
        let (oh, ow) = (strided_len(h, k, stride), strided_len(w, k, stride));
        let mut out = vec![0.0; cout * oh * ow];
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[o] as f64;
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - (k / 2) as isize;
                                let ix = (ox * stride + kx) as isize - (k / 2) as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    let v = input[(ci * h + iy as usize) * w + ix as usize];
                                    s += (weight[((o * cin + ci) * k + ky) * k + kx] * v) as f64;
                                }
                            }
                        }
                    }
                    out[(o * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_a_naive_convolution() {
        let values = |n: usize, seed: f32| (0..n).map(|i| ((i as f32 + seed) * 0.7311).sin()).collect::<Vec<f32>>();
        // Sizes smaller than the kernel, odd and even, strides 1–3, kernels 1–7.
        for (h, w) in [(1, 1), (2, 3), (5, 4), (8, 12), (13, 9)] {
            for (k, stride) in [(7, 2), (3, 1), (5, 3), (1, 2)] {
                let (cin, cout) = (3, 4);
                let input = values(cin * h * w, 1.0);
                let weight = values(cout * cin * k * k, 2.0);
                let bias = values(cout, 3.0);
                let mut out = vec![f32::NAN; cout * strided_len(h, k, stride) * strided_len(w, k, stride)];
                conv_strided(&mut out, &input, (&weight, &bias), (cin, cout), (h, w), (k, stride));
                let want = naive(&input, &weight, &bias, (cin, cout), (h, w), (k, stride));
                let diff = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(diff < 1e-5, "{h}×{w} k{k} s{stride}: max |Δ| {diff}");
            }
        }
    }

    #[test]
    fn output_sizes_follow_pytorch() {
        // torch.nn.Conv2d(3, 1, 7, 2, 3) maps 16 → 8, 15 → 8, 1 → 1.
        assert_eq!([16, 15, 1].map(|n| strided_len(n, 7, 2)), [8, 8, 1]);
    }
}
