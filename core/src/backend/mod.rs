//! Engines: one trait, implemented per backend, built once from (model, options) and run many
//! times. Backends are siblings; none imports another.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod tensorrt;

use crate::error::Result;
use crate::graph::FeatureSource;
use crate::head::Feature;
use crate::image::Image;
use crate::model::Model;
use crate::spec::Architecture;
pub use crate::tiling::LocalTiles;
pub use crate::tlc::AttentionPool;
use cpu::head::HeadWeights;

/// What to do when a run does not fit in memory (CLI flags and C options alike).
pub(crate) const TILING_HINT: &str = "restore in tiles with local channel attention, of a size that fits or \
     picked automatically (CLI: `--tile auto --sca local`; C: options.tile_size = MASKDCPT_TILE_SIZE_AUTO, \
     options.sca_mode = MASKDCPT_SCA_MODE_LOCAL)";

/// How the channel-attention (SCA) means are taken when an image is processed in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaMode {
    /// Means over the whole image, computed in a first pass per block: results equal the
    /// untiled run. On the CPU, full-resolution block inputs/outputs stay resident and tiles
    /// bound the rest; the CUDA backend runs the image whole (the same result, the memory of
    /// the untiled run).
    #[default]
    Global,
    /// Each tile runs through the whole network on its own (with overlap as context), taking
    /// its own means: memory bounded by the tile, results differ slightly from untiled.
    Local,
}

/// Tile edge of tiled execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileSize {
    /// Tiles of this many input pixels a side.
    Pixels(usize),
    /// Chosen per image size from the memory budget (`Local` means only): the whole image when
    /// its run fits, else the largest tile whose run fits. The budget is
    /// [`EngineOptions::memory_limit`], or else the memory available when the engine was built
    /// (host memory on the CPU, free device memory on the GPU), so one engine always picks the
    /// same tile for the same size. [`Engine::local_tiles`] tells which.
    Auto,
}

/// Tiled execution settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Tile edge.
    pub tile: TileSize,
    /// Context added on each side of a tile in `Local` mode (ignored by `Global`, which is exact).
    pub overlap: usize,
    /// How SCA means are taken.
    pub sca: ScaMode,
    /// `Local` mode: feather neighbouring tiles across their overlap instead of pasting each
    /// tile's centre ([`LocalTiles::blend`]).
    pub blend: bool,
}

impl Tiling {
    /// The local tiles a `width × height` restore runs in (`None`: whole). An automatic tile
    /// size is the largest whose run, of `needed(run)` bytes, fits `budget` (`None`: unknown,
    /// so the image runs whole), whole tiles' runs being multiples of `size_multiple`.
    pub fn local_tiles(
        &self,
        (width, height): (usize, usize),
        size_multiple: usize,
        budget: Option<u64>,
        needed: impl Fn((usize, usize)) -> u64,
    ) -> Result<Option<LocalTiles>> {
        let Tiling { tile, overlap, sca: ScaMode::Local, blend } = *self else { return Ok(None) };
        let tile = match (tile, budget) {
            (TileSize::Pixels(pixels), _) => Some(pixels),
            (TileSize::Auto, Some(budget)) => {
                crate::tiling::fit_local_tiles((width, height), overlap, size_multiple, budget, needed)?
            }
            (TileSize::Auto, None) => None,
        };
        Ok(tile.map(|tile| LocalTiles { tile, overlap, blend }))
    }
}

/// Arithmetic precision of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// IEEE f32 everywhere.
    #[default]
    F32,
    /// The matrix products (1×1, up and down convolutions: most of the work) take bf16
    /// inputs and accumulate in f32; everything else stays f32. Needs AVX512-BF16.
    Bf16,
}

