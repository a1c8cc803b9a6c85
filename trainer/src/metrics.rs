//! PSNR and SSIM exactly as the MaskDCPT evaluation computes them (spec §6.3, `image_range`
//! 1.0): both images clamped to [0, 1], RGB, all three channels, no border crop, float64;
//! SSIM with an 11×11 Gaussian window (σ 1.5, OpenCV `getGaussianKernel`), "valid" region,
//! C1 = 0.01², C2 = 0.03², mean over the map then over the channels.

/// An interleaved RGB float image view (H×W×3).
#[derive(Clone, Copy)]
pub struct ImageRef<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// H×W×3 values.
    pub data: &'a [f32],
}

fn clamped(v: f32) -> f64 {
    f64::from(v.clamp(0.0, 1.0))
}

/// PSNR in dB (infinite for identical images).
pub fn psnr(a: ImageRef, b: ImageRef) -> f64 {
    assert_eq!(a.data.len(), b.data.len(), "PSNR of images of different sizes");
    let sum: f64 = a.data.iter().zip(b.data).map(|(&x, &y)| (clamped(x) - clamped(y)).powi(2)).sum();
    let mse = sum / a.data.len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (1.0 / mse).log10() }
}

/// OpenCV `getGaussianKernel(11, 1.5)` in float64.
fn gaussian_window() -> [f64; 11] {
    let mut k = [0.0; 11];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - 5.0;
        *v = (-x * x / (2.0 * 1.5 * 1.5)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.map(|v| v / sum)
}

/// Separable "valid" filtering of a `w`×`h` plane: output is (w−10)×(h−10).
fn filter_valid(plane: &[f64], w: usize, h: usize, k: &[f64; 11]) -> Vec<f64> {
    let (ow, oh) = (w - 10, h - 10);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        for x in 0..ow {
            rows[y * ow + x] = (0..11).map(|i| plane[y * w + x + i] * k[i]).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..11).map(|i| rows[(y + i) * ow + x] * k[i]).sum();
        }
    }
    out
}

/// SSIM averaged over the three channels. Images must be at least 11×11.
pub fn ssim(a: ImageRef, b: ImageRef) -> f64 {
    assert_eq!(a.data.len(), b.data.len(), "SSIM of images of different sizes");
    assert!(a.width >= 11 && a.height >= 11, "SSIM needs at least 11×11 pixels");
    let (w, h) = (a.width, a.height);
    let k = gaussian_window();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut total = 0.0;
    for channel in 0..3 {
        let plane =
            |img: ImageRef| -> Vec<f64> { img.data.iter().skip(channel).step_by(3).map(|&v| clamped(v)).collect() };
        let (x, y) = (plane(a), plane(b));
        let product = |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(u, v)| u * v).collect() };
        let mu_x = filter_valid(&x, w, h, &k);
        let mu_y = filter_valid(&y, w, h, &k);
        let xx = filter_valid(&product(&x, &x), w, h, &k);
        let yy = filter_valid(&product(&y, &y), w, h, &k);
        let xy = filter_valid(&product(&x, &y), w, h, &k);
        let mut sum = 0.0;
        for i in 0..mu_x.len() {
            let (mx, my) = (mu_x[i], mu_y[i]);
            let (sx, sy, sxy) = (xx[i] - mx * mx, yy[i] - my * my, xy[i] - mx * my);
            sum += ((2.0 * mx * my + c1) * (2.0 * sxy + c2)) / ((mx * mx + my * my + c1) * (sx + sy + c2));
        }
        total += sum / mu_x.len() as f64;
    }
    total / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: usize, h: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
        (0..w * h * 3).map(f).collect()
    }

    #[test]
    fn psnr_of_a_known_error() {
        let a = image(4, 4, |_| 0.5);
        let b = image(4, 4, |_| 0.6);
        let r = |d| ImageRef { width: 4, height: 4, data: d };
        assert!((psnr(r(&a), r(&b)) - 20.0).abs() < 1e-5);
        assert_eq!(psnr(r(&a), r(&a)), f64::INFINITY);
        // Values are clamped to [0, 1] first.
        let over = image(4, 4, |_| 1.7);
        let one = image(4, 4, |_| 1.0);
        assert_eq!(psnr(r(&over), r(&one)), f64::INFINITY);
    }

    #[test]
    fn ssim_is_one_for_equal_images_and_drops_with_noise() {
        let (w, h) = (24, 20);
        let a = image(w, h, |i| ((i * 37 % 101) as f32) / 100.0);
        let r = |d| ImageRef { width: w, height: h, data: d };
        assert!((ssim(r(&a), r(&a)) - 1.0).abs() < 1e-12);
        let b: Vec<f32> = a.iter().enumerate().map(|(i, v)| v + if i % 2 == 0 { 0.05 } else { -0.05 }).collect();
        let s = ssim(r(&a), r(&b));
        assert!(s < 0.99 && s > 0.5, "{s}");
    }

    #[test]
    fn gaussian_window_matches_opencv() {
        // cv2.getGaussianKernel(11, 1.5)[5] and [0].
        let k = gaussian_window();
        assert!((k[5] - 0.266_011_724_9).abs() < 1e-9, "{}", k[5]);
        assert!((k[0] - 0.001_028_380_1).abs() < 1e-9, "{}", k[0]);
    }
}
