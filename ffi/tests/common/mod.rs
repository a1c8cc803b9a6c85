//! Helpers shared by the C-ABI tests: the small golden model, owned frames in any pixel
//! format, and a reference restore through the core crate.
#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use maskdcpt::*;
use maskdcpt_core::backend::{EngineOptions, build_engine};
use maskdcpt_core::image::Image;
use maskdcpt_core::model::Model;
use maskdcpt_core::pixels::{self, FrameDesc, PlaneMut, YuvMatrix};
use maskdcpt_core::weights::LoadOptions;

/// The small random-weight MaskDCPT model committed for tests (width 8).
pub fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/maskdcpt_w8.pth")
}

/// `path` as a C string.
pub fn c_path(path: &Path) -> CString {
    CString::new(path.to_str().unwrap()).unwrap()
}

/// This thread's last error message.
pub fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(maskdcpt_last_error_message()) }.to_string_lossy().into_owned()
}

/// Loads the test model through the C ABI.
pub fn load_model() -> *mut maskdcpt_model {
    let mut model = ptr::null_mut();
    let path = c_path(&model_path());
    // SAFETY: valid arguments.
    let status = unsafe { maskdcpt_model_load_file(path.as_ptr(), ptr::null(), &mut model) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    model
}

/// Builds an engine through the C ABI.
pub fn new_engine(model: *const maskdcpt_model, options: &maskdcpt_options) -> *mut maskdcpt_engine {
    let mut engine = ptr::null_mut();
    // SAFETY: valid arguments.
    let status = unsafe { maskdcpt_engine_new(model, options, &mut engine) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    engine
}

/// A loaded model and an engine with `threads` workers, freed on drop.
pub struct Fixture {
    pub model: *mut maskdcpt_model,
    pub engine: *mut maskdcpt_engine,
}

impl Fixture {
    pub fn new(threads: u32) -> Self {
        let model = load_model();
        Fixture { model, engine: new_engine(model, &options(threads)) }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // SAFETY: both handles are live (or already NULL).
        unsafe {
            maskdcpt_engine_free(&mut self.engine);
            maskdcpt_model_free(&mut self.model);
        }
    }
}

/// Default options with `threads` workers.
pub fn options(threads: u32) -> maskdcpt_options {
    maskdcpt_options { threads, ..maskdcpt_options_default() }
}

/// A deterministic RGB test pattern in [0, 1].
pub fn pattern(width: usize, height: usize, seed: usize) -> Image {
    let data = (0..width * height * 3).map(|i| ((i * 37 + seed * 101) % 251) as f32 / 250.0).collect();
    Image::new(width, height, data).unwrap()
}

/// Every pixel format.
pub const FORMATS: [maskdcpt_pixel_format; 8] = [
    maskdcpt_pixel_format::Rgb8,
    maskdcpt_pixel_format::Bgr8,
    maskdcpt_pixel_format::Rgba8,
    maskdcpt_pixel_format::Bgra8,
    maskdcpt_pixel_format::Rgb16,
    maskdcpt_pixel_format::RgbF32,
    maskdcpt_pixel_format::RgbF32Planar,
    maskdcpt_pixel_format::Nv12,
];

/// A frame that owns its planes, each row followed by `pad` spare bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedFrame {
    pub format: maskdcpt_pixel_format,
    pub width: usize,
    pub height: usize,
    pub planes: Vec<Vec<u8>>,
    pub strides: Vec<usize>,
}

impl OwnedFrame {
    /// A frame filled with `fill`.
    pub fn new(format: maskdcpt_pixel_format, width: usize, height: usize, pad: usize, fill: u8) -> Self {
        let shapes = self::desc(format, width, height).plane_shapes().unwrap();
        let strides: Vec<usize> = shapes.iter().map(|s| s.row_bytes + pad).collect();
        let planes = shapes.iter().zip(&strides).map(|(s, st)| vec![fill; st * s.rows]).collect();
        OwnedFrame { format, width, height, planes, strides }
    }

    /// `image` stored in `format` (alpha 200 where the format has it).
    pub fn from_image(format: maskdcpt_pixel_format, image: &Image, pad: usize) -> Self {
        let mut frame = Self::new(format, image.width(), image.height(), pad, 0);
        let alpha = vec![200u8; image.width() * image.height()];
        let desc = frame.desc();
        let mut planes = frame.planes_mut();
        pixels::encode(&desc, image, Some(&alpha), &mut planes).unwrap();
        frame
    }

    /// The core description of this frame.
    pub fn desc(&self) -> FrameDesc {
        self::desc(self.format, self.width, self.height)
    }

    fn planes_mut(&mut self) -> Vec<PlaneMut<'_>> {
        self.planes.iter_mut().zip(&self.strides).map(|(d, &stride)| PlaneMut { data: d, stride }).collect()
    }

    /// A C descriptor pointing into this frame.
    pub fn image(&mut self) -> maskdcpt_image {
        let mut image = maskdcpt_image {
            format: self.format as u32,
            yuv_matrix: 0,
            width: self.width,
            height: self.height,
            planes: [ptr::null_mut(); MASKDCPT_MAX_PLANES],
            strides: [0; MASKDCPT_MAX_PLANES],
        };
        for (i, plane) in self.planes.iter_mut().enumerate() {
            image.planes[i] = plane.as_mut_ptr().cast();
            image.strides[i] = self.strides[i];
        }
        image
    }
}

/// The core description of a `format` frame.
pub fn desc(format: maskdcpt_pixel_format, width: usize, height: usize) -> FrameDesc {
    FrameDesc { format: format.into(), width, height, yuv: YuvMatrix::default() }
}

/// `output` after restoring `input` into it, computed with the core crate directly.
pub fn reference(input: &OwnedFrame, mut output: OwnedFrame) -> OwnedFrame {
    let planes: Vec<_> =
        input.planes.iter().zip(&input.strides).map(|(d, &stride)| pixels::PlaneRef { data: d, stride }).collect();
    let decoded = pixels::decode(&input.desc(), &planes).unwrap();
    let model = Model::load(&model_path(), &LoadOptions::default()).unwrap();
    let restored = build_engine(&model, &EngineOptions::default()).unwrap().restore(&decoded.image).unwrap();
    let desc = output.desc();
    pixels::encode(&desc, &restored, decoded.alpha.as_deref(), &mut output.planes_mut()).unwrap();
    output
}
