//! The register-tiled product shared by our kernels (x86-64 and aarch64), for
//! `dst[m×n] (+)= bias + A[m×k] · diag(s) · B[k×n]`.
//!
//! BLIS-style: `A` (weights) is packed once into panels of `MR` rows; for each block of `B`'s
//! columns, the block is packed (normalised and scaled as the epilogue says, zero-padded) into
//! panels of `NR = NV · lanes` columns that stay in L2, and an `MR × NR` register tile of
//! accumulators runs over the whole `k`. Work is split over column blocks (and row chunks when
//! there are few blocks) on the current rayon pool.
//!
//! Everything here is generic over the vector registers ([`Simd`]) and the tile's shape; the ISA
//! modules instantiate it inside their `#[target_feature]` entry points. Every element is the
//! same chain of operations whatever the ISA and vector width (one FMA per `k` in order, then the
//! bias, the previous contents or the gate), so the AVX-512, AVX2 and NEON kernels give the same
//! bits.

// Every function below is a kernel whose contract (features detected, views bounds-checked) is
// established once in `super::matmul`; unsafe blocks inside them would add nothing. The
// `#[inline(always)]` functions carry no target features of their own: they are only called from
// the ISA modules' `#[target_feature]` functions, into which they (and their intrinsics) are
// inlined, so the register tile never leaves registers.
#![allow(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;

use rayon::prelude::*;

#[cfg(target_arch = "aarch64")]
use super::neon;
use super::{Epilogue, MatMut, MatRef, MatmulPrecision};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};

/// Bytes of packed `B` one block may take (kept in L2 next to the `A` panel).
#[cfg(target_arch = "x86_64")]
const BLOCK_BYTES: usize = 384 * 1024;
/// Bytes of packed `B` one block may take: less than on x86-64, for the 256 KiB L2 of a
/// Jetson Orin's Cortex-A78AE cores.
#[cfg(target_arch = "aarch64")]
const BLOCK_BYTES: usize = 192 * 1024;

/// One vector register of f32 lanes and the operations the tile needs.
pub trait Simd {
    /// The register.
    type V: Copy;
    /// f32 lanes per register.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Loads `LANES` values.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` values.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads the first `lanes` values (1 ≤ `lanes` ≤ `LANES`), zeros past them.
    unsafe fn load_first(p: *const f32, lanes: usize) -> Self::V;
    /// Stores the first `lanes` lanes (1 ≤ `lanes` ≤ `LANES`).
    unsafe fn store_first(p: *mut f32, lanes: usize, v: Self::V);
    /// `v` with the lanes from `lanes` on set to zero.
    unsafe fn keep_first(v: Self::V, lanes: usize) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, rounded once.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

/// An `MR × NV` tile of accumulator registers.
pub type Acc<S, const MR: usize, const NV: usize> = [[<S as Simd>::V; NV]; MR];

/// How the operands are stored and multiplied: f32, or bf16 pairs (AVX512-BF16).
pub trait Operands<S: Simd, const MR: usize, const NV: usize> {
    /// Packed steps of `k`: one per row of `B` (f32) or per pair of rows (bf16).
    fn steps(k: usize) -> usize;
    /// `buf[j][step][NV · LANES]`: the block of `B` at columns `[n0, n0+nc)`, transformed as `e`
    /// says, in `u32` words.
    unsafe fn pack(buf: &mut [u32], b: MatRef<'_>, e: Epilogue<'_>, k: usize, n0: usize, nc: usize);
    /// The tile `A_panel[steps][MR] · B_panel[steps][NV · LANES]`.
    unsafe fn tile(steps: usize, a: *const u32, b: *const u32) -> Acc<S, MR, NV>;
}

/// Which of our kernels a packed matrix is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F, f32.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX-512 with AVX512-BF16 products.
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// AVX2 with FMA, f32.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// NEON (every aarch64 CPU), f32.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The kernel for `precision` on this CPU (AVX-512 before AVX2 unless `avx2_only`).
    #[cfg(target_arch = "x86_64")]
    pub fn detect(precision: MatmulPrecision, avx2_only: bool) -> Option<Self> {
        let avx512 = !avx2_only && is_x86_feature_detected!("avx512f");
        match precision {
            MatmulPrecision::F32 if avx512 => Some(Kernel::Avx512),
            MatmulPrecision::F32 => avx2::supported().then_some(Kernel::Avx2),
            MatmulPrecision::Bf16 => (avx512 && avx512::bf16_supported()).then_some(Kernel::Avx512Bf16),
        }
    }

