//! `maskdcpt_image`: a caller-owned frame in host memory (checked and turned into the byte
//! slices that `maskdcpt_core::pixels` converts) or in device memory (checked and passed on
//! as addresses).

use std::ffi::c_void;

use maskdcpt_core::Error;
use maskdcpt_core::pixels::{DeviceFrame, FrameDesc, MAX_PLANES, PixelFormat, PlaneMut, PlaneRef, YuvMatrix};

use crate::args::{c_enum, enum_arg};
use crate::status::{Failure, FfiResult};

/// Memory layout of a frame's pixels. Multi-byte samples are native-endian; integer samples
/// map to [0, 1] (v / max in, clamp and round out), f32 samples are taken and returned as is.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_pixel_format {
    /// Plane 0: 3 bytes per pixel, R G B.
    Rgb8 = 0,
    /// Plane 0: 3 bytes per pixel, B G R.
    Bgr8 = 1,
    /// Plane 0: 4 bytes per pixel, R G B A (alpha is copied from an input with alpha, else 255).
    Rgba8 = 2,
    /// Plane 0: 4 bytes per pixel, B G R A (alpha as for RGBA8).
    Bgra8 = 3,
    /// Plane 0: three `uint16_t` per pixel, R G B.
    Rgb16 = 4,
    /// Plane 0: three `float` per pixel, R G B.
    RgbF32 = 5,
    /// Planes 0, 1, 2: one `float` per pixel each, R, G and B.
    RgbF32Planar = 6,
    /// Plane 0: 8-bit luma; plane 1: interleaved Cb Cr for each 2×2 block. Even width and height.
    Nv12 = 7,
}

c_enum!(maskdcpt_pixel_format: Rgb8, Bgr8, Rgba8, Bgra8, Rgb16, RgbF32, RgbF32Planar, Nv12);

impl From<maskdcpt_pixel_format> for PixelFormat {
    fn from(format: maskdcpt_pixel_format) -> Self {
        match format {
            maskdcpt_pixel_format::Rgb8 => PixelFormat::Rgb8,
            maskdcpt_pixel_format::Bgr8 => PixelFormat::Bgr8,
            maskdcpt_pixel_format::Rgba8 => PixelFormat::Rgba8,
            maskdcpt_pixel_format::Bgra8 => PixelFormat::Bgra8,
            maskdcpt_pixel_format::Rgb16 => PixelFormat::Rgb16,
            maskdcpt_pixel_format::RgbF32 => PixelFormat::RgbF32,
            maskdcpt_pixel_format::RgbF32Planar => PixelFormat::RgbF32Planar,
            maskdcpt_pixel_format::Nv12 => PixelFormat::Nv12,
        }
    }
}

/// YCbCr matrix and range of NV12 frames.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_yuv_matrix {
    /// BT.601, limited range (luma 16-235): most cameras and SD video.
    Bt601Limited = 0,
    /// BT.601, full range (JPEG).
    Bt601Full = 1,
    /// BT.709, limited range: HD video.
    Bt709Limited = 2,
}

c_enum!(maskdcpt_yuv_matrix: Bt601Limited, Bt601Full, Bt709Limited);

impl From<maskdcpt_yuv_matrix> for YuvMatrix {
    fn from(matrix: maskdcpt_yuv_matrix) -> Self {
        match matrix {
            maskdcpt_yuv_matrix::Bt601Limited => YuvMatrix::Bt601Limited,
            maskdcpt_yuv_matrix::Bt601Full => YuvMatrix::Bt601Full,
            maskdcpt_yuv_matrix::Bt709Limited => YuvMatrix::Bt709Limited,
        }
    }
}

/// Number of plane pointers and strides in a `maskdcpt_image`.
pub const MASKDCPT_MAX_PLANES: usize = 3;
const _: () = assert!(MASKDCPT_MAX_PLANES == MAX_PLANES);

/// A frame in caller-owned host memory. Input frames are only read; output frames get their
/// pixel bytes written (bytes between rows are left alone). Planes a format does not use are
/// ignored. Input and output may share memory only if they are the same frame (in place).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct maskdcpt_image {
    /// A `maskdcpt_pixel_format` value.
    pub format: u32,
    /// A `maskdcpt_yuv_matrix` value (NV12 only; 0 is BT.601 limited range).
    pub yuv_matrix: u32,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// First byte of each plane.
    pub planes: [*mut c_void; MASKDCPT_MAX_PLANES],
    /// Bytes from the start of one row to the next, per plane (at least the row's size).
    pub strides: [usize; MASKDCPT_MAX_PLANES],
}

