//! Images in and out of engines: interleaved RGB f32, and the family padding rule.
//!
//! Independent of backends: engines receive a planar, padded tensor built here and hand back a
//! planar output that is cropped here.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::spec::{IMAGE_CHANNELS, PadMode};

/// An RGB image, `height × width × 3` interleaved f32 (nominally in [0, 1]).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Image {
    /// Wraps interleaved RGB data; `data.len()` must be `height * width * 3`.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        check_size(width, height)?;
        let expected = width
            .checked_mul(height)
            .and_then(|p| p.checked_mul(IMAGE_CHANNELS))
            .ok_or_else(|| Error::InvalidImage(format!("{width}×{height} overflows")))?;
        if data.len() != expected {
            return Err(Error::InvalidImage(format!("{width}×{height}×3 needs {expected} values, got {}", data.len())));
        }
        Ok(Image { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Interleaved RGB values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Consumes the image, returning its interleaved RGB values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Errors naming the first pixel that is NaN or infinite.
    pub fn check_finite(&self) -> Result<()> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => {
                let px = i / IMAGE_CHANNELS;
                Err(Error::InvalidImage(format!(
                    "pixel (x {}, y {}) channel {} is {}: inputs must be finite",
                    px % self.width,
                    px / self.width,
                    i % IMAGE_CHANNELS,
                    self.data[i]
                )))
            }
        }
    }

    /// The sub-image `[x0, x0+w) × [y0, y0+h)`.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Image {
        let mut data = Vec::with_capacity(w * h * IMAGE_CHANNELS);
        for y in y0..y0 + h {
            let row = (y * self.width + x0) * IMAGE_CHANNELS;
            data.extend_from_slice(&self.data[row..row + w * IMAGE_CHANNELS]);
        }
        Image { width: w, height: h, data }
    }

    /// Copies `src` into this image with its top-left corner at `(x0, y0)`.
    pub fn paste(&mut self, src: &Image, x0: usize, y0: usize) {
        for y in 0..src.height {
            let dst = ((y0 + y) * self.width + x0) * IMAGE_CHANNELS;
            let s = y * src.width * IMAGE_CHANNELS;
            self.data[dst..dst + src.width * IMAGE_CHANNELS]
                .copy_from_slice(&src.data[s..s + src.width * IMAGE_CHANNELS]);
        }
    }
}

/// Refuses an image size without pixels (either side 0) or with a side over [`MAX_SIDE`].
pub fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::InvalidImage(format!("image is {width}×{height}: it must have at least one pixel")));
    }
    if width.max(height) > MAX_SIDE {
        return Err(Error::InvalidImage(format!(
            "image is {width}×{height}: a side may be at most {MAX_SIDE} pixels (restore larger images in parts)"
        )));
    }
    Ok(())
}

/// Longest image side accepted, so that sizes, padded sizes and byte counts of every buffer
/// stay far from overflowing (2^20 per side: a 1-terapixel image; 2^40 pixels × 3 channels ×
/// 4 bytes × a network's widest features fit in 64 bits).
pub const MAX_SIDE: usize = 1 << 20;

/// Rounds `n` up to a multiple of `m`.
pub fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Source index for output index `i` of an axis of length `n` padded with `mode`
/// (`None` = a zero). Reflect mirrors without repeating the edge (REFLECT_101); pads longer
/// than the axis keep mirroring (numpy `reflect`), and a length-1 axis repeats its pixel.
fn pad_index(i: usize, n: usize, mode: PadMode) -> Option<usize> {
    if i < n {
        return Some(i);
    }
    match mode {
        PadMode::Zero => None,
        PadMode::Reflect if n == 1 => Some(0),
        PadMode::Reflect => {
            let period = 2 * (n - 1);
            let r = i % period;
            Some(if r < n { r } else { period - r })
        }
    }
}

/// Planar `3 × H' × W'` copy of `img`, padded bottom/right to multiples of `multiple`.
pub fn to_padded_planar(img: &Image, multiple: usize, mode: PadMode) -> (Vec<f32>, usize, usize) {
    let (h, w) = (round_up(img.height, multiple), round_up(img.width, multiple));
    let mut out = vec![0.0f32; IMAGE_CHANNELS * h * w];
    pad_planar_into(img, h, w, mode, &mut out);
    (out, h, w)
}