    /// The kernel for `precision` on this CPU: NEON in f32; none in bf16, or for `avx2_only`.
    #[cfg(target_arch = "aarch64")]
    pub fn detect(precision: MatmulPrecision, avx2_only: bool) -> Option<Self> {
        (precision == MatmulPrecision::F32 && !avx2_only).then_some(Kernel::Neon)
    }

    /// The name reports give it.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => "avx512-bf16",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "neon",
        }
    }

    /// Accumulator rows and columns of its tile.
    fn tile(self) -> (usize, usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Avx512Bf16 => (AVX512_MR, 16 * AVX512_NV),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => (AVX2_MR, 8 * AVX2_NV),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => (NEON_MR, 4 * NEON_NV),
        }
    }

    /// Accumulator rows of its tile.
    fn mr(self) -> usize {
        self.tile().0
    }

    /// Columns of its tile.
    fn nr(self) -> usize {
        self.tile().1
    }

    /// Whether it multiplies bf16 pairs (one packed step per two steps of `k`).
    fn bf16(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512Bf16 {
            return true;
        }
        false
    }

    /// Packed steps of `k`.
    fn steps(self, k: usize) -> usize {
        if self.bf16() { k.div_ceil(2) } else { k }
    }
}

/// The AVX-512 tile: 8 rows of 3 zmm (24 accumulators of 32 registers).
#[cfg(target_arch = "x86_64")]
pub const AVX512_MR: usize = 8;
/// zmm per AVX-512 tile row.
#[cfg(target_arch = "x86_64")]
pub const AVX512_NV: usize = 3;
/// The AVX2 tile: 6 rows of 2 ymm (12 accumulators of 16 registers).
#[cfg(target_arch = "x86_64")]
pub const AVX2_MR: usize = 6;
/// ymm per AVX2 tile row.
#[cfg(target_arch = "x86_64")]
pub const AVX2_NV: usize = 2;
/// The NEON tile: 6 rows of 4 q registers (24 accumulators of 32 registers).
#[cfg(target_arch = "aarch64")]
pub const NEON_MR: usize = 6;
/// q registers per NEON tile row.
#[cfg(target_arch = "aarch64")]
pub const NEON_NV: usize = 4;

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
    /// Number of panels of `mr` rows.
    fn panels(self, mr: usize) -> usize {
        match self {
            Rows::Plain(m) => m.div_ceil(mr),
            Rows::Gated(h) => h.div_ceil(mr / 2),
        }
    }

    /// The product row packed at row `r` of panel `p`, if any.
    fn source(self, mr: usize, p: usize, r: usize) -> Option<usize> {
        match self {
            Rows::Plain(m) => Some(p * mr + r).filter(|&i| i < m),
            Rows::Gated(h) => {
                let i = p * (mr / 2) + r % (mr / 2);
                (i < h).then_some(if r < mr / 2 { i } else { h + i })
            }
        }
    }

    /// The first output row of panel `p` and how many it has.
    fn outputs(self, mr: usize, p: usize) -> (usize, usize) {
        match self {
            Rows::Plain(m) => (p * mr, (m - p * mr).min(mr)),
            Rows::Gated(h) => (p * (mr / 2), (h - p * (mr / 2)).min(mr / 2)),
        }
    }
}

/// `A` packed as `[panel][step][MR]` words: f32 bits, or bf16 pairs (`lo` in the low half).
pub struct Packed {
    kernel: Kernel,
    rows: Rows,
    k: usize,
    data: Vec<u32>,
}

/// Two bf16 values (round to nearest even) in one `u32`, `lo` in the low half.
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    u32::from(half::bf16::from_f32(lo).to_bits()) | (u32::from(half::bf16::from_f32(hi).to_bits()) << 16)
}

