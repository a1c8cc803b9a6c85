//! Image files in and out: PNG / JPEG / TIFF / binary PPM (8- and 16-bit) through the `image`
//! crate, and float32 `H × W × 3` `.npy` arrays through `npyz`.
//!
//! Reading: 8-bit samples are divided by 255, 16-bit ones by 65535, float samples are kept
//! (the rule of [`maskdcpt_core::pixels`], which the C library shares).
//! Grayscale becomes RGB; an alpha channel is dropped (and reported to the caller, who warns).
//! An image with an Exif orientation (a phone's JPEG, a PNG `eXIf` chunk, a TIFF tag) is turned
//! upright as viewers show it, as OpenCV's `imread`/`imdecode` (the reference's data loader)
//! turn it; outputs carry no orientation.
//! Writing: `.npy` holds the values as given; image formats clamp to [0, 1] and round to the
//! output depth. Every write is atomic (see [`crate::atomic`]).

use std::io::{BufWriter, Cursor, Write};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Rgb};
use maskdcpt_core::image::Image;
use maskdcpt_core::pixels::{f32_to_unorm8, f32_to_unorm16, unorm8_to_f32, unorm16_to_f32};
use npyz::WriterBuilder;

use crate::atomic::write_atomically;
use crate::error::{CliError, Result};

/// JPEG quality used for JPEG outputs (restoration output deserves a high one).
const JPEG_QUALITY: u8 = 95;

/// A file format chosen from a file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.png`
    Png,
    /// `.jpg`, `.jpeg`
    Jpeg,
    /// `.tif`, `.tiff`
    Tiff,
    /// `.ppm` (binary PPM: read at 8 or 16 bits, written as 8-bit P6)
    Ppm,
    /// `.npy` (float32 `H × W × 3`)
    Npy,
}

/// The extensions [`FileKind::from_path`] accepts, for messages.
pub const SUPPORTED_EXTENSIONS: &str = "png, jpg, jpeg, tif, tiff, ppm, npy";

impl FileKind {
    /// The format of `path` by its (case-insensitive) extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(FileKind::Png),
            Some("jpg" | "jpeg") => Ok(FileKind::Jpeg),
            Some("tif" | "tiff") => Ok(FileKind::Tiff),
            Some("ppm") => Ok(FileKind::Ppm),
            Some("npy") => Ok(FileKind::Npy),
            Some(other) => Err(CliError::file(
                path,
                format!("unsupported file type `.{other}` (supported: {SUPPORTED_EXTENSIONS})"),
            )),
            None => Err(CliError::file(
                path,
                format!("no file extension to tell the format from (supported: {SUPPORTED_EXTENSIONS})"),
            )),
        }
    }
}

/// Sample depth of a source file, which decides the depth of image outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// 8-bit integer samples.
    U8,
    /// 16-bit integer samples.
    U16,
    /// Floating-point samples (`.npy`, float TIFF): written as 16-bit where the format allows.
    Float,
}

/// An image read from a file.
#[derive(Debug)]
pub struct Loaded {
    /// The RGB pixels.
    pub image: Image,
    /// The depth of the file's samples.
    pub depth: Depth,
    /// Whether the file had an alpha channel, which was dropped.
    pub dropped_alpha: bool,
}

/// Reads an image or `.npy` file (format by extension; image codecs also sniff the content).
pub fn read(path: &Path) -> Result<Loaded> {
    let kind = FileKind::from_path(path)?;
    let bytes = std::fs::read(path).map_err(|e| CliError::file(path, e))?;
    if bytes.is_empty() {
        return Err(CliError::file(path, "file is empty"));
    }
    let loaded = match kind {
        FileKind::Npy => read_npy(&bytes).map_err(|m| CliError::file(path, m))?,
        _ => decode_image(path, &bytes)?,
    };
    loaded.image.check_finite().map_err(|e| CliError::file(path, e))?;
    Ok(loaded)
}

