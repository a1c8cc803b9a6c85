//! Pixel formats of caller-owned buffers (camera and display layouts) converted to and from
//! [`Image`]: packed 8-bit RGB/BGR with or without alpha, 16-bit RGB, interleaved and planar
//! f32, and NV12.
//!
//! Buffers are byte slices with a row stride per plane, so any alignment works; multi-byte
//! samples are native-endian. Integer samples map to [0, 1] by dividing by their maximum, and
//! back by clamping to [0, 1], scaling and rounding: the rule of the CLI's image files, so both
//! paths give the same bytes. f32 outputs hold the raw network output (not clamped).

use crate::error::{Error, Result};
use crate::image::{Image, check_size};
use crate::spec::IMAGE_CHANNELS;

/// Largest plane count of any format (planar f32).
pub const MAX_PLANES: usize = 3;

/// The 8-bit sample `v` as a value in [0, 1].
pub fn unorm8_to_f32(v: u8) -> f32 {
    f32::from(v) / 255.0
}

/// `v` clamped to [0, 1] and rounded to an 8-bit sample (NaN gives 0).
pub fn f32_to_unorm8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The 16-bit sample `v` as a value in [0, 1].
pub fn unorm16_to_f32(v: u16) -> f32 {
    f32::from(v) / 65535.0
}

/// `v` clamped to [0, 1] and rounded to a 16-bit sample (NaN gives 0).
pub fn f32_to_unorm16(v: f32) -> u16 {
    (v.clamp(0.0, 1.0) * 65535.0).round() as u16
}

/// Memory layout of the pixels of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One plane, 3 bytes per pixel: R, G, B.
    Rgb8,
    /// One plane, 3 bytes per pixel: B, G, R.
    Bgr8,
    /// One plane, 4 bytes per pixel: R, G, B, A.
    Rgba8,
    /// One plane, 4 bytes per pixel: B, G, R, A.
    Bgra8,
    /// One plane, three native-endian `u16` per pixel: R, G, B.
    Rgb16,
    /// One plane, three native-endian `f32` per pixel: R, G, B.
    RgbF32,
    /// Three planes (R, G, B), one native-endian `f32` per pixel each.
    RgbF32Planar,
    /// Two planes: 8-bit luma, then interleaved Cb, Cr at half resolution in both directions.
    /// Width and height must be even.
    Nv12,
}

/// How a packed pixel is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    /// Element type of every sample.
    pub sample: Sample,
    /// Samples per pixel.
    pub channels: usize,
    /// Sample index of R, G and B within a pixel.
    pub rgb: [usize; 3],
    /// Sample index of alpha, if any.
    pub alpha: Option<usize>,
}

/// Element type of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// 8-bit unsigned, 0–255 meaning [0, 1].
    U8,
    /// 16-bit unsigned (native endian), 0–65535 meaning [0, 1].
    U16,
    /// 32-bit float (native endian), raw values.
    F32,
}

impl Sample {
    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            Sample::U8 => 1,
            Sample::U16 => 2,
            Sample::F32 => 4,
        }
    }

    /// Sample `i` of `bytes` as a value (integers scaled to [0, 1]).
    fn read(self, bytes: &[u8], i: usize) -> f32 {
        match self {
            Sample::U8 => unorm8_to_f32(bytes[i]),
            Sample::U16 => unorm16_to_f32(u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]])),
            Sample::F32 => f32::from_ne_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]),
        }
    }

    /// Stores `v` as sample `i` of `bytes` (integers clamped and rounded).
    fn write(self, bytes: &mut [u8], i: usize, v: f32) {
        match self {
            Sample::U8 => bytes[i] = f32_to_unorm8(v),
            Sample::U16 => bytes[2 * i..2 * i + 2].copy_from_slice(&f32_to_unorm16(v).to_ne_bytes()),
            Sample::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes()),
        }
    }
}

