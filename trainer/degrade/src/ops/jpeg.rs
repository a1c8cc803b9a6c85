//! JPEG compression artefacts: encode the 8-bit image at a quality, decode it again.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageFormat};

use crate::{Error, Rgb};

/// Round-trips `img` through a baseline JPEG of `quality` (image crate encoder: libjpeg
/// quantisation tables scaled by quality, no chroma subsampling).
pub(super) fn round_trip(img: &Rgb, quality: u8) -> Result<Rgb, Error> {
    let (w, h) = img.dims_u32("JPEG")?;
    let encode_error = |source| Error::Encode { format: "JPEG", width: img.width, height: img.height, source };
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(&img.to_rgb8(), w, h, ExtendedColorType::Rgb8)
        .map_err(encode_error)?;
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).map_err(encode_error)?.into_rgb8();
    Ok(Rgb {
        width: img.width,
        height: img.height,
        data: decoded.into_raw().into_iter().map(|v| f32::from(v) / 255.0).collect(),
    })
}
