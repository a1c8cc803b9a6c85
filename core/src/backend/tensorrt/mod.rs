//! TensorRT backend. The parts that need no TensorRT library are always compiled and unit
//! tested: the network lowered as data ([`network`]), the optimization profile ([`profile`])
//! and the engine cache key and file format ([`cache`]).

pub mod cache;
pub mod network;
pub mod profile;

#[cfg(feature = "tensorrt")]
mod engine;
#[cfg(feature = "tensorrt")]
mod ffi;
#[cfg(feature = "tensorrt")]
mod host_engine;

#[cfg(feature = "tensorrt")]
pub use engine::{BuildOptions, TrtRuntime, build_serialized, compute_capability, library_version};
#[cfg(feature = "tensorrt")]
pub use host_engine::TensorRtEngine;