impl PixelFormat {
    /// Every format.
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::Rgb8,
        PixelFormat::Bgr8,
        PixelFormat::Rgba8,
        PixelFormat::Bgra8,
        PixelFormat::Rgb16,
        PixelFormat::RgbF32,
        PixelFormat::RgbF32Planar,
        PixelFormat::Nv12,
    ];

    /// Short stable name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb8 => "RGB8",
            PixelFormat::Bgr8 => "BGR8",
            PixelFormat::Rgba8 => "RGBA8",
            PixelFormat::Bgra8 => "BGRA8",
            PixelFormat::Rgb16 => "RGB16",
            PixelFormat::RgbF32 => "RGB_F32",
            PixelFormat::RgbF32Planar => "RGB_F32_PLANAR",
            PixelFormat::Nv12 => "NV12",
        }
    }

    /// Whether pixels carry an alpha sample.
    pub fn has_alpha(self) -> bool {
        self.packed().is_some_and(|p| p.alpha.is_some())
    }

    /// Number of planes a frame of this format has.
    pub fn plane_count(self) -> usize {
        match self {
            PixelFormat::RgbF32Planar => 3,
            PixelFormat::Nv12 => 2,
            _ => 1,
        }
    }

    /// The layout of a single-plane interleaved format (`None` for planar f32 and NV12).
    pub fn packed(self) -> Option<Packed> {
        let (sample, channels, rgb, alpha) = match self {
            PixelFormat::Rgb8 => (Sample::U8, 3, [0, 1, 2], None),
            PixelFormat::Bgr8 => (Sample::U8, 3, [2, 1, 0], None),
            PixelFormat::Rgba8 => (Sample::U8, 4, [0, 1, 2], Some(3)),
            PixelFormat::Bgra8 => (Sample::U8, 4, [2, 1, 0], Some(3)),
            PixelFormat::Rgb16 => (Sample::U16, 3, [0, 1, 2], None),
            PixelFormat::RgbF32 => (Sample::F32, 3, [0, 1, 2], None),
            PixelFormat::RgbF32Planar | PixelFormat::Nv12 => return None,
        };
        Some(Packed { sample, channels, rgb, alpha })
    }
}

/// The YCbCr matrix and range of NV12 frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    /// BT.601, luma in [16, 235], chroma in [16, 240] (most cameras and video).
    #[default]
    Bt601Limited,
    /// BT.601, all codes used (JPEG / JFIF).
    Bt601Full,
    /// BT.709, luma in [16, 235], chroma in [16, 240] (HD video).
    Bt709Limited,
}

impl YuvMatrix {
    /// Luma weights of red and blue.
    pub fn kr_kb(self) -> (f32, f32) {
        match self {
            YuvMatrix::Bt601Limited | YuvMatrix::Bt601Full => (0.299, 0.114),
            YuvMatrix::Bt709Limited => (0.2126, 0.0722),
        }
    }

    /// Luma offset, luma scale and chroma scale of the code values.
    pub fn range(self) -> (f32, f32, f32) {
        match self {
            YuvMatrix::Bt601Full => (0.0, 255.0, 255.0),
            YuvMatrix::Bt601Limited | YuvMatrix::Bt709Limited => (16.0, 219.0, 224.0),
        }
    }

    /// RGB in [0, 1] of the codes `(y, cb, cr)`.
    fn to_rgb(self, y: u8, cb: u8, cr: u8) -> [f32; 3] {
        let (kr, kb) = self.kr_kb();
        let (offset, luma_scale, chroma_scale) = self.range();
        let luma = (f32::from(y) - offset) / luma_scale;
        let u = (f32::from(cb) - 128.0) / chroma_scale;
        let v = (f32::from(cr) - 128.0) / chroma_scale;
        let r = luma + 2.0 * (1.0 - kr) * v;
        let b = luma + 2.0 * (1.0 - kb) * u;
        let g = (luma - kr * r - kb * b) / (1.0 - kr - kb);
        [r, g, b].map(|c| c.clamp(0.0, 1.0))
    }

    /// Luma code of the RGB value `rgb` (clamped to [0, 1]).
    fn luma_code(self, rgb: [f32; 3]) -> u8 {
        let (offset, luma_scale, _) = self.range();
        code(offset + luma_scale * self.luma(rgb))
    }