impl Packed {
    /// Packs the row-major `· × k` product matrix `w`, its rows arranged as `rows`, for `kernel`
    /// (which [`Kernel::detect`] found on this CPU).
    pub fn new(w: &[f32], rows: Rows, k: usize, kernel: Kernel) -> Self {
        let (mr, steps) = (kernel.mr(), kernel.steps(k));
        let mut data = vec![0u32; rows.panels(mr) * steps * mr];
        // Each panel is the transpose of its rows (zeros where a row or a step is missing), in
        // parallel: this is most of the time an engine takes to build.
        data.par_chunks_mut((steps * mr).max(1)).enumerate().for_each(|(p, panel)| {
            for (r, i) in (0..mr).filter_map(|r| rows.source(mr, p, r).map(|i| (r, i))) {
                let row = &w[i * k..][..k];
                let words = panel.iter_mut().skip(r).step_by(mr);
                if kernel.bf16() {
                    words
                        .zip(row.chunks(2))
                        .for_each(|(word, pair)| *word = bf16_pair(pair[0], pair.get(1).copied().unwrap_or(0.0)));
                } else {
                    words.zip(row).for_each(|(word, x)| *word = x.to_bits());
                }
            }
        });
        Packed { kernel, rows, k, data }
    }

    /// The kernel it is laid out for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Words held.
    pub fn len(&self) -> usize {
        self.data.len()
    }
}

/// A `dst` pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
pub struct DstPtr(*mut f32);
// SAFETY: tasks write disjoint (row range × column range) tiles of the same exclusively
// borrowed slice, and the parallel loop joins before the borrow ends.
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

/// One task's share of a product: the output, `A`, `B`, the epilogue, its columns `(n0, nc)`
/// and its row panels `[p0, p1)`.
#[derive(Clone, Copy)]
pub struct Block<'a> {
    dst: DstPtr,
    dst_stride: usize,
    a: &'a Packed,
    b: MatRef<'a>,
    e: Epilogue<'a>,
    cols: (usize, usize),
    panels: (usize, usize),
}

