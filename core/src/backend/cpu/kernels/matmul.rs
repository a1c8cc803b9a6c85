//! Matrix products for 1×1 convolutions: `dst[m×n] (+)= bias + lhs[m×k] · diag(s) · rhs[k×n]`,
//! where `rhs` and `dst` are channel-major feature maps (row stride = channel stride) and `lhs`
//! is a weight matrix `[cout][cin]` packed once when the engine is built.
//!
//! The product runs on our own register-tiled kernels (module `tiled`), which give the same bits
//! on every ISA: on x86-64 AVX-512 in f32 or with bf16 inputs and f32 accumulation
//! (AVX512-BF16), else AVX2 with FMA in f32; on aarch64 NEON in f32. Elsewhere (x86-64 without
//! AVX2) it goes through the `gemm` crate. The environment variable [`KERNELS_ENV`] chooses other
//! kernels than the best for comparisons and tests.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod tiled;

use std::sync::OnceLock;

use rayon::prelude::*;

/// Environment variable choosing the product kernels, read once per process: `native` (the
/// default: the best of our kernels this CPU runs, AVX-512, AVX2 or NEON), `avx2` (our AVX2
/// kernels even where AVX-512 exists; f32 only) or `portable` (the `gemm` crate; no bf16).
pub const KERNELS_ENV: &str = "MASKDCPT_CPU_KERNELS";

/// The product kernels [`KERNELS_ENV`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelChoice {
    /// The best this CPU runs.
    Native,
    /// Our AVX2 kernels.
    Avx2,
    /// The `gemm` crate.
    Portable,
}

impl KernelChoice {
    /// The [`KERNELS_ENV`] values, in the order of the variants.
    const NAMES: [(&str, KernelChoice); 3] =
        [("native", KernelChoice::Native), ("avx2", KernelChoice::Avx2), ("portable", KernelChoice::Portable)];

    /// The value of [`KERNELS_ENV`] that asks for it.
    fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, c)| *c == self).map_or("native", |(name, _)| name)
    }
}

/// The kernels [`KERNELS_ENV`] asks for; an error names a value it does not take.
fn kernel_choice() -> Result<KernelChoice, String> {
    static CHOICE: OnceLock<Result<KernelChoice, String>> = OnceLock::new();
    CHOICE.get_or_init(|| parse_kernel_choice(std::env::var(KERNELS_ENV))).clone()
}

/// The choice the [`KERNELS_ENV`] value `value` makes.
fn parse_kernel_choice(value: Result<String, std::env::VarError>) -> Result<KernelChoice, String> {
    let shown = match value {
        Err(std::env::VarError::NotPresent) => return Ok(KernelChoice::Native),
        Ok(value) => match KernelChoice::NAMES.iter().find(|(name, _)| *name == value) {
            Some(&(_, choice)) => return Ok(choice),
            None => format!("`{value}`"),
        },
        Err(std::env::VarError::NotUnicode(value)) => format!("{value:?}"),
    };
    Err(format!("{KERNELS_ENV} is {shown}: set it to `native`, `avx2` or `portable`, or unset it"))
}

/// Arithmetic of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPrecision {
    /// f32 inputs, f32 accumulation.
    F32,
    /// Inputs rounded to bf16, f32 accumulation (needs AVX512-BF16).
    Bf16,
}

/// A read-only `rows × cols` view with a row stride, columns contiguous.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    /// Backing elements.
    pub data: &'a [f32],
    /// Distance between rows in elements.
    pub row_stride: usize,
}

/// A mutable `rows × cols` view with a row stride, columns contiguous.
pub struct MatMut<'a> {
    /// Backing elements.
    pub data: &'a mut [f32],
    /// Distance between rows in elements.
    pub row_stride: usize,
}

