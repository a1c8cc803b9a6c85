//! The Real-ESRGAN blur kernel family: isotropic/anisotropic Gaussian, generalized Gaussian
//! and plateau kernels, and with probability 0.1 a sinc (circular low-pass) kernel.
//!
//! Differences from Real-ESRGAN, so that the level controls the strength: the principal
//! standard deviation is the level's `sigma` (anisotropic kernels draw the minor one in
//! `[0.3σ, σ]`), and the kernel side is `2·ceil(3σ)+1` clamped to 7..21 instead of drawn.

use std::f64::consts::PI;

use rand::{Rng, RngExt};

use super::{Kernel, bessel};
use crate::params::Recorder;

/// Probability of a sinc kernel instead of a Gaussian-family one (Real-ESRGAN `sinc_prob`).
const SINC_PROB: f64 = 0.1;

/// Radial profiles of the Gaussian family; `q` is the squared Mahalanobis distance.
#[derive(Clone, Copy)]
enum Profile {
    Gaussian,
    Generalized,
    Plateau,
}

/// Real-ESRGAN `kernel_list` / `kernel_prob`: (profile, anisotropic, name, probability).
const SHAPES: [(Profile, bool, &str, f64); 6] = [
    (Profile::Gaussian, false, "iso", 0.45),
    (Profile::Gaussian, true, "aniso", 0.25),
    (Profile::Generalized, false, "generalized_iso", 0.12),
    (Profile::Generalized, true, "generalized_aniso", 0.03),
    (Profile::Plateau, false, "plateau_iso", 0.12),
    (Profile::Plateau, true, "plateau_aniso", 0.03),
];

/// The odd kernel side for a principal `sigma`: `2·ceil(3σ)+1` clamped to 7..=21.
pub(crate) fn side(sigma: f64) -> usize {
    (2 * (3.0 * sigma).ceil() as usize + 1).clamp(7, 21)
}

/// Draws one kernel of the family for the principal standard deviation `sigma`.
pub(crate) fn random<R: Rng + ?Sized>(sigma: f64, rng: &mut R, rec: &mut Recorder) -> Kernel {
    let size = side(sigma);
    rec.num("size", size as f64);
    if rng.random_bool(SINC_PROB) {
        let low = if size < 13 { PI / 3.0 } else { PI / 5.0 };
        let omega = rng.random_range(low..PI);
        rec.text("shape", "sinc");
        rec.num("omega", omega);
        return sinc(size, omega);
    }
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let &(profile, aniso, name, _) = SHAPES
        .iter()
        .find(|s| {
            acc += s.3;
            u < acc
        })
        .unwrap_or(&SHAPES[0]);
    let (sigma_y, theta) =
        if aniso { (sigma * rng.random_range(0.3..1.0), rng.random_range(-PI..PI)) } else { (sigma, 0.0) };
    let beta = match profile {
        Profile::Gaussian => 1.0,
        Profile::Generalized => rng.random_range(0.5..4.0),
        Profile::Plateau => rng.random_range(1.0..2.0),
    };
    rec.text("shape", name);
    rec.num("sigma_x", sigma);
    rec.num("sigma_y", sigma_y);
    rec.num("theta", theta);
    rec.num("beta", beta);
    shaped(size, sigma, sigma_y, theta, profile, beta)
}

/// A kernel `profile(q)` with `q = u²/σx² + v²/σy²`, `(u, v)` the offset rotated by `-theta`.
fn shaped(size: usize, sigma_x: f64, sigma_y: f64, theta: f64, profile: Profile, beta: f64) -> Kernel {
    let (sin, cos) = theta.sin_cos();
    Kernel::from_fn(size, |x, y| {
        let (u, v) = (x * cos + y * sin, -x * sin + y * cos);
        let q = u * u / (sigma_x * sigma_x) + v * v / (sigma_y * sigma_y);
        match profile {
            Profile::Gaussian => (-0.5 * q).exp(),
            Profile::Generalized => (-0.5 * q.powf(beta)).exp(),
            Profile::Plateau => 1.0 / (1.0 + q.powf(beta)),
        }
    })
    .normalized()
}

/// The circular low-pass kernel `ω·J1(ω r) / (2π r)` with cutoff `omega` (may be negative).
fn sinc(size: usize, omega: f64) -> Kernel {
    Kernel::from_fn(size, |x, y| {
        let r = x.hypot(y);
        if r == 0.0 { omega * omega / (4.0 * PI) } else { omega * bessel::j1(omega * r) / (2.0 * PI * r) }
    })
    .normalized()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::kernel::tests::assert_normalised;
    use crate::params::Params;

    #[test]
    fn every_drawn_kernel_is_normalised_and_non_negative_unless_sinc() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..400 {
            let mut params = Params::new();
            let sigma = 0.4 + (i % 19) as f64 * 0.2;
            let k = random(sigma, &mut rng, &mut Recorder::new(&mut params, "k"));
            let shape = params["k.shape"].as_str().unwrap_or_default().to_string();
            assert_eq!(k.width, side(sigma));
            assert_normalised(&k, shape != "sinc");
            seen.insert(shape);
        }
        assert_eq!(seen.len(), 7, "all shapes drawn: {seen:?}");
    }

    #[test]
    fn anisotropic_kernel_is_elongated_along_theta() {
        let k = shaped(21, 3.0, 1.0, 0.0, Profile::Gaussian, 1.0);
        let at = |x: usize, y: usize| k.weights[y * 21 + x];
        assert!(at(13, 10) > at(10, 13), "wider along x than y");
        let rotated = shaped(21, 3.0, 1.0, PI / 2.0, Profile::Gaussian, 1.0);
        assert!(rotated.weights[13 * 21 + 10] > rotated.weights[10 * 21 + 13]);
    }

    #[test]
    fn sinc_has_negative_lobes_and_unit_sum() {
        let k = sinc(21, PI / 4.0);
        assert_normalised(&k, false);
        assert!(k.weights.iter().any(|&w| w < 0.0));
    }
}
