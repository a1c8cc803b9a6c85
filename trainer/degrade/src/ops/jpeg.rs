//! JPEG compression artefacts as the reference makes them: the 8-bit image encoded as
//! OpenCV's `imencode(".jpg", img, [IMWRITE_JPEG_QUALITY, q])` encodes it (libjpeg-turbo's
//! defaults: 4:2:0, accurate integer DCT, standard Huffman tables, quality-scaled Annex K
//! tables limited to baseline values) and decoded as `imdecode` decodes it.
//!
//! The encoder is libjpeg-turbo's C code as mozjpeg ships it, run with its
//! libjpeg-turbo-compatible profile (`JCP_FASTEST`: no trellis quantisation, no progressive
//! scans, the Annex K tables). The `mozjpeg` crate's own wrapper sets the quality without the
//! baseline limit, which changes the tables below quality 24, hence the calls here.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::ImageFormat;
use image::error::{EncodingError, ImageFormatHint};
use mozjpeg_sys::{
    J_COLOR_SPACE, J_INT_PARAM, JINT_COMPRESS_PROFILE_VALUE, JPEG_LIB_VERSION, JSAMPROW, jpeg_c_set_int_param,
    jpeg_common_struct, jpeg_compress_struct, jpeg_error_mgr,
};

use crate::{Error, Rgb};

/// Round-trips `img` through a JPEG of `quality` encoded and decoded as OpenCV does.
pub(super) fn round_trip(img: &Rgb, quality: u8) -> Result<Rgb, Error> {
    let (w, h) = img.dims_u32("JPEG")?;
    let encode_error = |message: String| Error::Encode {
        format: "JPEG",
        width: img.width,
        height: img.height,
        source: image::ImageError::Encoding(EncodingError::new(ImageFormatHint::Exact(ImageFormat::Jpeg), message)),
    };
    let bytes = encode(&img.to_rgb8(), w, h, quality).map_err(encode_error)?;
    Rgb::decode(&bytes).map_err(|e| encode_error(format!("cannot decode the encoded file: {e}")))
}

/// Encodes interleaved RGB8 `pixels` of `width × height` at `quality` (1–100) as OpenCV does.
/// libjpeg's fatal errors (a side over 65500 pixels, say) unwind to here and become errors.
fn encode(pixels: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, String> {
    assert_eq!(pixels.len() as u64, u64::from(width) * u64::from(height) * 3, "RGB8 pixel count");
    let mut err = Box::new(unsafe { std::mem::zeroed::<jpeg_error_mgr>() });
    // SAFETY: `err` is a valid, boxed error manager; `jpeg_std_error` fills its methods.
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(unwind_error_exit);
    err.emit_message = Some(ignore_message);
    let mut cinfo = Box::new(unsafe { std::mem::zeroed::<jpeg_compress_struct>() });
    cinfo.common.err = &mut *err;
    let mut out: *mut u8 = std::ptr::null_mut();
    let mut out_len: std::ffi::c_ulong = 0;
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: libjpeg's documented sequence on a zeroed struct with an error manager; the
        // rows point into `pixels`, which outlives the calls; `out`/`out_len` stay valid for
        // `jpeg_mem_dest`, which grows the buffer with malloc.
        unsafe {
            mozjpeg_sys::jpeg_CreateCompress(&mut *cinfo, JPEG_LIB_VERSION, size_of::<jpeg_compress_struct>());
            mozjpeg_sys::jpeg_mem_dest(&mut cinfo, &mut out, &mut out_len);
            cinfo.image_width = width;
            cinfo.image_height = height;
            cinfo.input_components = 3;
            cinfo.in_color_space = J_COLOR_SPACE::JCS_RGB;
            jpeg_c_set_int_param(
                &mut cinfo,
                J_INT_PARAM::JINT_COMPRESS_PROFILE,
                JINT_COMPRESS_PROFILE_VALUE::JCP_FASTEST as std::ffi::c_int,
            );
            mozjpeg_sys::jpeg_set_defaults(&mut cinfo);
            mozjpeg_sys::jpeg_set_quality(&mut cinfo, std::ffi::c_int::from(quality), 1);
            mozjpeg_sys::jpeg_start_compress(&mut cinfo, 1);
            for row in pixels.chunks_exact(width as usize * 3) {
                let rows: [JSAMPROW; 1] = [row.as_ptr()];
                mozjpeg_sys::jpeg_write_scanlines(&mut cinfo, rows.as_ptr(), 1);
            }
            mozjpeg_sys::jpeg_finish_compress(&mut cinfo);
        }
    }));
    // SAFETY: after a finished compression `out` is libjpeg's malloc'd buffer of `out_len`
    // bytes, which destroying the compressor does not free: it is copied and freed here. After
    // a fatal error it may be stale (the buffer's moves are reported only when finished), so
    // it is left alone: the memory of a failed encode leaks (a side over 65500 pixels, say,
    // fails before any data is written).
    unsafe {
        let bytes = encoded.map(|()| {
            let bytes = std::slice::from_raw_parts(out, out_len as usize).to_vec();
            libc::free(out.cast());
            bytes
        });
        mozjpeg_sys::jpeg_destroy_compress(&mut cinfo);
        bytes.map_err(|unwound| unwound.downcast::<String>().map_or_else(|_| "libjpeg failed".to_owned(), |m| *m))
    }
}

/// libjpeg's fatal-error hook: unwinds to [`encode`] with the message (the library must not
/// return from it).
extern "C-unwind" fn unwind_error_exit(cinfo: &mut jpeg_common_struct) {
    // More than JMSG_LENGTH_MAX (200), what `format_message` may write.
    let mut buffer = [0u8; 256];
    // SAFETY: `err` is the manager `encode` installed. Its `format_message` writes a
    // NUL-terminated message of at most JMSG_LENGTH_MAX bytes through its pointer argument
    // (the binding types it as `&[u8; 80]`), here into `buffer`.
    let message = unsafe {
        let err = &*cinfo.err;
        match err.format_message {
            Some(format) => {
                type Bound = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]);
                type Format = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8);
                let format = std::mem::transmute::<Bound, Format>(format);
                format(cinfo, buffer.as_mut_ptr());
                String::from_utf8_lossy(buffer.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
            }
            None => format!("libjpeg error {}", err.msg_code),
        }
    };
    std::panic::resume_unwind(Box::new(message));
}

/// libjpeg's warnings and trace messages: not printed (OpenCV ignores them too).
extern "C-unwind" fn ignore_message(_cinfo: &mut jpeg_common_struct, _level: std::ffi::c_int) {}
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `tests/images/opencv_encode_*` (scripts/gen_image_fixtures.py): OpenCV's files of one
    /// input at several qualities.
    #[test]
    fn files_and_artefacts_are_opencvs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images");
        let input = Rgb::load(&dir.join("opencv_encode_input.png")).unwrap();
        let (w, h) = input.dims_u32("JPEG").unwrap();
        for quality in [10, 50, 95] {
            let opencv = std::fs::read(dir.join(format!("opencv_encode_q{quality}.jpg"))).unwrap();
            assert!(encode(&input.to_rgb8(), w, h, quality).unwrap() == opencv, "quality {quality}");
            assert_eq!(round_trip(&input, quality).unwrap(), Rgb::decode(&opencv).unwrap(), "quality {quality}");
        }
    }

    #[test]
    fn libjpeg_errors_are_errors() {
        // JPEG sides stop at 65500 pixels.
        let err = encode(&vec![0; 65501 * 3], 65501, 1, 50).unwrap_err();
        assert!(err.contains("65500"), "{err}");
    }
}
