//! Synthetic noise: additive Gaussian, Poisson shot noise, salt-and-pepper.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, Poisson, StandardNormal};

use crate::Rgb;

/// Adds `N(0, sigma²)` independently to every value (`sigma` on the [0, 1] scale).
pub(super) fn gaussian<R: Rng + ?Sized>(img: &Rgb, sigma: f64, rng: &mut R) -> Rgb {
    let sigma = sigma as f32;
    img.map(|v| v + sigma * rng.sample::<f32, _>(StandardNormal))
}

/// Replaces every value `x` by `Poisson(x · peak) / peak`.
pub(super) fn poisson<R: Rng + ?Sized>(img: &Rgb, peak: f64, rng: &mut R) -> Rgb {
    img.map(|v| {
        let lambda = f64::from(v) * peak;
        match Poisson::new(lambda) {
            Ok(dist) => (dist.sample(rng) / peak) as f32,
            // λ = 0 (black) has no noise.
            Err(_) => v,
        }
    })
}

/// Sets each pixel, with probability `amount`, to black or white with equal odds.
pub(super) fn salt_pepper<R: Rng + ?Sized>(img: &Rgb, amount: f64, rng: &mut R) -> Rgb {
    let mut out = img.clone();
    for pixel in out.data.chunks_exact_mut(3) {
        if rng.random_bool(amount.clamp(0.0, 1.0)) {
            pixel.fill(if rng.random_bool(0.5) { 1.0 } else { 0.0 });
        }
    }
    out
}
