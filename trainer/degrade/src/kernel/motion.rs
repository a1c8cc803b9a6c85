//! Camera-shake kernels from random trajectories (Boracchi & Foi 2012, as in DeblurGAN).
//!
//! A point moves with constant speed; at each step its velocity gets a Gaussian shake, a pull
//! back to the origin (centripetal) and rarely an abrupt turn, all scaled by a random
//! "anxiety". The path is scaled to fill a random 60–100 % of the kernel, centred, and
//! splatted bilinearly.

use std::f64::consts::PI;

use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

use super::Kernel;
use crate::params::Recorder;

/// Steps of the walk.
const STEPS: usize = 512;
/// Total path length before fitting (Boracchi & Foi's `MaxTotalLength`).
const MAX_LENGTH: f64 = 60.0;

/// Draws a trajectory kernel of odd side `size`.
pub(crate) fn random<R: Rng + ?Sized>(size: usize, rng: &mut R, rec: &mut Recorder) -> Kernel {
    let path = trajectory(rng, rec);
    let (min_x, max_x, min_y, max_y) =
        path.iter().fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
    let fill = rng.random_range(0.6..1.0);
    rec.num("fill", fill);
    let extent = (max_x - min_x).max(max_y - min_y).max(1e-9);
    let scale = (size - 1) as f64 * fill / extent;
    let centre = (size - 1) as f64 / 2.0;
    let (mid_x, mid_y) = ((min_x + max_x) / 2.0, (min_y + max_y) / 2.0);
    let mut weights = vec![0.0f32; size * size];
    for &(x, y) in &path {
        let (px, py) = (centre + (x - mid_x) * scale, centre + (y - mid_y) * scale);
        let (x0, y0) = (px.floor(), py.floor());
        let (fx, fy) = ((px - x0) as f32, (py - y0) as f32);
        for (dx, dy, w) in
            [(0, 0, (1.0 - fx) * (1.0 - fy)), (1, 0, fx * (1.0 - fy)), (0, 1, (1.0 - fx) * fy), (1, 1, fx * fy)]
        {
            let (kx, ky) = (x0 as usize + dx, y0 as usize + dy);
            if kx < size && ky < size {
                weights[ky * size + kx] += w;
            }
        }
    }
    Kernel { width: size, height: size, weights }.normalized()
}

/// The random walk, as complex positions `(x, y)` starting at the origin.
fn trajectory<R: Rng + ?Sized>(rng: &mut R, rec: &mut Recorder) -> Vec<(f64, f64)> {
    let anxiety = 0.1 * rng.random::<f64>();
    let centripetal = 0.7 * rng.random::<f64>();
    let big_shake = 0.2 * rng.random::<f64>();
    let shake = 10.0 * rng.random::<f64>();
    let angle = 2.0 * PI * rng.random::<f64>();
    for (key, value) in [
        ("anxiety", anxiety),
        ("centripetal", centripetal),
        ("big_shake", big_shake),
        ("shake", shake),
        ("angle", angle),
    ] {
        rec.num(key, value);
    }
    let step = MAX_LENGTH / (STEPS - 1) as f64;
    let mut v = (angle.cos() * step, angle.sin() * step);
    let mut path = Vec::with_capacity(STEPS);
    path.push((0.0, 0.0));
    for t in 0..STEPS - 1 {
        let (x, y) = path[t];
        // Abrupt turn: twice the velocity rotated by π ± 0.5 rad.
        let turn = if rng.random::<f64>() < big_shake * anxiety {
            let a = PI + rng.random::<f64>() - 0.5;
            let (s, c) = a.sin_cos();
            (2.0 * (v.0 * c - v.1 * s), 2.0 * (v.0 * s + v.1 * c))
        } else {
            (0.0, 0.0)
        };
        let (nx, ny): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
        v.0 += turn.0 + anxiety * (shake * nx - centripetal * x) * step;
        v.1 += turn.1 + anxiety * (shake * ny - centripetal * y) * step;
        let norm = v.0.hypot(v.1).max(1e-12);
        v = (v.0 / norm * step, v.1 / norm * step);
        path.push((x + v.0, y + v.1));
    }
    path
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::kernel::tests::assert_normalised;
    use crate::params::Params;

    #[test]
    fn trajectory_kernels_are_normalised_and_spread_out() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for size in (9..=31).step_by(2) {
            let mut params = Params::new();
            let k = random(size, &mut rng, &mut Recorder::new(&mut params, "m"));
            assert_eq!((k.width, k.height), (size, size));
            assert_normalised(&k, true);
            // A path of ≥ 60 % of the side covers more pixels than the side itself.
            let covered = k.weights.iter().filter(|&&w| w > 0.0).count();
            assert!(covered >= size * 6 / 10, "size {size}: {covered} pixels");
        }
    }
}
