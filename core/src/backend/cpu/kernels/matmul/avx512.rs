//! AVX-512 GEMM for `dst[m×n] (+)= bias + A[m×k] · diag(s) · B[k×n]`.
//!
//! BLIS-style: `A` (weights) is packed once into panels of `MR` rows; for each block of `B`'s
//! columns, the block is packed (scaled by `s`, zero-padded) into panels of `NR` columns that
//! stay in L2, and an `MR × NR` register tile of 24 zmm accumulators runs over the whole `k`.
//! f32 uses FMA; bf16 rounds both operands to bf16 and accumulates pairs with `vdpbf16ps`
//! (twice the multiplies per instruction). Work is split over column blocks (and row chunks
//! when there are few blocks) on the current rayon pool.

// Every function below is an intrinsic kernel whose contract (features detected, views
// bounds-checked) is established once in `matmul`; unsafe blocks inside them would add nothing.
// The `#[inline(always)]` helpers carry no target features of their own: they are only called
// from the `#[target_feature]` functions, into which they (and their intrinsics) are inlined, so
// the register tile never leaves registers.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use super::{Epilogue, MatMut, MatRef, MatmulPrecision};

/// Rows of `A` per panel (accumulator rows).
const MR: usize = 8;
/// zmm vectors per accumulator row.
const NV: usize = 3;
/// Columns of `B` per panel.
const NR: usize = 16 * NV;
/// Bytes of packed `B` one block may take (kept in L2 next to the `A` panel).
const BLOCK_BYTES: usize = 384 * 1024;

/// Whether this CPU has AVX512-BF16.
pub fn bf16_supported() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// How the `MR` accumulator rows of a panel map to rows of the product and of the output.
#[derive(Debug, Clone, Copy)]
pub enum Rows {
    /// `m` output rows; panel `p`, row `r` is product row `p·MR + r`.
    Plain(usize),
    /// SimpleGate over a `2h`-row product: panel `p` holds product rows `p·MR/2 + q` (first
    /// half of the panel) and their partners `h + p·MR/2 + q` (second half); the output has
    /// `h` rows, `out[p·MR/2 + q] = first · second`.
    Gated(usize),
}

impl Rows {
    /// Number of panels.
    fn panels(self) -> usize {
        match self {
            Rows::Plain(m) => m.div_ceil(MR),
            Rows::Gated(h) => h.div_ceil(MR / 2),
        }
    }

    /// The product row packed at row `r` of panel `p`, if any.
    fn source(self, p: usize, r: usize) -> Option<usize> {
        match self {
            Rows::Plain(m) => Some(p * MR + r).filter(|&i| i < m),
            Rows::Gated(h) => {
                let i = p * (MR / 2) + r % (MR / 2);
                (i < h).then_some(if r < MR / 2 { i } else { h + i })
            }
        }
    }
}

/// `A` packed as `[panel][k][MR]` (f32) or `[panel][k/2][MR]` bf16 pairs in a `u32`.
pub struct Packed {
    rows: Rows,
    k: usize,
    data: PackedData,
}

enum PackedData {
    F32(Vec<f32>),
    Bf16(Vec<u32>),
}

/// Two bf16 values (round to nearest even) in one `u32`, `lo` in the low half.
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    u32::from(half::bf16::from_f32(lo).to_bits()) | (u32::from(half::bf16::from_f32(hi).to_bits()) << 16)
}

impl Packed {
    /// Packs the row-major `· × k` product matrix `w` with its rows arranged as `rows`, or
    /// `None` if the CPU lacks the instructions.
    pub fn new(w: &[f32], rows: Rows, k: usize, precision: MatmulPrecision) -> Option<Self> {
        if !is_x86_feature_detected!("avx512f") {
            return None;
        }
        let at = |p: usize, r: usize, kk: usize| match rows.source(p, r) {
            Some(i) if kk < k => w[i * k + kk],
            _ => 0.0,
        };
        let panels = 0..rows.panels();
        let data = match precision {
            MatmulPrecision::F32 => PackedData::F32(
                panels.flat_map(|p| (0..k).flat_map(move |kk| (0..MR).map(move |r| at(p, r, kk)))).collect(),
            ),
            MatmulPrecision::Bf16 if bf16_supported() => PackedData::Bf16(
                panels
                    .flat_map(|p| (0..k.div_ceil(2)).flat_map(move |kp| (0..MR).map(move |r| (p, r, 2 * kp))))
                    .map(|(p, r, kk)| bf16_pair(at(p, r, kk), at(p, r, kk + 1)))
                    .collect(),
            ),
            MatmulPrecision::Bf16 => return None,
        };
        Some(Packed { rows, k, data })
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        match &self.data {
            PackedData::F32(v) => v.len(),
            PackedData::Bf16(v) => v.len(),
        }
    }
}

