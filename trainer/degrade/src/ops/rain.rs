//! Rain streaks: sparse random seeds smeared along a slanted line, screen-blended.

use rand::{Rng, RngExt};

use crate::Rgb;
use crate::filter::correlate;
use crate::kernel::streak::streak;
use crate::params::Recorder;

/// Adds `density` streaks per pixel of `length` pixels at `angle` ± 5° from vertical.
pub(super) fn streaks<R: Rng + ?Sized>(
    img: &Rgb,
    density: f64,
    length: f64,
    angle: f64,
    rng: &mut R,
    rec: &mut Recorder,
) -> Rgb {
    let (w, h) = (img.width, img.height);
    let angle = angle + rng.random_range(-5.0..5.0);
    let opacity = rng.random_range(0.6..0.9f32);
    let count = at_least_one(density * (w * h) as f64, rng);
    rec.num("angle_drawn", angle);
    rec.num("opacity", f64::from(opacity));
    rec.num("count", count as f64);
    let mut seeds = vec![0.0f32; w * h];
    for _ in 0..count {
        let i = rng.random_range(0..(w * h) as u64) as usize;
        seeds[i] = rng.random_range(0.5..1.0);
    }
    let layer = correlate(&seeds, w, h, 1, &streak(length, angle));
    let mut out = img.clone();
    for (pixel, s) in out.data.chunks_exact_mut(3).zip(layer) {
        let s = s.min(1.0) * opacity;
        // Screen blend `1 − (1 − v)(1 − s)`, written so that `s = 0` leaves `v` bit-exact.
        pixel.iter_mut().for_each(|v| *v += s * (1.0 - *v));
    }
    out
}

/// `x` rounded down or up at random so that the expected value is `x` (small images still
/// get some snow at low densities).
pub(super) fn stochastic_round<R: Rng + ?Sized>(x: f64, rng: &mut R) -> usize {
    let floor = x.max(0.0).floor();
    floor as usize + usize::from(rng.random::<f64>() < x - floor)
}

/// A count of `x` on average, but at least one, so that every sample shows its class.
pub(super) fn at_least_one<R: Rng + ?Sized>(x: f64, rng: &mut R) -> usize {
    stochastic_round(x, rng).max(1)
}
