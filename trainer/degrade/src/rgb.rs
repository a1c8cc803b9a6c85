//! The image type every degradation takes and returns, with file loading and PNG saving.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{DynamicImage, ExtendedColorType, ImageEncoder};

use crate::{Error, atomic};

/// An RGB image: interleaved, row-major `height × width × 3` values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height * 3` values, pixel `(x, y)` channel `c` at `(y * width + x) * 3 + c`.
    pub data: Vec<f32>,
}

impl Rgb {
    /// Wraps `data`, checking that it holds `width * height * 3` finite values.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self, Error> {
        let img = Self { width, height, data };
        img.validate()?;
        Ok(img)
    }

    /// A `width × height` image of one colour.
    pub fn filled(width: usize, height: usize, color: [f32; 3]) -> Self {
        Self { width, height, data: color.iter().copied().cycle().take(width * height * 3).collect() }
    }

    /// Checks that the sides are non-zero, the data length matches and every value is finite.
    pub fn validate(&self) -> Result<(), Error> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            return Err(Error::InvalidImage(format!("the image is {w}x{h}, both sides must be at least 1")));
        }
        let expected = w.checked_mul(h).and_then(|n| n.checked_mul(3));
        if expected != Some(self.data.len()) {
            return Err(Error::InvalidImage(format!(
                "data holds {} values, a {w}x{h} RGB image needs {w}*{h}*3",
                self.data.len()
            )));
        }
        if !self.data.iter().all(|v| v.is_finite()) {
            return Err(Error::InvalidImage("data holds NaN or infinite values".into()));
        }
        Ok(())
    }

    /// Loads a PNG/JPEG/TIFF/PPM/WebP file as the reference's OpenCV `imread` decodes it
    /// ([`maskdcpt_imread`]: JPEG through libjpeg-turbo, turned upright by an Exif
    /// orientation); 8-bit values / 255, 16-bit / 65535, alpha dropped.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let read_error = |source| Error::ReadImage { path: path.to_path_buf(), source };
        let bytes = std::fs::read(path).map_err(|e| read_error(image::ImageError::IoError(e)))?;
        let hint = image::ImageFormat::from_path(path).ok();
        Self::from_dynamic(maskdcpt_imread::decode(&bytes, hint).map_err(read_error)?.pixels)
    }

    /// Decodes the bytes of an image file (format told by the content) as [`Rgb::load`] does.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_dynamic(maskdcpt_imread::decode(bytes, None).map_err(Error::Decode)?.pixels)
    }

    fn from_dynamic(img: DynamicImage) -> Result<Self, Error> {
        let rgb = img.into_rgb32f();
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        let data = rgb.into_raw().into_iter().map(|v| if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 }).collect();
        Self::new(width, height, data)
    }

    /// The values as 8-bit samples (clamped to [0, 1], rounded).
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.data.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }

    /// Rounds every value as storing the image at `bits` bits per sample and reading it back
    /// does: clamped to [0, 1], then to the nearest of `2^bits − 1` equal steps (at 8 bits the
    /// values of [`Rgb::save_png`] and [`Rgb::load`] after it, bit for bit).
    pub fn quantize(&mut self, bits: u32) -> Result<(), Error> {
        if !(1..=16).contains(&bits) {
            return Err(Error::InvalidImage(format!("cannot round to {bits} bits per sample: use 1 to 16")));
        }
        let steps = ((1u32 << bits) - 1) as f32;
        self.data.iter_mut().for_each(|v| *v = (v.clamp(0.0, 1.0) * steps).round() / steps);
        Ok(())
    }

    /// Encodes the image as an 8-bit RGB PNG.
    pub fn encode_png(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let (w, h) = self.dims_u32("PNG")?;
        PngEncoder::new(&mut out)
            .write_image(&self.to_rgb8(), w, h, ExtendedColorType::Rgb8)
            .map_err(|source| Error::Encode { format: "PNG", width: self.width, height: self.height, source })?;
        Ok(out)
    }

    /// Saves the image as an 8-bit RGB PNG, atomically (temporary file, then rename).
    pub fn save_png(&self, path: &Path) -> Result<(), Error> {
        atomic::write(path, &self.encode_png()?)
    }

    /// The sides as `u32`, as encoders want them.
    pub(crate) fn dims_u32(&self, format: &'static str) -> Result<(u32, u32), Error> {
        let too_large = || Error::Encode {
            format,
            width: self.width,
            height: self.height,
            source: image::ImageError::Limits(image::error::LimitError::from_kind(
                image::error::LimitErrorKind::DimensionError,
            )),
        };
        Ok((u32::try_from(self.width).map_err(|_| too_large())?, u32::try_from(self.height).map_err(|_| too_large())?))
    }

    /// The `w × h` window whose top-left corner is `(x, y)`; the caller keeps it inside the image.
    pub(crate) fn window(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        let row = self.width * 3;
        let data = (y..y + h).flat_map(|r| &self.data[r * row + x * 3..r * row + (x + w) * 3]).copied().collect();
        Self { width: w, height: h, data }
    }

    /// The same image with every value clamped to [0, 1].
    pub(crate) fn clamped(mut self) -> Self {
        self.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        self
    }

    /// An image of the same size with `f` applied to every value.
    pub(crate) fn map(&self, mut f: impl FnMut(f32) -> f32) -> Self {
        Self { width: self.width, height: self.height, data: self.data.iter().map(|&v| f(v)).collect() }
    }
}
