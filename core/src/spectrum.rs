//! The spectral signature the classification head's spectral branch reads: the log power
//! spectrum of the image's luminance, averaged over its 64×64 tiles (Welch's method without
//! overlap, Hann window, each tile's mean removed) and over 16 radial × 8 orientation bins.
//!
//! Every sample is first rounded to 8 bits, as the images the library reads mostly are: where a
//! strong blur leaves no detail, an 8-bit image still holds its rounding's noise floor, and a
//! 16-bit or float input would otherwise read far below it (docs/results.md, "Eight-bit
//! inputs"). So every input depth gives the signature of its 8-bit copy.
//!
//! Blur kinds differ here where a small network's features do not: a disk (defocus) has zero
//! rings, a Gaussian falls smoothly, camera shake is anisotropic; JPEG blocks, moiré and
//! mosaics add peaks. One implementation serves the library and the trainer (which computes
//! it on the CPU for every batch), so both read the same numbers.

use std::sync::LazyLock;

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::pixels::{f32_to_unorm8, unorm8_to_f32};

/// Side of the square tiles whose power spectra are averaged.
pub const SPECTRUM_TILE: usize = 64;
/// Radial bins: bin k holds the frequencies of radius 2(k + 1) to 2(k + 2) steps of
/// 1 / [`SPECTRUM_TILE`] cycles per pixel (the lowest two steps, nearly the tile's mean, are left out).
pub const RADIAL_BINS: usize = 16;
/// Orientation bins over [0, π).
pub const ANGULAR_BINS: usize = 8;
/// Length of the signature: radial bin major, orientation minor.
pub const SPECTRUM_FEATURES: usize = RADIAL_BINS * ANGULAR_BINS;

/// Added to each bin's mean power before the logarithm (a flat tile has none).
const POWER_FLOOR: f64 = 1e-10;

/// For each frequency of a tile's DFT (row-major, `SPECTRUM_TILE²`), its bin, if any.
static BINS: LazyLock<Vec<Option<usize>>> = LazyLock::new(|| {
    let signed = |k: usize| k as i64 - if k < SPECTRUM_TILE / 2 { 0 } else { SPECTRUM_TILE as i64 };
    (0..SPECTRUM_TILE * SPECTRUM_TILE)
        .map(|i| {
            let (v, u) = (signed(i / SPECTRUM_TILE), signed(i % SPECTRUM_TILE));
            let radial = ((u * u + v * v) as u64).isqrt() / 2;
            if !(1..=RADIAL_BINS as u64).contains(&radial) {
                return None;
            }
            let angle = (v as f64).atan2(u as f64).rem_euclid(std::f64::consts::PI);
            let orientation = ((angle / std::f64::consts::PI * ANGULAR_BINS as f64) as usize).min(ANGULAR_BINS - 1);
            Some((radial as usize - 1) * ANGULAR_BINS + orientation)
        })
        .collect()
});

/// The signature of a planar image (`channels × height × width`, values in [0, 1], each
/// rounded to 8 bits first): [`SPECTRUM_FEATURES`] log mean powers with their mean subtracted
/// (so the overall contrast drops out). An image with no whole tile (under 64 pixels on a
/// side) has the all-zero signature, as (up to rounding) has one of flat tiles.
pub fn spectral_signature(planar: &[f32], channels: usize, height: usize, width: usize) -> Vec<f32> {
    assert_eq!(planar.len(), channels * height * width, "planar image mis-sized");
    if height < SPECTRUM_TILE || width < SPECTRUM_TILE {
        return vec![0.0; SPECTRUM_FEATURES];
    }
    let plane = height * width;
    let luminance: Vec<f64> = (0..plane)
        .map(|p| (0..channels).map(|c| eight_bit(planar[c * plane + p])).sum::<f64>() / channels as f64)
        .collect();
    let power = mean_tile_power(&luminance, height, width);
    let mut sums = [0.0f64; SPECTRUM_FEATURES];
    let mut counts = [0usize; SPECTRUM_FEATURES];
    for (p, bin) in power.iter().zip(BINS.iter()) {
        if let Some(b) = *bin {
            sums[b] += p;
            counts[b] += 1;
        }
    }
    let logs: Vec<f64> = sums.iter().zip(counts).map(|(s, n)| (s / n as f64 + POWER_FLOOR).ln()).collect();
    let mean = logs.iter().sum::<f64>() / SPECTRUM_FEATURES as f64;
    logs.iter().map(|l| (l - mean) as f32).collect()
}

/// `value` as the library reads back its 8-bit sample (so an 8-bit input keeps its values).
fn eight_bit(value: f32) -> f64 {
    f64::from(unorm8_to_f32(f32_to_unorm8(value)))
}

