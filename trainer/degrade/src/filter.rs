//! Correlation of interleaved images with 2-D kernels, reflect-101 borders (OpenCV's default).
//!
//! The image is padded once, then every non-zero tap adds a shifted row slice to the output
//! row: the inner loop is a contiguous multiply-add the compiler vectorises. Separable
//! kernels run as a row pass then a column pass.

use crate::Rgb;
use crate::kernel::Kernel;

/// Maps any index to `0..n` by reflecting without repeating the edge (`… 2 1 | 0 1 2 … n-1 | n-2 …`).
pub(crate) fn reflect101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Correlates a `width × height × channels` buffer with `kernel` (anchored at its centre).
pub(crate) fn correlate(src: &[f32], width: usize, height: usize, channels: usize, kernel: &Kernel) -> Vec<f32> {
    let (rx, ry) = (kernel.width / 2, kernel.height / 2);
    let row_len = width * channels;
    let padded_width = width + 2 * rx;
    let mut padded = Vec::with_capacity(padded_width * (height + 2 * ry) * channels);
    for py in 0..height + 2 * ry {
        let row = &src[reflect101(py as isize - ry as isize, height) * row_len..][..row_len];
        for px in 0..padded_width {
            padded.extend_from_slice(&row[reflect101(px as isize - rx as isize, width) * channels..][..channels]);
        }
    }
    let taps: Vec<(usize, usize, f32)> = kernel
        .weights
        .iter()
        .enumerate()
        .filter(|(_, w)| **w != 0.0)
        .map(|(i, &w)| (i / kernel.width, i % kernel.width, w))
        .collect();
    let mut out = vec![0.0; height * row_len];
    for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        for &(ky, kx, w) in &taps {
            let start = ((y + ky) * padded_width + kx) * channels;
            for (o, s) in out_row.iter_mut().zip(&padded[start..start + row_len]) {
                *o += w * s;
            }
        }
    }
    out
}

/// Correlates with the outer product `column ⊗ row` as two 1-D passes.
pub(crate) fn separable(src: &[f32], width: usize, height: usize, channels: usize, taps: &[f32]) -> Vec<f32> {
    let rows = correlate(src, width, height, channels, &Kernel::row(taps.to_vec()));
    correlate(&rows, width, height, channels, &Kernel::column(taps.to_vec()))
}

/// Gaussian blur of standard deviation `sigma` pixels (separable, radius `ceil(3σ)`).
pub(crate) fn gaussian_blur(src: &[f32], width: usize, height: usize, channels: usize, sigma: f64) -> Vec<f32> {
    separable(src, width, height, channels, &crate::kernel::gaussian_taps(sigma))
}

/// Correlates an RGB image with `kernel`.
pub(crate) fn correlate_rgb(img: &Rgb, kernel: &Kernel) -> Rgb {
    Rgb { width: img.width, height: img.height, data: correlate(&img.data, img.width, img.height, 3, kernel) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect101_matches_opencv() {
        let got: Vec<usize> = (-4..9).map(|i| reflect101(i, 5)).collect();
        assert_eq!(got, [4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1, 0]);
        assert_eq!(reflect101(-7, 1), 0);
        assert_eq!(reflect101(5, 2), 1);
    }

    #[test]
    fn correlation_with_a_shift_kernel_moves_the_image() {
        // Kernel with its only tap one column right of centre: out(x) = in(x + 1).
        let kernel = Kernel { width: 3, height: 1, weights: vec![0.0, 0.0, 1.0] };
        let src = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(correlate(&src, 4, 1, 1, &kernel), [1.0, 2.0, 3.0, 2.0]);
    }

    #[test]
    fn separable_blur_keeps_a_constant_image() {
        let src = vec![0.25; 7 * 5 * 3];
        let out = gaussian_blur(&src, 7, 5, 3, 3.0);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }
}
