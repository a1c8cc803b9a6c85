//! Image files in and out: PNG / JPEG / TIFF / binary PPM (8- and 16-bit) and WebP (8-bit;
//! lossy or lossless in, lossless out), and float32 `H × W × 3` `.npy` arrays through `npyz`.
//!
//! Reading: images are decoded as the reference's OpenCV `imread` decodes them
//! ([`maskdcpt_imread`]: JPEG through libjpeg-turbo's decoder, turned upright by an Exif
//! orientation); 8-bit samples are divided by 255, 16-bit ones by 65535, float samples are
//! kept (the rule of [`maskdcpt_core::pixels`], which the C library shares). Grayscale becomes
//! RGB; an alpha channel is dropped (and reported to the caller, who warns). Outputs carry no
//! orientation. Image outputs keep the input's ICC colour profile (PNG, JPEG, TIFF, WebP) and
//! Exif block (PNG, JPEG, WebP; its orientation reset): the network maps values to values in
//! the same colour space.
//! Writing: `.npy` holds the values as given; image formats clamp to [0, 1] and round to the
//! output depth. Every write is atomic (see [`crate::atomic`]).

use std::io::{BufWriter, Write};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
use image::codecs::tiff::TiffEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ColorType, DynamicImage, ImageBuffer, ImageEncoder, ImageFormat, Rgb};
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
    /// `.webp` (read lossy or lossless, written lossless, 8-bit)
    WebP,
    /// `.npy` (float32 `H × W × 3`)
    Npy,
}

/// The extensions [`FileKind::from_path`] accepts, for messages.
pub const SUPPORTED_EXTENSIONS: &str = "png, jpg, jpeg, tif, tiff, ppm, webp, npy";

impl FileKind {
    /// The format of `path` by its (case-insensitive) extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(FileKind::Png),
            Some("jpg" | "jpeg") => Ok(FileKind::Jpeg),
            Some("tif" | "tiff") => Ok(FileKind::Tiff),
            Some("ppm") => Ok(FileKind::Ppm),
            Some("webp") => Ok(FileKind::WebP),
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

/// What an image file holds besides its pixels, carried to image outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The ICC colour profile the samples are in.
    pub icc_profile: Option<Vec<u8>>,
    /// The Exif block, with its orientation reset (the pixels were turned upright on reading).
    pub exif: Option<Vec<u8>>,
}

/// The largest Exif block a JPEG holds: one APP1 segment of at most 65535 bytes, less its
/// length field and `Exif\0\0` header.
const JPEG_MAX_EXIF: usize = 65535 - 2 - 6;

/// The largest ICC profile a JPEG holds: 255 APP2 segments, each less its length field and
/// 14-byte header.
const JPEG_MAX_ICC: usize = 255 * (65535 - 2 - 14);

impl Metadata {
    /// What of this an output of `kind` holds, and the names of what it cannot hold: a
    /// profile outside PNG, JPEG, TIFF and WebP (the colours would read as sRGB), Exif outside
    /// PNG, JPEG and WebP, and either beyond a JPEG's segments.
    pub fn fitting(&self, kind: FileKind) -> (Metadata, Vec<&'static str>) {
        let (profile_limit, exif_limit) = match kind {
            // A WebP chunk's size field is 32 bits.
            FileKind::Png | FileKind::WebP => (usize::MAX, usize::MAX),
            FileKind::Jpeg => (JPEG_MAX_ICC, JPEG_MAX_EXIF),
            FileKind::Tiff => (usize::MAX, 0),
            FileKind::Ppm | FileKind::Npy => (0, 0),
        };
        let mut dropped = Vec::new();
        let mut keep = |block: &Option<Vec<u8>>, limit: usize, name: &'static str| match block {
            Some(bytes) if bytes.len() > limit => {
                dropped.push(name);
                None
            }
            other => other.clone(),
        };
        let kept = Metadata {
            icc_profile: keep(&self.icc_profile, profile_limit, "ICC colour profile"),
            exif: keep(&self.exif, exif_limit, "Exif block"),
        };
        (kept, dropped)
    }
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
    /// Colour profile and Exif, for the output.
    pub metadata: Metadata,
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

/// Decodes PNG / JPEG / TIFF / PPM / WebP bytes to RGB f32.
fn decode_image(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let decoded = maskdcpt_imread::decode(bytes, ImageFormat::from_path(path).ok())
        .map_err(|e| CliError::file(path, format!("cannot decode image: {e}")))?;
    let metadata = Metadata { icc_profile: decoded.icc_profile, exif: decoded.exif };
    let img = decoded.pixels;
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
    Ok(Loaded { image, depth, dropped_alpha: color.has_alpha(), metadata })
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
    Ok(Loaded { image, depth: Depth::Float, dropped_alpha: false, metadata: Metadata::default() })
}

