//! Declarations of `shim.h`, written by hand (keep the two in step).

use std::ffi::{c_char, c_int, c_void};

pub const INPUT: i32 = 0;
pub const CAST: i32 = 1;
pub const CONV: i32 = 2;
pub const NORMALIZE: i32 = 3;
pub const MEAN: i32 = 4;
pub const SLICE_CHANNELS: i32 = 5;
pub const CONSTANT: i32 = 6;
pub const ELEMENTWISE: i32 = 7;
pub const PIXEL_SHUFFLE: i32 = 8;
pub const F32: i32 = 0;
pub const F16: i32 = 1;
pub const SUM: i32 = 0;
pub const PROD: i32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Weights {
    pub dtype: i32,
    pub values: *const c_void,
    pub count: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Layer {
    pub kind: i32,
    pub input: i32,
    pub input2: i32,
    pub channels: i32,
    pub kernel: i32,
    pub stride: i32,
    pub pad: i32,
    pub groups: i32,
    pub start: i32,
    pub op: i32,
    pub eps: f32,
    pub weight: Weights,
    pub bias: Weights,
}

#[repr(C)]
pub struct Network {
    pub layers: *const Layer,
    pub layer_count: i32,
    pub output: i32,
}

#[repr(C)]
pub struct Profile {
    pub min_h: i64,
    pub min_w: i64,
    pub opt_h: i64,
    pub opt_w: i64,
    pub max_h: i64,
    pub max_w: i64,
}

#[repr(C)]
pub struct Bytes {
    pub data: *mut u8,
    pub len: usize,
}

/// Opaque `mdt_runtime`.
#[repr(C)]
pub struct Runtime {
    _private: [u8; 0],
}

unsafe extern "C" {
    pub fn mdt_library_version(version: *mut i32, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mdt_compute_capability(major: *mut i32, minor: *mut i32, err: *mut c_char, err_len: usize) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn mdt_build(
        network: *const Network,
        profile: *const Profile,
        workspace_bytes: u64,
        timing_in: *const u8,
        timing_in_len: usize,
        engine: *mut Bytes,
        timing_out: *mut Bytes,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mdt_free(bytes: Bytes);
    pub fn mdt_runtime_create(
        engine: *const u8,
        len: usize,
        out: *mut *mut Runtime,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn mdt_runtime_enqueue(
        runtime: *mut Runtime,
        height: i64,
        width: i64,
        input: *const f32,
        output: *mut f32,
        stream: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mdt_runtime_destroy(runtime: *mut Runtime);
}
