//! libmaskdcpt: the C ABI of maskdcpt-core. The header `include/maskdcpt.h` is generated from
//! this crate by cbindgen (`ffi/cbindgen.toml`) and committed.
//!
//! Conventions: every fallible call returns a `maskdcpt_status` and writes its outputs only on
//! success; the reason for a failure is in the thread-local `maskdcpt_last_error_message()`.
//! Every pointer is checked for NULL and every panic is caught at the boundary. Handles are
//! opaque, created by `*_new` / `*_load_*` and freed by pointer-nulling `*_free(T **)`
//! functions. This crate holds no engine logic: it checks, converts and forwards to the core.
#![allow(non_camel_case_types)]
#![warn(missing_docs)]

mod args;
pub mod engine;
pub mod image;
pub mod model;
pub mod options;
pub mod status;

use std::ffi::c_char;

pub use engine::*;
pub use image::*;
pub use model::*;
pub use options::*;
pub use status::*;

/// Version of the ABI (function signatures, struct layouts, enum values); the header's
/// `MASKDCPT_ABI_VERSION` must equal it.
const ABI_VERSION: u32 = 1;

/// The library version as "MAJOR.MINOR.PATCH" (a static string).
#[unsafe(no_mangle)]
pub extern "C" fn maskdcpt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the library loaded at run time; compare it with the header's
/// `MASKDCPT_ABI_VERSION` (see `maskdcpt_abi_compatible()`).
#[unsafe(no_mangle)]
pub extern "C" fn maskdcpt_abi_version() -> u32 {
    ABI_VERSION
}