/// Writes `image` to `path` in the format of its extension. Image formats get `depth`
/// (16-bit for `U16` and `Float`) where they support it; JPEG, PPM (binary P6) and WebP
/// (lossless) are always 8-bit. What of `metadata` the format can hold is written with it
/// ([`Metadata::fitting`]); the names of what it cannot are returned.
pub fn write(path: &Path, image: &Image, depth: Depth, metadata: &Metadata) -> Result<Vec<&'static str>> {
    let kind = FileKind::from_path(path)?;
    let (kept, dropped) = metadata.fitting(kind);
    write_atomically(path, |file| {
        let mut out = BufWriter::new(file);
        let encoded = match kind {
            FileKind::Npy => write_npy(&mut out, image).map_err(|e| e.to_string()),
            FileKind::Jpeg => encode(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY), image, Depth::U8, kept),
            FileKind::Png => encode(PngEncoder::new(&mut out), image, depth, kept),
            FileKind::Tiff => encode(TiffEncoder::new(&mut out), image, depth, kept),
            FileKind::Ppm => {
                let ppm = PnmEncoder::new(&mut out).with_subtype(PnmSubtype::Pixmap(SampleEncoding::Binary));
                encode(ppm, image, Depth::U8, kept)
            }
            FileKind::WebP => encode(WebPEncoder::new_lossless(&mut out), image, Depth::U8, kept),
        };
        encoded.and_then(|()| out.flush().map_err(|e| e.to_string())).map_err(std::io::Error::other)
    })?;
    Ok(dropped)
}

/// Writes the raw values as a float32 `H × W × 3` `.npy`.
fn write_npy(out: &mut impl Write, image: &Image) -> std::io::Result<()> {
    let shape = [image.height() as u64, image.width() as u64, 3];
    let mut writer = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
    writer.extend(image.data().iter().copied())?;
    writer.finish()
}

