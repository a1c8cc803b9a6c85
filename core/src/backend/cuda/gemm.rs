//! Matrix products on cuBLASLt: every 1×1 convolution and the 2×2 stride-2 downsampling.
//!
//! On NHWC feature maps a 1×1 conv is `D = W·X` in column-major terms: `X` is `cin × pixels`
//! with leading dimension `cin`, `D` is `cout × pixels`, and the PyTorch weight `[cout][cin]`
//! (row-major) is `Wᵀ` column-major, so `A` is read transposed. The per-output-channel bias is
//! cuBLASLt's bias epilogue (a vector over the rows of `D`), and a residual is `C = D` with
//! `β = 1`, in place. Inputs and outputs are FP16 or f32; products accumulate in f32 (never
//! TF32). A plan fixes shapes, pointers and the algorithm once, when an engine instance is
//! created, so running it is one `cublasLtMatmul` call (also inside a CUDA graph).

use std::ffi::c_void;
use std::mem::size_of;
use std::sync::Arc;

use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::device::cuda_error;
use crate::error::{Error, Result};

/// Workspace cuBLASLt may use per product (NVIDIA's recommendation for Hopper), allocated once
/// per engine.
pub(super) const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLASLt handle and its workspace.
pub struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
}

// The handle is used from one engine instance at a time (the engine's lock).
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Lt {
    /// Creates the handle and allocates the workspace on `stream`'s device.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let handle = lt::create_handle().map_err(cuda_error("creating the cuBLASLt handle"))?;
        let workspace =
            unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }.map_err(cuda_error("allocating the cuBLASLt workspace"))?;
        Ok(Lt { handle, workspace })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // Nothing useful can be done with a failure while dropping.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// Element type of every matrix of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GemmType {
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
}

/// Shape of `D (rows × cols) = Aᵀ·B`, column-major, repeated over `batch` with strides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmShape {
    /// Rows of `D` (output channels).
    pub rows: u64,
    /// Columns of `D` per batch (pixels).
    pub cols: u64,
    /// Inner dimension (input channels, or 2 × input channels for one row of a 2×2 kernel).
    pub depth: u64,
    /// Leading dimension of `B` (elements between consecutive pixels).
    pub ldb: i64,
    /// Leading dimension of `D`.
    pub ldd: i64,
    /// Number of products.
    pub batch: i32,
    /// Elements between the `A` of consecutive batches (0: one `A` for all).
    pub stride_a: i64,
    /// Elements between the `B` of consecutive batches.
    pub stride_b: i64,
    /// Elements between the `D` of consecutive batches.
    pub stride_d: i64,
}

impl GemmShape {
    /// A 1×1 conv `cin → cout` over `pixels` contiguous NHWC pixels.
    pub fn conv1x1(cin: usize, cout: usize, pixels: usize) -> Self {
        GemmShape {
            rows: cout as u64,
            cols: pixels as u64,
            depth: cin as u64,
            ldb: cin as i64,
            ldd: cout as i64,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_d: 0,
        }
    }
}

impl GemmShape {
    /// One kernel row of the 2×2 stride-2 conv `cin → cout` producing `images × h × w` pixels
    /// from the `2h × 2w` NHWC input: for every output row, `D` (its `w` pixels) `+=`
    /// `W_dy · B`, where `B`'s column `x` is input pixels `2x, 2x + 1` of row `2y + dy` (`2cin`
    /// contiguous values). The row `dy = 1` starts [`GemmShape::down_next_row`] elements later.
    pub fn down_row(cin: usize, cout: usize, images: usize, (h, w): (usize, usize)) -> Result<Self> {
        Ok(GemmShape {
            rows: cout as u64,
            cols: w as u64,
            depth: 2 * cin as u64,
            ldb: 2 * cin as i64,
            ldd: cout as i64,
            batch: batch_count(images * h)?,
            stride_a: 0,
            stride_b: (2 * (2 * w) * cin) as i64,
            stride_d: (w * cout) as i64,
        })
    }

    /// Elements between input rows `2y` and `2y + 1` of [`GemmShape::down_row`].
    pub fn down_next_row(cin: usize, w: usize) -> usize {
        2 * w * cin
    }

