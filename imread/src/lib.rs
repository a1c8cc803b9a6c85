//! Image files decoded as OpenCV's `imread` (the reference's data loader) decodes them, for
//! the `maskdcpt` command and the trainer: JPEG pixels from libjpeg-turbo's decoder (`jpeg.rs`:
//! the `image` crate's own differs by a few levels in a quarter of a 4:2:0 file's samples),
//! the other formats (PNG, TIFF, PPM, WebP: exact decoders) through the `image` crate, every
//! image turned upright by its Exif orientation as OpenCV turns it. The colour profile and the
//! Exif block come along for outputs that keep them.

#![warn(missing_docs)]

mod jpeg;

use std::io::Cursor;

use image::codecs::tiff::TiffDecoder;
use image::error::{DecodingError, ImageFormatHint};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, ImageResult};

/// A decoded image file.
#[derive(Debug)]
pub struct Decoded {
    /// The pixels as stored (8-bit, 16-bit or float; gray, RGB, with or without alpha),
    /// upright.
    pub pixels: DynamicImage,
    /// The ICC colour profile the samples are in, if the file has one.
    pub icc_profile: Option<Vec<u8>>,
    /// The Exif block, if the file has one, with its orientation reset (the pixels are turned).
    pub exif: Option<Vec<u8>>,
}

/// Decodes the bytes of an image file, its format told by its content or else by `hint` (a
/// file name's extension, say).
pub fn decode(bytes: &[u8], hint: Option<ImageFormat>) -> ImageResult<Decoded> {
    let format = image::guess_format(bytes).or_else(|unknown| hint.ok_or(unknown))?;
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format).into_decoder()?;
    // Unreadable Exif leaves the pixels as stored, as OpenCV leaves them.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let icc_profile = match format {
        // image 0.25.10's TIFF decoder loses its tags once `ImageReader` sets its limits: the
        // profile comes from a decoder of its own (the tiff crate's default limits).
        ImageFormat::Tiff => TiffDecoder::new(Cursor::new(bytes)).and_then(|mut tiff| tiff.icc_profile()),
        _ => decoder.icc_profile(),
    }
    .ok()
    .flatten();
    let exif = decoder.exif_metadata().ok().flatten().map(|mut exif| {
        // `None` (nothing to reset) where the block has no valid orientation.
        let _ = Orientation::remove_from_exif_chunk(&mut exif);
        exif
    });
    let mut pixels = match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(jpeg::decode_rgb8(bytes).map_err(|message| {
            ImageError::Decoding(DecodingError::new(ImageFormatHint::Exact(ImageFormat::Jpeg), message))
        })?),
        _ => DynamicImage::from_decoder(decoder)?,
    };
    pixels.apply_orientation(orientation);
    Ok(Decoded { pixels, icc_profile, exif })
}
