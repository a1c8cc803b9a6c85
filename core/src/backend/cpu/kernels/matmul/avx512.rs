//! The tiled product on AVX-512: tiles of 8 rows × 3 zmm, in f32 (FMA) or with bf16 operands
//! accumulated in f32 by `vdpbf16ps` (AVX512-BF16, two multiplies per lane and instruction).

// See `tiled`: the contract of these kernels is established in `super::matmul`.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::tiled::{AVX512_MR, AVX512_NV, Acc, Block, F32, Operands, Simd, load_b, run_tiles};
use super::{Epilogue, MatRef};

/// Whether this CPU has AVX512-BF16 (on top of the AVX-512F that `Kernel::detect` checks).
pub fn bf16_supported() -> bool {
    is_x86_feature_detected!("avx512bf16")
}

/// zmm registers: 16 f32 lanes.
struct Zmm;

/// Mask of the first `lanes` (≤ 16) lanes.
#[inline(always)]
fn lane_mask(lanes: usize) -> __mmask16 {
    ((1u32 << lanes) - 1) as __mmask16
}

impl Simd for Zmm {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }

    #[inline(always)]
    unsafe fn load_first(p: *const f32, lanes: usize) -> __m512 {
        _mm512_maskz_loadu_ps(lane_mask(lanes), p)
    }

    #[inline(always)]
    unsafe fn store_first(p: *mut f32, lanes: usize, v: __m512) {
        _mm512_mask_storeu_ps(p, lane_mask(lanes), v)
    }

    #[inline(always)]
    unsafe fn keep_first(v: __m512, lanes: usize) -> __m512 {
        _mm512_maskz_mov_ps(lane_mask(lanes), v)
    }

    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }

    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }

    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
}

/// bf16 operands: both rounded to bf16 (nearest even), pairs of `k` in one 32-bit word.
struct Bf16;

impl<const MR: usize, const NV: usize> Operands<Zmm, MR, NV> for Bf16 {
    fn steps(k: usize) -> usize {
        k.div_ceil(2)
    }

    #[inline(always)]
    unsafe fn pack(buf: &mut [u32], b: MatRef<'_>, e: Epilogue<'_>, k: usize, n0: usize, nc: usize) {
        let (nr, kp, out) = (NV * 16, k.div_ceil(2), buf.as_mut_ptr());
        let bf16_lanes =
            |x: __m512| _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x)));
        for j in 0..nc.div_ceil(nr) {
            for p in 0..kp {
                for v in 0..NV {
                    let col = j * nr + 16 * v;
                    let lanes = nc.saturating_sub(col).min(16);
                    let lo = load_b::<Zmm>(b, e, 2 * p, n0 + col, lanes);
                    let hi = if 2 * p + 1 < k { load_b::<Zmm>(b, e, 2 * p + 1, n0 + col, lanes) } else { Zmm::zero() };
                    let pair = _mm512_or_si512(bf16_lanes(lo), _mm512_slli_epi32::<16>(bf16_lanes(hi)));
                    _mm512_storeu_si512(out.add((j * kp + p) * nr + 16 * v) as *mut __m512i, pair);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn tile(kp: usize, a: *const u32, b: *const u32) -> Acc<Zmm, MR, NV> {
        let nr = NV * 16;
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for p in 0..kp {
            let bv: [__m512bh; NV] = std::array::from_fn(|v| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.add(p * nr + 16 * v) as *const __m512i))
            });
            for (i, row) in acc.iter_mut().enumerate() {
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(p * MR + i) as i32));
                for (r, bvv) in row.iter_mut().zip(&bv) {
                    *r = _mm512_dpbf16_ps(*r, av, *bvv);
                }
            }
        }
        acc
    }
}

/// The f32 tiled product on AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn run_block_f32(block: Block<'_>, buf: &mut Vec<u32>) {
    run_tiles::<Zmm, F32, AVX512_MR, AVX512_NV>(block, buf)
}

/// The bf16 tiled product on AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn run_block_bf16(block: Block<'_>, buf: &mut Vec<u32>) {
    run_tiles::<Zmm, Bf16, AVX512_MR, AVX512_NV>(block, buf)
}
