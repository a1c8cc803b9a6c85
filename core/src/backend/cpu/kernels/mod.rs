//! CPU kernels over planar f32 feature maps (`[channel][row][col]`, rows contiguous).
//!
//! The 1×1 convolutions (most of the work) are matrix products ([`matmul`]): our register-tiled
//! AVX-512 and AVX2+FMA kernels on x86-64 and NEON kernels on aarch64 (the same bits on each),
//! the `gemm` crate elsewhere, chosen at run time. The memory-bound kernels
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