/// Options for building an engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Worker threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Tiled execution (`None`: whole image).
    pub tiling: Option<Tiling>,
    /// Arithmetic precision.
    pub precision: Precision,
    /// Refuse runs whose estimated memory exceeds this many bytes (`None`: the memory the
    /// operating system reports as available). On the CUDA backend it bounds the device
    /// memory of the weights, cuBLASLt's workspace and the kept instances (the least recently
    /// used are dropped first; `None`: the device's free memory).
    pub memory_limit: Option<u64>,
    /// Which engine to build.
    pub backend: Backend,
    /// How channel attention averages its map (TLC runs on the CPU and CUDA engines).
    pub attention_pool: AttentionPool,
}

/// The engine family [`build_engine`] builds.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// The CPU engine (always available).
    #[default]
    Cpu,
    /// TensorRT on an NVIDIA GPU (cargo feature `tensorrt`; never run in this project's CI).
    TensorRt(TensorRtOptions),
    /// The fused CUDA engine on an NVIDIA GPU (cargo feature `cuda`).
    Cuda(CudaOptions),
}

/// Settings of the CUDA backend.
#[derive(Debug, Clone, Default)]
pub struct CudaOptions {
    /// FP16 feature maps and matrices (f32 arithmetic and statistics); otherwise f32.
    pub fp16: bool,
    /// CUDA device ordinal.
    pub device: usize,
    /// Folder for compiled kernels and engine files (one per model, GPU and precision, named
    /// by its key). `None`: kernels are compiled with NVRTC and products timed every time an
    /// engine is built, unless `engine_file` is set.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Engine file to reuse and keep up to date (see [`cuda::saved`]; overrides the one in
    /// `cache_dir`): its kernels and tuned algorithms are used when it was written for this
    /// model, GPU, cuBLASLt, precision and library version; otherwise it is rebuilt.
    pub engine_file: Option<std::path::PathBuf>,
    /// Whether NAFBlocks run on the fused tensor-core kernels or as separate launches.
    pub fusion: Fusion,
    /// Start every kernel only once the operation before it has finished. By default, on
    /// compute capability 9.0 and newer, a kernel that follows another kernel or a product is
    /// scheduled while that one finishes (programmatic dependent launch) and waits on the
    /// device for its inputs, which hides most of the launch latency between the network's
    /// short kernels; this setting is there to time or rule out that overlap.
    pub serial_launches: bool,
}

/// How the CUDA backend runs the stretches of a NAFBlock that it can fuse into tensor-core
/// kernels: LayerNorm → conv1 (`norm_conv1`, whole or split over its outputs), the
/// feed-forward half LayerNorm → conv4 → SimpleGate → conv5 + residual (`ffn`, or `norm_gate`
/// split over the gated channels then conv5's product), or everything after the attention
/// vector, conv3 included (`attend_ffn`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fusion {
    /// The fastest of the ways below for each stretch, timed per shape when an engine meets it.
    #[default]
    Fastest,
    /// Separate launches: LayerNorm, cuBLASLt products, SimpleGate.
    Launches,
    /// The split kernels (`norm_conv1` split, `norm_gate` then conv5's product) where they
    /// run, else the less fused ways.
    Split,
    /// The most fused kernels where they run (FP16 on compute capability 8.0 and newer,
    /// channels that fit their shared memory), else the less fused ways.
    Fused,
}

/// GPU-resident timing of an engine (input and output already on the device).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTiming {
    /// Median milliseconds per run.
    pub median_ms: f64,
    /// Fastest run in milliseconds.
    pub min_ms: f64,
    /// The device, e.g. "NVIDIA H200 (sm_90)".
    pub device: String,
    /// Device memory held by the engine for this shape (weights and activations), bytes.
    pub memory_bytes: u64,
    /// Whether kernels started early (programmatic dependent launch; see
    /// [`CudaOptions::serial_launches`]).
    pub launch_overlap: bool,
    /// Device time per operation kind and network level in one run launched op by op:
    /// ("kind Ln", milliseconds, launches). Its sum exceeds a graph replay by the launch gaps.
    pub profile: Vec<(String, f64, usize)>,
    /// The timed choices made when this shape's instance was built, in the order made.
    pub choices: Vec<TimedChoice>,
}

