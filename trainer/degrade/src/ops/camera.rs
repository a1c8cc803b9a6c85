//! Camera-like noise by unprocessing (Brooks et al., "Unprocessing Images for Learned Raw
//! Denoising", 2019): sRGB → linear, divide by a random digital gain and white-balance gains,
//! sample an RGGB mosaic, add heteroscedastic shot + read noise, demosaic (bilinear), undo the
//! gains and return to sRGB. Left out from the paper: the colour-correction matrix and the
//! tone curve (both close to identity for training purposes).

use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

use super::mosaic;
use crate::Rgb;
use crate::ops::Demosaic;
use crate::params::Recorder;

/// Adds raw-domain noise of variance `shot · x + read` (`x` the linear raw value).
pub(super) fn noise<R: Rng + ?Sized>(img: &Rgb, shot: f64, read: f64, rng: &mut R, rec: &mut Recorder) -> Rgb {
    let red_gain = rng.random_range(1.9..2.4);
    let blue_gain = rng.random_range(1.5..1.9);
    let digital_gain = 1.0 / rng.random_range(0.7..0.9);
    rec.num("red_gain", red_gain);
    rec.num("blue_gain", blue_gain);
    rec.num("digital_gain", digital_gain);
    let gains = [red_gain * digital_gain, digital_gain, blue_gain * digital_gain].map(|g| g as f32);
    let mut linear = img.clone();
    for pixel in linear.data.chunks_exact_mut(3) {
        pixel.iter_mut().zip(gains).for_each(|(v, g)| *v = srgb_to_linear(*v) / g);
    }
    let mut raw = mosaic::bayer(&linear);
    let (shot, read) = (shot as f32, read as f32);
    for v in &mut raw {
        let std = (shot * *v + read).max(0.0).sqrt();
        *v += std * rng.sample::<f32, _>(StandardNormal);
    }
    let mut out = mosaic::demosaic(&raw, img.width, img.height, Demosaic::Bilinear);
    for pixel in out.data.chunks_exact_mut(3) {
        pixel.iter_mut().zip(gains).for_each(|(v, g)| *v = linear_to_srgb((*v * g).clamp(0.0, 1.0)));
    }
    out
}

/// The sRGB transfer function inverted (IEC 61966-2-1).
fn srgb_to_linear(v: f32) -> f32 {
    if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
}

/// The sRGB transfer function (IEC 61966-2-1).
fn linear_to_srgb(v: f32) -> f32 {
    if v <= 0.0031308 { v * 12.92 } else { 1.055 * v.powf(1.0 / 2.4) - 0.055 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_functions_invert_each_other() {
        for i in 0..=100 {
            let v = i as f32 / 100.0;
            assert!((linear_to_srgb(srgb_to_linear(v)) - v).abs() < 1e-5);
        }
    }
}