/// Decodes PNG / JPEG / TIFF / PPM bytes to RGB f32.
fn decode_image(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let format =
        image::guess_format(bytes).or_else(|_| ImageFormat::from_path(path)).map_err(|e| CliError::file(path, e))?;
    let cannot_decode = |e: image::ImageError| CliError::file(path, format!("cannot decode image: {e}"));
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format).into_decoder().map_err(cannot_decode)?;
    // Unreadable Exif leaves the pixels as stored, as OpenCV leaves them.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(cannot_decode)?;
    img.apply_orientation(orientation);
    let color = img.color();
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (depth, data) = match color {
        ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8 => {
            (Depth::U8, img.into_rgb8().into_raw().into_iter().map(unorm8_to_f32).collect())
        }
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => {
            (Depth::U16, img.into_rgb16().into_raw().into_iter().map(unorm16_to_f32).collect())
        }
        ColorType::Rgb32F | ColorType::Rgba32F => (Depth::Float, img.into_rgb32f().into_raw()),
        other => return Err(CliError::file(path, format!("unsupported pixel format {other:?}"))),
    };
    let image = Image::new(width, height, data).map_err(|e| CliError::file(path, e))?;
    Ok(Loaded { image, depth, dropped_alpha: color.has_alpha() })
}

/// Parses a float32 `H × W × 3` C-order `.npy` file.
fn read_npy(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let mut rest = bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest).map_err(|e| format!("not a valid .npy file: {e}"))?;
    match header.dtype() {
        npyz::DType::Plain(ts) if ts.type_char() == npyz::TypeChar::Float && ts.size_field() == 4 => {}
        npyz::DType::Plain(ts) => {
            return Err(format!("dtype `{ts}` is not supported: expected float32 (`<f4`)"));
        }
        _ => return Err("structured dtypes are not supported: expected float32 (`<f4`)".into()),
    }
    let (height, width) = match *header.shape() {
        [h, w, 3] => (h, w),
        ref shape => return Err(format!("shape {shape:?} is not supported: expected [height, width, 3] (RGB)")),
    };
    if header.order() == npyz::Order::Fortran {
        return Err("Fortran-ordered arrays are not supported: save a C-contiguous array".into());
    }
    let too_big = || format!("shape [{height}, {width}, 3] is too large");
    let (height, width) =
        (usize::try_from(height).map_err(|_| too_big())?, usize::try_from(width).map_err(|_| too_big())?);
    let needed = height.checked_mul(width).and_then(|n| n.checked_mul(12)).ok_or_else(too_big)?;
    if rest.len() != needed {
        return Err(format!(
            "shape [{height}, {width}, 3] needs {needed} bytes of float32 data, the file holds {}",
            rest.len()
        ));
    }
    let data = npyz::NpyFile::with_header(header, rest)
        .into_vec::<f32>()
        .map_err(|e| format!("cannot read .npy data: {e}"))?;
    let image = Image::new(width, height, data).map_err(|e| e.to_string())?;
    Ok(Loaded { image, depth: Depth::Float, dropped_alpha: false })
}

/// Writes `image` to `path` in the format of its extension. Image formats get `depth`
/// (16-bit for `U16` and `Float`) where they support it; JPEG and PPM (binary P6) are always
/// 8-bit.
pub fn write(path: &Path, image: &Image, depth: Depth) -> Result<()> {
    let kind = FileKind::from_path(path)?;
    write_atomically(path, |file| {
        let mut out = BufWriter::new(file);
        let encoded = match kind {
            FileKind::Npy => write_npy(&mut out, image).map_err(|e| e.to_string()),
            FileKind::Jpeg => encode(&mut out, image, ImageFormat::Jpeg, Depth::U8),
            FileKind::Png => encode(&mut out, image, ImageFormat::Png, depth),
            FileKind::Tiff => encode(&mut out, image, ImageFormat::Tiff, depth),
            FileKind::Ppm => encode(&mut out, image, ImageFormat::Pnm, Depth::U8),
        };
        encoded.and_then(|()| out.flush().map_err(|e| e.to_string())).map_err(std::io::Error::other)
    })
}

/// Writes the raw values as a float32 `H × W × 3` `.npy`.
fn write_npy(out: &mut impl Write, image: &Image) -> std::io::Result<()> {
    let shape = [image.height() as u64, image.width() as u64, 3];
    let mut writer = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
    writer.extend(image.data().iter().copied())?;
    writer.finish()
}

