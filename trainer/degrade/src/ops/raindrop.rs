//! Raindrops on the lens: elliptical drops, each a small inverted lens showing a blurred,
//! shifted patch of the scene, with a soft edge, a bright centre and a darker rim.

use rand::{Rng, RngExt};

use super::rain::at_least_one;
use crate::Rgb;
use crate::filter::gaussian_blur;
use crate::params::Recorder;

/// Blur of the scene seen through a drop (the drop is out of focus), in pixels.
const DROP_BLUR: f64 = 1.5;
/// Width of the soft edge as a fraction of the radius.
const EDGE: f32 = 0.3;

/// Adds `density` drops per 128×128 pixels of mean radius `radius`.
pub(super) fn drops<R: Rng + ?Sized>(img: &Rgb, density: f64, radius: f64, rng: &mut R, rec: &mut Recorder) -> Rgb {
    let (w, h) = (img.width, img.height);
    let count = at_least_one(density * (w * h) as f64 / (128.0 * 128.0), rng);
    rec.num("count", count as f64);
    rec.num("blur", DROP_BLUR);
    let blurred = gaussian_blur(&img.data, w, h, 3, DROP_BLUR);
    let sample = |x: f32, y: f32| -> [f32; 3] {
        let (x, y) = (x.clamp(0.0, (w - 1) as f32), y.clamp(0.0, (h - 1) as f32));
        let (x0, y0) = (x as usize, y as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        std::array::from_fn(|c| {
            let at = |xx: usize, yy: usize| blurred[(yy * w + xx) * 3 + c];
            let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
            let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
            top + (bottom - top) * fy
        })
    };
    let mut out = img.clone();
    for _ in 0..count {
        let (cx, cy) = (rng.random_range(0.0..w as f32), rng.random_range(0.0..h as f32));
        let rx = radius as f32 * rng.random_range(0.7..1.3);
        let ry = rx * rng.random_range(0.8..1.25);
        let magnification = rng.random_range(1.0..2.0f32);
        let (ox, oy) = (rng.random_range(-1.0..1.0) * rx, rng.random_range(-1.0..1.0) * ry);
        let (x_lo, x_hi) = ((cx - rx).floor().max(0.0) as usize, ((cx + rx).ceil() as usize).min(w));
        let (y_lo, y_hi) = ((cy - ry).floor().max(0.0) as usize, ((cy + ry).ceil() as usize).min(h));
        for y in y_lo..y_hi {
            for x in x_lo..x_hi {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let rho = (dx / rx).hypot(dy / ry);
                if rho >= 1.0 {
                    continue;
                }
                let t = ((1.0 - rho) / EDGE).min(1.0);
                let alpha = t * t * (3.0 - 2.0 * t);
                let shade = 1.0 + 0.08 * (1.0 - rho) - 0.25 * rho.powi(4);
                let seen = sample(cx + ox - dx * magnification, cy + oy - dy * magnification);
                let pixel = &mut out.data[(y * w + x) * 3..(y * w + x) * 3 + 3];
                pixel.iter_mut().zip(seen).for_each(|(v, s)| *v += (s * shade - *v) * alpha);
            }
        }
    }
    out
}