/// |DFT|² of each whole tile of `luminance` (mean removed, Hann-windowed), averaged (at
/// least one tile).
fn mean_tile_power(luminance: &[f64], height: usize, width: usize) -> Vec<f64> {
    let n = SPECTRUM_TILE;
    let fft = FftPlanner::new().plan_fft_forward(n);
    // numpy.hanning: symmetric, zero at both ends.
    let hann: Vec<f64> =
        (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos()).collect();
    let mut power = vec![0.0f64; n * n];
    let mut tile = vec![Complex::new(0.0, 0.0); n * n];
    let mut column = vec![Complex::new(0.0, 0.0); n];
    let tiles: Vec<(usize, usize)> =
        (0..height / n).flat_map(|ty| (0..width / n).map(move |tx| (ty * n, tx * n))).collect();
    for &(y0, x0) in &tiles {
        let pixel = |y: usize, x: usize| luminance[(y0 + y) * width + x0 + x];
        let mean = (0..n * n).map(|i| pixel(i / n, i % n)).sum::<f64>() / (n * n) as f64;
        for (i, t) in tile.iter_mut().enumerate() {
            let (y, x) = (i / n, i % n);
            *t = Complex::new((pixel(y, x) - mean) * hann[y] * hann[x], 0.0);
        }
        fft.process(&mut tile); // every row
        for x in 0..n {
            column.iter_mut().enumerate().for_each(|(y, c)| *c = tile[y * n + x]);
            fft.process(&mut column);
            column.iter().enumerate().for_each(|(y, c)| power[y * n + x] += c.norm_sqr());
        }
    }
    power.iter_mut().for_each(|p| *p /= tiles.len() as f64);
    power
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature_of(height: usize, width: usize, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let plane: Vec<f32> = (0..height * width).map(|i| f(i / width, i % width)).collect();
        let planar = [plane.clone(), plane.clone(), plane].concat();
        spectral_signature(&planar, 3, height, width)
    }

    fn argmax(v: &[f32]) -> usize {
        (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
    }

    #[test]
    fn every_bin_holds_frequencies() {
        let mut counts = [0usize; SPECTRUM_FEATURES];
        BINS.iter().flatten().for_each(|&b| counts[b] += 1);
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }

    #[test]
    fn a_grating_lands_in_its_radius_and_orientation() {
        // 10 cycles per tile along x: radius 10 steps (radial bin 4), orientation 0.
        let vertical =
            signature_of(128, 192, |_, x| 0.5 + 0.4 * (2.0 * std::f32::consts::PI * x as f32 * 10.0 / 64.0).sin());
        assert_eq!(argmax(&vertical), 4 * ANGULAR_BINS);
        // The same grating along y: orientation π/2.
        let horizontal =
            signature_of(128, 192, |y, _| 0.5 + 0.4 * (2.0 * std::f32::consts::PI * y as f32 * 10.0 / 64.0).sin());
        assert_eq!(argmax(&horizontal), 4 * ANGULAR_BINS + ANGULAR_BINS / 2);
    }

    #[test]
    fn contrast_and_brightness_drop_out() {
        // Pseudo-random pixels: power in every bin, far above the floor.
        let texture = |y: usize, x: usize| {
            // splitmix64's finaliser: white, unlike a multiplicative hash of the index (a lattice).
            let mut z = ((y * 64 + x) as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f32 / u64::MAX as f32
        };
        let a = signature_of(64, 64, |y, x| 0.1 + 0.5 * texture(y, x));
        let b = signature_of(64, 64, |y, x| 0.3 + 0.25 * texture(y, x));
        // Up to the 8-bit rounding: its error is a few percent of the weaker texture's amplitude.
        a.iter().zip(&b).for_each(|(p, q)| assert!((p - q).abs() < 0.05, "{p} {q}"));
        assert!(a.iter().any(|v| v.abs() > 0.1));
    }

    #[test]
    fn finer_inputs_read_as_their_8_bit_copy() {
        // A strong blur's smooth ramp: unrounded it holds almost no power at high frequencies.
        let smooth = |y: usize, x: usize| 0.3 + 0.2 * ((x as f32 / 40.0).sin() * (y as f32 / 55.0).cos());
        let eight = |v: f32| (v * 255.0).round() / 255.0;
        let fine = signature_of(128, 128, smooth);
        assert_eq!(fine, signature_of(128, 128, |y, x| eight(smooth(y, x))));
        // 16-bit steps round to the same 8-bit values; out-of-range values clamp.
        let sixteen = |v: f32| (v * 65535.0).round() / 65535.0;
        assert_eq!(fine, signature_of(128, 128, |y, x| sixteen(smooth(y, x))));
        assert_eq!(
            signature_of(64, 64, |y, x| 2.0 * smooth(y, x) - 0.6),
            signature_of(64, 64, |y, x| eight((2.0 * smooth(y, x) - 0.6).clamp(0.0, 1.0)))
        );
    }

    #[test]
    fn small_or_flat_images_have_the_zero_signature() {
        assert!(signature_of(63, 200, |y, x| (x + y) as f32 / 300.0).iter().all(|&v| v == 0.0));
        assert!(signature_of(64, 64, |_, _| 0.4).iter().all(|&v| v.abs() < 1e-6));
    }
}
