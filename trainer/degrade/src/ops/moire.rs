//! Screen moiré: two gratings with frequencies one lattice step away from the pixel pitch
//! (a screen's pixel rows/columns/diagonals), sampled at each channel's sub-pixel position
//! (R, G, B stripes at −⅓, 0, +⅓ px). On the pixel grid they alias to fringes of the level's
//! period, and the sub-pixel offsets turn them into colour fringes. A slight quadratic phase
//! bends the fringes, and a smooth random envelope modulates them over the image.

use std::f64::consts::TAU;

use rand::{Rng, RngExt};

use crate::params::Recorder;
use crate::{Rgb, field};

/// Screen lattice vectors (cycles per pixel) the gratings sit next to.
const LATTICE: [(f64, f64); 3] = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)];

/// Adds fringes of relative amplitude `strength` and alias period `period` pixels.
pub(super) fn moire<R: Rng + ?Sized>(img: &Rgb, strength: f64, period: f64, rng: &mut R, rec: &mut Recorder) -> Rgb {
    let (w, h) = (img.width, img.height);
    let size = w.max(h) as f64;
    let gratings: [(f64, f64, f64); 2] = std::array::from_fn(|g| {
        let (lx, ly) = LATTICE[rng.random_range(0..LATTICE.len() as u32) as usize];
        let direction = rng.random_range(0.0..TAU);
        let alias = 1.0 / (period * rng.random_range(0.8..1.25));
        let phase = rng.random_range(0.0..TAU);
        let (fx, fy) = (lx + alias * direction.cos(), ly + alias * direction.sin());
        rec.num(&format!("grating{g}_fx"), fx);
        rec.num(&format!("grating{g}_fy"), fy);
        (fx, fy, phase)
    });
    let bend = rng.random_range(-0.3..0.3) / period;
    rec.num("bend", bend);
    let envelope = field::smooth(w, h, 3, rng);
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = img.clone();
    for (i, (pixel, e)) in out.data.chunks_exact_mut(3).zip(envelope).enumerate() {
        let (x, y) = ((i % w) as f64, (i / w) as f64);
        let curve = bend * ((x - cx).powi(2) + (y - cy).powi(2)) / size;
        let amplitude = strength as f32 * (0.3 + 0.7 * e);
        for (c, v) in pixel.iter_mut().enumerate() {
            let sub_x = x + (c as f64 - 1.0) / 3.0;
            let m: f64 =
                gratings.iter().map(|&(fx, fy, phase)| (TAU * (fx * sub_x + fy * y + curve) + phase).cos()).sum();
            *v += amplitude * 0.5 * m as f32 * (0.25 + 0.5 * *v);
        }
    }
    out
}