    /// conv3 with each image's own weights (`c × c`, the attention folded in) over its `hw`
    /// pixels.
    pub fn per_image(c: usize, hw: usize, images: usize) -> Result<Self> {
        Ok(GemmShape {
            rows: c as u64,
            cols: hw as u64,
            depth: c as u64,
            ldb: c as i64,
            ldd: c as i64,
            batch: batch_count(images)?,
            stride_a: (c * c) as i64,
            stride_b: (hw * c) as i64,
            stride_d: (hw * c) as i64,
        })
    }
}

fn batch_count(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::InvalidImage(format!("{n} products in one batch exceed cuBLASLt's range")))
}

/// Device addresses a plan reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct GemmPointers {
    /// Weights, row-major `[rows][depth]`.
    pub a: u64,
    /// Input features.
    pub b: u64,
    /// Output features (also read when accumulating).
    pub d: u64,
    /// Bias over the rows, if any.
    pub bias: Option<u64>,
}

struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(dtype: sys::cudaDataType, rows: u64, cols: u64, ld: i64, batch: i32, stride: i64) -> Result<Self> {
        let layout = Layout(lt::create_matrix_layout(dtype, rows, cols, ld).map_err(cuda_error("cuBLASLt layout"))?);
        if batch > 1 {
            use sys::cublasLtMatrixLayoutAttribute_t as A;
            unsafe {
                lt::set_matrix_layout_attribute(layout.0, A::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, ptr(&batch), 4)
                    .map_err(cuda_error("cuBLASLt batch count"))?;
                lt::set_matrix_layout_attribute(
                    layout.0,
                    A::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                    ptr(&stride),
                    8,
                )
                .map_err(cuda_error("cuBLASLt batch stride"))?;
            }
        }
        Ok(layout)
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);