/// A `dst` pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
// SAFETY: tasks write disjoint (row range × column range) tiles of the same exclusively
// borrowed slice, and the parallel loop joins before the borrow ends.
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

thread_local! {
    /// Packed `B` block of the current task (reused across calls on this thread).
    static PACK: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// See [`super::matmul`]; views were bounds-checked by the caller.
pub fn matmul(dst: MatMut<'_>, a: &Packed, b: MatRef<'_>, n: usize, e: Epilogue<'_>, threads: usize) {
    let plan = TaskPlan::new(a.rows.panels(), a.k, n, threads);
    let ptr = DstPtr(dst.data.as_mut_ptr());
    let rs = dst.row_stride;
    let task = |t: usize| {
        let ((n0, nc), (p0, p1)) = plan.task(t, n);
        if nc == 0 || p0 >= p1 {
            return;
        }
        PACK.with_borrow_mut(|buf| {
            // SAFETY: AVX-512 (and BF16 for bf16 data) were detected when `a` was packed; the
            // tile [p0·MR, p1·MR) × [n0, n0+nc) is inside `dst` (checked by the caller) and
            // no other task writes it.
            unsafe {
                match &a.data {
                    PackedData::F32(ap) => run_block_f32(ptr, rs, (ap, a.rows, a.k), b, e, (n0, nc), (p0, p1), buf),
                    PackedData::Bf16(ap) => run_block_bf16(ptr, rs, (ap, a.rows, a.k), b, e, (n0, nc), (p0, p1), buf),
                }
            }
        });
    };
    let tasks = plan.col_tasks * plan.row_tasks;
    if threads > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// How a product is split into tasks: contiguous ranges of `NR`-column panels (each small
/// enough for its packed block to stay in L2), and, when there are too few of those to keep
/// every thread busy, ranges of `MR`-row panels.
struct TaskPlan {
    col_panels: usize,
    col_tasks: usize,
    row_panels: usize,
    row_tasks: usize,
}

impl TaskPlan {
    fn new(row_panels: usize, k: usize, n: usize, threads: usize) -> Self {
        let col_panels = n.div_ceil(NR);
        let max_panels = (BLOCK_BYTES / (4 * NR * k.max(1))).max(1);
        // At least two tasks per thread where the columns allow, in a multiple of the thread
        // count so that equal tasks split evenly.
        let balanced = col_panels.div_ceil(max_panels).max(2 * threads).div_ceil(threads) * threads;
        let col_tasks = balanced.min(col_panels).max(1);
        let row_tasks = row_panels.min((2 * threads).div_ceil(col_tasks)).max(1);
        TaskPlan { col_panels, col_tasks, row_panels, row_tasks }
    }

    /// Columns `(n0, nc)` and row panels `[p0, p1)` of task `t`.
    fn task(&self, t: usize, n: usize) -> ((usize, usize), (usize, usize)) {
        let (c, r) = (t / self.row_tasks, t % self.row_tasks);
        let (q0, q1) = (c * self.col_panels / self.col_tasks, (c + 1) * self.col_panels / self.col_tasks);
        let n0 = (q0 * NR).min(n);
        let nc = (q1 * NR).min(n) - n0;
        let (p0, p1) = (r * self.row_panels / self.row_tasks, (r + 1) * self.row_panels / self.row_tasks);
        ((n0, nc), (p0, p1))
    }
}

/// Packs columns `[n0, n0+nc)` of `b` and computes panels `[p0, p1)` of the output (f32).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_block_f32(
    dst: DstPtr,
    rs: usize,
    (ap, rows, k): (&[f32], Rows, usize),
    b: MatRef<'_>,
    e: Epilogue<'_>,
    (n0, nc): (usize, usize),
    (p0, p1): (usize, usize),
    buf: &mut Vec<u32>,
) {
    let col_panels = nc.div_ceil(NR);
    buf.resize(col_panels * k * NR, 0);
    pack_f32(buf, b, e, k, n0, nc);
    let bp = buf.as_ptr() as *const f32;
    for p in p0..p1 {
        let a_panel = ap.as_ptr().add(p * k * MR);
        for j in 0..col_panels {
            let acc = tile_f32(k, a_panel, bp.add(j * k * NR));
            store(acc, dst, rs, (rows, p), (n0 + j * NR, (nc - j * NR).min(NR)), e);
        }
    }
}

/// As [`run_block_f32`] with bf16 operands.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_block_bf16(
    dst: DstPtr,
    rs: usize,
    (ap, rows, k): (&[u32], Rows, usize),
    b: MatRef<'_>,
    e: Epilogue<'_>,
    (n0, nc): (usize, usize),
    (p0, p1): (usize, usize),
    buf: &mut Vec<u32>,
) {
    let (col_panels, kp) = (nc.div_ceil(NR), k.div_ceil(2));
    buf.resize(col_panels * kp * NR, 0);
    pack_bf16(buf, b, e, k, n0, nc);
    for p in p0..p1 {
        let a_panel = ap.as_ptr().add(p * kp * MR);
        for j in 0..col_panels {
            let acc = tile_bf16(kp, a_panel, buf.as_ptr().add(j * kp * NR));
            store(acc, dst, rs, (rows, p), (n0 + j * NR, (nc - j * NR).min(NR)), e);
        }
    }
}

