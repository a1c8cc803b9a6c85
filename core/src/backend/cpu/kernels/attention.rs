//! Restormer's multi-Dconv transposed attention over channels: each head's `d × d` attention
//! matrix `softmax(q̂ · k̂ᵀ · t)` comes from sums over every pixel (`q̂`, `k̂`: each channel's row
//! L2-normalised over the pixels), so it is accumulated band by band; the matrix is then folded
//! into the output projection, which multiplies `v` once.

use multiversion::multiversion;
use rayon::prelude::*;

/// Pixels whose products one work item sums in f32.
const CHUNK: usize = 2048;

/// `F.normalize`'s floor on a norm.
const NORM_EPS: f64 = 1e-12;

/// Sums over pixels that the attention matrices need, accumulated in f64.
pub struct AttentionSums {
    heads: usize,
    head_dim: usize,
    /// Per head, row-major `d × d`: `Σ q_i · k_j` over pixels.
    gram: Vec<f64>,
    /// Per channel: `Σ q_i²`.
    q_squares: Vec<f64>,
    /// Per channel: `Σ k_i²`.
    k_squares: Vec<f64>,
}

impl AttentionSums {
    /// Empty sums for `channels` split into `heads` heads.
    pub fn new(channels: usize, heads: usize) -> Self {
        assert!(heads > 0 && channels.is_multiple_of(heads), "heads split the channels");
        let head_dim = channels / heads;
        AttentionSums {
            heads,
            head_dim,
            gram: vec![0.0; heads * head_dim * head_dim],
            q_squares: vec![0.0; channels],
            k_squares: vec![0.0; channels],
        }
    }

    /// Adds `n` pixels of `q` and `k` (channel `i`'s values at `[i · stride..][..n]`).
    pub fn add(&mut self, q: &[f32], k: &[f32], stride: usize, n: usize) {
        let (heads, d) = (self.heads, self.head_dim);
        let c = heads * d;
        assert!(stride >= n && q.len() >= (c - 1) * stride + n && k.len() >= (c - 1) * stride + n);
        // Chunks of pixels in parallel, each head's products in f32 within a chunk, the chunks'
        // partial sums then added in f64.
        let partials: Vec<Vec<f32>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|chunk| {
                let (p0, len) = (chunk * CHUNK, CHUNK.min(n - chunk * CHUNK));
                let mut sums = vec![0.0f32; heads * d * d + 2 * c];
                let (gram, squares) = sums.split_at_mut(heads * d * d);
                for (head, block) in gram.chunks_exact_mut(d * d).enumerate() {
                    let first = head * d * stride + p0;
                    // SAFETY: the assert above keeps every row `i < c` of `q` and `k`, pixels
                    // `p0..p0 + len ≤ n`, inside the slices; `block` is `d × d` and owned here.
                    unsafe {
                        gemm::gemm(
                            d,
                            d,
                            len,
                            block.as_mut_ptr(),
                            1,
                            d as isize,
                            false,
                            q[first..].as_ptr(),
                            1,
                            stride as isize,
                            k[first..].as_ptr(),
                            stride as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                for i in 0..c {
                    let row = |m: &[f32]| -> f32 {
                        let r = &m[i * stride + p0..i * stride + p0 + len];
                        dot(r, r)
                    };
                    squares[i] = row(q);
                    squares[c + i] = row(k);
                }
                sums
            })
            .collect();
        for part in partials {
            let (gram, squares) = part.split_at(heads * d * d);
            self.gram.iter_mut().zip(gram).for_each(|(a, &b)| *a += b as f64);
            self.q_squares.iter_mut().zip(&squares[..c]).for_each(|(a, &b)| *a += b as f64);
            self.k_squares.iter_mut().zip(&squares[c..]).for_each(|(a, &b)| *a += b as f64);
        }
    }

    /// The output projection `project_out` (`c × c`, row-major) times the block-diagonal matrix
    /// of the heads' attention, `softmax_j(q̂_i · k̂_j · temperature[head])`: the `c × c` matrix
    /// that takes `v` to the block's attention output.
    pub fn fold_into(&self, temperature: &[f32], project_out: &[f32]) -> Vec<f32> {
        let (heads, d) = (self.heads, self.head_dim);
        let c = heads * d;
        assert!(temperature.len() >= heads && project_out.len() >= c * c);
        let norm = |squares: f64| squares.sqrt().max(NORM_EPS);
        let mut attention = vec![0.0f64; heads * d * d];
        for (i, row) in attention.chunks_exact_mut(d).enumerate() {
            let head = i / d;
            let t = temperature[head] as f64;
            let gram = &self.gram[i * d..(i + 1) * d];
            for (j, a) in row.iter_mut().enumerate() {
                *a = gram[j] / (norm(self.q_squares[i]) * norm(self.k_squares[head * d + j])) * t;
            }
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.iter_mut().for_each(|a| *a = (*a - max).exp());
            let total: f64 = row.iter().sum();
            row.iter_mut().for_each(|a| *a /= total);
        }
        let mut folded = vec![0.0f32; c * c];
        for (o, out_row) in folded.chunks_exact_mut(c).enumerate() {
            for head in 0..heads {
                let p = &project_out[o * c + head * d..o * c + (head + 1) * d];
                for j in 0..d {
                    let column = (0..d).map(|i| p[i] as f64 * attention[(head * d + i) * d + j]).sum::<f64>();
                    out_row[head * d + j] = column as f32;
                }
            }
        }
        folded
    }
}

/// `Σ a_i · b_i` in 16 independent lanes (so it vectorises), then across lanes.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.6173).sin()).collect()
    }