impl Drop for Desc {
    fn drop(&mut self) {
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

struct Pref(sys::cublasLtMatmulPreference_t);

impl Drop for Pref {
    fn drop(&mut self) {
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

/// The alignment, in bytes, every batch of a matrix at `address` with `stride_bytes` between
/// batches keeps: the largest power of two dividing both, at most 256 (what cuBLASLt assumes
/// without a preference).
fn alignment(address: u64, stride_bytes: u64) -> u32 {
    1 << (address | stride_bytes | 256).trailing_zeros()
}

fn ptr<T>(value: &T) -> *const c_void {
    value as *const T as *const c_void
}

/// Algorithms cuBLASLt's heuristic proposes per product, timed by [`GemmPlan::tune`].
const CANDIDATES: usize = 8;

/// One product with everything fixed: descriptors, pointers, algorithm.
pub struct GemmPlan {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    algo: sys::cublasLtMatmulAlgo_t,
    candidates: Vec<sys::cublasLtMatmulAlgo_t>,
    pointers: GemmPointers,
    beta: f32,
}

// Descriptors are plain host memory owned by the plan.
unsafe impl Send for GemmPlan {}
unsafe impl Sync for GemmPlan {}

impl GemmPlan {
    /// Plans `D = Aᵀ·B (+ bias) (+ D if accumulate)` with cuBLASLt's heuristic best algorithm
    /// for the workspace (and keeps its runners-up for [`GemmPlan::tune`]).
    pub fn new(lt_: &Lt, dtype: GemmType, shape: GemmShape, pointers: GemmPointers, accumulate: bool) -> Result<Self> {
        let data = match dtype {
            GemmType::F16 => sys::cudaDataType_t::CUDA_R_16F,
            GemmType::F32 => sys::cudaDataType_t::CUDA_R_32F,
        };
        let desc = Desc(
            lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType_t::CUDA_R_32F)
                .map_err(cuda_error("cuBLASLt matmul descriptor"))?,
        );
        use sys::cublasLtMatmulDescAttributes_t as D;
        let transpose: i32 = 1; // CUBLAS_OP_T (cublasOperation_t is not in the cuBLASLt bindings)
        let epilogue = match pointers.bias {
            Some(_) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            None => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
        } as u32;
        unsafe {
            lt::set_matmul_desc_attribute(desc.0, D::CUBLASLT_MATMUL_DESC_TRANSA, ptr(&transpose), 4)
                .map_err(cuda_error("cuBLASLt transpose"))?;
            lt::set_matmul_desc_attribute(desc.0, D::CUBLASLT_MATMUL_DESC_EPILOGUE, ptr(&epilogue), 4)
                .map_err(cuda_error("cuBLASLt epilogue"))?;
            if let Some(bias) = &pointers.bias {
                lt::set_matmul_desc_attribute(desc.0, D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, ptr(bias), 8)
                    .map_err(cuda_error("cuBLASLt bias"))?;
            }
        }
        let batch = shape.batch;
        let a = Layout::new(data, shape.depth, shape.rows, shape.depth as i64, batch, shape.stride_a)?;
        let b = Layout::new(data, shape.depth, shape.cols, shape.ldb, batch, shape.stride_b)?;
        let d = Layout::new(data, shape.rows, shape.cols, shape.ldd, batch, shape.stride_d)?;
        let pref = Pref(lt::create_matmul_pref().map_err(cuda_error("cuBLASLt preference"))?);
        let workspace = WORKSPACE_BYTES;
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        // cuBLASLt assumes 256-byte aligned matrices unless told otherwise; the down conv's
        // second kernel row starts mid-allocation, so say what each matrix guarantees.
        let element = match dtype {
            GemmType::F16 => 2,
            GemmType::F32 => 4,
        };
        let aligned = |address: u64, stride: i64| alignment(address, stride.unsigned_abs() * element);
        let alignments = [
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, aligned(pointers.a, shape.stride_a)),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, aligned(pointers.b, shape.stride_b)),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, aligned(pointers.d, shape.stride_d)),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, aligned(pointers.d, shape.stride_d)),
        ];
        unsafe {
            lt::set_matmul_pref_attribute(
                pref.0,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                ptr(&workspace),
                size_of::<usize>(),
            )
            .map_err(cuda_error("cuBLASLt workspace preference"))?;
            for (attribute, bytes) in &alignments {
                lt::set_matmul_pref_attribute(pref.0, *attribute, ptr(bytes), size_of::<u32>())
                    .map_err(cuda_error("cuBLASLt alignment preference"))?;
            }
        }
        let mut results: Vec<sys::cublasLtMatmulHeuristicResult_t> =
            (0..CANDIDATES).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut count = 0;
        unsafe {
            sys::cublasLtMatmulAlgoGetHeuristic(
                lt_.handle,
                desc.0,
                a.0,
                b.0,
                d.0,
                d.0,
                pref.0,
                CANDIDATES as i32,
                results.as_mut_ptr(),
                &mut count,
            )
        }
        .result()
        .map_err(cuda_error("cuBLASLt heuristic"))?;
        let candidates: Vec<_> = results
            .iter()
            .take(count.max(0) as usize)
            .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|r| r.algo)
            .collect();
        let Some(&algo) = candidates.first() else {
            return Err(Error::Cuda(format!("cuBLASLt has no algorithm for a {dtype:?} product {shape:?}")));
        };
        Ok(GemmPlan { desc, a, b, d, algo, candidates, pointers, beta: if accumulate { 1.0 } else { 0.0 } })
    }

    /// The algorithm in use.
    pub fn algo(&self) -> sys::cublasLtMatmulAlgo_t {
        self.algo
    }

    /// Uses `algo` (one that [`GemmPlan::tune`] chose for a product of the same shape, here
    /// or in an engine file) if it is one of the candidates cuBLASLt proposes for this product
    /// on this device; otherwise keeps the plan as it is and returns `false`, so an algorithm
    /// from a file is never run untrusted.
    pub fn adopt(&mut self, algo: sys::cublasLtMatmulAlgo_t) -> bool {
        let known = self.candidates.iter().any(|c| c.data == algo.data);
        if known {
            self.algo = algo;
        }
        known
    }

    /// Times every candidate algorithm on the plan's own buffers (their contents are
    /// overwritten) and keeps the fastest; a candidate that fails to run is skipped.
    pub fn tune(&mut self, lt_: &Lt, stream: &CudaStream) -> Result<()> {
        const RUNS: usize = 3;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut best: Option<(f32, sys::cublasLtMatmulAlgo_t)> = None;
        for algo in self.candidates.clone() {
            self.algo = algo;
            // SAFETY: the plan's buffers are live (tuning runs when the instance is created).
            if unsafe { self.run(lt_, stream) }.is_err() {
                continue;
            }
            let start = stream.record_event(timing).map_err(cuda_error("timing a product"))?;
            for _ in 0..RUNS {
                unsafe { self.run(lt_, stream)? };
            }
            let end = stream.record_event(timing).map_err(cuda_error("timing a product"))?;
            end.synchronize().map_err(cuda_error("timing a product"))?;
            let ms = start.elapsed_ms(&end).map_err(cuda_error("timing a product"))?;
            if best.is_none_or(|(fastest, _)| ms < fastest) {
                best = Some((ms, algo));
            }
        }
        let (_, algo) = best.ok_or_else(|| Error::Cuda("no cuBLASLt algorithm ran for a product".into()))?;
        self.algo = algo;
        Ok(())
    }

    /// Enqueues the product on `stream`.
    ///
    /// # Safety
    /// The plan's pointers must still address live buffers of the planned sizes on `stream`'s
    /// device.
    pub unsafe fn run(&self, lt_: &Lt, stream: &CudaStream) -> Result<()> {
        let alpha = 1.0f32;
        let p = &self.pointers;
        let (workspace, _guard) = lt_.workspace.device_ptr(stream);
        unsafe {
            lt::matmul(
                lt_.handle,
                self.desc.0,
                ptr(&alpha),
                ptr(&self.beta),
                p.a as *const c_void,
                self.a.0,
                p.b as *const c_void,
                self.b.0,
                p.d as *const c_void,
                self.d.0,
                p.d as *mut c_void,
                self.d.0,
                &self.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(cuda_error("cuBLASLt matmul"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Elements a column-major operand spans: the last batch's last column ends there.
    fn extent(rows: u64, cols: u64, ld: i64, batch: i32, stride: i64) -> i64 {
        stride * (batch as i64 - 1) + ld * (cols as i64 - 1) + rows as i64
    }

    proptest! {
        /// Every product of the down conv reads inside its input map and writes inside its
        /// output map, whatever the size, channels and batch.
        #[test]
        fn down_products_stay_inside_their_maps(c8 in 1usize..40, h in 1usize..40, w in 1usize..40, n in 1usize..5) {
            let (cin, cout) = (8 * c8, 16 * c8);
            let s = GemmShape::down_row(cin, cout, n, (h, w)).unwrap();
            let input = (n * 2 * h * 2 * w * cin) as i64;
            let output = (n * h * w * cout) as i64;
            let b = extent(s.depth, s.cols, s.ldb, s.batch, s.stride_b);
            prop_assert!(GemmShape::down_next_row(cin, w) as i64 + b <= input);
            prop_assert_eq!(extent(s.rows, s.cols, s.ldd, s.batch, s.stride_d), output);
            // Batches tile the output exactly: row y of image i is batch i·h + y.
            prop_assert_eq!(s.stride_d * s.batch as i64, output);
        }

        /// The per-image conv3 reads each image's own weights and pixels and writes its own
        /// pixels.
        #[test]
        fn per_image_products_stay_inside_their_maps(c8 in 1usize..64, hw in 1usize..5000, n in 1usize..9) {
            let c = 8 * c8;
            let s = GemmShape::per_image(c, hw, n).unwrap();
            prop_assert_eq!(extent(s.depth, s.rows, s.depth as i64, s.batch, s.stride_a), (n * c * c) as i64);
            prop_assert_eq!(extent(s.depth, s.cols, s.ldb, s.batch, s.stride_b), (n * hw * c) as i64);
            prop_assert_eq!(extent(s.rows, s.cols, s.ldd, s.batch, s.stride_d), (n * hw * c) as i64);
        }
    }

    /// The alignment told to cuBLASLt is what every batch of the matrix keeps, capped at 256.
    #[test]
    fn alignment_is_what_every_batch_keeps() {
        assert_eq!(alignment(0x7f00_0000_0000, 0), 256);
        assert_eq!(alignment(0x7f00_0000_0040, 0), 64);
        assert_eq!(alignment(0x7f00_0000_0000, 2 * 8 * 3), 16);
        assert_eq!(alignment(0x7f00_0000_0100, 512), 256);
        assert_eq!(alignment(0x7f00_0000_0002, 1024), 2);
        // The down conv's second row of the width-8 test model at the smallest size: the
        // input (256-byte aligned) plus 2·w·cin halves, w = 1, cin = 16.
        let next_row = (GemmShape::down_next_row(16, 1) * 2) as u64;
        let s = GemmShape::down_row(16, 32, 1, (1, 1)).unwrap();
        assert_eq!(alignment(0x7f00_0000_0000 + next_row, s.stride_b as u64 * 2), 64);
    }

    #[test]
    fn batches_beyond_cublaslt_range_are_errors() {
        assert!(GemmShape::per_image(8, 1, 1 << 31).is_err());
    }
}