/// Mask of the first `lanes` (≤ 16) lanes.
#[inline(always)]
fn lane_mask(lanes: usize) -> __mmask16 {
    ((1u32 << lanes) - 1) as __mmask16
}

/// Row `kk` of `b`, columns `[n0, n0+nc)` starting at panel offset `j·NR + 16v`: a masked load
/// (zeros past `nc`), normalised by `e.rhs_norm` and scaled by `e.rhs_scale` when given.
#[inline(always)]
unsafe fn load_b(b: MatRef<'_>, e: Epilogue<'_>, kk: usize, n0: usize, col: usize, nc: usize) -> __m512 {
    let lanes = nc.saturating_sub(col).min(16);
    if lanes == 0 {
        return _mm512_setzero_ps();
    }
    let mask = lane_mask(lanes);
    let mut v = _mm512_maskz_loadu_ps(mask, b.data.as_ptr().add(kk * b.row_stride + n0 + col));
    if let Some(norm) = e.rhs_norm {
        let mean = _mm512_maskz_loadu_ps(mask, norm.mean.as_ptr().add(n0 + col));
        let rstd = _mm512_maskz_loadu_ps(mask, norm.rstd.as_ptr().add(n0 + col));
        let centred = _mm512_mul_ps(_mm512_sub_ps(v, mean), rstd);
        let shifted = _mm512_fmadd_ps(centred, _mm512_set1_ps(norm.weight[kk]), _mm512_set1_ps(norm.bias[kk]));
        v = _mm512_maskz_mov_ps(mask, shifted);
    }
    match e.rhs_scale {
        Some(s) => _mm512_mul_ps(v, _mm512_set1_ps(s[kk])),
        None => v,
    }
}

/// `buf[j][kk][NR]` = row `kk` of `b` at columns `n0 + j·NR ..`, transformed as `e` says
/// (f32 bits in `u32` storage).
#[target_feature(enable = "avx512f")]
unsafe fn pack_f32(buf: &mut [u32], b: MatRef<'_>, e: Epilogue<'_>, k: usize, n0: usize, nc: usize) {
    let out = buf.as_mut_ptr() as *mut f32;
    for j in 0..nc.div_ceil(NR) {
        for kk in 0..k {
            for v in 0..NV {
                let x = load_b(b, e, kk, n0, j * NR + 16 * v, nc);
                _mm512_storeu_ps(out.add((j * k + kk) * NR + 16 * v), x);
            }
        }
    }
}

