//! maskdcpt-core: MaskDCPT / NAFNet image restoration.
//!
//! One data path: checkpoint file → [`weights`] (named tensors) → [`spec`] (family and
//! hyper-parameters inferred from keys) → [`graph`] (typed op list) → [`passes`] (fusion,
//! memory plan) → [`backend`] (engines) → restore an [`image`] (padding, [`tiling`], cropping);
//! the graph also lowers to other formats ([`export`]). [`tlc`] is upstream NAFNet's windowed
//! channel attention.
//! [`pixels`] converts caller buffers (RGB8, BGRA8, RGB16, f32, NV12, ...) to and from images.

#![warn(missing_docs)]

pub mod atomic_file;
pub mod backend;
pub mod engine_file;
pub mod error;
pub mod export;
pub mod graph;
pub mod head;
pub mod image;
pub mod model;
pub mod passes;
pub mod pixels;
pub mod spec;
pub mod spectrum;
pub mod tiling;
pub mod tlc;
pub mod weights;

pub use error::{Error, Result};