/// A frame checked against its format: description plus the byte span of every used plane.
pub(crate) struct Frame {
    desc: FrameDesc,
    spans: Vec<usize>,
    planes: [*mut c_void; MAX_PLANES],
    strides: [usize; MAX_PLANES],
}

impl Frame {
    /// Checks `image` (passed as argument `name`): enum values, size, strides, plane pointers.
    pub(crate) fn check(image: &maskdcpt_image, name: &str) -> FfiResult<Frame> {
        let format: PixelFormat = enum_arg::<maskdcpt_pixel_format>(image.format, &format!("{name}.format"))?.into();
        let yuv: YuvMatrix = enum_arg::<maskdcpt_yuv_matrix>(image.yuv_matrix, &format!("{name}.yuv_matrix"))?.into();
        let desc = FrameDesc { format, width: image.width, height: image.height, yuv };
        let used = format.plane_count();
        let spans = desc.plane_spans(&image.strides[..used]).map_err(|e| {
            let detail = match e {
                Error::InvalidImage(m) | Error::InvalidArgument(m) => m,
                other => other.to_string(),
            };
            Failure::invalid(format!("{name}: {detail}"))
        })?;
        if let Some(i) = image.planes[..used].iter().position(|p| p.is_null()) {
            return Err(Failure::null(&format!("{name}.planes[{i}]")));
        }
        Ok(Frame { desc, spans, planes: image.planes, strides: image.strides })
    }

    /// What the frame is.
    pub(crate) fn desc(&self) -> &FrameDesc {
        &self.desc
    }

    /// The planes, read-only.
    ///
    /// # Safety
    /// Each used plane pointer addresses its span of readable bytes, which nothing writes
    /// while the slices live.
    pub(crate) unsafe fn planes(&self) -> Vec<PlaneRef<'_>> {
        (self.spans.iter().enumerate())
            .map(|(i, &span)| PlaneRef {
                // SAFETY: non-NULL (checked), `span` ≤ isize::MAX (checked), readable per contract.
                data: unsafe { std::slice::from_raw_parts(self.planes[i].cast::<u8>(), span) },
                stride: self.strides[i],
            })
            .collect()
    }

    /// Errors if two planes of this (output) frame overlap.
    pub(crate) fn check_disjoint(&self) -> FfiResult<()> {
        let ranges: Vec<(usize, usize)> =
            self.spans.iter().enumerate().map(|(i, &span)| (self.planes[i] as usize, span)).collect();
        for (i, &(a, a_len)) in ranges.iter().enumerate() {
            if ranges[..i].iter().any(|&(b, b_len)| a < b.saturating_add(b_len) && b < a.saturating_add(a_len)) {
                return Err(Failure::invalid(format!("output plane {i} overlaps an earlier plane")));
            }
        }
        Ok(())
    }

    /// The frame as device addresses (for `maskdcpt_restore_device`; the engine checks that
    /// they are GPU memory).
    pub(crate) fn device(&self) -> DeviceFrame {
        DeviceFrame {
            desc: self.desc,
            planes: (0..self.spans.len()).map(|i| (self.planes[i] as u64, self.strides[i])).collect(),
        }
    }

    /// The planes, writable. Errors if two planes overlap.
    ///
    /// # Safety
    /// Each used plane pointer addresses its span of writable bytes, which nothing else
    /// accesses while the slices live.
    pub(crate) unsafe fn planes_mut(&mut self) -> FfiResult<Vec<PlaneMut<'_>>> {
        self.check_disjoint()?;
        Ok((self.spans.iter().enumerate())
            .map(|(i, &span)| PlaneMut {
                // SAFETY: non-NULL, ≤ isize::MAX, disjoint (all checked), writable per contract.
                data: unsafe { std::slice::from_raw_parts_mut(self.planes[i].cast::<u8>(), span) },
                stride: self.strides[i],
            })
            .collect())
    }
}
