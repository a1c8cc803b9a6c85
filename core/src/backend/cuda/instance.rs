//! An engine instance: the buffers of one input shape (batch × padded height × width) and the
//! fused program lowered onto them as a fixed launch list (kernels, cuBLASLt products,
//! copies). The first run enqueues the list directly; it is then captured once into
//! a CUDA graph that later runs replay with a single launch.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::Arc;

use cudarc::cublaslt::sys::cublasLtMatmulAlgo_t;
use cudarc::driver::sys::{
    CUgraphInstantiate_flags, CUlaunchAttribute, CUlaunchAttributeID, CUlaunchConfig, CUstreamCaptureMode,
};
use cudarc::driver::{CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig};

use super::depthwise::{Depthwise, images_dim, most_partials, pool_sum_grid};
use super::device::cuda_error;
use super::gemm::{GemmPlan, GemmPointers, GemmShape, Lt};
use super::kernels::{Kernels, TensorCoreKernels};
use super::saved::{Algo, ProductKey};
use super::weights::{BlockWeights, Dense, Element, Pair, StepWeights};
use crate::backend::{Fusion, TILING_HINT, TimedChoice};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::passes::{Program, Step, plan};
use crate::spec::IMAGE_CHANNELS;
use crate::tlc::{AttentionPool, MapPool};

/// A kernel argument.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// One enqueued operation.
enum Op {
    Kernel { function: CudaFunction, config: LaunchConfig, args: Vec<Arg> },
    Gemm(GemmPlan),
    Copy { dst: u64, src: u64, bytes: usize },
}

/// An operation, what it computes and at which level of the network (the key of a profile).
struct Launch {
    label: &'static str,
    level: usize,
    op: Op,
}

/// Shape an instance serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Images per run.
    pub batch: usize,
    /// Padded height.
    pub height: usize,
    /// Padded width.
    pub width: usize,
}

/// Buffers and launch list for one [`Shape`].
pub struct Instance<T> {
    /// The shape served.
    pub shape: Shape,
    /// Planar f32 input images (batch × 3 × H × W).
    pub input: CudaSlice<f32>,
    /// Planar f32 output images.
    pub output: CudaSlice<f32>,
    _buffers: Vec<CudaSlice<T>>,
    _stats: Vec<CudaSlice<f32>>,
    launches: Vec<Launch>,
    /// Per step of the program: its output value, where that value lives (NHWC `T`; the
    /// planar f32 output for the last step), its element count, and the number of launches
    /// once the step is enqueued.
    steps: Vec<StepOutput>,
    graph: Option<CudaGraph>,
    /// Whether a kernel may start while the operation before it finishes ([`enqueue_all`]).
    overlap: bool,
    /// The timed choices made when the launch list was built.
    pub choices: Vec<TimedChoice>,
    /// Device bytes the instance allocated (counted from its buffers).
    pub bytes: usize,
}

/// Where a step's output is once the step has run.
struct StepOutput {
    value: ValueId,
    ptr: u64,
    len: usize,
    launches_end: usize,
}

// Raw graph and plan handles are only used under the engine's lock.
unsafe impl<T: Send> Send for Instance<T> {}
unsafe impl<T: Sync> Sync for Instance<T> {}

const THREADS: u32 = 256;

/// One 256-thread block per 256 elements (at least one block): the grid of the element-wise
/// network kernels and of the frame conversions.
pub(super) fn grid_for(elements: usize) -> Result<LaunchConfig> {
    let blocks = elements.div_ceil(THREADS as usize);
    let blocks =
        u32::try_from(blocks).map_err(|_| Error::InvalidImage("image too large for one CUDA launch".into()))?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// Pixels per block of the tensor-core kernels (`TILE_ROWS` in kernels.cu).
const TILE_ROWS: usize = 64;

/// Dynamic shared memory of a tensor-core kernel holding `tiles` shared tiles of `c` channels
/// (`norm_conv1` one, `ffn` two): `TILE_ROWS` rows of `tile_stride(c)` halves each (kernels.cu).
pub(super) fn tile_shared_bytes(c: usize, tiles: usize) -> usize {
    tiles * TILE_ROWS * (c.div_ceil(16) * 16 + 8) * 2
}

/// Output channels a tensor-core block produces at once (`TILE_CHUNK` in kernels.cu).
const TILE_CHUNK: usize = 128;

/// A tensor-core kernel's grid for `pixels` pixels with `tiles` shared tiles of `c` channels:
/// 128-thread blocks of `TILE_ROWS` pixels, `splits` blocks per tile of pixels (along y:
/// the output splits of `norm_conv1` and `norm_gate`; 1 for the others).
pub(super) fn tile_grid(c: usize, tiles: usize, pixels: usize, splits: usize) -> Result<LaunchConfig> {
    let blocks =
        u32::try_from(pixels.div_ceil(TILE_ROWS)).map_err(|_| Error::InvalidImage("image too large".into()))?;
    let shared_mem_bytes = u32::try_from(tile_shared_bytes(c, tiles)).expect("channel counts are small");
    let splits = u32::try_from(splits).map_err(|_| Error::InvalidArgument(format!("{splits} output splits")))?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), splits.max(1), 1), block_dim: (128, 1, 1), shared_mem_bytes })
}

/// `norm_conv1`'s output splits for `c` input channels: one per `TILE_CHUNK` of its 2c
/// outputs, so each block stores one chunk.
pub(super) fn norm_conv1_splits(c: usize) -> usize {
    (2 * c).div_ceil(TILE_CHUNK)
}

/// Gated channels per pass of a tensor-core block's gate (2 · `TILE_WARPS` groups of 8 in
/// kernels.cu).
const GATE_CHUNK: usize = 64;

/// `norm_gate`'s splits for `c` gated channels: one per `GATE_CHUNK`, so each block takes
/// one pass.
pub(super) fn norm_gate_splits(c: usize) -> usize {
    c.div_ceil(GATE_CHUNK)
}

/// Input channels per block of `attention_weights` (`ATTENTION_CHANNELS` in kernels.cu).
const ATTENTION_CHANNELS: usize = 16;

