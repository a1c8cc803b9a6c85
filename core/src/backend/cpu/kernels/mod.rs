//! CPU kernels over planar f32 feature maps (`[channel][row][col]`, rows contiguous).
//!
//! The 1×1 convolutions (most of the work) are GEMMs through the `gemm` crate, which
//! dispatches to AVX-512 / AVX2+FMA / NEON micro-kernels at run time. The memory-bound kernels
//! here are written once as plain loops and compiled per target with `multiversion`
//! (AVX-512, AVX2+FMA, NEON, portable fallback), dispatched at run time.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod layernorm;
pub mod matmul;
pub mod strided_conv;
pub mod window;
pub mod window_attention;
