//! The tiled product on AVX2 with FMA (x86-64 CPUs without AVX-512): tiles of 6 rows × 2 ymm,
//! 12 accumulators of the 16 registers, f32.

// See `tiled`: the contract of these kernels is established in `super::matmul`.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::tiled::{AVX2_MR, AVX2_NV, Block, F32, Simd, run_tiles};

/// Whether this CPU has AVX2 and FMA.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// ymm registers: 8 f32 lanes.
struct Ymm;

/// Sign bits set in the first 8 words: `MASKS[8 − lanes..]` masks the first `lanes` lanes.
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The mask of the first `lanes` (≤ 8) lanes.
#[inline(always)]
unsafe fn lane_mask(lanes: usize) -> __m256i {
    _mm256_loadu_si256(MASKS.as_ptr().add(8 - lanes) as *const __m256i)
}

impl Simd for Ymm {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }

    #[inline(always)]
    unsafe fn load_first(p: *const f32, lanes: usize) -> __m256 {
        if lanes == 8 { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, lane_mask(lanes)) }
    }

    #[inline(always)]
    unsafe fn store_first(p: *mut f32, lanes: usize, v: __m256) {
        if lanes == 8 { _mm256_storeu_ps(p, v) } else { _mm256_maskstore_ps(p, lane_mask(lanes), v) }
    }

    #[inline(always)]
    unsafe fn keep_first(v: __m256, lanes: usize) -> __m256 {
        _mm256_and_ps(v, _mm256_castsi256_ps(lane_mask(lanes)))
    }

    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }

    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }

    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
}

/// The f32 tiled product on AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn run_block_f32(block: Block<'_>, buf: &mut Vec<u32>) {
    run_tiles::<Ymm, F32, AVX2_MR, AVX2_NV>(block, buf)
}