    /// The folded matrix applied to `v` equals `project_out · (softmax(q̂ k̂ᵀ t) v)` computed
    /// directly in f64, and adding the pixels in two parts equals adding them at once.
    #[test]
    fn folded_attention_matches_a_float64_reference() {
        let (c, heads, n) = (6, 2, 2 * CHUNK + 37);
        let d = c / heads;
        let (q, k, v) = (values(c * n, 1.0), values(c * n, 2.0), values(c * n, 3.0));
        let temperature = [0.7f32, 1.9];
        let project = values(c * c, 4.0);
        let mut whole = AttentionSums::new(c, heads);
        whole.add(&q, &k, n, n);
        let mut parts = AttentionSums::new(c, heads);
        let split = CHUNK + 500;
        parts.add(&q, &k, n, split);
        parts.add(&q[split..], &k[split..], n, n - split);
        let folded = whole.fold_into(&temperature, &project);
        let folded_parts = parts.fold_into(&temperature, &project);
        for (a, b) in folded.iter().zip(&folded_parts) {
            assert!((a - b).abs() < 1e-6);
        }
        let unit = |m: &[f32], i: usize| {
            let r: Vec<f64> = m[i * n..(i + 1) * n].iter().map(|&x| x as f64).collect();
            let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            r.into_iter().map(|x| x / norm).collect::<Vec<_>>()
        };
        for p in [0, 5, n - 1] {
            for o in 0..c {
                let mut want = 0.0f64;
                for head in 0..heads {
                    for i in 0..d {
                        let qi = unit(&q, head * d + i);
                        let logits: Vec<f64> = (0..d)
                            .map(|j| {
                                let kj = unit(&k, head * d + j);
                                qi.iter().zip(&kj).map(|(a, b)| a * b).sum::<f64>() * temperature[head] as f64
                            })
                            .collect();
                        let total: f64 = logits.iter().map(|l| l.exp()).sum();
                        let out_i: f64 =
                            (0..d).map(|j| logits[j].exp() / total * v[(head * d + j) * n + p] as f64).sum();
                        want += project[o * c + head * d + i] as f64 * out_i;
                    }
                }
                let got: f64 = (0..c).map(|j| folded[o * c + j] as f64 * v[j * n + p] as f64).sum();
                assert!((got - want).abs() < 1e-5, "pixel {p} channel {o}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn zero_rows_do_not_divide_by_zero() {
        let (c, n) = (2, 5);
        let mut sums = AttentionSums::new(c, 1);
        sums.add(&vec![0.0; c * n], &values(c * n, 1.0), n, n);
        let folded = sums.fold_into(&[1.0], &[1.0, 0.0, 0.0, 1.0]);
        // q̂ = 0: uniform attention.
        assert!(folded.iter().all(|x| x.is_finite()));
        assert!((folded[0] - 0.5).abs() < 1e-7 && (folded[1] - 0.5).abs() < 1e-7);
    }
}
