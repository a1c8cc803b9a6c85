//! Haze by the atmospheric scattering model `I = J·t + A·(1 − t)`, `t = exp(−β·d)`.
//!
//! The depth map `d` in [0, 1] is a random planar ramp (mostly far at the top) plus
//! low-frequency value noise, rescaled so its nearest point lies at a random depth in
//! [0, 0.2]. The airlight gets a slight random per-channel tint.

use rand::{Rng, RngExt};

use crate::params::Recorder;
use crate::{Rgb, field};

/// Hazes `img` with extinction `beta` and airlight `airlight`.
pub(super) fn haze<R: Rng + ?Sized>(img: &Rgb, beta: f64, airlight: f64, rng: &mut R, rec: &mut Recorder) -> Rgb {
    let depth = depth_map(img.width, img.height, rng, rec);
    let tint: [f64; 3] = std::array::from_fn(|_| rng.random_range(-0.03..0.03));
    let a = tint.map(|t| ((airlight * (1.0 + t)).min(1.0)) as f32);
    for (key, value) in ["airlight_r", "airlight_g", "airlight_b"].into_iter().zip(a) {
        rec.num(key, f64::from(value));
    }
    let mut out = img.clone();
    for (pixel, d) in out.data.chunks_exact_mut(3).zip(depth) {
        let t = (-(beta as f32) * d).exp();
        pixel.iter_mut().zip(a).for_each(|(v, a)| *v = *v * t + a * (1.0 - t));
    }
    out
}

/// A smooth synthetic depth map in [0, 1], row-major.
fn depth_map<R: Rng + ?Sized>(width: usize, height: usize, rng: &mut R, rec: &mut Recorder) -> Vec<f32> {
    let tilt = rng.random_range(-0.4..0.4f32);
    let noise_weight = rng.random_range(0.2..0.5f32);
    let near = rng.random_range(0.0..0.2f32);
    rec.num("tilt", f64::from(tilt));
    rec.num("noise_weight", f64::from(noise_weight));
    rec.num("near", f64::from(near));
    let noise = field::smooth(width, height, 4, rng);
    let raw: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (x, y) = ((i % width) as f32 / width as f32, (i / width) as f32 / height as f32);
            // Far (large) at the top, tilted sideways.
            (1.0 - y) + tilt * (x - 0.5) + noise_weight * n
        })
        .collect();
    let (lo, hi) = raw.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = (hi - lo).max(1e-6);
    raw.into_iter().map(|v| near + (1.0 - near) * (v - lo) / span).collect()
}
