//! CUDA backend (cargo feature `cuda`, on by default): FP16 or f32 feature maps in NHWC,
//! 1×1 and 2×2 convolutions on cuBLASLt (tensor cores, f32 accumulation, bias and residual in
//! the epilogue), everything else in a handful of fused NVRTC kernels with f32 arithmetic and
//! f32 LayerNorm statistics, the launch sequence of each input shape replayed as a CUDA graph.
//!
//! Nothing CUDA is linked: the driver, NVRTC and cuBLASLt are loaded when an engine is built,
//! so the library runs on hosts without them and reports what is missing as an error.
//! Data path: fused [`Program`](crate::passes::Program) → [`weights`] (uploaded once) →
//! [`instance`] (buffers and launch list per shape) → [`engine`]; [`saved`] keeps an engine's
//! kernels and tuned algorithms in an engine file for later processes.

pub mod depthwise;
pub mod device;
#[cfg(test)]
mod emulation;
pub mod engine;
pub mod frames;
pub mod gemm;
pub mod instance;
pub mod kernels;
pub mod saved;
pub mod weights;

pub use engine::CudaEngine;
