//! Low light: gamma darkening and an exposure scale, then photon (shot) and read noise that
//! dominate in the dark.

use rand::Rng;
use rand::RngExt;
use rand_distr::StandardNormal;

use crate::Rgb;
use crate::params::Recorder;

/// Shot-noise variance factor: `σ² = SHOT · x + READ` on the darkened values.
const SHOT: f64 = 2e-3;
/// Read-noise variance.
const READ: f64 = 2e-5;

/// Maps `x` to `scale · x^gamma` and adds heteroscedastic noise.
pub(super) fn low_light<R: Rng + ?Sized>(img: &Rgb, gamma: f64, scale: f64, rng: &mut R, rec: &mut Recorder) -> Rgb {
    rec.num("shot", SHOT);
    rec.num("read", READ);
    let (gamma, scale) = (gamma as f32, scale as f32);
    img.map(|v| {
        let dark = scale * v.powf(gamma);
        dark + (SHOT as f32 * dark + READ as f32).sqrt() * rng.sample::<f32, _>(StandardNormal)
    })
}
