//! JPEG pixels as libjpeg-turbo decodes them: OpenCV's `imread` (the reference's loader) and
//! Pillow decode with it, and the `image` crate's own decoder differs from it by up to a few
//! levels in a quarter of the samples of a 4:2:0 file. The decoder here is mozjpeg's, which is
//! libjpeg-turbo's (accurate integer IDCT, fancy chroma upsampling, the same colour
//! conversion), built from source without SIMD; libjpeg-turbo's SIMD paths give the same bits.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::RgbImage;
use mozjpeg::{ColorSpace, Decompress};

/// The most bytes of pixels a decode may allocate (the `image` crate's default limit, which
/// the other formats get).
const MAX_PIXEL_BYTES: u64 = 512 * 1024 * 1024;

/// The RGB pixels of a JPEG as OpenCV's `imread` gives them: libjpeg's RGB for YCbCr, RGB and
/// grayscale files, and for CMYK and YCCK ones libjpeg's CMYK turned into RGB by OpenCV's rule
/// ([`cmyk_to_rgb`]). A corrupt file is an error, never a panic (libjpeg's fatal errors unwind
/// to here).
pub fn decode_rgb8(bytes: &[u8]) -> Result<RgbImage, String> {
    let decoded = catch_unwind(AssertUnwindSafe(|| -> Result<RgbImage, String> {
        let decoder = Decompress::new_mem(bytes).map_err(|e| e.to_string())?;
        let cmyk = matches!(decoder.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
        let (width, height) = decoder.size();
        let too_large = || format!("{width}×{height} pixels are too many to decode (over 512 MiB)");
        let (w, h) = (u32::try_from(width).map_err(|_| too_large())?, u32::try_from(height).map_err(|_| too_large())?);
        if u64::from(w) * u64::from(h) * if cmyk { 4 } else { 3 } > MAX_PIXEL_BYTES {
            return Err(too_large());
        }
        let mut started = if cmyk { decoder.to_colorspace(ColorSpace::JCS_CMYK) } else { decoder.rgb() }
            .map_err(|e| e.to_string())?;
        let samples = started.read_scanlines::<u8>().map_err(|e| e.to_string())?;
        started.finish().map_err(|e| e.to_string())?;
        let pixels = if cmyk { samples.chunks_exact(4).flat_map(cmyk_to_rgb).collect() } else { samples };
        // libjpeg fills the rows of a truncated file in; a short buffer would be a bug.
        RgbImage::from_raw(w, h, pixels).ok_or_else(|| "libjpeg returned fewer rows than the image has".to_owned())
    }));
    decoded.unwrap_or_else(|unwound| {
        let message =
            unwound.downcast_ref::<String>().cloned().or_else(|| unwound.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(message.unwrap_or_else(|| "libjpeg failed".to_owned()))
    })
}

/// OpenCV's CMYK → RGB of libjpeg's samples (`icvCvt_CMYK2BGR_8u_C4C3R`): each of C, M and Y
/// becomes `k − (((255 − v) · k) >> 8)`, which reads the inverted samples Adobe's files store.
fn cmyk_to_rgb(cmyk: &[u8]) -> [u8; 3] {
    let k = u32::from(cmyk[3]);
    // At most k: fits a byte.
    let channel = |v: u8| (k - (((255 - u32::from(v)) * k) >> 8)) as u8;
    [channel(cmyk[0]), channel(cmyk[1]), channel(cmyk[2])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_follows_opencv() {
        // Adobe-inverted samples: 255 is no ink. White, black, and a mid value.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[100, 0, 255, 200]), [79, 1, 200]);
    }

    #[test]
    fn corrupt_files_are_errors() {
        for bytes in [&b""[..], b"\xff\xd8\xff\xe0 not a jpeg", b"\xff\xd8\xff\xdb\x00\x43\x00"] {
            assert!(decode_rgb8(bytes).is_err(), "{bytes:?}");
        }
    }
}
