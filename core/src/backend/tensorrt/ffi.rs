//! Declarations of `shim.h`, written by hand (keep the two in step: the tests below compare
//! them with the header, and `shim.cpp` asserts the struct layouts at compile time).

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
    pub fn mdt_runtime_run_host(
        runtime: *mut Runtime,
        height: i64,
        width: i64,
        input: *const f32,
        output: *mut f32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mdt_runtime_destroy(runtime: *mut Runtime);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    const HEADER: &str = include_str!("shim.h");

    /// The constants are those of `shim.h`.
    #[test]
    fn constants_match_the_header() {
        let constants = [
            ("MDT_INPUT", INPUT),
            ("MDT_CAST", CAST),
            ("MDT_CONV", CONV),
            ("MDT_NORMALIZE", NORMALIZE),
            ("MDT_MEAN", MEAN),
            ("MDT_SLICE_CHANNELS", SLICE_CHANNELS),
            ("MDT_CONSTANT", CONSTANT),
            ("MDT_ELEMENTWISE", ELEMENTWISE),
            ("MDT_PIXEL_SHUFFLE", PIXEL_SHUFFLE),
            ("MDT_F32", F32),
            ("MDT_F16", F16),
            ("MDT_SUM", SUM),
            ("MDT_PROD", PROD),
        ];
        for (name, value) in constants {
            let declared = format!("{name} = {value}");
            assert!(HEADER.contains(&declared), "shim.h lacks `{declared}`");
        }
    }

    /// The field names of `struct name` in `shim.h`, in order.
    fn header_fields(name: &str) -> Vec<&'static str> {
        let body = HEADER.split(&format!("typedef struct {name} {{")).nth(1).expect("struct in shim.h");
        let body = body.split(&format!("}} {name};")).next().expect("struct end");
        body.lines()
            .map(|l| l.split("/*").next().unwrap().trim())
            .filter_map(|l| l.strip_suffix(';'))
            .flat_map(|decl| {
                // `type name` or `type a, b, c`: the last word of the first part, then the rest.
                let mut parts = decl.split(',');
                let first = parts.next().unwrap().split_whitespace().last().unwrap();
                std::iter::once(first).chain(parts).map(|n| n.trim().trim_start_matches('*'))
            })
            .collect()
    }

    /// Field order and layout agree with `shim.h`; `shim.cpp` asserts the same sizes and
    /// offsets at compile time.
    #[test]
    fn structs_match_the_header() {
        assert_eq!(header_fields("mdt_weights"), ["type", "values", "count"]);
        assert_eq!(
            header_fields("mdt_layer"),
            [
                "kind", "input", "input2", "channels", "kernel", "stride", "pad", "groups", "start", "op", "eps",
                "weight", "bias"
            ]
        );
        assert_eq!(header_fields("mdt_network"), ["layers", "layer_count", "output"]);
        assert_eq!(header_fields("mdt_profile"), ["min_h", "min_w", "opt_h", "opt_w", "max_h", "max_w"]);
        assert_eq!(header_fields("mdt_bytes"), ["data", "len"]);
        assert_eq!((size_of::<Weights>(), offset_of!(Weights, values), offset_of!(Weights, count)), (24, 8, 16));
        assert_eq!(
            (size_of::<Layer>(), offset_of!(Layer, eps), offset_of!(Layer, weight), offset_of!(Layer, bias)),
            (96, 40, 48, 72)
        );
        assert_eq!((size_of::<Network>(), offset_of!(Network, layer_count), offset_of!(Network, output)), (16, 8, 12));
        assert_eq!((size_of::<Profile>(), size_of::<Bytes>()), (48, 16));
    }
}
