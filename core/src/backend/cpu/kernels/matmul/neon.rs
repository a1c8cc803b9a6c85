//! The tiled product on NEON (every aarch64 CPU, Jetson's among them): tiles of 6 rows × 4 q
//! registers, 24 accumulators of the 32, f32.

// See `tiled`: the contract of these kernels is established in `super::matmul`.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::aarch64::*;

use super::tiled::{Block, F32, NEON_MR, NEON_NV, Simd, run_tiles};

/// q registers: 4 f32 lanes.
struct Q;

/// All bits set in the first 4 words: `MASKS[4 − lanes..]` masks the first `lanes` lanes.
static MASKS: [u32; 8] = [u32::MAX, u32::MAX, u32::MAX, u32::MAX, 0, 0, 0, 0];

impl Simd for Q {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }

    #[inline(always)]
    unsafe fn load_first(p: *const f32, lanes: usize) -> float32x4_t {
        if lanes == 4 {
            return vld1q_f32(p);
        }
        // NEON has no masked loads: the few lanes at a block's edge go through the stack.
        let mut lanes_at_edge = [0.0f32; 4];
        std::ptr::copy_nonoverlapping(p, lanes_at_edge.as_mut_ptr(), lanes);
        vld1q_f32(lanes_at_edge.as_ptr())
    }

    #[inline(always)]
    unsafe fn store_first(p: *mut f32, lanes: usize, v: float32x4_t) {
        if lanes == 4 {
            return vst1q_f32(p, v);
        }
        let mut lanes_at_edge = [0.0f32; 4];
        vst1q_f32(lanes_at_edge.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(lanes_at_edge.as_ptr(), p, lanes);
    }

    #[inline(always)]
    unsafe fn keep_first(v: float32x4_t, lanes: usize) -> float32x4_t {
        let mask = vld1q_u32(MASKS.as_ptr().add(4 - lanes));
        vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), mask))
    }

    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }

    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }

    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }

    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // `vfmaq_f32(c, a, b)` is `c + a · b`, rounded once.
        vfmaq_f32(c, a, b)
    }
}

/// The f32 tiled product on NEON.
#[target_feature(enable = "neon")]
pub unsafe fn run_block_f32(block: Block<'_>, buf: &mut Vec<u32>) {
    run_tiles::<Q, F32, NEON_MR, NEON_NV>(block, buf)
}