/// A LayerNorm applied to `rhs` while it is packed:
/// `rhs'[r][j] = (rhs[r][j] − mean[j]) · rstd[j] · weight[r] + bias[r]`.
#[derive(Clone, Copy)]
pub struct RhsNorm<'a> {
    /// Per-column (pixel) mean.
    pub mean: &'a [f32],
    /// Per-column reciprocal standard deviation.
    pub rstd: &'a [f32],
    /// Per-row (channel) scale.
    pub weight: &'a [f32],
    /// Per-row shift.
    pub bias: &'a [f32],
}

impl RhsNorm<'_> {
    /// The normalised value of `x` at row `r`, column `j`.
    fn apply(&self, x: f32, r: usize, j: usize) -> f32 {
        (x - self.mean[j]) * self.rstd[j] * self.weight[r] + self.bias[r]
    }
}

/// What a product does besides `lhs · rhs`: transforms of `rhs` applied while packing it, and
/// what the store adds.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Add to the existing contents of `dst` instead of overwriting them.
    pub accumulate: bool,
    /// Per-row (output channel) constant added.
    pub bias: Option<&'a [f32]>,
    /// Per-row scale of `rhs` (a diagonal between `lhs` and `rhs`), applied after `rhs_norm`.
    pub rhs_scale: Option<&'a [f32]>,
    /// LayerNorm of `rhs` over its rows (channels), per column (pixel).
    pub rhs_norm: Option<RhsNorm<'a>>,
}

/// A weight matrix `m × k` in the layout of the kernel that will multiply it, optionally with
/// SimpleGate fused into the product's output.
pub struct PackedLhs {
    m: usize,
    k: usize,
    gated: bool,
    layout: Layout,
}

enum Layout {
    /// Row-major, for the `gemm` crate.
    RowMajor(Vec<f32>),
    /// Panels for our tiled kernels.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    Tiled(tiled::Packed),
}

impl PackedLhs {
    /// Packs the row-major `m × k` matrix `w` for products in `precision`; errors if this CPU
    /// (or [`KERNELS_ENV`]) cannot run that precision.
    pub fn new(w: &[f32], m: usize, k: usize, precision: MatmulPrecision) -> Result<Self, String> {
        Self::pack(w, m, k, false, precision)
    }

    /// As [`PackedLhs::new`] for a product whose output is SimpleGate'd: `m` (even) product
    /// rows give `m / 2` output rows, `out[i] = (row i + bias i) · (row m/2 + i + bias m/2 + i)`.
    pub fn gated(w: &[f32], m: usize, k: usize, precision: MatmulPrecision) -> Result<Self, String> {
        assert!(m.is_multiple_of(2), "a gated product needs an even number of rows");
        Self::pack(w, m, k, true, precision)
    }

    fn pack(w: &[f32], m: usize, k: usize, gated: bool, precision: MatmulPrecision) -> Result<Self, String> {
        assert_eq!(w.len(), m * k, "weight matrix size");
        let choice = kernel_choice()?;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if choice != KernelChoice::Portable
            && let Some(kernel) = tiled::Kernel::detect(precision, choice == KernelChoice::Avx2)
        {
            return Ok(Self::packed_for(w, m, k, gated, kernel));
        }
        match (precision, choice) {
            (MatmulPrecision::F32, KernelChoice::Avx2) => {
                Err(format!("{KERNELS_ENV} is `avx2`, but this CPU has no AVX2 with FMA: unset it"))
            }
            (MatmulPrecision::F32, _) => Ok(PackedLhs { m, k, gated, layout: Layout::RowMajor(w.to_vec()) }),
            (MatmulPrecision::Bf16, KernelChoice::Native) => {
                Err("bf16 precision needs an x86-64 CPU with AVX512-BF16: use f32 precision on this one".into())
            }
            (MatmulPrecision::Bf16, choice) => {
                Err(format!("bf16 precision needs the AVX-512 kernels ({KERNELS_ENV} is `{}`)", choice.name()))
            }
        }
    }