/// Writes the planar `3 × h × w` copy of `img`, padded bottom/right with `mode`, into `out`
/// (exactly `3 · h · w` values; `h`, `w` at least the image's size). Rows run in parallel on
/// the current rayon pool: each splits one source row into the three planes, then mirrors (or
/// zeroes) its padding columns.
pub fn pad_planar_into(img: &Image, h: usize, w: usize, mode: PadMode, out: &mut [f32]) {
    assert!(h >= img.height && w >= img.width && out.len() == IMAGE_CHANNELS * h * w, "padded buffer mis-sized");
    let width = img.width;
    let (r, gb) = out.split_at_mut(h * w);
    let (g, b) = gb.split_at_mut(h * w);
    let rows = r.par_chunks_mut(w).zip(g.par_chunks_mut(w)).zip(b.par_chunks_mut(w));
    rows.enumerate().for_each(|(y, ((r, g), b))| {
        let Some(sy) = pad_index(y, img.height, mode) else {
            for plane in [r, g, b] {
                plane.fill(0.0);
            }
            return;
        };
        let src = &img.data[sy * width * IMAGE_CHANNELS..(sy + 1) * width * IMAGE_CHANNELS];
        for (x, px) in src.chunks_exact(IMAGE_CHANNELS).enumerate() {
            (r[x], g[x], b[x]) = (px[0], px[1], px[2]);
        }
        for plane in [r, g, b] {
            for x in width..w {
                plane[x] = pad_index(x, width, mode).map_or(0.0, |sx| plane[sx]);
            }
        }
    });
}

/// Interleaved `height × width` image from the top-left corner of a planar `3 × ph × pw` map
/// (rows in parallel on the current rayon pool).
pub fn from_planar_cropped(planar: &[f32], ph: usize, pw: usize, width: usize, height: usize) -> Image {
    assert!(height <= ph && width <= pw && planar.len() >= IMAGE_CHANNELS * ph * pw, "planar map mis-sized");
    let mut data = vec![0.0f32; width * height * IMAGE_CHANNELS];
    let plane = ph * pw;
    data.par_chunks_mut(width * IMAGE_CHANNELS).enumerate().for_each(|(y, row)| {
        let at = |c: usize| &planar[c * plane + y * pw..c * plane + y * pw + width];
        let (r, g, b) = (at(0), at(1), at(2));
        for (x, px) in row.chunks_exact_mut(IMAGE_CHANNELS).enumerate() {
            (px[0], px[1], px[2]) = (r[x], g[x], b[x]);
        }
    });
    Image { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_torch_reflect_for_short_pads() {
        // torch.nn.functional.pad([0,1,2,3,4], (0,3), "reflect") = [0,1,2,3,4,3,2,1]
        let got: Vec<usize> = (0..8).map(|i| pad_index(i, 5, PadMode::Reflect).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 3, 2, 1]);
    }

    #[test]
    fn reflect_keeps_mirroring_like_numpy_for_long_pads() {
        // numpy.pad([0,1,2], (0,7), "reflect") = [0,1,2,1,0,1,2,1,0,1]
        let got: Vec<usize> = (0..10).map(|i| pad_index(i, 3, PadMode::Reflect).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 1, 0, 1, 2, 1, 0, 1]);
        assert_eq!(pad_index(5, 1, PadMode::Reflect), Some(0));
        assert_eq!(pad_index(5, 3, PadMode::Zero), None);
    }

    #[test]
    fn pad_then_crop_round_trips() {
        let img = Image::new(3, 2, (0..18).map(|v| v as f32).collect()).unwrap();
        let (p, h, w) = to_padded_planar(&img, 4, PadMode::Reflect);
        assert_eq!((h, w), (4, 4));
        assert_eq!(from_planar_cropped(&p, h, w, 3, 2), img);
    }

    /// Every padded value is the source pixel its mirrored (or zero) position names.
    #[test]
    fn padding_reads_the_mirrored_source_pixel() {
        let (width, height) = (5, 3);
        let img = Image::new(width, height, (0..width * height * 3).map(|v| v as f32 + 1.0).collect()).unwrap();
        for mode in [PadMode::Reflect, PadMode::Zero] {
            let (p, h, w) = to_padded_planar(&img, 8, mode);
            assert_eq!((h, w), (8, 8));
            for c in 0..IMAGE_CHANNELS {
                for y in 0..h {
                    for x in 0..w {
                        let want = match (pad_index(y, height, mode), pad_index(x, width, mode)) {
                            (Some(sy), Some(sx)) => img.data()[(sy * width + sx) * IMAGE_CHANNELS + c],
                            _ => 0.0,
                        };
                        assert_eq!(p[(c * h + y) * w + x], want, "{mode:?} c {c} y {y} x {x}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_and_mis_sized_images_are_rejected() {
        assert!(Image::new(0, 0, vec![]).is_err());
        assert!(Image::new(2, 2, vec![0.0; 11]).is_err());
        let bad = Image::new(1, 1, vec![0.0, f32::NAN, 0.0]).unwrap();
        assert!(bad.check_finite().unwrap_err().to_string().contains("channel 1"));
    }
}