    /// Chroma codes `(cb, cr)` of the RGB value `rgb` (clamped to [0, 1]).
    fn chroma_codes(self, rgb: [f32; 3]) -> (u8, u8) {
        let (kr, kb) = self.kr_kb();
        let (_, _, chroma_scale) = self.range();
        let luma = self.luma(rgb);
        let [r, _, b] = rgb.map(|c| c.clamp(0.0, 1.0));
        let u = (b - luma) / (2.0 * (1.0 - kb));
        let v = (r - luma) / (2.0 * (1.0 - kr));
        (code(128.0 + chroma_scale * u), code(128.0 + chroma_scale * v))
    }

    /// Luma in [0, 1] of `rgb` clamped to [0, 1].
    fn luma(self, rgb: [f32; 3]) -> f32 {
        let (kr, kb) = self.kr_kb();
        let [r, g, b] = rgb.map(|c| c.clamp(0.0, 1.0));
        kr * r + (1.0 - kr - kb) * g + kb * b
    }
}

/// `v` rounded and clamped to an 8-bit code (NaN gives 0).
fn code(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The size of one plane: bytes of pixel data per row and number of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneShape {
    /// Bytes of pixel data in one row (the stride may be larger).
    pub row_bytes: usize,
    /// Number of rows.
    pub rows: usize,
}

impl PlaneShape {
    /// Bytes from the first to the last pixel byte of plane number `plane` when its rows are
    /// `stride` bytes apart: `stride × (rows − 1) + row_bytes`. Errors if the stride is
    /// smaller than a row or the span cannot be addressed.
    pub fn span(&self, plane: usize, stride: usize) -> Result<usize> {
        if stride < self.row_bytes {
            return Err(Error::InvalidArgument(format!(
                "plane {plane}: row stride {stride} bytes is smaller than a row of pixels ({} bytes)",
                self.row_bytes
            )));
        }
        stride
            .checked_mul(self.rows - 1)
            .and_then(|n| n.checked_add(self.row_bytes))
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "plane {plane}: {} rows of stride {stride} bytes are too large to address",
                    self.rows
                ))
            })
    }
}

/// What a frame is: pixel format, size and, for NV12, the YCbCr matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDesc {
    /// Memory layout of the pixels.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// YCbCr matrix and range (NV12 only; ignored by RGB formats).
    pub yuv: YuvMatrix,
}

impl FrameDesc {
    /// The shape of every plane. Errors on an empty frame, a size that overflows, or odd NV12
    /// sides.
    pub fn plane_shapes(&self) -> Result<Vec<PlaneShape>> {
        let (w, h) = (self.width, self.height);
        check_size(w, h)?;
        let too_large = || Error::InvalidImage(format!("{w}×{h} {} is too large", self.format.name()));
        w.checked_mul(h).and_then(|n| n.checked_mul(IMAGE_CHANNELS * 4)).ok_or_else(too_large)?;
        let shapes = match self.format.packed() {
            Some(p) => vec![PlaneShape { row_bytes: w * p.channels * p.sample.size(), rows: h }],
            None if self.format == PixelFormat::RgbF32Planar => vec![PlaneShape { row_bytes: w * 4, rows: h }; 3],
            None => {
                if w % 2 != 0 || h % 2 != 0 {
                    return Err(Error::InvalidImage(format!("NV12 needs an even width and height, got {w}×{h}")));
                }
                vec![PlaneShape { row_bytes: w, rows: h }, PlaneShape { row_bytes: w, rows: h / 2 }]
            }
        };
        Ok(shapes)
    }

    /// The byte span of every plane for the given row strides (see [`PlaneShape::span`]).
    pub fn plane_spans(&self, strides: &[usize]) -> Result<Vec<usize>> {
        let shapes = self.plane_shapes()?;
        if strides.len() != shapes.len() {
            return Err(Error::InvalidArgument(format!(
                "{} has {} plane(s), got {}",
                self.format.name(),
                shapes.len(),
                strides.len()
            )));
        }
        shapes.iter().zip(strides).enumerate().map(|(i, (shape, &stride))| shape.span(i, stride)).collect()
    }