    /// `w` packed for one of our kernels.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn packed_for(w: &[f32], m: usize, k: usize, gated: bool, kernel: tiled::Kernel) -> Self {
        let rows = if gated { tiled::Rows::Gated(m / 2) } else { tiled::Rows::Plain(m) };
        PackedLhs { m, k, gated, layout: Layout::Tiled(tiled::Packed::new(w, rows, k, kernel)) }
    }

    /// Rows of the output (output channels; half the product's rows when gated).
    pub fn rows(&self) -> usize {
        if self.gated { self.m / 2 } else { self.m }
    }

    /// Elements held (for memory accounting).
    pub fn stored_len(&self) -> usize {
        match &self.layout {
            Layout::RowMajor(w) => w.len(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Layout::Tiled(p) => p.len(),
        }
    }

    /// The name of the kernels that multiply it: `avx512`, `avx512-bf16`, `avx2`, `neon` or `gemm`.
    fn kernels(&self) -> &'static str {
        match &self.layout {
            Layout::RowMajor(_) => "gemm",
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Layout::Tiled(p) => p.kernel().name(),
        }
    }
}

/// The kernels products in `precision` run on here: `avx512`, `avx512-bf16`, `avx2` or `neon`
/// (ours), or `gemm` (the `gemm` crate: x86-64 without AVX2, [`KERNELS_ENV`] `portable`); `None`
/// where they cannot run (bf16 without AVX512-BF16, or a bad [`KERNELS_ENV`]).
pub fn product_kernels(precision: MatmulPrecision) -> Option<&'static str> {
    Some(PackedLhs::new(&[0.0], 1, 1, precision).ok()?.kernels())
}

/// Whether this CPU runs bf16 products natively (and [`KERNELS_ENV`] allows it).
pub fn bf16_supported() -> bool {
    product_kernels(MatmulPrecision::Bf16).is_some()
}

fn fits(len: usize, rows: usize, row_stride: usize, cols: usize) -> bool {
    rows == 0
        || cols == 0
        || (rows - 1).checked_mul(row_stride).and_then(|o| o.checked_add(cols)).is_some_and(|end| end <= len)
}

/// `dst = [dst +] bias + lhs · diag(rhs_scale) · rhs` over `n` columns, with `threads` workers
/// of the current rayon pool.
///
/// # Panics
/// If a view is too short for its shape (a bug in the caller, never user input).
pub fn matmul(dst: MatMut<'_>, lhs: &PackedLhs, rhs: MatRef<'_>, n: usize, epilogue: Epilogue<'_>, threads: usize) {
    let (m, k) = (lhs.m, lhs.k);
    assert!(fits(rhs.data.len(), k, rhs.row_stride, n), "rhs too short");
    assert!(fits(dst.data.len(), lhs.rows(), dst.row_stride, n), "dst too short");
    assert!(!(lhs.gated && epilogue.accumulate), "a gated product cannot accumulate");
    assert!(epilogue.bias.is_none_or(|b| b.len() >= m) && epilogue.rhs_scale.is_none_or(|s| s.len() >= k));
    assert!(
        epilogue
            .rhs_norm
            .is_none_or(|r| r.mean.len() >= n && r.rstd.len() >= n && r.weight.len() >= k && r.bias.len() >= k)
    );
    if m == 0 || n == 0 {
        return;
    }
    match &lhs.layout {
        Layout::RowMajor(w) if lhs.gated => portable_gated(dst, w, rhs, (m, k, n), epilogue, threads),
        Layout::RowMajor(w) => portable(dst, w, rhs, (m, k, n), epilogue, threads),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        Layout::Tiled(p) => tiled::matmul(dst, p, rhs, n, epilogue, threads),
    }
}

/// The first `n` columns of the first `rows` rows of `dst`, in parallel on the current pool.
fn rows_mut<'a>(dst: MatMut<'a>, rows: usize, n: usize) -> impl IndexedParallelIterator<Item = &'a mut [f32]> {
    // A single row may have any stride; rows of several start a stride apart.
    let stride = if rows > 1 { dst.row_stride } else { n };
    dst.data.par_chunks_mut(stride.max(1)).take(rows).map(move |row| &mut row[..n])
}