/// `attention_weights`'s grid for `n` images of `c` gated channels: a 256-thread block per
/// `ATTENTION_CHANNELS` input channels of conv3 and image.
pub(super) fn attention_grid(c: usize, n: usize) -> Result<LaunchConfig> {
    let groups = u32::try_from(c.div_ceil(ATTENTION_CHANNELS))
        .map_err(|_| Error::InvalidArgument(format!("{c} channels are too many for one CUDA launch")))?;
    Ok(LaunchConfig {
        grid_dim: (groups.max(1), images_dim(n)?.max(1), 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Pixels one thread of TLC's window passes slides over along a side with windows of `k`: at
/// least `k`, so that the `k` reads of a thread's first window are spread over as many outputs.
pub(super) fn window_stretch(k: usize) -> usize {
    k.max(32)
}

/// The grid of a TLC window pass over an `n × h × w × c` map sliding along a side of `side`
/// pixels (`w` for `window_row_sums`, `h` for `window_means`) in stretches of `seg`: a thread
/// per stretch and 8 channels.
pub(super) fn windows_grid(
    (n, h, w, c): (usize, usize, usize, usize),
    side: usize,
    seg: usize,
) -> Result<LaunchConfig> {
    grid_for(n * h * w / side * side.div_ceil(seg) * (c / 8))
}

/// How an instance's blocks average their channel attention: the engine's pool, and the
/// network's size multiple from which TLC sizes its windows.
#[derive(Debug, Clone, Copy)]
pub struct BlockAttention {
    /// Global or TLC.
    pub pool: AttentionPool,
    /// The network's size multiple.
    pub size_multiple: usize,
}

fn ptr<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    slice.device_ptr(stream).0
}

fn i32_of(v: usize) -> Result<Arg> {
    i32::try_from(v)
        .map(Arg::I32)
        .map_err(|_| Error::InvalidImage(format!("dimension {v} exceeds the CUDA kernels' range")))
}

/// Largest per-step scratch needs, in elements over the whole batch.
#[derive(Debug, Default)]
struct Scratch {
    /// A block's `c`-channel maps (the normalised input and the gated features).
    features: usize,
    /// The 2c-channel products and the up conv's 4c output (and TLC's f32 window row sums of
    /// c channels, which take no more bytes in either storage type).
    expanded: usize,
    channels: usize,
    attention_weights: usize,
    /// The depthwise kernels' per-block channel sums (f32).
    partials: usize,
}

/// What an instance allocates for a shape, derived from the program alone (no device): the
/// memory plan's slots, the block scratch and the planar images.
#[derive(Debug)]
struct BufferPlan {
    memory: crate::passes::MemoryPlan,
    /// Slots holding a value other than the network input and output (those live in the
    /// planar f32 image buffers).
    slot_used: Vec<bool>,
    scratch: Scratch,
    /// Values in one planar f32 image buffer (batch × 3 × H × W).
    image_len: usize,
    /// Device bytes of everything.
    bytes: usize,
}

/// Device bytes an instance of `shape` allocates for `program` with `element`-byte feature
/// maps (the memory plan's slots, the block scratch and the planar f32 images), from the plan
/// alone: what [`Instance::new`] will ask the device for.
pub(super) fn device_bytes(shape: Shape, program: &Program, graph: &Graph, element: usize) -> usize {
    BufferPlan::new(shape, program, graph, element).bytes
}

impl BufferPlan {
    fn new(shape: Shape, program: &Program, graph: &Graph, element: usize) -> Self {
        let Shape { batch: n, height: h, width: w } = shape;
        let memory = plan(program, graph, h, w);
        let pixels = |v: ValueId| n * (h >> graph.node(v).level) * (w >> graph.node(v).level);
        let mut scratch = Scratch::default();
        for step in &program.steps {
            if let Step::NafBlock { input, .. } = step {
                let c = graph.node(*input).channels;
                scratch.features = scratch.features.max(pixels(*input) * c);
                scratch.expanded = scratch.expanded.max(pixels(*input) * 2 * c);
                scratch.channels = scratch.channels.max(c);
                scratch.attention_weights = scratch.attention_weights.max(n * c * c);
                let level = graph.node(*input).level;
                let partials = n * c * most_partials(c, (h >> level, w >> level));
                scratch.partials = scratch.partials.max(partials);
            }
            if let Step::UpShuffleAdd { input, output, .. } = step {
                scratch.expanded = scratch.expanded.max(pixels(*input) * 4 * graph.node(*output).channels);
            }
        }
        let image_len = n * IMAGE_CHANNELS * h * w;
        let io = [program.input, program.output];
        let slot_used: Vec<bool> = (0..memory.slot_len.len())
            .map(|s| (0..graph.nodes.len()).any(|v| memory.slot_of[v] == Some(s) && !io.contains(&ValueId(v))))
            .collect();
        // One entry per allocation of `Instance::new` (each at least one element).
        let stored = memory.slot_len.iter().zip(&slot_used).filter(|(_, u)| **u).map(|(len, _)| len * n);
        let stored = stored.chain([scratch.features, scratch.expanded, scratch.features, scratch.attention_weights]);
        let f32s = [image_len, image_len, scratch.partials, n * scratch.channels, n * scratch.channels];
        let bytes = stored.map(|len| len.max(1) * element).sum::<usize>()
            + f32s.iter().map(|len| len.max(&1) * 4).sum::<usize>();
        BufferPlan { memory, slot_used, scratch, image_len, bytes }
    }
}

impl<T: Element> Instance<T> {
    /// Allocates the buffers of `shape` and lowers `program` onto them. Products whose
    /// algorithm `tuned` holds (and cuBLASLt still proposes) reuse it; the others are timed
    /// and added to `tuned`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shape: Shape,
        program: &Program,
        graph: &Graph,
        weights: &[StepWeights<T>],
        kernels: &Kernels,
        lt: &Lt,
        stream: &Arc<CudaStream>,
        free_bytes: usize,
        tuned: &mut BTreeMap<ProductKey, Algo>,
        fusion: Fusion,
        overlap: bool,
        pooling: BlockAttention,
    ) -> Result<Self> {
        let Shape { batch: n, height: h, width: w } = shape;
        let BufferPlan { memory, slot_used, scratch: need, image_len, bytes } =
            BufferPlan::new(shape, program, graph, size_of::<T>());
        let pixels = |v: ValueId| n * (h >> graph.node(v).level) * (w >> graph.node(v).level);
        if bytes > free_bytes {
            return Err(Error::OutOfMemory {
                needed_mb: (bytes >> 20) as u64,
                available_mb: (free_bytes >> 20) as u64,
                hint: format!("use a smaller batch or image, or {TILING_HINT}"),
            });
        }
        let alloc_t =
            |len: usize| unsafe { stream.alloc::<T>(len.max(1)) }.map_err(cuda_error("allocating activations"));
        let alloc_f =
            |len: usize| unsafe { stream.alloc::<f32>(len.max(1)) }.map_err(cuda_error("allocating activations"));
        let slots: Vec<Option<CudaSlice<T>>> = memory
            .slot_len
            .iter()
            .zip(&slot_used)
            .map(|(len, used)| used.then(|| alloc_t(len * n)).transpose())
            .collect::<Result<_>>()?;
        let input = alloc_f(image_len)?;
        let output = alloc_f(image_len)?;
        let normed = alloc_t(need.features)?;
        let expanded = alloc_t(need.expanded)?;
        let gated = alloc_t(need.features)?;
        let attention_weights = alloc_t(need.attention_weights)?;
        let partials = alloc_f(need.partials)?;
        let pool = alloc_f(n * need.channels)?;
        let attention = alloc_f(n * need.channels)?;

        let value_ptr = |v: ValueId| -> u64 {
            if v == program.input {
                ptr(&input, stream)
            } else if v == program.output {
                ptr(&output, stream)
            } else {
                let slot = memory.slot_of[v.0].expect("planned value");
                ptr(slots[slot].as_ref().expect("allocated slot"), stream)
            }
        };
        let mut lower = Lowering {
            launches: Vec::new(),
            level: 0,
            kernels,
            lt,
            scratch: [
                ptr(&normed, stream),
                ptr(&expanded, stream),
                ptr(&gated, stream),
                ptr(&attention_weights, stream),
            ],
            stats: [ptr(&partials, stream), ptr(&pool, stream), ptr(&attention, stream)],
            timed: Vec::new(),
            fusion,
            overlap,
            pooling,
            n,
            stream,
            tuned,
        };
        let mut steps = Vec::with_capacity(program.steps.len());
        for (step, weights) in program.steps.iter().zip(weights) {
            let value = step.output();
            let level = graph.node(value).level;
            let (lh, lw) = (h >> level, w >> level);
            lower.level = level;
            lower.step(step, weights, value_ptr, pixels, (lh, lw), graph)?;
            let len = pixels(value) * graph.node(value).channels;
            steps.push(StepOutput { value, ptr: value_ptr(value), len, launches_end: lower.launches.len() });
        }
        let mut buffers: Vec<CudaSlice<T>> = slots.into_iter().flatten().collect();
        buffers.extend([normed, expanded, gated, attention_weights]);
        let stats = vec![partials, pool, attention];
        // What was allocated, counted from the buffers themselves (the plan's `bytes` is what
        // `memory_estimate` reports: a test compares the two on the GPU).
        let allocated = buffers.iter().map(|b| b.len() * size_of::<T>()).sum::<usize>()
            + [&input, &output].into_iter().chain(&stats).map(|b| b.len() * 4).sum::<usize>();
        Ok(Instance {
            shape,
            input,
            output,
            _buffers: buffers,
            _stats: stats,
            launches: lower.launches,
            choices: lower.timed,
            steps,
            graph: None,
            overlap,
            bytes: allocated,
        })
    }

    /// Runs the network on `input` into `output` (both already on the device; the caller
    /// synchronises). The first run enqueues directly and then records the CUDA graph.
    pub fn run(&mut self, lt: &Lt, stream: &Arc<CudaStream>) -> Result<()> {
        if let Some(graph) = &self.graph {
            return graph.launch().map_err(cuda_error("launching the CUDA graph"));
        }
        self.enqueue(lt, stream)?;
        stream.synchronize().map_err(cuda_error("running the network"))?;
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_error("starting CUDA graph capture"))?;
        let enqueued = self.enqueue(lt, stream);
        let captured = stream.end_capture(CUgraphInstantiate_flags(0));
        enqueued?;
        self.graph = captured.map_err(cuda_error("capturing the CUDA graph"))?;
        Ok(())
    }

    /// Device time per operation kind and network level over one direct run (events around
    /// every launch, which run one after another): ("label Ln", milliseconds, launches), in
    /// order of first appearance.
    pub fn profile(&self, lt: &Lt, stream: &Arc<CudaStream>) -> Result<Vec<(String, f64, usize)>> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let event = || stream.record_event(flags).map_err(cuda_error("recording a timing event"));
        let mut marks = vec![event()?];
        for launch in &self.launches {
            enqueue_one(&launch.op, lt, stream, false)?;
            marks.push(event()?);
        }
        stream.synchronize().map_err(cuda_error("profiling the network"))?;
        let mut totals: Vec<(String, f64, usize)> = Vec::new();
        for (launch, pair) in self.launches.iter().zip(marks.windows(2)) {
            let ms = pair[0].elapsed_ms(&pair[1]).map_err(cuda_error("reading a timing event"))? as f64;
            let what = format!("{} L{}", launch.label, launch.level);
            match totals.iter_mut().find(|(known, ..)| *known == what) {
                Some(entry) => {
                    entry.1 += ms;
                    entry.2 += 1;
                }
                None => totals.push((what, ms, 1)),
            }
        }
        Ok(totals)
    }

    /// Runs the network once launch by launch (not as the graph), copying each value of
    /// `wanted` to the host right after the step that produces it: NHWC `T`, in `wanted`'s
    /// order (`None` for a value no step produces). The output map is written as in [`run`].
    ///
    /// [`run`]: Instance::run
    pub fn run_capturing(&self, lt: &Lt, stream: &CudaStream, wanted: &[ValueId]) -> Result<Vec<Option<Vec<T>>>> {
        let mut captured: Vec<Option<Vec<T>>> = wanted.iter().map(|_| None).collect();
        let mut start = 0;
        for step in &self.steps {
            let ops = self.launches[start..step.launches_end].iter().map(|launch| &launch.op);
            enqueue_all(ops, lt, stream, self.overlap)?;
            start = step.launches_end;
            if let Some(i) = wanted.iter().position(|&v| v == step.value) {
                let mut host = vec![T::default(); step.len];
                // SAFETY: `step.ptr` addresses `step.len` elements of T on this stream's device;
                // the copy is synchronous for pageable host memory.
                unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, step.ptr, stream.cu_stream()) }
                    .map_err(cuda_error("copying a decoder feature map"))?;
                captured[i] = Some(host);
            }
        }
        stream.synchronize().map_err(cuda_error("running the network"))?;
        Ok(captured)
    }

    fn enqueue(&self, lt: &Lt, stream: &CudaStream) -> Result<()> {
        enqueue_all(self.launches.iter().map(|launch| &launch.op), lt, stream, self.overlap)
    }
}