/// Clamps to [0, 1], quantises to `depth` and encodes with `encoder`, with `metadata` (which
/// its format holds).
fn encode(
    mut encoder: impl ImageEncoder,
    image: &Image,
    depth: Depth,
    metadata: Metadata,
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
    let unsupported = |e: image::error::UnsupportedError| format!("cannot write the metadata: {e}");
    if let Some(profile) = metadata.icc_profile {
        encoder.set_icc_profile(profile).map_err(unsupported)?;
    }
    if let Some(exif) = metadata.exif {
        encoder.set_exif_metadata(exif).map_err(unsupported)?;
    }
    pixels.write_with_encoder(encoder).map_err(|e| format!("cannot encode image: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Valid encodings of a small gradient in every supported format, made by our writer, each
    /// with a colour profile and an Exif orientation (a quarter turn) where the format holds them.
    fn written_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let (w, h) = (5, 4);
        let image = Image::new(w, h, (0..w * h * 3).map(|i| i as f32 / 60.0).collect()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        [
            ("png", Depth::U8),
            ("png", Depth::U16),
            ("jpg", Depth::U8),
            ("tiff", Depth::U16),
            ("ppm", Depth::U8),
            ("webp", Depth::U8),
            ("npy", Depth::Float),
        ]
        .into_iter()
        .map(|(ext, depth)| {
            let path = dir.path().join(format!("seed.{ext}"));
            let metadata = Metadata { icc_profile: Some((0..64).collect()), exif: Some(exif(6)) };
            write(&path, &image, depth, &metadata).unwrap();
            (ext, std::fs::read(&path).unwrap())
        })
        .collect()
    }

    /// The written seeds and the lossy files of `tests/images` (progressive, CMYK and gray
    /// JPEGs, OpenCV's, lossy WebP with alpha).
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images");
        let mut lossy: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter_map(|path| match path.extension()?.to_str()? {
                "jpg" => Some(("jpg", std::fs::read(&path).unwrap())),
                "webp" => Some(("webp", std::fs::read(&path).unwrap())),
                _ => None,
            })
            .collect();
        lossy.sort();
        assert!(lossy.len() >= 7, "{} lossy files", lossy.len());
        [written_seeds(), lossy].concat()
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
        for (ext, bytes) in written_seeds() {
            let loaded = parse(ext, &bytes).unwrap_or_else(|| panic!("{ext}"));
            let turned = matches!(ext, "png" | "jpg" | "webp");
            let size = if turned { (4, 5) } else { (5, 4) };
            assert_eq!((loaded.image.width(), loaded.image.height()), size, "{ext}");
        }
    }

    /// An Exif block holding only `orientation`: a big-endian TIFF header and one IFD entry,
    /// Orientation (0x0112), SHORT, count 1.
    fn exif(orientation: u8) -> Vec<u8> {
        let mut e = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".to_vec();
        e.extend_from_slice(&[orientation, 0, 0, 0, 0, 0, 0]);
        e
    }

    /// 3 × 2 pixels, each its own colour.
    fn stored() -> image::RgbImage {
        image::RgbImage::from_fn(3, 2, |x, y| Rgb([40 * x as u8, 100 * y as u8, 7]))
    }

    /// [`stored`] as a PNG (lossless) with `metadata`.
    fn png_with(metadata: &Metadata) -> Vec<u8> {
        let (stored, mut bytes) = (stored(), vec![]);
        let mut encoder = PngEncoder::new(&mut bytes);
        if let Some(profile) = &metadata.icc_profile {
            encoder.set_icc_profile(profile.clone()).unwrap();
        }
        if let Some(exif) = &metadata.exif {
            encoder.set_exif_metadata(exif.clone()).unwrap();
        }
        let (w, h) = stored.dimensions();
        encoder.write_image(stored.as_raw(), w, h, image::ExtendedColorType::Rgb8).unwrap();
        bytes
    }

    #[test]
    fn exif_orientation_turns_the_image_upright() {
        let stored = stored();
        let png = |orientation: Option<u8>| png_with(&Metadata { icc_profile: None, exif: orientation.map(exif) });
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

    #[test]
    fn colour_profile_and_exif_reach_the_outputs_that_hold_them() {
        let profile: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let input = png_with(&Metadata { icc_profile: Some(profile.clone()), exif: Some(exif(6)) });
        let loaded = decode_image(Path::new("in.png"), &input).unwrap();
        assert_eq!(loaded.metadata, Metadata { icc_profile: Some(profile.clone()), exif: Some(exif(1)) });
        let dir = tempfile::tempdir().unwrap();
        for (ext, keeps_exif) in [("png", true), ("jpg", true), ("tiff", false), ("ppm", false), ("webp", true)] {
            let path = dir.path().join(format!("out.{ext}"));
            let dropped = write(&path, &loaded.image, loaded.depth, &loaded.metadata).unwrap();
            let again = decode_image(&path, &std::fs::read(&path).unwrap()).unwrap();
            // Upright already: not turned a second time.
            assert_eq!((again.image.width(), again.image.height()), (2, 3), "{ext}");
            let (kept, _) = loaded.metadata.fitting(FileKind::from_path(&path).unwrap());
            let profile_kept = ext != "ppm";
            assert_eq!(again.metadata.icc_profile.as_deref(), profile_kept.then_some(&profile[..]), "{ext}");
            assert_eq!(again.metadata.exif, keeps_exif.then(|| exif(1)), "{ext}");
            assert_eq!(kept, again.metadata, "{ext}");
            let named = [(!profile_kept).then_some("ICC colour profile"), (!keeps_exif).then_some("Exif block")];
            assert_eq!(dropped, named.into_iter().flatten().collect::<Vec<_>>(), "{ext}");
        }
        assert_eq!(Metadata::default().fitting(FileKind::Ppm), (Metadata::default(), vec![]));
    }

    #[test]
    fn webp_is_written_lossless() {
        let image = Image::new(7, 5, (0..7 * 5 * 3).map(|i| (i * 37 % 256) as f32 / 255.0).collect()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.webp");
        write(&path, &image, Depth::U16, &Metadata::default()).unwrap();
        let again = read(&path).unwrap();
        assert_eq!((again.depth, again.image.width(), again.image.height()), (Depth::U8, 7, 5));
        assert_eq!(again.image.data(), image.data());
    }

    #[test]
    fn a_jpeg_drops_metadata_beyond_its_segments_instead_of_writing_a_broken_file() {
        let big_exif = [exif(1), vec![0; JPEG_MAX_EXIF]].concat();
        let fits = Metadata { icc_profile: Some(vec![7; 70_000]), exif: Some(exif(1)) };
        let too_big = Metadata { icc_profile: Some(vec![7; JPEG_MAX_ICC + 1]), exif: Some(big_exif) };
        assert_eq!(fits.fitting(FileKind::Jpeg), (fits.clone(), vec![]));
        assert_eq!(too_big.fitting(FileKind::Jpeg), (Metadata::default(), vec!["ICC colour profile", "Exif block"]));
        let dir = tempfile::tempdir().unwrap();
        let image = Image::new(2, 2, vec![0.5; 12]).unwrap();
        for metadata in [fits, too_big] {
            let path = dir.path().join("out.jpg");
            write(&path, &image, Depth::U8, &metadata).unwrap();
            let again = decode_image(&path, &std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(again.metadata, metadata.fitting(FileKind::Jpeg).0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Flipped, truncated or inserted bytes in any supported format give an image or an
        /// error, never a panic.
        #[test]
        fn mutated_files_never_panic(
            seed in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            insert in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut seeds = seeds();
            let (ext, mut bytes) = seeds.swap_remove(seed.index(seeds.len()));
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