/// One timed choice of the CUDA engine between launch sequences that compute the same values
/// for a stretch of a block (separate launches or fused kernels, depthwise variants).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedChoice {
    /// What the choice is between: `"depthwise"`, `"layer_norm"`, `"norm_conv1"` or
    /// `"second half"`.
    pub what: &'static str,
    /// Network level it was first made at (0 at full resolution).
    pub level: usize,
    /// The shape it was timed at: channels, height, width (or channels, pixels, 0).
    pub shape: (usize, usize, usize),
    /// Each candidate: its launches' labels joined by `+`, and milliseconds per run.
    pub candidates: Vec<(String, f64)>,
    /// Index of the candidate taken (the fastest).
    pub chosen: usize,
}

/// Settings of the TensorRT backend.
#[derive(Debug, Clone, Default)]
pub struct TensorRtOptions {
    /// FP16 network (LayerNorm and means stay FP32); otherwise FP32.
    pub fp16: bool,
    /// Image sizes one engine serves (before padding). `None`: an engine per padded image
    /// size, built on the first image of that size.
    pub shapes: Option<tensorrt::profile::ShapeRange>,
    /// Builder workspace limit in bytes (`None`: TensorRT's default).
    pub workspace: Option<u64>,
    /// Folder for cached engines and the timing cache (`None`: build every time).
    pub cache_dir: Option<std::path::PathBuf>,
}

/// Up-front memory need of one restore call, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Weights as held by the engine.
    pub weights: u64,
    /// Activations and scratch of the largest planned run.
    pub activations: u64,
}

impl MemoryEstimate {
    /// Weights plus activations.
    pub fn total(&self) -> u64 {
        self.weights + self.activations
    }
}

/// A compiled network ready to restore images. Engines are `Send + Sync`: one engine may be
/// used from several threads at once (each call has its own scratch memory).
pub trait Engine: Send + Sync {
    /// Restores `input`; the result has the input's size and holds the raw network output
    /// (not clamped).
    fn restore(&self, input: &Image) -> Result<Image>;

    /// Memory a restore of a `width × height` image would need.
    fn memory_estimate(&self, width: usize, height: usize) -> Result<MemoryEstimate>;

    /// The local tiles a restore of a `width × height` image runs in, `None` when it runs whole
    /// (untiled, or global means). With [`TileSize::Auto`] this is the engine's choice for that
    /// size; an error when not even the smallest tile fits.
    fn local_tiles(&self, width: usize, height: usize) -> Result<Option<LocalTiles>> {
        crate::image::check_size(width, height)?;
        Ok(None)
    }

    /// Builds now what restoring a `width × height` image needs (the workspace on the CPU; the
    /// buffers, tuned products and recorded CUDA graph on the GPU), so that the first
    /// [`restore`](Engine::restore) of that size does not pay for it, and fails where that
    /// restore would for its size or memory. Optional: a restore builds what it lacks.
    /// Engines that build nothing per size only check the size.
    fn prepare(&self, width: usize, height: usize) -> Result<()> {
        self.memory_estimate(width, height).map(|_| ())
    }

    /// Restores images of one size together (one batch on GPU engines; one by one elsewhere).
    fn restore_batch(&self, images: &[Image]) -> Result<Vec<Image>> {
        images.iter().map(|image| self.restore(image)).collect()
    }

    /// Probabilities of the degradation classes in `input` (the model's head order and names:
    /// [`HeadSpec::class_names`](crate::head::HeadSpec::class_names)), from the
    /// classification head over the decoder features of one whole-image run. Engines from
    /// [`build_engine`] have it when the model has a head.
    fn classify(&self, _input: &Image) -> Result<Vec<f32>> {
        Err(crate::error::Error::Unsupported(
            "this model has no degradation-classification head (files written by `trainer export \
             --with-classifier` have one, as does the embedded default model)"
                .into(),
        ))
    }

    /// The per-level features `source` names of one whole-image run of `input`
    /// ([`Graph::level_outputs`] order, planar f32), which the classification head reads.
    ///
    /// [`Graph::level_outputs`]: crate::graph::Graph::level_outputs
    fn level_features(&self, _input: &Image, _source: FeatureSource) -> Result<Vec<Feature>> {
        Err(crate::error::Error::Unsupported(
            "this backend does not hand back the network's features for the classification head: classify with \
             the cpu or cuda backend"
                .into(),
        ))
    }