    /// Checks that every plane holds at least its span.
    fn check_planes(&self, planes: &[(usize, usize)]) -> Result<()> {
        let strides: Vec<usize> = planes.iter().map(|&(_, stride)| stride).collect();
        for (i, (span, &(len, _))) in self.plane_spans(&strides)?.into_iter().zip(planes).enumerate() {
            if len < span {
                return Err(Error::InvalidArgument(format!("plane {i} holds {len} bytes, its pixels span {span}")));
            }
        }
        Ok(())
    }
}

/// A frame in GPU memory (for [`Engine::restore_device`](crate::backend::Engine::restore_device)):
/// what it is and, per plane, its device address and row stride in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFrame {
    /// Format and size.
    pub desc: FrameDesc,
    /// `(device address, row stride)` of each plane, as many as the format has.
    pub planes: Vec<(u64, usize)>,
}

/// A read-only plane: its bytes and the distance between row starts.
#[derive(Debug, Clone, Copy)]
pub struct PlaneRef<'a> {
    /// The plane's bytes, at least its span long.
    pub data: &'a [u8],
    /// Bytes from one row start to the next.
    pub stride: usize,
}

/// A writable plane: its bytes and the distance between row starts.
#[derive(Debug)]
pub struct PlaneMut<'a> {
    /// The plane's bytes, at least its span long. Bytes between rows are left untouched.
    pub data: &'a mut [u8],
    /// Bytes from one row start to the next.
    pub stride: usize,
}

/// A frame converted to an [`Image`], with its alpha channel if it had one.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The RGB values.
    pub image: Image,
    /// Row-major 8-bit alpha of every pixel, for formats that carry it.
    pub alpha: Option<Vec<u8>>,
}

/// Row `y` (`row_bytes` long) of a plane.
fn row<'a>(plane: &PlaneRef<'a>, y: usize, row_bytes: usize) -> &'a [u8] {
    &plane.data[y * plane.stride..y * plane.stride + row_bytes]
}

/// Row `y` (`row_bytes` long) of a writable plane.
fn row_mut<'p>(plane: &'p mut PlaneMut, y: usize, row_bytes: usize) -> &'p mut [u8] {
    &mut plane.data[y * plane.stride..y * plane.stride + row_bytes]
}

/// Converts the frame `desc` held in `planes` to RGB values.
pub fn decode(desc: &FrameDesc, planes: &[PlaneRef]) -> Result<Decoded> {
    desc.check_planes(&planes.iter().map(|p| (p.data.len(), p.stride)).collect::<Vec<_>>())?;
    let (w, h) = (desc.width, desc.height);
    let mut data = Vec::new();
    data.try_reserve_exact(w * h * IMAGE_CHANNELS)
        .map_err(|_| Error::InvalidImage(format!("{w}×{h} is too large: its RGB values cannot be allocated")))?;
    let mut alpha = None;
    match desc.format.packed() {
        Some(p) => {
            let row_bytes = w * p.channels * p.sample.size();
            for y in 0..h {
                let bytes = row(&planes[0], y, row_bytes);
                for x in 0..w {
                    data.extend(p.rgb.map(|c| p.sample.read(bytes, x * p.channels + c)));
                }
            }
            if let Some(a) = p.alpha {
                let mut values = Vec::with_capacity(w * h);
                for y in 0..h {
                    values.extend(row(&planes[0], y, row_bytes).chunks_exact(p.channels).map(|px| px[a]));
                }
                alpha = Some(values);
            }
        }
        None if desc.format == PixelFormat::RgbF32Planar => {
            for y in 0..h {
                let rows = [0, 1, 2].map(|c| row(&planes[c], y, w * 4));
                for x in 0..w {
                    data.extend(rows.map(|r| Sample::F32.read(r, x)));
                }
            }
        }
        None => {
            for y in 0..h {
                let (luma, chroma) = (row(&planes[0], y, w), row(&planes[1], y / 2, w));
                for x in 0..w {
                    data.extend(desc.yuv.to_rgb(luma[x], chroma[x & !1], chroma[x | 1]));
                }
            }
        }
    }
    Ok(Decoded { image: Image::new(w, h, data)?, alpha })
}