thread_local! {
    /// Packed `B` block of the current task (reused across calls on this thread).
    static PACK: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// See [`super::matmul`]; views were bounds-checked by the caller.
pub fn matmul(dst: MatMut<'_>, a: &Packed, b: MatRef<'_>, n: usize, e: Epilogue<'_>, threads: usize) {
    let plan = TaskPlan::new(a.rows.panels(a.kernel.mr()), a.k, n, a.kernel.nr(), threads);
    let (ptr, dst_stride) = (DstPtr(dst.data.as_mut_ptr()), dst.row_stride);
    let task = |t: usize| {
        let (cols, panels) = plan.task(t, n);
        if cols.1 == 0 || panels.0 >= panels.1 {
            return;
        }
        let block = Block { dst: ptr, dst_stride, a, b, e, cols, panels };
        PACK.with_borrow_mut(|buf| run_block(block, buf));
    };
    let tasks = plan.col_tasks * plan.row_tasks;
    if threads > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Runs `block` on the kernel its `A` was packed for.
fn run_block(block: Block<'_>, buf: &mut Vec<u32>) {
    // SAFETY: the kernel's features were detected when `A` was packed; the block's tile is
    // inside `dst` (checked by the caller) and no other task writes it.
    unsafe {
        match block.a.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::run_block_f32(block, buf),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => avx512::run_block_bf16(block, buf),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::run_block_f32(block, buf),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => neon::run_block_f32(block, buf),
        }
    }
}

/// How a product is split into tasks: contiguous ranges of `nr`-column panels (each small
/// enough for its packed block to stay in L2), and, when there are too few of those to keep
/// every thread busy, ranges of row panels.
struct TaskPlan {
    nr: usize,
    col_panels: usize,
    col_tasks: usize,
    row_panels: usize,
    row_tasks: usize,
}

impl TaskPlan {
    fn new(row_panels: usize, k: usize, n: usize, nr: usize, threads: usize) -> Self {
        let col_panels = n.div_ceil(nr);
        let max_panels = (BLOCK_BYTES / (4 * nr * k.max(1))).max(1);
        // At least two tasks per thread where the columns allow, in a multiple of the thread
        // count so that equal tasks split evenly.
        let balanced = col_panels.div_ceil(max_panels).max(2 * threads).div_ceil(threads) * threads;
        let col_tasks = balanced.min(col_panels).max(1);
        let row_tasks = row_panels.min((2 * threads).div_ceil(col_tasks)).max(1);
        TaskPlan { nr, col_panels, col_tasks, row_panels, row_tasks }
    }

    /// Columns `(n0, nc)` and row panels `[p0, p1)` of task `t`.
    fn task(&self, t: usize, n: usize) -> ((usize, usize), (usize, usize)) {
        let (c, r) = (t / self.row_tasks, t % self.row_tasks);
        let (q0, q1) = (c * self.col_panels / self.col_tasks, (c + 1) * self.col_panels / self.col_tasks);
        let n0 = (q0 * self.nr).min(n);
        let nc = (q1 * self.nr).min(n) - n0;
        let (p0, p1) = (r * self.row_panels / self.row_tasks, (r + 1) * self.row_panels / self.row_tasks);
        ((n0, nc), (p0, p1))
    }
}

/// Packs the block's columns of `B` and computes its panels of the output with tiles of
/// `MR × NV` registers of `S`, operands as `O` says.
#[inline(always)]
pub unsafe fn run_tiles<S: Simd, O: Operands<S, MR, NV>, const MR: usize, const NV: usize>(
    block: Block<'_>,
    buf: &mut Vec<u32>,
) {
    let nr = NV * S::LANES;
    let ((n0, nc), (p0, p1)) = (block.cols, block.panels);
    let (col_panels, steps) = (nc.div_ceil(nr), O::steps(block.a.k));
    buf.resize(col_panels * steps * nr, 0);
    O::pack(buf, block.b, block.e, block.a.k, n0, nc);
    for p in p0..p1 {
        let a_panel = block.a.data.as_ptr().add(p * steps * MR);
        for j in 0..col_panels {
            let acc = O::tile(steps, a_panel, buf.as_ptr().add(j * steps * nr));
            store::<S, MR, NV>(acc, block, p, (n0 + j * nr, (nc - j * nr).min(nr)));
        }
    }
}

/// Row `kk` of `b`, `lanes` columns from `col` (zeros past them), normalised by `e.rhs_norm`
/// and scaled by `e.rhs_scale` when given; all zeros when `lanes` is 0.
#[inline(always)]
pub unsafe fn load_b<S: Simd>(b: MatRef<'_>, e: Epilogue<'_>, kk: usize, col: usize, lanes: usize) -> S::V {
    if lanes == 0 {
        return S::zero();
    }
    let mut v = S::load_first(b.data.as_ptr().add(kk * b.row_stride + col), lanes);
    if let Some(norm) = e.rhs_norm {
        let mean = S::load_first(norm.mean.as_ptr().add(col), lanes);
        let rstd = S::load_first(norm.rstd.as_ptr().add(col), lanes);
        let centred = S::mul(S::sub(v, mean), rstd);
        let shifted = S::fma(centred, S::splat(norm.weight[kk]), S::splat(norm.bias[kk]));
        v = S::keep_first(shifted, lanes);
    }
    match e.rhs_scale {
        Some(s) => S::mul(v, S::splat(s[kk])),
        None => v,
    }
}

/// f32 operands: one FMA per element and step of `k`.
pub struct F32;

impl<S: Simd, const MR: usize, const NV: usize> Operands<S, MR, NV> for F32 {
    fn steps(k: usize) -> usize {
        k
    }

    #[inline(always)]
    unsafe fn pack(buf: &mut [u32], b: MatRef<'_>, e: Epilogue<'_>, k: usize, n0: usize, nc: usize) {
        let nr = NV * S::LANES;
        let out = buf.as_mut_ptr() as *mut f32;
        for j in 0..nc.div_ceil(nr) {
            for kk in 0..k {
                for v in 0..NV {
                    let col = j * nr + v * S::LANES;
                    let x = load_b::<S>(b, e, kk, n0 + col, nc.saturating_sub(col).min(S::LANES));
                    S::store(out.add((j * k + kk) * nr + v * S::LANES), x);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn tile(k: usize, a: *const u32, b: *const u32) -> Acc<S, MR, NV> {
        let (a, b, nr) = (a as *const f32, b as *const f32, NV * S::LANES);
        let mut acc = [[S::zero(); NV]; MR];
        for kk in 0..k {
            let bv: [S::V; NV] = std::array::from_fn(|v| S::load(b.add(kk * nr + v * S::LANES)));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add(kk * MR + i));
                for (r, bvv) in row.iter_mut().zip(&bv) {
                    *r = S::fma(av, *bvv, *r);
                }
            }
        }
        acc
    }
}

/// Writes the valid part of panel `p`'s tile at column `col0` (`cols` wide): plain rows get
/// the bias and, when accumulating, the previous contents; gated rows get
/// `(first + bias) · (second + bias)`.
#[inline(always)]
unsafe fn store<S: Simd, const MR: usize, const NV: usize>(
    acc: Acc<S, MR, NV>,
    block: Block<'_>,
    p: usize,
    (col0, cols): (usize, usize),
) {
    let e = block.e;
    let bias = |i: usize| S::splat(e.bias.map_or(0.0, |b| b[i]));
    let rows = block.a.rows;
    let (first, count) = rows.outputs(MR, p);
    for i in 0..count {
        let out = first + i;
        let base = block.dst.0.add(out * block.dst_stride + col0);
        for (v, (&first_half, &second_half)) in acc[i].iter().zip(&acc[(i + MR / 2) % MR]).enumerate() {
            let lanes = cols.saturating_sub(v * S::LANES).min(S::LANES);
            if lanes == 0 {
                break;
            }
            let at = base.add(v * S::LANES);
            let val = match rows {
                Rows::Plain(_) => {
                    let val = S::add(first_half, bias(out));
                    if e.accumulate { S::add(val, S::load_first(at, lanes)) } else { val }
                }
                Rows::Gated(h) => S::mul(S::add(first_half, bias(out)), S::add(second_half, bias(h + out))),
            };
            S::store_first(at, lanes, val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel of this architecture.
    #[cfg(target_arch = "x86_64")]
    const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx512Bf16, Kernel::Avx2];
    /// Every kernel of this architecture.
    #[cfg(target_arch = "aarch64")]
    const ALL: [Kernel; 1] = [Kernel::Neon];

    #[test]
    fn tasks_cover_every_column_and_row_once() {
        for nr in ALL.map(Kernel::nr) {
            for (m, k, n, threads) in [
                (1024usize, 512usize, 1024usize, 2usize),
                (2048, 1024, 256, 2),
                (128, 64, 7680, 2),
                (8, 3, 5, 1),
                (24, 8, 1, 4),
            ] {
                let plan = TaskPlan::new(m.div_ceil(8), k, n, nr, threads);
                let mut covered = vec![0u32; plan.row_panels * n];
                for t in 0..plan.col_tasks * plan.row_tasks {
                    let ((n0, nc), (p0, p1)) = plan.task(t, n);
                    assert!(nc * 4 * k <= BLOCK_BYTES.max(4 * k * nr), "{m}x{k}x{n}: block of {nc} columns too big");
                    for p in p0..p1 {
                        covered[p * n + n0..p * n + n0 + nc].iter_mut().for_each(|c| *c += 1);
                    }
                }
                assert!(covered.iter().all(|&c| c == 1), "{m}x{k}x{n}, {nr} columns a panel");
            }
        }
    }

    #[test]
    fn gated_panels_pair_each_row_with_its_partner() {
        for mr in ALL.map(Kernel::mr) {
            let rows = Rows::Gated(7);
            let mut seen = vec![0u32; 14];
            for p in 0..rows.panels(mr) {
                let (first, count) = rows.outputs(mr, p);
                for q in 0..mr / 2 {
                    let (a, b) = (rows.source(mr, p, q), rows.source(mr, p, q + mr / 2));
                    assert_eq!(a.map(|i| i + 7), b, "panel {p}, row {q}");
                    if let Some(i) = a {
                        assert_eq!(i, first + q);
                        assert!(q < count);
                        seen[i] += 1;
                        seen[i + 7] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{mr} rows a panel: {seen:?}");
        }
    }
}