/// Enqueues `ops` in order on `stream`. With `overlap` (programmatic dependent launch, compute
/// capability 9.0+), a kernel that follows a kernel or a product may be scheduled before that
/// one has finished: every kernel of `kernels.cu` waits for its predecessor's completion
/// before it touches device memory, so what overlaps is the launch and the blocks' start, not
/// the work. A kernel after a copy (or first in `ops`) waits the ordinary way.
fn enqueue_all<'a>(ops: impl IntoIterator<Item = &'a Op>, lt: &Lt, stream: &CudaStream, overlap: bool) -> Result<()> {
    let mut after_kernel = false;
    for op in ops {
        enqueue_one(op, lt, stream, overlap && after_kernel)?;
        after_kernel = !matches!(op, Op::Copy { .. });
    }
    Ok(())
}

/// Whether this driver runs kernels that start early ([`enqueue_all`]) directly and in a
/// captured CUDA graph: two `gate` launches on a 1-pixel map, the second with programmatic
/// stream serialization, enqueued, then captured and replayed. An engine whose driver
/// refuses either (an error from the launch, the capture or the replay) runs serial
/// launches instead. Errors that are not the probe's answer (allocation) are returned.
pub(super) fn early_start_works<T: Element>(kernels: &Kernels, lt: &Lt, stream: &Arc<CudaStream>) -> Result<bool> {
    // SAFETY: device memory the probe's kernels alone read and write; its values do not matter.
    let map = unsafe { stream.alloc::<T>(16) }.map_err(cuda_error("allocating the launch probe"))?;
    let gated = unsafe { stream.alloc::<T>(8) }.map_err(cuda_error("allocating the launch probe"))?;
    let args = vec![Arg::Ptr(ptr(&map, stream)), Arg::Ptr(ptr(&gated, stream)), Arg::I64(1), Arg::I32(8)];
    let config = grid_for(8)?;
    let ops = [(); 2].map(|()| kernel_op(&kernels.gate, config, args.clone()));
    if enqueue_all(&ops, lt, stream, true).and_then(|()| stream.synchronize().map_err(cuda_error("probing"))).is_err() {
        return Ok(false);
    }
    if stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).is_err() {
        return Ok(false);
    }
    let enqueued = enqueue_all(&ops, lt, stream, true);
    let captured = stream.end_capture(CUgraphInstantiate_flags(0));
    let replayed = match (enqueued, captured) {
        (Ok(()), Ok(Some(graph))) => graph.launch().and_then(|()| stream.synchronize()).is_ok(),
        _ => false,
    };
    Ok(replayed)
}