/// Writes `image` into the frame `desc` held in `planes`. Formats with alpha take it from
/// `alpha` (one byte per pixel, row-major) or write 255. Only pixel bytes are written.
pub fn encode(desc: &FrameDesc, image: &Image, alpha: Option<&[u8]>, planes: &mut [PlaneMut]) -> Result<()> {
    let (w, h) = (desc.width, desc.height);
    if (image.width(), image.height()) != (w, h) {
        return Err(Error::InvalidArgument(format!(
            "the output frame is {w}×{h} but the image is {}×{}",
            image.width(),
            image.height()
        )));
    }
    desc.check_planes(&planes.iter().map(|p| (p.data.len(), p.stride)).collect::<Vec<_>>())?;
    let alpha = alpha.filter(|a| a.len() == w * h);
    let rgb = |x: usize, y: usize| -> [f32; 3] {
        let i = (y * w + x) * IMAGE_CHANNELS;
        [image.data()[i], image.data()[i + 1], image.data()[i + 2]]
    };
    match desc.format.packed() {
        Some(p) => {
            let row_bytes = w * p.channels * p.sample.size();
            for y in 0..h {
                let bytes = row_mut(&mut planes[0], y, row_bytes);
                for x in 0..w {
                    for (&c, v) in p.rgb.iter().zip(rgb(x, y)) {
                        p.sample.write(bytes, x * p.channels + c, v);
                    }
                    if let Some(a) = p.alpha {
                        bytes[x * p.channels + a] = alpha.map_or(u8::MAX, |values| values[y * w + x]);
                    }
                }
            }
        }
        None if desc.format == PixelFormat::RgbF32Planar => {
            for (c, plane) in planes.iter_mut().enumerate() {
                for y in 0..h {
                    let bytes = row_mut(plane, y, w * 4);
                    for x in 0..w {
                        Sample::F32.write(bytes, x, rgb(x, y)[c]);
                    }
                }
            }
        }
        None => {
            let [luma, chroma] = planes else { unreachable!("NV12 has two planes (checked above)") };
            for y in 0..h {
                let bytes = row_mut(luma, y, w);
                for (x, b) in bytes.iter_mut().enumerate() {
                    *b = desc.yuv.luma_code(rgb(x, y));
                }
            }
            for y in (0..h).step_by(2) {
                let bytes = row_mut(chroma, y / 2, w);
                for x in (0..w).step_by(2) {
                    let block = [rgb(x, y), rgb(x + 1, y), rgb(x, y + 1), rgb(x + 1, y + 1)];
                    let mean = [0, 1, 2].map(|c| block.iter().map(|p| p[c].clamp(0.0, 1.0)).sum::<f32>() / 4.0);
                    (bytes[x], bytes[x + 1]) = desc.yuv.chroma_codes(mean);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(format: PixelFormat, width: usize, height: usize) -> FrameDesc {
        FrameDesc { format, width, height, yuv: YuvMatrix::default() }
    }

    /// Planes of `desc` with `pad` spare bytes per row, filled by `fill(plane, byte index)`.
    fn buffers(desc: &FrameDesc, pad: usize, fill: impl Fn(usize, usize) -> u8) -> Vec<(Vec<u8>, usize)> {
        desc.plane_shapes()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(p, s)| {
                let stride = s.row_bytes + pad;
                ((0..stride * s.rows).map(|i| fill(p, i)).collect(), stride)
            })
            .collect()
    }

    fn decode_buffers(desc: &FrameDesc, bufs: &[(Vec<u8>, usize)]) -> Result<Decoded> {
        let planes: Vec<PlaneRef> = bufs.iter().map(|(d, s)| PlaneRef { data: d, stride: *s }).collect();
        decode(desc, &planes)
    }

    fn encode_buffers(desc: &FrameDesc, d: &Decoded, bufs: &mut [(Vec<u8>, usize)]) -> Result<()> {
        let mut planes: Vec<PlaneMut> = bufs.iter_mut().map(|(d, s)| PlaneMut { data: d, stride: *s }).collect();
        encode(desc, &d.image, d.alpha.as_deref(), &mut planes)
    }

    #[test]
    fn quantisation_matches_the_cli_rule() {
        assert_eq!(unorm8_to_f32(255), 1.0);
        assert_eq!(f32_to_unorm8(0.5), 128);
        assert_eq!(f32_to_unorm8(-3.0), 0);
        assert_eq!(f32_to_unorm8(f32::NAN), 0);
        assert_eq!(f32_to_unorm16(2.0), u16::MAX);
        assert!((0..=255u8).all(|v| f32_to_unorm8(unorm8_to_f32(v)) == v));
        assert!((0..=u16::MAX).step_by(7).all(|v| f32_to_unorm16(unorm16_to_f32(v)) == v));
    }

    #[test]
    fn integer_and_float_formats_round_trip_and_leave_row_padding_alone() {
        for format in PixelFormat::ALL.into_iter().filter(|&f| f != PixelFormat::Nv12) {
            let d = desc(format, 5, 3);
            let float = matches!(format, PixelFormat::RgbF32 | PixelFormat::RgbF32Planar);
            // Rows stay 4-byte aligned; a high byte of 0x3c keeps f32 samples finite.
            let input = buffers(&d, 4, |p, i| if float && i % 4 == 3 { 0x3c } else { (i * 7 + p) as u8 });
            let decoded = decode_buffers(&d, &input).unwrap();
            assert_eq!(decoded.alpha.is_some(), format.has_alpha(), "{format:?}");
            let mut output = buffers(&d, 4, |_, _| 0xee);
            encode_buffers(&d, &decoded, &mut output).unwrap();
            for ((got, stride), (want, _)) in output.iter().zip(&input) {
                let row_bytes = d.plane_shapes().unwrap()[0].row_bytes;
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    let expected = if i % stride < row_bytes { *w } else { 0xee };
                    assert_eq!(*g, expected, "{format:?} byte {i}");
                }
            }
        }
    }

    #[test]
    fn channel_orders_and_alpha_pass_through() {
        let rgba = desc(PixelFormat::Rgba8, 1, 1);
        let decoded = decode_buffers(&rgba, &[(vec![10, 20, 30, 40], 4)]).unwrap();
        assert_eq!(decoded.image.data(), &[10.0 / 255.0, 20.0 / 255.0, 30.0 / 255.0]);
        assert_eq!(decoded.alpha.as_deref(), Some(&[40u8][..]));
        let mut bgra = vec![(vec![0; 4], 4)];
        encode_buffers(&desc(PixelFormat::Bgra8, 1, 1), &decoded, &mut bgra).unwrap();
        assert_eq!(bgra[0].0, [30, 20, 10, 40]);
        let from_rgb = decode_buffers(&desc(PixelFormat::Bgr8, 1, 1), &[(vec![30, 20, 10], 3)]).unwrap();
        assert_eq!(from_rgb.image, decoded.image);
        encode_buffers(&desc(PixelFormat::Rgba8, 1, 1), &from_rgb, &mut bgra).unwrap();
        assert_eq!(bgra[0].0, [10, 20, 30, 255]);
    }

    #[test]
    fn float_outputs_keep_raw_values_and_integer_outputs_clamp() {
        let image = Image::new(1, 1, vec![-0.25, 0.5, 1.75]).unwrap();
        let decoded = Decoded { image, alpha: None };
        let mut f = vec![(vec![0; 12], 12)];
        encode_buffers(&desc(PixelFormat::RgbF32, 1, 1), &decoded, &mut f).unwrap();
        assert_eq!(decode_buffers(&desc(PixelFormat::RgbF32, 1, 1), &f).unwrap(), decoded);
        let mut b = vec![(vec![0; 6], 6)];
        encode_buffers(&desc(PixelFormat::Rgb16, 1, 1), &decoded, &mut b).unwrap();
        let expected: Vec<u8> = [0u16, 32768, 65535].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(b[0].0, expected);
    }

    #[test]
    fn nv12_grey_levels_round_trip_in_every_matrix() {
        for yuv in [YuvMatrix::Bt601Limited, YuvMatrix::Bt601Full, YuvMatrix::Bt709Limited] {
            let d = FrameDesc { yuv, ..desc(PixelFormat::Nv12, 4, 2) };
            let (lo, hi) = if yuv == YuvMatrix::Bt601Full { (0u8, 255u8) } else { (16, 235) };
            for level in lo..=hi {
                let input = buffers(&d, 2, |p, _| if p == 0 { level } else { 128 });
                let decoded = decode_buffers(&d, &input).unwrap();
                let grey = f32::from(level - lo) / f32::from(hi - lo);
                assert!(decoded.image.data().iter().all(|&v| (v - grey).abs() < 1e-5), "{yuv:?} {level}");
                let mut output = buffers(&d, 2, |_, _| 0);
                encode_buffers(&d, &decoded, &mut output).unwrap();
                assert_eq!(output[0].0[..4], [level; 4]);
                assert_eq!(output[1].0[..4], [128; 4]);
            }
        }
    }

    #[test]
    fn nv12_primaries_use_the_standard_codes() {
        // (matrix, RGB, expected Y, Cb, Cr) from the BT.601 / BT.709 tables.
        let cases = [
            (YuvMatrix::Bt601Limited, [1.0, 0.0, 0.0], (81, 90, 240)),
            (YuvMatrix::Bt601Limited, [0.0, 0.0, 1.0], (41, 240, 110)),
            (YuvMatrix::Bt709Limited, [1.0, 0.0, 0.0], (63, 102, 240)),
            (YuvMatrix::Bt601Full, [0.0, 1.0, 0.0], (150, 44, 21)),
        ];
        for (yuv, rgb, (y, cb, cr)) in cases {
            let image = Image::new(2, 2, rgb.repeat(4)).unwrap();
            let d = FrameDesc { yuv, ..desc(PixelFormat::Nv12, 2, 2) };
            let mut out = buffers(&d, 0, |_, _| 0);
            encode_buffers(&d, &Decoded { image, alpha: None }, &mut out).unwrap();
            assert_eq!((out[0].0[0], out[1].0[0], out[1].0[1]), (y, cb, cr), "{yuv:?} {rgb:?}");
            let back = decode_buffers(&d, &out).unwrap();
            assert!(back.image.data()[..3].iter().zip(rgb).all(|(a, b)| (a - b).abs() < 0.01), "{yuv:?} {rgb:?}");
        }
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let err = |r: Result<Vec<usize>>| r.unwrap_err().to_string();
        assert!(err(desc(PixelFormat::Rgb8, 0, 4).plane_spans(&[0])).contains("at least one pixel"));
        assert!(err(desc(PixelFormat::Nv12, 3, 2).plane_spans(&[3, 3])).contains("even"));
        assert!(err(desc(PixelFormat::Rgb8, 4, 4).plane_spans(&[11])).contains("smaller than a row"));
        assert!(err(desc(PixelFormat::Rgb8, 4, 4).plane_spans(&[12, 12])).contains("1 plane"));
        assert!(err(desc(PixelFormat::Rgb8, usize::MAX, 2).plane_spans(&[usize::MAX])).contains("at most 1048576"));
        assert!(err(desc(PixelFormat::Rgb8, 1 << 31, 1 << 31).plane_spans(&[3 << 31])).contains("at most 1048576"));
        assert!(err(desc(PixelFormat::Rgb8, 4, 1 << 20).plane_spans(&[usize::MAX / 4])).contains("too large"));
        assert_eq!(desc(PixelFormat::Nv12, 4, 2).plane_spans(&[8, 6]).unwrap(), [12, 4]);
        let short = decode_buffers(&desc(PixelFormat::Rgb8, 2, 2), &[(vec![0; 11], 6)]);
        assert!(short.unwrap_err().to_string().contains("holds 11 bytes"));
        let image = Image::new(1, 1, vec![0.0; 3]).unwrap();
        let mut out = vec![(vec![0; 12], 6)];
        let mismatch = encode_buffers(&desc(PixelFormat::Rgb8, 2, 2), &Decoded { image, alpha: None }, &mut out);
        assert!(mismatch.unwrap_err().to_string().contains("is 1×1"));
        for format in PixelFormat::ALL {
            assert_eq!(desc(format, 2, 2).plane_shapes().unwrap().len(), format.plane_count(), "{format:?}");
        }
    }
}