/// `buf[j][kp][NR]` = bf16 pairs (rows `2kp`, `2kp+1`) of the block of `b`, transformed as
/// `e` says.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_bf16(buf: &mut [u32], b: MatRef<'_>, e: Epilogue<'_>, k: usize, n0: usize, nc: usize) {
    let kp = k.div_ceil(2);
    let out = buf.as_mut_ptr();
    for j in 0..nc.div_ceil(NR) {
        for p in 0..kp {
            for v in 0..NV {
                let col = j * NR + 16 * v;
                let lo = load_b(b, e, 2 * p, n0, col, nc);
                let hi = if 2 * p + 1 < k { load_b(b, e, 2 * p + 1, n0, col, nc) } else { _mm512_setzero_ps() };
                let lo16 = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(lo)));
                let hi16 = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(hi)));
                let pair = _mm512_or_si512(lo16, _mm512_slli_epi32::<16>(hi16));
                _mm512_storeu_si512(out.add((j * kp + p) * NR + 16 * v) as *mut __m512i, pair);
            }
        }
    }
}

type Acc = [[__m512; NV]; MR];

/// `MR × NR` tile of `A_panel[k][MR] · B_panel[k][NR]`.
#[inline(always)]
unsafe fn tile_f32(k: usize, a: *const f32, b: *const f32) -> Acc {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for kk in 0..k {
        let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(b.add(kk * NR + 16 * v)));
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(kk * MR + i));
            for (r, bvv) in row.iter_mut().zip(&bv) {
                *r = _mm512_fmadd_ps(av, *bvv, *r);
            }
        }
    }
    acc
}

/// `MR × NR` tile of bf16 pairs `A_panel[kp][MR] · B_panel[kp][NR]`.
#[inline(always)]
unsafe fn tile_bf16(kp: usize, a: *const u32, b: *const u32) -> Acc {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for p in 0..kp {
        let bv: [__m512bh; NV] = std::array::from_fn(|v| {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.add(p * NR + 16 * v) as *const __m512i))
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

/// Writes the valid part of panel `p`'s tile at column `col0` (`cols` wide): plain rows get
/// the bias and, when accumulating, the previous contents; gated rows get
/// `(first + bias) · (second + bias)`.
#[inline(always)]
unsafe fn store(
    acc: Acc,
    dst: DstPtr,
    rs: usize,
    (rows, p): (Rows, usize),
    (col0, cols): (usize, usize),
    e: Epilogue<'_>,
) {
    let bias = |i: usize| _mm512_set1_ps(e.bias.map_or(0.0, |b| b[i]));
    let (first, count) = match rows {
        Rows::Plain(m) => (p * MR, (m - p * MR).min(MR)),
        Rows::Gated(h) => (p * (MR / 2), (h - p * (MR / 2)).min(MR / 2)),
    };
    for i in 0..count {
        let out = first + i;
        let base = dst.0.add(out * rs + col0);
        for (v, (&first_half, &second_half)) in acc[i].iter().zip(&acc[(i + MR / 2) % MR]).enumerate() {
            let lanes = cols.saturating_sub(16 * v).min(16);
            if lanes == 0 {
                break;
            }
            let mask = lane_mask(lanes);
            let val = match rows {
                Rows::Plain(_) => {
                    let val = _mm512_add_ps(first_half, bias(out));
                    if e.accumulate { _mm512_add_ps(val, _mm512_maskz_loadu_ps(mask, base.add(16 * v))) } else { val }
                }
                Rows::Gated(h) => {
                    _mm512_mul_ps(_mm512_add_ps(first_half, bias(out)), _mm512_add_ps(second_half, bias(h + out)))
                }
            };
            _mm512_mask_storeu_ps(base.add(16 * v), mask, val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_cover_every_column_and_row_once() {
        for (m, k, n, threads) in [
            (1024usize, 512usize, 1024usize, 2usize),
            (2048, 1024, 256, 2),
            (128, 64, 7680, 2),
            (8, 3, 5, 1),
            (24, 8, 1, 4),
        ] {
            let plan = TaskPlan::new(m.div_ceil(MR), k, n, threads);
            let mut covered = vec![0u32; plan.row_panels * n];
            for t in 0..plan.col_tasks * plan.row_tasks {
                let ((n0, nc), (p0, p1)) = plan.task(t, n);
                assert!(nc * 4 * k <= BLOCK_BYTES.max(4 * k * NR), "{m}x{k}x{n}: block of {nc} columns too big");
                for p in p0..p1 {
                    covered[p * n + n0..p * n + n0 + nc].iter_mut().for_each(|c| *c += 1);
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{m}x{k}x{n}");
        }
    }
}
