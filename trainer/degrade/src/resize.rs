//! Separable resampling (pixel-centre aligned, replicated borders, like `cv2.resize`).

use crate::Rgb;

/// Interpolation for resizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Linear interpolation between the two nearest samples.
    Bilinear,
    /// Cubic convolution with `a = -0.75` (OpenCV's bicubic).
    Bicubic,
    /// Box average weighted by coverage (OpenCV's `INTER_AREA` for shrinking).
    Area,
}

impl Filter {
    /// The name recorded in the parameters.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
            Self::Area => "area",
        }
    }
}

/// Resizes `img` to `width × height` (both at least 1).
pub(crate) fn resize(img: &Rgb, width: usize, height: usize, filter: Filter) -> Rgb {
    let (width, height) = (width.max(1), height.max(1));
    let cols = weights(img.width, width, filter);
    let rows = weights(img.height, height, filter);
    let mut horizontal = Vec::with_capacity(width * img.height * 3);
    for row in img.data.chunks_exact(img.width * 3) {
        for taps in &cols {
            horizontal.extend(blend(taps, |i| &row[i * 3..i * 3 + 3]));
        }
    }
    let mut data = Vec::with_capacity(width * height * 3);
    for taps in &rows {
        for x in 0..width {
            data.extend(blend(taps, |i| &horizontal[(i * width + x) * 3..(i * width + x) * 3 + 3]));
        }
    }
    Rgb { width, height, data }
}

/// The weighted sum of the RGB triples `pixel(i)` over `taps`.
fn blend<'a>(taps: &[(usize, f32)], pixel: impl Fn(usize) -> &'a [f32]) -> [f32; 3] {
    taps.iter().fold([0.0; 3], |mut acc, &(i, w)| {
        acc.iter_mut().zip(pixel(i)).for_each(|(a, &v)| *a += w * v);
        acc
    })
}

/// For each of the `dst` output samples, its source taps `(index, weight)` (weights sum to 1).
fn weights(src: usize, dst: usize, filter: Filter) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    let clamp = |i: isize| i.clamp(0, src as isize - 1) as usize;
    (0..dst)
        .map(|o| {
            let taps: Vec<(usize, f64)> = match filter {
                Filter::Bilinear | Filter::Bicubic => {
                    let s = (o as f64 + 0.5) * scale - 0.5;
                    let base = s.floor();
                    let t = s - base;
                    let offsets: &[isize] = if filter == Filter::Bilinear { &[0, 1] } else { &[-1, 0, 1, 2] };
                    offsets
                        .iter()
                        .map(|&d| {
                            let dist = (t - d as f64).abs();
                            let w = if filter == Filter::Bilinear { 1.0 - dist } else { cubic(dist) };
                            (clamp(base as isize + d), w)
                        })
                        .collect()
                }
                Filter::Area => {
                    let (start, end) = (o as f64 * scale, (o as f64 + 1.0) * scale);
                    (start.floor() as isize..end.ceil() as isize)
                        .map(|i| (clamp(i), (end.min(i as f64 + 1.0) - start.max(i as f64)).max(0.0)))
                        .collect()
                }
            };
            let sum: f64 = taps.iter().map(|t| t.1).sum();
            taps.into_iter().map(|(i, w)| (i, (w / sum) as f32)).collect()
        })
        .collect()
}

/// Keys' cubic convolution kernel with `a = -0.75`.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.75;
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant_and_sizes_are_exact() {
        let img = Rgb::filled(13, 7, [0.2, 0.5, 0.9]);
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Area] {
            for (w, h) in [(4, 2), (26, 14), (1, 1), (5, 9)] {
                let out = resize(&img, w, h, filter);
                assert_eq!((out.width, out.height, out.data.len()), (w, h, w * h * 3));
                assert!(out.data.chunks(3).all(|p| (p[0] - 0.2).abs() < 1e-5 && (p[2] - 0.9).abs() < 1e-5));
            }
        }
    }

    #[test]
    fn area_halving_averages_pairs() {
        let img = Rgb { width: 4, height: 1, data: [0.0, 1.0, 0.2, 0.4].iter().flat_map(|&v| [v; 3]).collect() };
        let out = resize(&img, 2, 1, Filter::Area);
        assert!((out.data[0] - 0.5).abs() < 1e-6 && (out.data[3] - 0.3).abs() < 1e-6);
    }
}