/// Enqueues one operation on `stream`; a kernel with `early_start` may be scheduled before the
/// kernel ahead of it in the stream has finished ([`enqueue_all`]).
fn enqueue_one(op: &Op, lt: &Lt, stream: &CudaStream, early_start: bool) -> Result<()> {
    match op {
        Op::Kernel { function, config, args } => {
            let mut params: Vec<*mut c_void> = args
                .iter()
                .map(|arg| match arg {
                    Arg::Ptr(p) => p as *const u64 as *mut c_void,
                    Arg::I32(v) => v as *const i32 as *mut c_void,
                    Arg::I64(v) => v as *const i64 as *mut c_void,
                    Arg::F32(v) => v as *const f32 as *mut c_void,
                })
                .collect();
            // SAFETY: an all-zero attribute is a valid C struct; its id and value are set next.
            let mut attribute: CUlaunchAttribute = unsafe { std::mem::zeroed() };
            attribute.id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attribute.value.programmaticStreamSerializationAllowed = 1;
            let LaunchConfig { grid_dim, block_dim, shared_mem_bytes } = *config;
            let launch = CUlaunchConfig {
                gridDimX: grid_dim.0,
                gridDimY: grid_dim.1,
                gridDimZ: grid_dim.2,
                blockDimX: block_dim.0,
                blockDimY: block_dim.1,
                blockDimZ: block_dim.2,
                sharedMemBytes: shared_mem_bytes,
                hStream: stream.cu_stream(),
                attrs: &mut attribute,
                numAttrs: u32::from(early_start),
            };
            stream.context().bind_to_thread().map_err(cuda_error("launching a kernel"))?;
            // SAFETY: `params` points at one value per kernel parameter, of the parameter's
            // type (the lowering builds `args` for the kernel's signature), alive during the
            // call, which copies them; the pointers in them address the instance's buffers.
            unsafe {
                cudarc::driver::sys::cuLaunchKernelEx(&launch, function.cu_function(), params.as_mut_ptr(), null_mut())
            }
            .result()
            .map_err(cuda_error("launching a kernel"))?;
        }
        Op::Gemm(plan) => unsafe { plan.run(lt, stream)? },
        Op::Copy { dst, src, bytes } => {
            unsafe { cudarc::driver::result::memcpy_dtod_async(*dst, *src, *bytes, stream.cu_stream()) }
                .map_err(cuda_error("copying a feature map"))?
        }
    }
    Ok(())
}

/// A kernel launch.
fn kernel_op(function: &CudaFunction, config: LaunchConfig, args: Vec<Arg>) -> Op {
    Op::Kernel { function: function.clone(), config, args }
}

/// Builds the launch list step by step.
struct Lowering<'a> {
    launches: Vec<Launch>,
    /// Level of the step being lowered (0 at full resolution).
    level: usize,
    kernels: &'a Kernels,
    lt: &'a Lt,
    /// Normalised, expanded (2c or 4c) and gated feature scratch, per-image conv3 weights.
    scratch: [u64; 4],
    /// The depthwise kernels' per-block channel sums, the channel sums and the attention
    /// vector (f32).
    stats: [u64; 3],
    n: usize,
    stream: &'a CudaStream,
    /// Algorithm chosen per distinct product (the engine's, shared by its instances).
    tuned: &'a mut BTreeMap<ProductKey, Algo>,
    /// The choices timed in this instance, in order: the candidate taken per [`ChoiceKey`].
    timed: Vec<TimedChoice>,
    /// Fused tensor-core kernels or launches.
    fusion: Fusion,
    /// Whether kernels may start early ([`enqueue_all`]; candidates are timed so).
    overlap: bool,
    /// Global or TLC channel attention.
    pooling: BlockAttention,
}