/// Clamps to [0, 1], quantises to `depth` and encodes as `format`.
fn encode<W: Write + std::io::Seek>(
    out: &mut W,
    image: &Image,
    format: ImageFormat,
    depth: Depth,
) -> std::result::Result<(), String> {
    let (w, h) = (u32::try_from(image.width()), u32::try_from(image.height()));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(format!("{}×{} is too large for an image file", image.width(), image.height()));
    };
    let pixels: DynamicImage = match depth {
        Depth::U8 => {
            let data = image.data().iter().copied().map(f32_to_unorm8).collect();
            ImageBuffer::<Rgb<u8>, Vec<u8>>::from_raw(w, h, data).map(DynamicImage::ImageRgb8)
        }
        Depth::U16 | Depth::Float => {
            let data = image.data().iter().copied().map(f32_to_unorm16).collect();
            ImageBuffer::<Rgb<u16>, Vec<u16>>::from_raw(w, h, data).map(DynamicImage::ImageRgb16)
        }
    }
    .ok_or("pixel buffer does not match the image size")?;
    let result = match format {
        ImageFormat::Jpeg => pixels.write_with_encoder(JpegEncoder::new_with_quality(out, JPEG_QUALITY)),
        ImageFormat::Pnm => {
            pixels.write_with_encoder(PnmEncoder::new(out).with_subtype(PnmSubtype::Pixmap(SampleEncoding::Binary)))
        }
        _ => pixels.write_to(out, format),
    };
    result.map_err(|e| format!("cannot encode image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Valid encodings of a small gradient in every supported format, made by our writer.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let (w, h) = (5, 4);
        let image = Image::new(w, h, (0..w * h * 3).map(|i| i as f32 / 60.0).collect()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        [
            ("png", Depth::U8),
            ("png", Depth::U16),
            ("jpg", Depth::U8),
            ("tiff", Depth::U16),
            ("ppm", Depth::U8),
            ("npy", Depth::Float),
        ]
        .into_iter()
        .map(|(ext, depth)| {
            let path = dir.path().join(format!("seed.{ext}"));
            write(&path, &image, depth).unwrap();
            (ext, std::fs::read(&path).unwrap())
        })
        .collect()
    }

    /// Parses `bytes` as a file with extension `ext`, as [`read`] does after reading it.
    fn parse(ext: &str, bytes: &[u8]) -> Option<Loaded> {
        match ext {
            "npy" => read_npy(bytes).ok(),
            _ => decode_image(Path::new(&format!("x.{ext}")), bytes).ok(),
        }
    }

    #[test]
    fn seeds_parse_back() {
        for (ext, bytes) in seeds() {
            let loaded = parse(ext, &bytes).unwrap_or_else(|| panic!("{ext}"));
            assert_eq!((loaded.image.width(), loaded.image.height()), (5, 4));
        }
    }

    #[test]
    fn exif_orientation_turns_the_image_upright() {
        // 3 × 2 pixels, each its own colour, stored as a PNG (lossless) with an eXIf chunk.
        let (w, h) = (3u32, 2u32);
        let stored = image::RgbImage::from_fn(w, h, |x, y| Rgb([40 * x as u8, 100 * y as u8, 7]));
        // Big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, count 1, value.
        let exif = |value: u8| {
            let mut e = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".to_vec();
            e.extend_from_slice(&[value, 0, 0, 0, 0, 0, 0]);
            e
        };
        let png = |orientation: Option<u8>| {
            let mut bytes = vec![];
            let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
            if let Some(value) = orientation {
                image::ImageEncoder::set_exif_metadata(&mut encoder, exif(value)).unwrap();
            }
            image::ImageEncoder::write_image(encoder, stored.as_raw(), w, h, image::ExtendedColorType::Rgb8).unwrap();
            bytes
        };
        let pixels = |img: &image::RgbImage| -> Vec<f32> { img.as_raw().iter().copied().map(unorm8_to_f32).collect() };
        let cases = [
            (None, stored.clone()),
            (Some(1), stored.clone()),
            (Some(3), image::imageops::rotate180(&stored)),
            (Some(6), image::imageops::rotate90(&stored)),
            (Some(8), image::imageops::rotate270(&stored)),
            (Some(2), image::imageops::flip_horizontal(&stored)),
        ];
        for (orientation, upright) in cases {
            let loaded = decode_image(Path::new("x.png"), &png(orientation)).unwrap();
            let size = (loaded.image.width() as u32, loaded.image.height() as u32);
            assert_eq!(size, upright.dimensions(), "orientation {orientation:?}");
            assert_eq!(loaded.image.data(), pixels(&upright), "orientation {orientation:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Flipped, truncated or inserted bytes in any supported format give an image or an
        /// error, never a panic.
        #[test]
        fn mutated_files_never_panic(
            seed in 0usize..6,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            insert in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let (ext, mut bytes) = seeds().swap_remove(seed);
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
            let at = cut.index(bytes.len());
            if truncate {
                bytes.truncate(at);
            } else {
                bytes.splice(at..at, insert);
            }
            if let Some(loaded) = parse(ext, &bytes) {
                prop_assert_eq!(loaded.image.data().len(), loaded.image.width() * loaded.image.height() * 3);
            }
        }
    }
}