    /// Restores `input` into `output`, frames in the memory of the engine's GPU (same size,
    /// any pixel format; the same frame for in place), in the order of `stream` (a `CUstream`
    /// / `cudaStream_t` of the engine's device; null: the legacy default stream). Returns once
    /// the work is enqueued: `output` is written when `stream` reaches this point, and later
    /// work on `stream` sees it. f32 samples are not checked for NaN or infinity (that would
    /// need the call to wait for the GPU). Host engines return [`Error::Unsupported`].
    ///
    /// # Safety
    /// The frames' planes must stay allocated until `stream` has passed this work; `stream` is
    /// null or a live stream of the engine's device.
    ///
    /// [`Error::Unsupported`]: crate::error::Error::Unsupported
    unsafe fn restore_device(
        &self,
        _input: &crate::pixels::DeviceFrame,
        _output: &crate::pixels::DeviceFrame,
        _stream: *mut std::ffi::c_void,
    ) -> Result<()> {
        Err(crate::error::Error::Unsupported(
            "this engine restores frames in host memory only: device frames need the CUDA backend".into(),
        ))
    }

    /// Times `runs` runs of a `batch × width × height` input kept on the device, for engines
    /// that have one (`None` for host engines).
    fn device_timing(
        &self,
        _batch: usize,
        _width: usize,
        _height: usize,
        _runs: usize,
    ) -> Result<Option<DeviceTiming>> {
        Ok(None)
    }
}

/// Builds the engine `options.backend` names, with the model's classification head when it has
/// one. A backend this build or host lacks is an error that says so.
pub fn build_engine(model: &Model, options: &EngineOptions) -> Result<Box<dyn Engine>> {
    let engine = build_backend(model, options)?;
    match model.head() {
        Some(spec) => {
            let head = HeadWeights::new(spec, model.weights(), model.architecture().pad_mode())?;
            Ok(Box::new(Classifying::new(engine, head, options)))
        }
        None => Ok(engine),
    }
}

/// An engine with the model's classification head, which runs on the CPU over the decoder
/// features the engine hands back (whatever the backend).
struct Classifying {
    engine: Box<dyn Engine>,
    head: HeadWeights,
    /// The head's worker threads, started on the first classification.
    pool: std::sync::OnceLock<rayon::ThreadPool>,
    threads: usize,
}

impl Classifying {
    fn new(engine: Box<dyn Engine>, head: HeadWeights, options: &EngineOptions) -> Self {
        let threads = options.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Classifying { engine, head, pool: std::sync::OnceLock::new(), threads: threads.max(1) }
    }

    fn pool(&self) -> Result<&rayon::ThreadPool> {
        if let Some(pool) = self.pool.get() {
            return Ok(pool);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(|i| format!("maskdcpt-head-{i}"))
            .build()
            .map_err(|e| {
                crate::error::Error::Unsupported(format!("cannot start {} worker threads: {e}", self.threads))
            })?;
        Ok(self.pool.get_or_init(|| pool))
    }
}

impl Engine for Classifying {
    fn restore(&self, input: &Image) -> Result<Image> {
        self.engine.restore(input)
    }

    fn memory_estimate(&self, width: usize, height: usize) -> Result<MemoryEstimate> {
        self.engine.memory_estimate(width, height)
    }

    fn local_tiles(&self, width: usize, height: usize) -> Result<Option<LocalTiles>> {
        self.engine.local_tiles(width, height)
    }

    fn prepare(&self, width: usize, height: usize) -> Result<()> {
        self.engine.prepare(width, height)
    }

    fn restore_batch(&self, images: &[Image]) -> Result<Vec<Image>> {
        self.engine.restore_batch(images)
    }