/// What a timed choice is between (`"depthwise"`, `"layer_norm"`, `"norm_conv1"`,
/// `"second half"`) and the shape it is timed at (channels, height, width; or channels,
/// pixels, 0).
type ChoiceKey = (&'static str, usize, usize, usize);

/// A labelled operation, before it joins the launch list.
type Labelled = (&'static str, Op);

/// A launch sequence's labels joined by `+`, e.g. `layer_norm+conv4+gate+conv5`.
fn labels(sequence: &[Labelled]) -> String {
    sequence.iter().map(|(label, _)| *label).collect::<Vec<_>>().join("+")
}

/// Lowers a stretch of a block on demand (building tunes its products): `None` where its
/// kernels do not run here.
type Build<'a, L> = Box<dyn FnOnce(&mut L) -> Result<Option<Vec<Labelled>>> + 'a>;

/// One way to lower a stretch of a block; `split` where it is a kernel split over its
/// outputs (what [`Fusion::Split`] asks for).
struct Candidate<'a, L> {
    split: bool,
    build: Build<'a, L>,
}

impl<'a, L> Candidate<'a, L> {
    /// A candidate that is not split over its outputs.
    fn whole(build: impl FnOnce(&mut L) -> Result<Option<Vec<Labelled>>> + 'a) -> Self {
        Candidate { split: false, build: Box::new(build) }
    }

    /// A kernel split over its outputs.
    fn split(build: impl FnOnce(&mut L) -> Result<Option<Vec<Labelled>>> + 'a) -> Self {
        Candidate { split: true, build: Box::new(build) }
    }
}

/// The candidates (separate launches first, the most fused last) that `fusion` asks to time,
/// built on `lowering`: the first; the last that runs here (for `Split`, counting down from
/// the last split one); or every one that runs here. The others are never built, so their
/// products are not tuned.
fn wanted<L>(fusion: Fusion, lowering: &mut L, candidates: Vec<Candidate<'_, L>>) -> Result<Vec<Vec<Labelled>>> {
    let mut built = Vec::with_capacity(candidates.len());
    match fusion {
        Fusion::Launches => {
            if let Some(first) = candidates.into_iter().next() {
                built.extend((first.build)(lowering)?);
            }
        }
        Fusion::Split | Fusion::Fused => {
            let last = match fusion {
                Fusion::Split => candidates.iter().rposition(|c| c.split).unwrap_or(candidates.len()),
                _ => candidates.len(),
            };
            for candidate in candidates.into_iter().take(last + 1).rev() {
                if let Some(sequence) = (candidate.build)(lowering)? {
                    built.push(sequence);
                    break;
                }
            }
        }
        Fusion::Fastest => {
            for candidate in candidates {
                built.extend((candidate.build)(lowering)?);
            }
        }
    }
    Ok(built)
}

impl Lowering<'_> {
    fn push(&mut self, label: &'static str, op: Op) {
        self.launches.push(Launch { label, level: self.level, op });
    }

    fn kernel(&mut self, label: &'static str, function: &CudaFunction, config: LaunchConfig, args: Vec<Arg>) {
        self.push(label, kernel_op(function, config, args));
    }

    /// Pushes the fastest of `candidates` ([`Self::fastest`]); the profile names the launches
    /// chosen.
    fn choose(&mut self, key: ChoiceKey, candidates: Vec<Vec<Labelled>>) -> Result<()> {
        for (label, op) in self.fastest(key, candidates)? {
            self.push(label, op);
        }
        Ok(())
    }

    /// The fastest of `candidates` (launch sequences computing the same values), timed once
    /// per `key` on the instance's buffers (3 runs after a warm-up). A single candidate is
    /// returned untimed.
    fn fastest(&mut self, key: ChoiceKey, mut candidates: Vec<Vec<Labelled>>) -> Result<Vec<Labelled>> {
        const RUNS: usize = 3;
        let (what, c, a, b) = key;
        let known = self.timed.iter().find(|t| t.what == what && t.shape == (c, a, b)).map(|t| t.chosen);
        let best = match known {
            Some(known) => known,
            None if candidates.len() == 1 => 0,
            None => {
                let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
                let event = || self.stream.record_event(flags).map_err(cuda_error("timing a kernel"));
                let run = |sequence: &[Labelled]| {
                    enqueue_all(sequence.iter().map(|(_, op)| op), self.lt, self.stream, self.overlap)
                };
                let mut times = Vec::with_capacity(candidates.len());
                for sequence in &candidates {
                    run(sequence)?;
                    let start = event()?;
                    for _ in 0..RUNS {
                        run(sequence)?;
                    }
                    let end = event()?;
                    end.synchronize().map_err(cuda_error("timing a kernel"))?;
                    times.push(start.elapsed_ms(&end).map_err(cuda_error("timing a kernel"))?);
                }
                let best = (0..times.len()).min_by(|&a, &b| times[a].total_cmp(&times[b])).unwrap_or(0);
                self.timed.push(TimedChoice {
                    what,
                    level: self.level,
                    shape: (c, a, b),
                    candidates: candidates
                        .iter()
                        .zip(&times)
                        .map(|(seq, ms)| (labels(seq), f64::from(*ms) / RUNS as f64))
                        .collect(),
                    chosen: best,
                });
                best
            }
        };
        Ok(candidates.swap_remove(best))
    }

    /// A product with `dense`'s bias (`a` replaces its weight: per-image weights), its
    /// algorithm adopted from `tuned` or timed.
    fn gemm_op<T: Element>(
        &mut self,
        dense: &Dense<T>,
        a: Option<u64>,
        shape: GemmShape,
        b: u64,
        d: u64,
        accumulate: bool,
    ) -> Result<Op> {
        let stream = self.stream;
        let a = a.unwrap_or_else(|| ptr(&dense.weight, stream));
        let pointers = GemmPointers { a, b, d, bias: dense.bias.as_ref().map(|b| ptr(b, stream)) };
        let mut plan = GemmPlan::new(self.lt, T::GEMM, shape, pointers, accumulate)?;
        let key = (shape, T::GEMM, pointers.bias.is_some(), accumulate);
        let known = self.tuned.get(&key).is_some_and(|&data| plan.adopt(cublasLtMatmulAlgo_t { data }));
        if !known {
            plan.tune(self.lt, stream)?;
            self.tuned.insert(key, plan.algo().data);
        }
        Ok(Op::Gemm(plan))
    }

    /// Copies `src` to `dst` first when a step that works in place did not get its input's
    /// buffer for its output.
    fn copy_in_place(&mut self, dst: u64, src: u64, bytes: usize) {
        if dst != src {
            self.push("copy", Op::Copy { dst, src, bytes });
        }
    }

    fn step<T: Element>(
        &mut self,
        step: &Step,
        weights: &StepWeights<T>,
        value: impl Fn(ValueId) -> u64,
        pixels: impl Fn(ValueId) -> usize,
        (h, w): (usize, usize),
        graph: &Graph,
    ) -> Result<()> {
        let (n, stream) = (self.n, self.stream);
        let element = size_of::<T>();
        let f = |s: &CudaSlice<f32>| Arg::Ptr(ptr(s, stream));
        match (step, weights) {
            (Step::Conv3x3 { input, output, .. }, StepWeights::ConvIn { conv, cout }) => {
                let args = vec![
                    Arg::Ptr(value(*input)),
                    f(&conv.0),
                    f(&conv.1),
                    Arg::Ptr(value(*output)),
                    i32_of(n)?,
                    i32_of(h)?,
                    i32_of(w)?,
                    i32_of(*cout)?,
                ];
                self.kernel("conv_in", &self.kernels.conv_in.clone(), grid_for(n * h * w * cout / 8)?, args);
            }
            (Step::Conv3x3 { input, residual: Some(residual), output, .. }, StepWeights::ConvOut { conv, cin }) => {
                let args = vec![
                    Arg::Ptr(value(*input)),
                    f(&conv.0),
                    f(&conv.1),
                    Arg::Ptr(value(*residual)),
                    Arg::Ptr(value(*output)),
                    i32_of(n)?,
                    i32_of(h)?,
                    i32_of(w)?,
                    i32_of(*cin)?,
                ];
                self.kernel("conv_out", &self.kernels.conv_out.clone(), grid_for(n * h * w)?, args);
            }
            (Step::Down { input, output, .. }, StepWeights::Down { rows }) => {
                // Input is at twice the output resolution: (2h, 2w, cin) → (h, w, cout), one
                // product per kernel row over every output row.
                let (cin, cout) = (rows[0].cols / 2, rows[0].rows);
                let shape = GemmShape::down_row(cin, cout, n, (h, w))?;
                let (src, dst) = (value(*input), value(*output));
                let next_row = (GemmShape::down_next_row(cin, w) * element) as u64;
                let op = self.gemm_op(&rows[0], None, shape, src, dst, false)?;
                self.push("gemm down", op);
                let op = self.gemm_op(&rows[1], None, shape, src + next_row, dst, true)?;
                self.push("gemm down", op);
            }
            (Step::UpShuffleAdd { input, skip, output, .. }, StepWeights::Up(dense)) => {
                let c = graph.node(*output).channels;
                let expanded = self.scratch[1];
                let shape = GemmShape::conv1x1(dense.cols, dense.rows, pixels(*input));
                let op = self.gemm_op(dense, None, shape, value(*input), expanded, false)?;
                self.push("gemm up", op);
                let out = value(*output);
                self.copy_in_place(out, value(*skip), pixels(*output) * c * element);
                let args =
                    vec![Arg::Ptr(expanded), Arg::Ptr(out), i32_of(n)?, i32_of(h / 2)?, i32_of(w / 2)?, i32_of(c)?];
                let config = grid_for(pixels(*input) * c / 8)?;
                self.kernel("shuffle_add", &self.kernels.shuffle_add.clone(), config, args);
            }
            (Step::NafBlock { input, output, .. }, StepWeights::Block(b)) => {
                self.block(b, value(*input), value(*output), (h, w))?
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "the cuda backend cannot run step {step:?} with the weights prepared for it"
                )));
            }
        }
        Ok(())
    }

    /// The tensor-core kernel `pick` over `p` pixels with `tiles` shared tiles of `c` channels
    /// and `splits` blocks per tile of pixels, where the build has it and its shared memory
    /// fits the device.
    fn tensor_core_op(
        &self,
        pick: impl Fn(&TensorCoreKernels) -> &CudaFunction,
        (c, tiles, p, splits): (usize, usize, usize, usize),
        args: Vec<Arg>,
    ) -> Result<Option<Op>> {
        match &self.kernels.tensor_cores {
            Some(fused) if tile_shared_bytes(c, tiles) <= fused.shared_limit => {
                Ok(Some(kernel_op(pick(fused), tile_grid(c, tiles, p, splits)?, args)))
            }
            _ => Ok(None),
        }
    }

    /// `norm_conv1` or `norm_gate` (`pick`) over the `p` pixels at `x` into `out`: the
    /// LayerNorm `norm`, then the product `dense` (with its bias), `splits` blocks per tile of
    /// pixels; `None` where `dense` has no bias or the kernel does not run here.
    fn norm_product_op<T: Element>(
        &self,
        pick: impl Fn(&TensorCoreKernels) -> &CudaFunction,
        b: &BlockWeights<T>,
        (norm, dense): (&Pair, &Dense<T>),
        (x, out): (u64, u64),
        p: usize,
        splits: usize,
    ) -> Result<Option<Op>> {
        let stream = self.stream;
        let Some(bias) = &dense.bias else { return Ok(None) };
        let args = vec![
            Arg::Ptr(x),
            Arg::Ptr(ptr(&norm.0, stream)),
            Arg::Ptr(ptr(&norm.1, stream)),
            Arg::Ptr(ptr(&dense.weight, stream)),
            Arg::Ptr(ptr(bias, stream)),
            Arg::Ptr(out),
            Arg::I64(p as i64),
            i32_of(b.c)?,
            Arg::F32(b.eps),
        ];
        self.tensor_core_op(pick, (b.c, 1, p, splits), args)
    }

    /// Pushes one of `candidates`, launch sequences computing the same values from the
    /// separate launches (first) to the most fused (last), as `fusion` says ([`wanted`]).
    fn choose_fusion(&mut self, key: ChoiceKey, candidates: Vec<Candidate<'_, Self>>) -> Result<()> {
        let built = wanted(self.fusion, self, candidates)?;
        self.choose(key, built)
    }

    /// A NAFBlock in place on `output` (a copy of `input` first if they differ):
    /// LN → conv1 → depthwise + gate + channel sums → attention → conv3 (+x), then the
    /// feed-forward half LN → conv4 → gate → conv5 (+x). LN → conv1, the feed-forward half,
    /// and everything after the attention vector run as separate launches or fused
    /// tensor-core kernels (`norm_conv1`, `ffn`, `attend_ffn`: FP16 from compute capability
    /// 8.0), as `fusion` says.
    fn block<T: Element>(&mut self, b: &BlockWeights<T>, input: u64, x: u64, (h, w): (usize, usize)) -> Result<()> {
        let p = self.n * h * w;
        self.copy_in_place(x, input, p * b.c * size_of::<T>());
        self.first_half(b, x, p)?;
        self.depthwise(b, (h, w))?;
        let BlockAttention { pool, size_multiple } = self.pooling;
        let window = match pool.map_pool(self.level, size_multiple, (h, w)) {
            MapPool::Global => None,
            MapPool::Window { rows, cols } => Some((rows, cols)),
            MapPool::Sampled { .. } => {
                return Err(Error::Unsupported("the cuda backend has no sampled TLC attention".into()));
            }
        };
        self.second_half(b, x, (h, w), window)
    }

    /// TLC's channel attention and conv3 on the gated scratch, with windows of `rows × cols`
    /// on maps of `h × w`: the window means of the gated map (row sums as f32 into the
    /// expanded scratch, whose 2c channels hold them, then the means into the normalised
    /// scratch), the attention's 1×1 conv on every pixel's mean (into the expanded scratch),
    /// the gated map scaled by it, then conv3 (+x).
    fn windowed_conv3<T: Element>(
        &mut self,
        b: &BlockWeights<T>,
        x: u64,
        (h, w): (usize, usize),
        (rows, cols): (usize, usize),
    ) -> Result<Vec<Labelled>> {
        let (n, c) = (self.n, b.c);
        let p = n * h * w;
        let [normed, expanded, gated, _] = self.scratch;
        let Some(sca) = &b.sca_product else {
            return Err(Error::Unsupported(
                "this engine's weights were uploaded for global channel attention, not TLC".into(),
            ));
        };
        let map = (n, h, w, c);
        let dims = [n, h, w, c].map(i32_of).into_iter().collect::<Result<Vec<_>>>()?;
        let (row_seg, col_seg) = (window_stretch(cols), window_stretch(rows));
        let row_args = [vec![Arg::Ptr(gated), Arg::Ptr(expanded)], dims.clone(), vec![i32_of(cols)?, i32_of(row_seg)?]];
        let mean_args = [
            vec![Arg::Ptr(expanded), Arg::Ptr(normed)],
            dims,
            vec![i32_of(rows)?, i32_of(col_seg)?, i32_of(rows * cols)?],
        ];
        let row_sums = kernel_op(&self.kernels.window_row_sums, windows_grid(map, w, row_seg)?, row_args.concat());
        let means = kernel_op(&self.kernels.window_means, windows_grid(map, h, col_seg)?, mean_args.concat());
        let attention = self.gemm_op(sca, None, GemmShape::conv1x1(c, c, p), normed, expanded, false)?;
        let scale_args = vec![Arg::Ptr(gated), Arg::Ptr(expanded), Arg::I64((p * c) as i64)];
        let scale = kernel_op(&self.kernels.multiply, grid_for(p * c / 8)?, scale_args);
        let conv3 = self.gemm_op(&b.conv3, None, GemmShape::conv1x1(c, c, p), gated, x, true)?;
        Ok(vec![
            ("window_row_sums", row_sums),
            ("window_means", means),
            ("gemm window attention", attention),
            ("multiply", scale),
            ("gemm conv3", conv3),
        ])
    }

    /// LayerNorm of the `p` pixels at `x` with `pair` (γ, β) into the normalised scratch: the
    /// faster of 8 lanes (`layer_norm`) and a warp (`layer_norm_wide`) per pixel, timed once
    /// per channels and pixels.
    fn layer_norm_op<T: Element>(&mut self, b: &BlockWeights<T>, pair: &Pair, x: u64, p: usize) -> Result<Labelled> {
        let stream = self.stream;
        let args = vec![
            Arg::Ptr(x),
            Arg::Ptr(ptr(&pair.0, stream)),
            Arg::Ptr(ptr(&pair.1, stream)),
            Arg::Ptr(self.scratch[0]),
            Arg::I64(p as i64),
            i32_of(b.c)?,
            Arg::F32(b.eps),
        ];
        let lanes =
            [("layer_norm", &self.kernels.layer_norm, 8), ("layer_norm_wide", &self.kernels.layer_norm_wide, 32)];
        let candidates = lanes
            .into_iter()
            .map(|(label, kernel, lanes)| Ok(vec![(label, kernel_op(kernel, grid_for(p * lanes)?, args.clone()))]))
            .collect::<Result<Vec<_>>>()?;
        let mut chosen = self.fastest(("layer_norm", b.c, p, 0), candidates)?;
        Ok(chosen.swap_remove(0))
    }

    /// LN → conv1 of the `p` pixels at `x` into the expanded scratch: two launches, or
    /// `norm_conv1` with its outputs split over more blocks (where it has more than one chunk)
    /// or not.
    fn first_half<T: Element>(&mut self, b: &BlockWeights<T>, x: u64, p: usize) -> Result<()> {
        let c = b.c;
        let [normed, expanded, ..] = self.scratch;
        let fused = move |this: &mut Self, splits: usize| -> Result<Option<Vec<Labelled>>> {
            let op = this.norm_product_op(|k| &k.norm_conv1, b, (&b.norm1, &b.conv1), (x, expanded), p, splits)?;
            Ok(op.map(|op| vec![("norm_conv1", op)]))
        };
        let candidates = vec![
            Candidate::whole(|this: &mut Self| {
                let expand = GemmShape::conv1x1(c, 2 * c, p);
                Ok(Some(vec![
                    this.layer_norm_op(b, &b.norm1, x, p)?,
                    ("gemm conv1", this.gemm_op(&b.conv1, None, expand, normed, expanded, false)?),
                ]))
            }),
            Candidate::whole(move |this: &mut Self| fused(this, 1)),
            Candidate::split(move |this: &mut Self| match norm_conv1_splits(c) {
                1 => Ok(None),
                splits => fused(this, splits),
            }),
        ];
        self.choose_fusion(("norm_conv1", c, p, 0), candidates)
    }

    /// Depthwise 3×3 + SimpleGate + channel sums of the expanded scratch into the gated
    /// scratch (the fastest of the depthwise kernels, each followed by `pool_sum` over its
    /// per-block sums).
    fn depthwise<T: Element>(&mut self, b: &BlockWeights<T>, (h, w): (usize, usize)) -> Result<()> {
        let (n, stream, c) = (self.n, self.stream, b.c);
        let [_, expanded, gated, _] = self.scratch;
        let [partials, pool, _] = self.stats;
        let f = |s: &CudaSlice<f32>| Arg::Ptr(ptr(s, stream));
        let args = vec![
            Arg::Ptr(expanded),
            f(&b.dw.0),
            f(&b.dw.1),
            Arg::Ptr(gated),
            Arg::Ptr(partials),
            i32_of(h)?,
            i32_of(w)?,
            i32_of(c)?,
        ];
        let candidates = Depthwise::candidates((h, w))
            .map(|d| {
                let kernel = kernel_op(d.function(self.kernels), d.grid(c, (h, w), n)?, args.clone());
                let sums =
                    vec![Arg::Ptr(partials), Arg::Ptr(pool), i32_of(d.partials(c, (h, w)))?, Arg::I64((n * c) as i64)];
                let sum = kernel_op(&self.kernels.pool_sum, pool_sum_grid(n * c)?, sums);
                Ok(vec![(d.name(), kernel), ("pool_sum", sum)])
            })
            .collect::<Result<Vec<_>>>()?;
        self.choose(("depthwise", c, h, w), candidates)
    }

    /// Everything after the channel sums on the images of `h × w` pixels at `x`, from the
    /// separate launches to one kernel: conv3 with the attention folded into its per-image
    /// weights (`attention_weights`), or, with TLC windows of `window` (rows, columns), after
    /// the per-pixel attention ([`Self::windowed_conv3`]); then the feed-forward half as
    /// launches, as `norm_gate` (split over the gated channels) and conv5's product, or as
    /// `ffn`; or, with global attention, the attention vector (`sca_vector`) and all the rest
    /// in `attend_ffn` (the attention scaling the features instead).
    fn second_half<T: Element>(
        &mut self,
        b: &BlockWeights<T>,
        x: u64,
        (h, w): (usize, usize),
        window: Option<(usize, usize)>,
    ) -> Result<()> {
        let (n, stream, c, hw) = (self.n, self.stream, b.c, h * w);
        let p = n * hw;
        let [normed, expanded, gated, weights3] = self.scratch;
        let [_, pool, attention] = self.stats;
        let inv_hw = Arg::F32(1.0 / hw as f32);
        // What `attention_weights` and `sca_vector` both start from: the channel sums and
        // the attention's 1×1 conv.
        let sca_inputs = [Arg::Ptr(pool), Arg::Ptr(ptr(&b.sca.0, stream)), Arg::Ptr(ptr(&b.sca.1, stream))];
        let conv3 = |this: &mut Self| -> Result<Vec<Labelled>> {
            if let Some(window) = window {
                return this.windowed_conv3(b, x, (h, w), window);
            }
            let tail = [Arg::Ptr(ptr(&b.conv3.weight, stream)), Arg::Ptr(weights3), i32_of(c)?, inv_hw];
            let args = [&sca_inputs[..], &tail].concat();
            let scale = kernel_op(&this.kernels.attention_weights, attention_grid(c, n)?, args);
            let product = this.gemm_op(&b.conv3, Some(weights3), GemmShape::per_image(c, hw, n)?, gated, x, true)?;
            Ok(vec![("attention_weights", scale), ("gemm conv3", product)])
        };
        // conv5 over the gated scratch plus the residual, after the launches or `norm_gate`.
        let conv5 = |this: &mut Self| -> Result<Labelled> {
            Ok(("gemm conv5", this.gemm_op(&b.conv5, None, GemmShape::conv1x1(c, c, p), gated, x, true)?))
        };
        // conv3's bias and the feed-forward arguments that close `ffn`'s and `attend_ffn`'s
        // lists, where every bias exists.
        let fused_args = || -> Result<Option<(u64, Vec<Arg>)>> {
            let (Some(b3), Some(b4), Some(b5)) = (&b.conv3.bias, &b.conv4.bias, &b.conv5.bias) else {
                return Ok(None);
            };
            let feed_forward = vec![
                Arg::Ptr(ptr(&b.norm2.0, stream)),
                Arg::Ptr(ptr(&b.norm2.1, stream)),
                Arg::Ptr(ptr(&b.conv4.weight, stream)),
                Arg::Ptr(ptr(b4, stream)),
                Arg::Ptr(ptr(&b.conv5.weight, stream)),
                Arg::Ptr(ptr(b5, stream)),
                Arg::I64(p as i64),
                i32_of(c)?,
                Arg::F32(b.eps),
            ];
            Ok(Some((ptr(b3, stream), feed_forward)))
        };
        let candidates = vec![
            Candidate::whole(|this: &mut Self| {
                let mut launches = conv3(this)?;
                let gate_args = vec![Arg::Ptr(expanded), Arg::Ptr(gated), Arg::I64(p as i64), i32_of(c)?];
                let expand = GemmShape::conv1x1(c, 2 * c, p);
                launches.extend([
                    this.layer_norm_op(b, &b.norm2, x, p)?,
                    ("gemm conv4", this.gemm_op(&b.conv4, None, expand, normed, expanded, false)?),
                    ("gate", kernel_op(&this.kernels.gate, grid_for(p * c / 8)?, gate_args)),
                    conv5(this)?,
                ]);
                Ok(Some(launches))
            }),
            Candidate::split(|this: &mut Self| {
                let layers = (&b.norm2, &b.conv4);
                let splits = norm_gate_splits(c);
                let Some(norm_gate) = this.norm_product_op(|k| &k.norm_gate, b, layers, (x, gated), p, splits)? else {
                    return Ok(None);
                };
                let mut launches = conv3(this)?;
                launches.extend([("norm_gate", norm_gate), conv5(this)?]);
                Ok(Some(launches))
            }),
            Candidate::whole(|this: &mut Self| {
                let Some((_, feed_forward)) = fused_args()? else { return Ok(None) };
                let args = [vec![Arg::Ptr(x)], feed_forward].concat();
                let Some(ffn) = this.tensor_core_op(|k| &k.ffn, (c, 2, p, 1), args)? else { return Ok(None) };
                let mut conv3_then_ffn = conv3(this)?;
                conv3_then_ffn.push(("ffn", ffn));
                Ok(Some(conv3_then_ffn))
            }),
            Candidate::whole(|this: &mut Self| {
                let Some((b3, feed_forward)) = fused_args()?.filter(|_| window.is_none()) else { return Ok(None) };
                let sca_args = [&sca_inputs[..], &[Arg::Ptr(attention), i32_of(n)?, i32_of(c)?, inv_hw]].concat();
                let sca = kernel_op(&this.kernels.sca_vector, grid_for(n * c * 32)?, sca_args);
                let head = vec![
                    Arg::Ptr(x),
                    Arg::Ptr(gated),
                    Arg::Ptr(attention),
                    Arg::Ptr(ptr(&b.conv3.weight, stream)),
                    Arg::Ptr(b3),
                    Arg::I64(hw as i64),
                ];
                let args = [head, feed_forward].concat();
                let fused = this.tensor_core_op(|k| &k.attend_ffn, (c, 2, p, 1), args)?;
                Ok(fused.map(|op| vec![("sca_vector", sca), ("attend_ffn", op)]))
            }),
        ];
        self.choose_fusion(("second half", c, p, 0), candidates)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{BufferPlan, Candidate, Shape, wanted};
    use crate::backend::Fusion;
    use crate::graph::ValueId;
    use crate::model::testing::random_model;
    use crate::passes::{Step, fuse, plan::value_len};
    use crate::spec::{Family, ModelSpec};

    /// Candidates that record their index in the lowering when built; `runs[i]` says whether
    /// candidate i's kernels run here, and those at the indices in `split` are split over
    /// their outputs.
    fn recording(runs: &[bool], split: &[usize]) -> Vec<Candidate<'static, Vec<usize>>> {
        runs.iter()
            .enumerate()
            .map(|(i, &runs)| {
                let build = move |built: &mut Vec<usize>| {
                    built.push(i);
                    Ok(runs.then(|| vec![("candidate", super::Op::Copy { dst: i as u64, src: 0, bytes: 0 })]))
                };
                if split.contains(&i) { Candidate::split(build) } else { Candidate::whole(build) }
            })
            .collect()
    }

    #[test]
    fn fusion_builds_only_the_candidates_it_times() {
        let timed = |fusion, runs: &[bool], split: &[usize]| {
            let mut built = Vec::new();
            let sequences = wanted(fusion, &mut built, recording(runs, split)).unwrap();
            let picked: Vec<u64> = sequences
                .iter()
                .map(|s| match s[..] {
                    [(_, super::Op::Copy { dst, .. })] => dst,
                    _ => unreachable!("one copy per candidate"),
                })
                .collect();
            (built, picked)
        };
        let all = [true, true, true];
        assert_eq!(timed(Fusion::Launches, &all, &[]), (vec![0], vec![0]));
        assert_eq!(timed(Fusion::Fused, &all, &[]), (vec![2], vec![2]));
        assert_eq!(timed(Fusion::Fastest, &all, &[]), (vec![0, 1, 2], vec![0, 1, 2]));
        // The most fused does not run here: forcing fusion takes the next one down, and the
        // fastest is timed among those that run.
        let no_last = [true, true, false];
        assert_eq!(timed(Fusion::Fused, &no_last, &[]), (vec![2, 1], vec![1]));
        assert_eq!(timed(Fusion::Fastest, &no_last, &[]), (vec![0, 1, 2], vec![0, 1]));
        assert_eq!(timed(Fusion::Fused, &[true, false, false], &[]), (vec![2, 1, 0], vec![0]));
        // Forcing the split kernels counts down from the last split one; without any, it is
        // forcing fusion.
        let four = [true, true, true, true];
        assert_eq!(timed(Fusion::Split, &four, &[1]), (vec![1], vec![1]));
        assert_eq!(timed(Fusion::Split, &[true, false, true, true], &[1]), (vec![1, 0], vec![0]));
        assert_eq!(timed(Fusion::Split, &four, &[]), (vec![3], vec![3]));
        assert_eq!(timed(Fusion::Fused, &four, &[1]), (vec![3], vec![3]));
    }

    proptest! {
        /// For any network and shape: every materialised value other than the planar input
        /// and output has an allocated slot large enough for the whole batch, the scratch
        /// holds every block's and up conv's maps, and memory scales exactly with the batch.
        #[test]
        fn buffers_hold_every_value(levels in 1usize..4, c8 in 1usize..4, h in 1usize..5, w in 1usize..5, n in 1usize..4) {
            let spec = ModelSpec {
                family: Family::MaskDcpt,
                width: 8 * c8,
                enc_blocks: vec![1; levels],
                middle_blocks: 1,
                dec_blocks: vec![1; levels],
            };
            let model = random_model(&spec, 1);
            let graph = model.graph("a test").unwrap();
            let program = fuse(&graph).unwrap();
            let m = spec.size_multiple();
            let shape = Shape { batch: n, height: h * m, width: w * m };
            let buffers = BufferPlan::new(shape, &program, &graph, 2);
            for step in &program.steps {
                let v = step.output();
                if v == program.output {
                    continue;
                }
                let slot = buffers.memory.slot_of[v.0].expect("step outputs are planned");
                prop_assert!(buffers.slot_used[slot], "value {v:?} lives in an unallocated slot");
                prop_assert!(buffers.memory.slot_len[slot] >= value_len(&graph, v, shape.height, shape.width));
            }
            let pixels = |v: ValueId| {
                let node = graph.node(v);
                n * (shape.height >> node.level) * (shape.width >> node.level)
            };
            for step in &program.steps {
                match step {
                    Step::NafBlock { input, .. } => {
                        let c = graph.node(*input).channels;
                        prop_assert!(buffers.scratch.features >= pixels(*input) * c);
                        prop_assert!(buffers.scratch.expanded >= pixels(*input) * 2 * c);
                        prop_assert!(buffers.scratch.attention_weights >= n * c * c);
                        prop_assert!(buffers.scratch.channels >= c);
                    }
                    Step::UpShuffleAdd { input, output, .. } => {
                        prop_assert!(buffers.scratch.expanded >= pixels(*input) * 4 * graph.node(*output).channels);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(buffers.image_len, n * 3 * shape.height * shape.width);
            let single = BufferPlan::new(Shape { batch: 1, ..shape }, &program, &graph, 2);
            prop_assert_eq!(buffers.bytes, n * single.bytes);
        }
    }
}
