//! Smooth random fields (value noise): random values on a coarse grid, interpolated with a
//! smoothstep. Used for haze depth, moiré envelopes and other slowly varying maps.

use rand::{Rng, RngExt};

/// A `width × height` field in [0, 1] with about `cells` random bumps along the longer side.
pub(crate) fn smooth<R: Rng + ?Sized>(width: usize, height: usize, cells: usize, rng: &mut R) -> Vec<f32> {
    let cells = cells.max(1);
    let step = width.max(height) as f32 / cells as f32;
    let (gw, gh) = ((width as f32 / step).ceil() as usize + 1, (height as f32 / step).ceil() as usize + 1);
    let grid: Vec<f32> = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
    let smoothstep = |t: f32| t * t * (3.0 - 2.0 * t);
    let mut out = Vec::with_capacity(width * height);
    for y in 0..height {
        let gy = y as f32 / step;
        let (y0, ty) = ((gy as usize).min(gh - 2), smoothstep(gy.fract()));
        for x in 0..width {
            let gx = x as f32 / step;
            let (x0, tx) = ((gx as usize).min(gw - 2), smoothstep(gx.fract()));
            let at = |i: usize, j: usize| grid[j * gw + i];
            let top = at(x0, y0) + (at(x0 + 1, y0) - at(x0, y0)) * tx;
            let bottom = at(x0, y0 + 1) + (at(x0 + 1, y0 + 1) - at(x0, y0 + 1)) * tx;
            out.push(top + (bottom - top) * ty);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::smooth;

    #[test]
    fn field_is_in_range_and_smooth() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (w, h) in [(1, 1), (2, 9), (64, 48)] {
            let f = smooth(w, h, 4, &mut rng);
            assert_eq!(f.len(), w * h);
            assert!(f.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let f = smooth(64, 64, 4, &mut rng);
        let max_step = f
            .windows(2)
            .enumerate()
            .filter(|(i, _)| i % 64 != 63)
            .map(|(_, p)| (p[1] - p[0]).abs())
            .fold(0.0, f32::max);
        assert!(max_step < 0.1, "neighbours differ by {max_step}");
    }
}
