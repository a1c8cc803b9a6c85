//! Matrix products for 1×1 convolutions: `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, where `rhs` and
//! `dst` are channel-major feature maps (row stride = channel stride) and `lhs` is a
//! row-major weight matrix `[cout][cin]`.

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

/// How many threads a product may use.
pub fn parallelism(threads: usize) -> gemm::Parallelism {
    if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None }
}

fn fits(len: usize, rows: usize, row_stride: usize, cols: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1).checked_mul(row_stride).and_then(|o| o.checked_add(cols)).is_some_and(|end| end <= len)
}

/// `dst = dst + lhs·rhs` when `accumulate`, else `dst = lhs·rhs`; `lhs` is `m × k` row-major,
/// `rhs` is `k × n`, `dst` is `m × n`.
///
/// # Panics
/// If a view is too short for its shape (a bug in the caller, never user input).
#[allow(clippy::too_many_arguments)]
pub fn matmul(dst: MatMut<'_>, accumulate: bool, lhs: &[f32], rhs: MatRef<'_>, m: usize, k: usize, n: usize, threads: usize) {
    assert!(lhs.len() >= m * k, "lhs too short");
    assert!(fits(rhs.data.len(), k, rhs.row_stride, n), "rhs too short");
    assert!(fits(dst.data.len(), m, dst.row_stride, n), "dst too short");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index the kernel touches inside the three slices;
    // `dst` is exclusively borrowed and cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
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
            parallelism(threads),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_product_matches_naive() {
        let (m, k, n, stride) = (5, 7, 9, 13);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let rhs: Vec<f32> = (0..k * stride).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut dst = vec![1.0f32; m * stride];
        matmul(MatMut { data: &mut dst, row_stride: stride }, true, &lhs, MatRef { data: &rhs, row_stride: stride }, m, k, n, 1);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| lhs[i * k + p] * rhs[p * stride + j]).sum::<f32>();
                assert!((dst[i * stride + j] - want).abs() < 1e-5);
            }
            assert_eq!(dst[i * stride + n], 1.0, "columns past n untouched");
        }
    }
}