    fn classify(&self, input: &Image) -> Result<Vec<f32>> {
        let features = self.engine.level_features(input, self.head.source())?;
        Ok(self.pool()?.install(|| self.head.probabilities(input, &features, self.threads)))
    }

    fn level_features(&self, input: &Image, source: FeatureSource) -> Result<Vec<Feature>> {
        self.engine.level_features(input, source)
    }

    unsafe fn restore_device(
        &self,
        input: &crate::pixels::DeviceFrame,
        output: &crate::pixels::DeviceFrame,
        stream: *mut std::ffi::c_void,
    ) -> Result<()> {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.engine.restore_device(input, output, stream) }
    }

    fn device_timing(&self, batch: usize, width: usize, height: usize, runs: usize) -> Result<Option<DeviceTiming>> {
        self.engine.device_timing(batch, width, height, runs)
    }
}

/// The engine of `options.backend`, without the classification head.
fn build_backend(model: &Model, options: &EngineOptions) -> Result<Box<dyn Engine>> {
    match options.tiling {
        Some(Tiling { tile: TileSize::Pixels(0), .. }) => {
            return Err(crate::error::Error::InvalidArgument("tile size must be at least 1 pixel".into()));
        }
        Some(Tiling { tile: TileSize::Auto, sca: ScaMode::Global, .. }) => {
            return Err(crate::error::Error::InvalidArgument(
                "an automatic tile size picks tiles with local channel-attention means (global means keep every \
                 full-resolution feature map, which no tile bounds): use local means with it (CLI: `--tile auto \
                 --sca local`; C: options.sca_mode = MASKDCPT_SCA_MODE_LOCAL), or give a tile size"
                    .into(),
            ));
        }
        Some(Tiling { blend: true, sca: ScaMode::Global, .. }) => {
            return Err(crate::error::Error::InvalidArgument(
                "tile blending joins tiles with local channel-attention means; global means give the untiled \
                 result, with no seams to blend: use local means with it (CLI: `--sca local`; C: options.sca_mode \
                 = MASKDCPT_SCA_MODE_LOCAL), or no blending"
                    .into(),
            ));
        }
        _ => {}
    }
    options.attention_pool.validate(model.architecture().size_multiple())?;
    if options.attention_pool != AttentionPool::Global && matches!(options.backend, Backend::TensorRt(_)) {
        return Err(crate::error::Error::Unsupported(
            "TLC channel attention runs on the CPU and CUDA engines, not TensorRT: use one of those, or global \
             attention with TensorRT"
                .into(),
        ));
    }
    match &options.backend {
        Backend::Cpu => match model.architecture() {
            Architecture::Nafnet(_) => Ok(Box::new(cpu::CpuEngine::new(model, options)?)),
            Architecture::Restormer(spec) => Ok(Box::new(cpu::RestormerEngine::new(model, options, |precision| {
                cpu::RestormerNetwork::new(model, spec, precision)
            })?)),
            Architecture::Swinir(spec) => Ok(Box::new(cpu::SwinirEngine::new(model, options, |precision| {
                cpu::SwinirNetwork::new(model, spec, precision)
            })?)),
        },
        #[cfg(feature = "tensorrt")]
        Backend::TensorRt(trt) => Ok(Box::new(tensorrt::TensorRtEngine::new(model, options, trt)?)),
        #[cfg(not(feature = "tensorrt"))]
        Backend::TensorRt(_) => Err(crate::error::Error::Unsupported(
            "this build has no TensorRT backend: rebuild maskdcpt with the `tensorrt` cargo feature".into(),
        )),
        #[cfg(feature = "cuda")]
        Backend::Cuda(cuda) if cuda.fp16 => Ok(Box::new(cuda::CudaEngine::<half::f16>::new(model, options, cuda)?)),
        #[cfg(feature = "cuda")]
        Backend::Cuda(cuda) => Ok(Box::new(cuda::CudaEngine::<f32>::new(model, options, cuda)?)),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda(_) => Err(crate::error::Error::Unsupported(
            "this build has no CUDA backend: rebuild maskdcpt with the `cuda` cargo feature".into(),
        )),
    }
}
