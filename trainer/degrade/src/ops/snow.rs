//! Snow: three layers of soft flakes (many small and blurred far away, few large near the
//! camera), vertically stretched by their fall, composited over the image, plus a white veil.

use rand::{Rng, RngExt};

use super::rain::stochastic_round;
use crate::Rgb;
use crate::filter::gaussian_blur;
use crate::params::Recorder;

/// Per layer: flake radius relative to the level's size, share of the flakes, blur σ
/// relative to the level's size.
const LAYERS: [(f64, f64, f64); 3] = [(0.5, 0.6, 0.3), (1.0, 0.3, 0.4), (1.8, 0.1, 0.8)];
/// Colour of flakes.
const FLAKE: f32 = 0.95;
/// Colour of the veil.
const VEIL: f32 = 0.85;

/// Adds `density` flakes per pixel, middle-layer radius `size`, veil opacity `veil`.
pub(super) fn snow<R: Rng + ?Sized>(
    img: &Rgb,
    density: f64,
    size: f64,
    veil: f64,
    rng: &mut R,
    rec: &mut Recorder,
) -> Rgb {
    let (w, h) = (img.width, img.height);
    let mut cover = vec![0.0f32; w * h];
    for (layer_index, &(radius_factor, share, blur)) in LAYERS.iter().enumerate() {
        let count = stochastic_round(density * share * (w * h) as f64, rng);
        rec.num(&format!("layer{layer_index}_count"), count as f64);
        let mut layer = vec![0.0f32; w * h];
        for _ in 0..count {
            let (cx, cy) = (rng.random_range(0.0..w as f32), rng.random_range(0.0..h as f32));
            let rx = (size * radius_factor) as f32 * rng.random_range(0.6..1.4);
            let ry = rx * rng.random_range(1.0..1.6);
            let brightness = rng.random_range(0.6..1.0f32);
            let (x_lo, x_hi) = ((cx - rx).floor().max(0.0) as usize, ((cx + rx).ceil() as usize).min(w));
            let (y_lo, y_hi) = ((cy - ry).floor().max(0.0) as usize, ((cy + ry).ceil() as usize).min(h));
            for y in y_lo..y_hi {
                for x in x_lo..x_hi {
                    let rho = ((x as f32 + 0.5 - cx) / rx).hypot((y as f32 + 0.5 - cy) / ry);
                    let t = (1.0 - rho).max(0.0);
                    let v = &mut layer[y * w + x];
                    *v = v.max(brightness * t * t * (3.0 - 2.0 * t));
                }
            }
        }
        let layer = gaussian_blur(&layer, w, h, 1, blur * size);
        cover.iter_mut().zip(layer).for_each(|(c, l)| *c = 1.0 - (1.0 - *c) * (1.0 - l.min(1.0)));
    }
    let veil = veil as f32;
    let mut out = img.clone();
    for (pixel, c) in out.data.chunks_exact_mut(3).zip(cover) {
        pixel.iter_mut().for_each(|v| *v = (*v * (1.0 - c) + FLAKE * c) * (1.0 - veil) + VEIL * veil);
    }
    out
}