/// The `gemm` crate path of a gated product: the full product in a temporary, then the gate.
fn portable_gated(
    dst: MatMut<'_>,
    w: &[f32],
    rhs: MatRef<'_>,
    (m, k, n): (usize, usize, usize),
    e: Epilogue<'_>,
    threads: usize,
) {
    let mut full = vec![0.0f32; m * n];
    portable(MatMut { data: &mut full, row_stride: n }, w, rhs, (m, k, n), e, threads);
    let (first, second) = full.split_at(m / 2 * n);
    rows_mut(dst, m / 2, n)
        .zip(first.par_chunks_exact(n).zip(second.par_chunks_exact(n)))
        .for_each(|(row, (a, b))| row.iter_mut().zip(a.iter().zip(b)).for_each(|(d, (x, y))| *d = x * y));
}

/// The `gemm` crate path.
fn portable(
    dst: MatMut<'_>,
    w: &[f32],
    rhs: MatRef<'_>,
    (m, k, n): (usize, usize, usize),
    e: Epilogue<'_>,
    threads: usize,
) {
    let mut normalized: Vec<f32>;
    let rhs = match e.rhs_norm {
        Some(norm) => {
            normalized = vec![0.0; k * n];
            normalized.par_chunks_exact_mut(n).enumerate().for_each(|(r, row)| {
                let source = &rhs.data[r * rhs.row_stride..][..n];
                row.iter_mut().zip(source).enumerate().for_each(|(j, (out, &x))| *out = norm.apply(x, r, j));
            });
            MatRef { data: &normalized, row_stride: n }
        }
        None => rhs,
    };
    let scaled;
    let lhs = match e.rhs_scale {
        Some(s) => {
            scaled = w.chunks_exact(k).flat_map(|row| row.iter().zip(s).map(|(a, b)| a * b)).collect::<Vec<f32>>();
            &scaled
        }
        None => w,
    };
    let row_stride = dst.row_stride;
    rows_mut(MatMut { data: &mut *dst.data, row_stride }, m, n).enumerate().for_each(|(i, row)| {
        let b = e.bias.map_or(0.0, |b| b[i]);
        if e.accumulate {
            row.iter_mut().for_each(|v| *v += b);
        } else {
            row.fill(b);
        }
    });
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: `matmul` checked that every index the kernel touches is inside the three slices;
    // `dst` is exclusively borrowed and cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.data.as_ptr(),
            1,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `w` packed for every kernel that runs `precision` on this CPU, whatever [`KERNELS_ENV`]
    /// says: the `gemm` crate's layout (f32) and each of our tiled kernels.
    fn layouts(w: &[f32], m: usize, k: usize, gated: bool, precision: MatmulPrecision) -> Vec<PackedLhs> {
        let mut all = vec![];
        if precision == MatmulPrecision::F32 {
            all.push(PackedLhs { m, k, gated, layout: Layout::RowMajor(w.to_vec()) });
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        for avx2_only in [false, true] {
            match tiled::Kernel::detect(precision, avx2_only) {
                Some(kernel) if all.iter().all(|p: &PackedLhs| p.kernels() != kernel.name()) => {
                    all.push(PackedLhs::packed_for(w, m, k, gated, kernel))
                }
                _ => {}
            }
        }
        all
    }

    fn check(precision: MatmulPrecision, tolerance: f32) {
        for (m, k, n, stride) in
            [(5, 7, 9, 13), (16, 64, 100, 100), (13, 33, 47, 50), (128, 64, 1000, 1024), (8, 1, 1, 1)]
        {
            let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let rhs: Vec<f32> = (0..k * stride).map(|i| (i as f32 * 0.11).cos()).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.5).collect();
            let scale: Vec<f32> = (0..k).map(|i| 1.0 + i as f32 * 0.01).collect();
            for (packed, accumulate) in
                layouts(&lhs, m, k, false, precision).iter().flat_map(|p| [(p, false), (p, true)])
            {
                let mut dst = vec![1.0f32; m * stride];
                let e = Epilogue { accumulate, bias: Some(&bias), rhs_scale: Some(&scale), rhs_norm: None };
                matmul(
                    MatMut { data: &mut dst, row_stride: stride },
                    packed,
                    MatRef { data: &rhs, row_stride: stride },
                    n,
                    e,
                    2,
                );
                for i in 0..m {
                    for j in 0..n {
                        let term = |p: usize| lhs[i * k + p] * scale[p] * rhs[p * stride + j];
                        let dot: f32 = (0..k).map(term).sum();
                        let magnitude: f32 = (0..k).map(|p| term(p).abs()).sum();
                        let want = dot + bias[i] + if accumulate { 1.0 } else { 0.0 };
                        let got = dst[i * stride + j];
                        assert!(
                            (got - want).abs() <= tolerance * (1.0 + magnitude),
                            "{} {m}x{k}x{n} ({i},{j}): {got} vs {want}",
                            packed.kernels()
                        );
                    }
                    assert!(
                        dst[i * stride + n..(i + 1) * stride].iter().all(|&v| v == 1.0),
                        "columns past n untouched"
                    );
                }
            }
        }
    }

    fn check_gated(precision: MatmulPrecision, tolerance: f64) {
        for (m, k, n) in [(16, 64, 100), (26, 33, 47), (128, 64, 1000), (2, 1, 1), (16, 8, 2491)] {
            let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.05).collect();
            for packed in layouts(&lhs, m, k, true, precision) {
                assert_eq!(packed.rows(), m / 2);
                let mut dst = vec![7.0f32; m / 2 * n + 3];
                let e = Epilogue { bias: Some(&bias), ..Default::default() };
                matmul(
                    MatMut { data: &mut dst, row_stride: n },
                    &packed,
                    MatRef { data: &rhs, row_stride: n },
                    n,
                    e,
                    2,
                );
                // Exact row values in f64, and their magnitudes (sum of |terms|) for the error bound.
                let row = |i: usize, j: usize| {
                    let terms = (0..k).map(|p| f64::from(lhs[i * k + p]) * f64::from(rhs[p * n + j]));
                    let (sum, mag) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                    (sum + f64::from(bias[i]), mag + f64::from(bias[i]).abs())
                };
                for i in 0..m / 2 {
                    for j in 0..n {
                        let ((a, mag_a), (b, mag_b)) = (row(i, j), row(i + m / 2, j));
                        let got = f64::from(dst[i * n + j]);
                        let bound = tolerance * (mag_a * b.abs() + mag_b * a.abs() + tolerance * mag_a * mag_b);
                        assert!(
                            (got - a * b).abs() <= bound,
                            "{} {m}x{k}x{n} ({i},{j}): {got} vs {}",
                            packed.kernels(),
                            a * b
                        );
                    }
                }
                assert_eq!(&dst[m / 2 * n..], &[7.0; 3], "rows past m/2 untouched");
            }
        }
    }

    #[test]
    fn gated_product_matches_naive() {
        check_gated(MatmulPrecision::F32, 1e-6);
        if bf16_supported() {
            check_gated(MatmulPrecision::Bf16, 1e-2);
        }
        let (m, k, n) = (6, 5, 9);
        let lhs: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.1).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| i as f32 * 0.01).collect();
        let mut dst = vec![0.0; m / 2 * n];
        portable_gated(
            MatMut { data: &mut dst, row_stride: n },
            &lhs,
            MatRef { data: &rhs, row_stride: n },
            (m, k, n),
            Epilogue::default(),
            1,
        );
        let row = |i: usize, j: usize| (0..k).map(|p| lhs[i * k + p] * rhs[p * n + j]).sum::<f32>();
        assert!((dst[n + 4] - row(1, 4) * row(4, 4)).abs() < 1e-5);
    }

    #[test]
    fn layer_norm_of_rhs_is_applied_while_packing() {
        let (m, k, n, stride) = (9, 6, 53, 60);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.29).sin()).collect();
        let rhs: Vec<f32> = (0..k * stride).map(|i| (i as f32 * 0.07).cos() * 3.0 + 1.0).collect();
        let mean: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
        let rstd: Vec<f32> = (0..n).map(|j| 1.0 + j as f32 * 0.02).collect();
        let (weight, shift): (Vec<f32>, Vec<f32>) = (0..k).map(|r| (0.5 + r as f32 * 0.1, r as f32 * -0.3)).unzip();
        let norm = RhsNorm { mean: &mean, rstd: &rstd, weight: &weight, bias: &shift };
        let scale: Vec<f32> = (0..k).map(|r| 2.0 - r as f32 * 0.1).collect();
        let e = Epilogue { rhs_norm: Some(norm), rhs_scale: Some(&scale), ..Default::default() };
        for packed in layouts(&lhs, m, k, false, MatmulPrecision::F32) {
            let mut dst = vec![0.0; m * n];
            let rhs_ref = MatRef { data: &rhs, row_stride: stride };
            matmul(MatMut { data: &mut dst, row_stride: n }, &packed, rhs_ref, n, e, 2);
            let path = packed.kernels();
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k)
                        .map(|r| {
                            lhs[i * k + r]
                                * scale[r]
                                * ((rhs[r * stride + j] - mean[j]) * rstd[j] * weight[r] + shift[r])
                        })
                        .sum();
                    assert!((dst[i * n + j] - want).abs() < 1e-4 * (1.0 + want.abs()), "path {path} ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn f32_product_matches_naive() {
        check(MatmulPrecision::F32, 1e-5);
    }

    #[test]
    fn bf16_product_is_close_where_supported() {
        if bf16_supported() {
            check(MatmulPrecision::Bf16, 1e-2);
        } else {
            assert!(PackedLhs::new(&[0.0; 4], 2, 2, MatmulPrecision::Bf16).is_err());
        }
    }

    /// What the tiled kernels compute for `dst[i][j]` of a `Plain` product, step by step as they
    /// do: `rhs` normalised and scaled while packing, one FMA per step of `k` in order, then the
    /// bias and the previous contents.
    fn tiled_chain(lhs: &[f32], rhs: MatRef<'_>, k: usize, e: Epilogue<'_>, prev: f32, (i, j): (usize, usize)) -> f32 {
        let acc = (0..k).fold(0.0f32, |acc, kk| {
            let mut b = rhs.data[kk * rhs.row_stride + j];
            if let Some(norm) = e.rhs_norm {
                b = ((b - norm.mean[j]) * norm.rstd[j]).mul_add(norm.weight[kk], norm.bias[kk]);
            }
            if let Some(s) = e.rhs_scale {
                b *= s[kk];
            }
            lhs[i * k + kk].mul_add(b, acc)
        });
        let val = acc + e.bias.map_or(0.0, |b| b[i]);
        if e.accumulate { val + prev } else { val }
    }

    #[test]
    fn tiled_kernels_give_the_same_bits_on_every_isa() {
        // Every element is the same chain of operations on AVX-512, AVX2 and NEON: each kernel
        // gives exactly the bits of `tiled_chain`, so products agree across machines too.
        let (m, k, n, stride) = (26, 37, 211, 230);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.29).sin()).collect();
        let rhs: Vec<f32> = (0..k * stride).map(|i| (i as f32 * 0.07).cos() * 3.0 + 1.0).collect();
        let per_column: Vec<f32> = (0..n).map(|j| 0.9 + j as f32 * 0.01).collect();
        let per_row: Vec<f32> = (0..m.max(k)).map(|r| 0.5 - r as f32 * 0.03).collect();
        let norm = RhsNorm { mean: &per_column, rstd: &per_column, weight: &per_row, bias: &per_row };
        let e = Epilogue { accumulate: false, bias: Some(&per_row), rhs_scale: Some(&per_row), rhs_norm: Some(norm) };
        let rhs_ref = MatRef { data: &rhs, row_stride: stride };
        let prev = |i: usize| i as f32 * 1e-3;
        let tiled: Vec<_> = [false, true]
            .into_iter()
            .flat_map(|gated| layouts(&lhs, m, k, gated, MatmulPrecision::F32))
            .filter(|p| p.kernels() != "gemm")
            .collect();
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        assert!(!tiled.is_empty(), "no tiled kernel ran");
        for packed in &tiled {
            for accumulate in if packed.gated { vec![false] } else { vec![false, true] } {
                let e = Epilogue { accumulate, ..e };
                let mut dst: Vec<f32> = (0..m * stride).map(prev).collect();
                matmul(MatMut { data: &mut dst, row_stride: stride }, packed, rhs_ref, n, e, 2);
                for (i, j) in (0..packed.rows()).flat_map(|i| (0..n).map(move |j| (i, j))) {
                    let chain = |row: usize| tiled_chain(&lhs, rhs_ref, k, e, prev(row * stride + j), (row, j));
                    let want = if packed.gated { chain(i) * chain(i + m / 2) } else { chain(i) };
                    let got = dst[i * stride + j];
                    assert!(
                        got.to_bits() == want.to_bits(),
                        "{} (gated {}, accumulate {accumulate}) ({i},{j}): {got} vs {want}",
                        packed.kernels(),
                        packed.gated
                    );
                }
            }
        }
    }

    #[test]
    fn product_kernels_name_the_path_a_product_takes() {
        #[cfg(target_arch = "x86_64")]
        let (avx512, bf16, avx2, neon) = (
            is_x86_feature_detected!("avx512f"),
            is_x86_feature_detected!("avx512bf16"),
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            false,
        );
        #[cfg(not(target_arch = "x86_64"))]
        let (avx512, bf16, avx2, neon) = (false, false, false, cfg!(target_arch = "aarch64"));
        let (f32_name, bf16_name) = match kernel_choice() {
            Ok(KernelChoice::Native) if avx512 => (Some("avx512"), bf16.then_some("avx512-bf16")),
            Ok(KernelChoice::Native | KernelChoice::Avx2) if avx2 => (Some("avx2"), None),
            Ok(KernelChoice::Native) if neon => (Some("neon"), None),
            Ok(KernelChoice::Avx2) | Err(_) => (None, None),
            Ok(_) => (Some("gemm"), None),
        };
        assert_eq!(product_kernels(MatmulPrecision::F32), f32_name);
        assert_eq!(product_kernels(MatmulPrecision::Bf16), bf16_name);
        assert_eq!(bf16_supported(), bf16_name.is_some());
    }

    #[test]
    fn kernel_choice_reads_native_avx2_portable_or_nothing() {
        use std::env::VarError;
        assert_eq!(parse_kernel_choice(Err(VarError::NotPresent)), Ok(KernelChoice::Native));
        for (name, choice) in KernelChoice::NAMES {
            assert_eq!(parse_kernel_choice(Ok(name.into())), Ok(choice));
            assert_eq!(choice.name(), name);
        }
        let err = parse_kernel_choice(Ok("sse".into())).unwrap_err();
        assert!(err.contains("MASKDCPT_CPU_KERNELS is `sse`") && err.contains("`avx2`"), "{err}");
    }

    #[test]
    fn portable_path_matches_naive() {
        let (m, k, n) = (3, 4, 5);
        let w: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| i as f32 * 0.5).collect();
        let mut dst = vec![0.0; m * n];
        let e = Epilogue { bias: Some(&[1.0, 2.0, 3.0]), ..Default::default() };
        portable(MatMut { data: &mut dst, row_stride: n }, &w, MatRef { data: &rhs, row_stride: n }, (m, k, n), e, 1);
        let want: f32 = 1.0 + (0..k).map(|p| w[p] * rhs[p * n + 2]).sum::<f32>();
        assert_eq!(dst[2], want);
    }
}
