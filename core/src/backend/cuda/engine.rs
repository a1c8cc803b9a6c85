//! The CUDA engine behind the [`Engine`] trait: the host pads the batch by the family rule
//! (like the CPU engine) straight into page-locked staging memory, copies it to the device,
//! runs the instance of that shape (built on first use and kept, a few shapes at a time),
//! copies the result back into staging and crops from there; padding and cropping run on the
//! rayon pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::sys::{CUevent_flags, CUevent_wait_flags};
use cudarc::driver::{CudaContext, CudaStream, PinnedHostSlice, PushKernelArg};

use super::device::{Device, cuda_error, open};
use super::frames::{self, FrameArgs};
use super::gemm::{Lt, WORKSPACE_BYTES};
use super::instance::{BlockAttention, Instance, Shape, device_bytes, early_start_works, grid_for};
use super::kernels::{self, Kernels};
use super::saved::{Algo, EngineKey, FileUse, ProductKey, SavedEngine};
use super::weights::{Element, StepWeights, Uploader};
use crate::backend::{
    AttentionPool, CudaOptions, DeviceTiming, Engine, EngineOptions, Fusion, LocalTiles, MemoryEstimate, ScaMode,
    TILING_HINT, TileSize, Tiling,
};
use crate::error::{Error, Result};
use crate::graph::{FeatureSource, Graph};
use crate::head::Feature;
use crate::image::{Image, check_size, from_planar_cropped, pad_planar_into, round_up};
use crate::model::Model;
use crate::passes::{Program, Step, fuse};
use crate::pixels::DeviceFrame;
use crate::spec::{IMAGE_CHANNELS, PadMode};
use crate::tiling::{largest_run, restore_local_tiles};

/// Instances kept per engine (each holds the activations of one input shape).
const KEPT_INSTANCES: usize = 4;
/// Instances kept with local tiling: a tile grid has up to nine tile sizes (interior, four
/// edges, four corners), each its own shape.
const KEPT_INSTANCES_TILED: usize = 9;

/// A CUDA engine storing feature maps and matrices as `T` (`half::f16` or `f32`).
pub struct CudaEngine<T> {
    device: Device,
    lt: Lt,
    kernels: Kernels,
    graph: Graph,
    program: Program,
    weights: Vec<StepWeights<T>>,
    weight_bytes: usize,
    size_multiple: usize,
    pad_mode: PadMode,
    state: Mutex<State<T>>,
    /// Where the engine file lives and how it was found (`None`: no file).
    file: Option<EngineFile>,
    /// Local tiling (global means run the image whole).
    tiles: Option<Tiling>,
    /// Fused tensor-core kernels or launches.
    fusion: Fusion,
    /// Whether kernels start early (programmatic dependent launch: compute capability 9.0+,
    /// unless `CudaOptions::serial_launches`).
    overlap: bool,
    /// Global or (exact) TLC channel attention.
    attention_pool: AttentionPool,
    /// Most device bytes the weights, the workspace and the kept instances may hold
    /// (`EngineOptions::memory_limit`; with automatic tiles and no limit, the budget they fit).
    memory_limit: Option<u64>,
}

/// What the engine's lock guards.
struct State<T> {
    /// Instances of the most recent shapes.
    resident: Vec<Resident<T>>,
    /// cuBLASLt algorithm of every product tuned so far (or read from the engine file).
    tuned: BTreeMap<ProductKey, Algo>,
    /// Why the engine file could not be written when the algorithms last changed: restores
    /// go on, the write is retried when the next shape is built, and `build_engine_file`
    /// reports it.
    unsaved: Option<Error>,
}

/// The engine file of an engine (`CudaOptions::engine_file`, or one per key in the cache
/// folder).
struct EngineFile {
    path: PathBuf,
    key: EngineKey,
    /// The kernels the engine loaded, saved with the algorithms.
    ptx: String,
    found: FileUse,
}

/// An instance with the page-locked host buffers its transfers go through.
struct Resident<T> {
    instance: Instance<T>,
    staging: Staging,
}

/// Page-locked host copies of an instance's planar input and output: transfers run at bus
/// speed without the driver's bounce buffer, and the host pads into and crops out of them
/// directly. Both are cached memory: reflect padding reads back the columns it mirrors,
/// which write-combined memory would make uncached reads. The engine synchronises its stream
/// before the host touches either again (cudarc records no events on them: event tracking is
/// off).
struct Staging {
    input: PinnedHostSlice<f32>,
    output: PinnedHostSlice<f32>,
}

impl<T> Resident<T> {
    /// Pads `images` (of the instance's padded size) into the staging input and copies it to
    /// the instance's input on `stream`.
    fn upload(&mut self, images: &[Image], pad_mode: PadMode, stream: &Arc<CudaStream>) -> Result<()> {
        let Shape { height: h, width: w, .. } = self.instance.shape;
        let staged = self.staging.input.as_mut_slice().map_err(cuda_error("waiting for the staging memory"))?;
        for (image, staged) in images.iter().zip(staged.chunks_mut(IMAGE_CHANNELS * h * w)) {
            pad_planar_into(image, h, w, pad_mode, staged);
        }
        stream
            .memcpy_htod(&self.staging.input, &mut self.instance.input)
            .map_err(cuda_error("copying images to the GPU"))
    }
}

impl Staging {
    fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        let alloc = || {
            // Safety: the input is fully written by padding before every upload, the output
            // fully by the download before the host reads it.
            // (cudarc's `alloc_pinned` would ask for write-combined memory: flags 0 do not.)
            unsafe { ctx.alloc_pinned_with_flags::<f32>(len.max(1), 0) }
                .map_err(cuda_error("allocating page-locked staging memory"))
        };
        Ok(Staging { input: alloc()?, output: alloc()? })
    }
}

impl<T: Element> CudaEngine<T> {
    /// Opens the device, compiles (or loads cached) kernels and uploads the weights.
    pub fn new(model: &Model, options: &EngineOptions, cuda: &CudaOptions) -> Result<Self> {
        if let AttentionPool::TlcSampled { .. } = options.attention_pool {
            return Err(Error::Unsupported(
                "sampled TLC attention (MaskDCPT's NAFNet class) runs on the CPU engine only: use the CPU backend, \
                 or exact TLC (--tlc) on the GPU"
                    .into(),
            ));
        }
        // Global-mean tiling defines the untiled result, which the GPU computes in one run.
        let tiles = options.tiling.filter(|t| t.sca == ScaMode::Local);
        let width = model.nafnet("the CUDA engine")?.width;
        if !width.is_multiple_of(8) {
            return Err(Error::Unsupported(format!(
                "the cuda backend runs networks whose width is a multiple of 8 (its kernels move 8 channels at \
                 a time); this model's width is {width}: use the cpu backend"
            )));
        }
        let device = open(cuda.device)?;
        let fp16 = T::GEMM == super::gemm::GemmType::F16;
        let path = engine_file_path(cuda, || EngineKey {
            library: env!("CARGO_PKG_VERSION").to_owned(),
            kernels: kernels::source_hash(),
            weights: crate::engine_file::weights_hash(model),
            device: device.name.clone(),
            arch: device.arch,
            // SAFETY: `open` checked that cuBLASLt is present.
            cublaslt: unsafe { cudarc::cublaslt::sys::cublasLtGetVersion() },
            fp16,
        });
        let (saved, mut found) = match &path {
            Some((path, key)) => super::saved::load(path, key)?,
            None => (None, FileUse::Missing),
        };
        let from_file = saved.and_then(|SavedEngine { ptx, algos }| match Kernels::load(&device.ctx, ptx.clone()) {
            Ok(kernels) => Some((kernels, ptx, algos)),
            Err(e) => {
                found = FileUse::Rejected(format!("its kernels did not load ({e})"));
                None
            }
        });
        let (kernels, ptx, tuned) = match from_file {
            Some(loaded) => loaded,
            None => {
                let (kernels, ptx) =
                    Kernels::compile_or_load_cached(&device.ctx, device.arch, fp16, cuda.cache_dir.as_deref())?;
                (kernels, ptx, BTreeMap::new())
            }
        };
        let file = path.map(|(path, key)| EngineFile { path, key, ptx, found });
        let lt = Lt::new(&device.stream)?;
        let graph = model.graph("the CUDA engine")?;
        let program = fuse(&graph)?;
        let uploader = Uploader::new(model.weights(), &device.stream, options.attention_pool != AttentionPool::Global);
        let weights: Vec<StepWeights<T>> = program
            .steps
            .iter()
            .map(|step| {
                let reads_input = matches!(step, Step::Conv3x3 { input, .. } if *input == program.input);
                uploader.step(step, reads_input, step.output() == program.output)
            })
            .collect::<Result<_>>()?;
        let weight_bytes = weights.iter().map(StepWeights::bytes).sum();
        device.stream.synchronize().map_err(cuda_error("uploading weights"))?;
        // Kernels start early on compute capability 9.0+ where the driver runs that directly
        // and in graphs; otherwise (or when asked) every kernel waits for the one before.
        let overlap =
            device.arch.0 >= 9 && !cuda.serial_launches && early_start_works::<T>(&kernels, &lt, &device.stream)?;
        // Automatic tiles fit a budget, which also bounds what the engine keeps: the limit,
        // else the free memory now plus what the engine holds already.
        let memory_limit = match (options.memory_limit, tiles) {
            (None, Some(Tiling { tile: TileSize::Auto, .. })) => {
                let (free, _) = device.ctx.mem_get_info().map_err(cuda_error("reading free GPU memory"))?;
                Some((free + weight_bytes + WORKSPACE_BYTES) as u64)
            }
            (limit, _) => limit,
        };
        Ok(CudaEngine {
            device,
            lt,
            kernels,
            graph,
            program,
            weights,
            weight_bytes,
            size_multiple: model.architecture().size_multiple(),
            pad_mode: model.architecture().pad_mode(),
            state: Mutex::new(State { resident: Vec::new(), tuned, unsaved: None }),
            file,
            tiles,
            fusion: cuda.fusion,
            overlap,
            attention_pool: options.attention_pool,
            memory_limit,
        })
    }

    /// The device's name and compute capability, e.g. "NVIDIA H200 (sm_90)".
    pub fn device_name(&self) -> String {
        format!("{} (sm_{}{})", self.device.name, self.device.arch.0, self.device.arch.1)
    }

    /// The engine file and how it was found when the engine was built (`None` without
    /// `engine_file` or `cache_dir`).
    pub fn engine_file(&self) -> Option<(&std::path::Path, &FileUse)> {
        self.file.as_ref().map(|f| (f.path.as_path(), &f.found))
    }

    /// Builds the instance of a `batch × height × width` padded shape now (tuning its
    /// products and updating the engine file) instead of on the first run of that shape.
    /// Returns the number of products the engine has algorithms for.
    pub fn build_instance(&self, shape: Shape) -> Result<usize> {
        self.with_instance(shape, |_, _| Ok(()))?;
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).tuned.len())
    }

    /// Runs `f` with the instance for `shape` and its staging (creating them, and dropping the
    /// least recently used beyond [`KEPT_INSTANCES`], or [`KEPT_INSTANCES_TILED`] when tiling,
    /// and while the memory limit would be passed).
    fn with_instance<R>(&self, shape: Shape, f: impl FnOnce(&mut Resident<T>, &Self) -> Result<R>) -> Result<R> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { resident: instances, tuned, unsaved } = &mut *state;
        // The calling thread may not be the one that built the engine: make the device's
        // context current for the raw driver and cuBLASLt calls of this run.
        self.device.ctx.bind_to_thread().map_err(cuda_error("binding the CUDA context to this thread"))?;
        let index = match instances.iter().position(|r| r.instance.shape == shape) {
            Some(index) => {
                // Most recently used last: eviction takes the least recently used first.
                let resident = instances.remove(index);
                instances.push(resident);
                instances.len() - 1
            }
            None => {
                let kept = if self.tiles.is_some() { KEPT_INSTANCES_TILED } else { KEPT_INSTANCES };
                let need = device_bytes(shape, &self.program, &self.graph, size_of::<T>());
                let held = |instances: &[Resident<T>]| {
                    self.fixed_bytes() + instances.iter().map(|r| r.instance.bytes).sum::<usize>() + need
                };
                let over_limit =
                    |instances: &[Resident<T>]| self.memory_limit.is_some_and(|l| held(instances) as u64 > l);
                // A shape over the limit on its own is refused before any kept one is dropped.
                self.check_limit(
                    held(&[]) as u64,
                    &format!("raise the engine's memory limit, use a smaller batch or image, or {TILING_HINT}"),
                )?;
                // Make room: beyond the kept count, and while the memory limit would be passed.
                let mut evicted = false;
                while !instances.is_empty() && (instances.len() >= kept || over_limit(instances)) {
                    instances.remove(0);
                    evicted = true;
                }
                if evicted {
                    // Their buffers are freed in stream order: wait for that, so that the free
                    // memory read next counts them.
                    self.device.stream.synchronize().map_err(cuda_error("freeing an instance"))?;
                }
                let (free, _) = self.device.ctx.mem_get_info().map_err(cuda_error("reading free GPU memory"))?;
                let before = tuned.clone();
                let instance = Instance::new(
                    shape,
                    &self.program,
                    &self.graph,
                    &self.weights,
                    &self.kernels,
                    &self.lt,
                    &self.device.stream,
                    free,
                    tuned,
                    self.fusion,
                    self.overlap,
                    BlockAttention { pool: self.attention_pool, size_multiple: self.size_multiple },
                )?;
                // The file holds what the engine started from (nothing when it was missing or
                // rejected): it is out of date exactly when building this instance tuned
                // something.
                if *tuned != before || unsaved.is_some() {
                    *unsaved = self.save_file(tuned).err();
                }
                let staging = Staging::new(&self.device.ctx, instance.input.len())?;
                instances.push(Resident { instance, staging });
                instances.len() - 1
            }
        };
        f(&mut instances[index], self)
    }

    /// Refuses `needed` device bytes over the engine's memory limit, with `hint`.
    fn check_limit(&self, needed: u64, hint: &str) -> Result<()> {
        match self.memory_limit.filter(|&limit| needed > limit) {
            Some(limit) => {
                Err(Error::OutOfMemory { needed_mb: needed >> 20, available_mb: limit >> 20, hint: hint.into() })
            }
            None => Ok(()),
        }
    }

    /// Device bytes of the instance of one image of `(width, height)` pixels.
    fn instance_bytes(&self, (width, height): (usize, usize)) -> usize {
        device_bytes(self.shape(1, width, height), &self.program, &self.graph, size_of::<T>())
    }

    /// Device bytes the engine holds whatever the shape: the weights and cuBLASLt's workspace.
    fn fixed_bytes(&self) -> usize {
        self.weight_bytes + WORKSPACE_BYTES
    }

    /// Writes the engine file (if the engine has one) with the kernels and every algorithm.
    fn save_file(&self, tuned: &BTreeMap<ProductKey, Algo>) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        super::saved::save(&file.path, &file.key, &SavedEngine { ptx: file.ptx.clone(), algos: tuned.clone() })
    }

    /// Restores a batch of whole images of one size in one run.
    fn restore_whole(&self, images: &[Image]) -> Result<Vec<Image>> {
        let shape = self.padded_shape(images)?;
        images.iter().try_for_each(Image::check_finite)?;
        let (h, w) = (shape.height, shape.width);
        let plane = IMAGE_CHANNELS * h * w;
        let stream = &self.device.stream;
        self.with_instance(shape, |resident, engine| {
            resident.upload(images, engine.pad_mode, stream)?;
            let Resident { instance, staging } = resident;
            instance.run(&engine.lt, stream)?;
            stream
                .memcpy_dtoh(&instance.output, &mut staging.output)
                .map_err(cuda_error("copying results from the GPU"))?;
            stream.synchronize().map_err(cuda_error("running the network"))?;
            let output = staging.output.as_slice().map_err(cuda_error("waiting for the results"))?;
            Ok(images
                .iter()
                .zip(output.chunks(plane))
                .map(|(image, planar)| from_planar_cropped(planar, h, w, image.width(), image.height()))
                .collect())
        })
    }

    fn padded_shape(&self, images: &[Image]) -> Result<Shape> {
        let first = images.first().ok_or_else(|| Error::InvalidArgument("an empty batch".into()))?;
        for (i, image) in images.iter().enumerate() {
            if (image.width(), image.height()) != (first.width(), first.height()) {
                return Err(Error::InvalidImage(format!(
                    "image {i} of the batch is {}×{}, image 0 is {}×{}: a batch holds images of one size",
                    image.width(),
                    image.height(),
                    first.width(),
                    first.height()
                )));
            }
        }
        Ok(self.shape(images.len(), first.width(), first.height()))
    }

    /// The instance shape of `batch` images of `width × height` (padded to the size multiple).
    fn shape(&self, batch: usize, width: usize, height: usize) -> Shape {
        let m = self.size_multiple;
        Shape { batch: batch.max(1), height: round_up(height, m), width: round_up(width, m) }
    }
}

/// Refuses a caller's stream the engine cannot order itself after: one of another context
/// (the engine's event cannot be recorded there), or one being captured into a CUDA graph
/// (the engine's first run of a size synchronises and records a graph of its own, which a
/// capture in progress forbids). The null stream is the legacy default stream of the
/// engine's context.
fn check_caller_stream(caller: cudarc::driver::sys::CUstream, context: u64) -> Result<()> {
    use cudarc::driver::sys::{CUstreamCaptureStatus, cuStreamGetCtx};
    if caller.is_null() {
        return Ok(());
    }
    let mut owner = std::ptr::null_mut();
    // SAFETY: `caller` is a live stream (the caller's contract); `owner` is writable.
    unsafe { cuStreamGetCtx(caller, &mut owner) }.result().map_err(cuda_error("reading the stream's context"))?;
    if owner as u64 != context {
        return Err(Error::InvalidArgument(
            "the CUDA stream belongs to another context than the engine's (the device's primary context): \
             create it in the primary context (cudaStreamCreate, or cuDevicePrimaryCtxRetain with the driver API)"
                .into(),
        ));
    }
    // SAFETY: as above.
    let capturing = unsafe { cudarc::driver::result::stream::is_capturing(caller) }
        .map_err(cuda_error("asking whether the stream is capturing"))?;
    if capturing != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
        return Err(Error::Unsupported(
            "the CUDA stream is being captured into a graph: call restore_device outside the capture (the \
             engine records its own CUDA graph per frame size)"
                .into(),
        ));
    }
    Ok(())
}

/// What [`build_engine_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFileReport {
    /// The engine file written (or found up to date).
    pub path: PathBuf,
    /// How the file was found before the build.
    pub found: FileUse,
    /// Products the file holds an algorithm for.
    pub products: usize,
    /// The GPU it was built on.
    pub device: String,
}

/// Builds the CUDA engine of `model` with channel attention `attention_pool` for every
/// `(batch, height, width)` in `shapes` (image sizes before padding) and brings its engine
/// file up to date: `cuda.engine_file`, else the key's file in `cuda.cache_dir`. (One file
/// serves both attention pools: it holds the products' algorithms, and TLC only adds products.)
pub fn build_engine_file(
    model: &Model,
    cuda: &CudaOptions,
    attention_pool: AttentionPool,
    shapes: &[(usize, usize, usize)],
) -> Result<EngineFileReport> {
    if cuda.engine_file.is_none() && cuda.cache_dir.is_none() {
        return Err(Error::InvalidArgument("an engine file needs a path or a cache folder".into()));
    }
    model.nafnet("the CUDA engine")?;
    attention_pool.validate(model.architecture().size_multiple())?;
    let options = EngineOptions { attention_pool, ..Default::default() };
    fn build<T: Element>(
        model: &Model,
        options: &EngineOptions,
        cuda: &CudaOptions,
        shapes: &[(usize, usize, usize)],
    ) -> Result<EngineFileReport> {
        let engine = CudaEngine::<T>::new(model, options, cuda)?;
        let mut products = 0;
        for &(batch, height, width) in shapes {
            check_size(width, height)?;
            products = engine.build_instance(engine.shape(batch, width, height))?;
        }
        if let Some(e) = engine.state.lock().unwrap_or_else(|e| e.into_inner()).unsaved.take() {
            return Err(e);
        }
        let (path, found) = engine.engine_file().expect("a path or cache folder was given");
        Ok(EngineFileReport { path: path.to_owned(), found: found.clone(), products, device: engine.device_name() })
    }
    if cuda.fp16 {
        build::<half::f16>(model, &options, cuda, shapes)
    } else {
        build::<f32>(model, &options, cuda, shapes)
    }
}

/// The engine file `cuda` asks for, with its key: `engine_file`, else a file named by the key
/// in `cache_dir`, else none (the key, which hashes the weights, is only computed then).
fn engine_file_path(cuda: &CudaOptions, key: impl FnOnce() -> EngineKey) -> Option<(PathBuf, EngineKey)> {
    match (&cuda.engine_file, &cuda.cache_dir) {
        (Some(path), _) => Some((path.clone(), key())),
        (None, Some(dir)) => {
            let key = key();
            Some((dir.join(key.file_name()), key))
        }
        (None, None) => None,
    }
}

impl<T> Drop for CudaEngine<T> {
    /// Makes the device's context current on the dropping thread, which may not be the one
    /// that built the engine: freeing the buffers and the staging memory needs it. (A failure
    /// means the context is gone already; cudarc then records the frees' errors.)
    fn drop(&mut self) {
        // An error an earlier call left recorded would make the bind return before binding.
        let _ = self.device.ctx.check_err();
        let _ = self.device.ctx.bind_to_thread();
        // Work enqueued on a caller's stream by restore_device may still read the buffers.
        let _ = self.device.stream.synchronize();
    }
}

impl<T: Element> Engine for CudaEngine<T> {
    fn restore(&self, input: &Image) -> Result<Image> {
        let whole = |image: &Image| Ok(self.restore_whole(std::slice::from_ref(image))?.remove(0));
        match self.local_tiles(input.width(), input.height())? {
            Some(tiles) => {
                input.check_finite()?;
                restore_local_tiles(input, tiles, whole)
            }
            None => whole(input),
        }
    }

    /// Builds the instance of the size and runs it once on a zeroed input, which records its
    /// CUDA graph. With local tiling the tiles' instances are built by the first restore; the
    /// largest tile's memory is checked against the limit here.
    fn prepare(&self, width: usize, height: usize) -> Result<()> {
        check_size(width, height)?;
        if self.tiles.is_some() {
            let needed = self.memory_estimate(width, height)?.total();
            return self.check_limit(needed, "raise the engine's memory limit or use smaller tiles");
        }
        let stream = &self.device.stream;
        self.with_instance(self.shape(1, width, height), |Resident { instance, .. }, engine| {
            stream.memset_zeros(&mut instance.input).map_err(cuda_error("clearing the input"))?;
            instance.run(&engine.lt, stream)?;
            stream.synchronize().map_err(cuda_error("running the network"))
        })
    }

    fn restore_batch(&self, images: &[Image]) -> Result<Vec<Image>> {
        match self.tiles {
            Some(_) => images.iter().map(|image| self.restore(image)).collect(),
            None => self.restore_whole(images),
        }
    }

    /// One whole-image run (untiled) launched op by op, copying each output `source` names
    /// to the host after the step that writes it.
    fn level_features(&self, input: &Image, source: FeatureSource) -> Result<Vec<Feature>> {
        input.check_finite()?;
        let shape = self.padded_shape(std::slice::from_ref(input))?;
        let (h, w) = (shape.height, shape.width);
        let stream = &self.device.stream;
        let wanted = self.graph.level_outputs(source);
        let captured = self.with_instance(shape, |resident, engine| {
            resident.upload(std::slice::from_ref(input), engine.pad_mode, stream)?;
            resident.instance.run_capturing(&engine.lt, stream, wanted)
        })?;
        wanted
            .iter()
            .zip(captured)
            .map(|(&value, nhwc)| {
                let nhwc = nhwc.ok_or_else(|| {
                    Error::Unsupported(format!("the fused program does not produce every {} output", source.name()))
                })?;
                let node = self.graph.node(value);
                let (c, fh, fw) = (node.channels, h >> node.level, w >> node.level);
                let mut data = vec![0.0f32; c * fh * fw];
                for (p, pixel) in nhwc.chunks_exact(c).enumerate() {
                    for (k, v) in pixel.iter().enumerate() {
                        data[k * fh * fw + p] = v.to_f32();
                    }
                }
                Ok(Feature { data, c, h: fh, w: fw })
            })
            .collect()
    }

    unsafe fn restore_device(
        &self,
        input: &DeviceFrame,
        output: &DeviceFrame,
        stream: *mut std::ffi::c_void,
    ) -> Result<()> {
        if self.tiles.is_some() {
            return Err(Error::Unsupported(
                "device frames run untiled: build the engine without tiling for restore_device".into(),
            ));
        }
        let (width, height) = (input.desc.width, input.desc.height);
        if (output.desc.width, output.desc.height) != (width, height) {
            return Err(Error::InvalidArgument(format!(
                "the input frame is {width}×{height} but the output frame is {}×{}",
                output.desc.width, output.desc.height
            )));
        }
        self.device.ctx.bind_to_thread().map_err(cuda_error("binding the CUDA context to this thread"))?;
        let ours = &self.device.stream;
        let context = (self.device.ordinal, self.device.ctx.cu_ctx() as u64);
        let input = &frames::check(input, "input", context, frames::driver_attribute)?;
        let output = &frames::check(output, "output", context, frames::driver_attribute)?;
        let caller = stream as cudarc::driver::sys::CUstream;
        check_caller_stream(caller, context.1)?;
        let (input_args, output_args) = (FrameArgs::new(input)?, FrameArgs::new(output)?);
        let shape = self.shape(1, width, height);
        let no_timing = Some(CUevent_flags::CU_EVENT_DISABLE_TIMING);
        self.with_instance(shape, |Resident { instance, .. }, engine| {
            let (h, w) = (shape.height as i32, shape.width as i32);
            // The engine's stream starts after the work the caller enqueued before this call.
            let ready = engine.device.ctx.new_event(no_timing).map_err(cuda_error("creating an event"))?;
            // SAFETY: `caller` is null or a live stream of this context (the caller's contract).
            unsafe { cudarc::driver::result::event::record(ready.cu_event(), caller) }
                .map_err(cuda_error("recording an event on the caller's stream"))?;
            ours.wait(&ready).map_err(cuda_error("ordering after the caller's stream"))?;
            let enqueued = (|| {
                let reflect = i32::from(engine.pad_mode == PadMode::Reflect);
                let pixels = shape.height * shape.width;
                let mut launch = ours.launch_builder(&engine.kernels.frame_in);
                launch.arg(&input_args).arg(&mut instance.input).arg(&h).arg(&w).arg(&reflect);
                // SAFETY: the frame was checked to be device memory spanning its pixels; the
                // input buffer holds the padded planar image.
                unsafe { launch.launch(grid_for(pixels)?) }.map_err(cuda_error("converting the input frame"))?;
                instance.run(&engine.lt, ours)?;
                let threads = match output.desc.format {
                    crate::pixels::PixelFormat::Nv12 => (width / 2) * (height / 2),
                    _ => width * height,
                };
                let mut launch = ours.launch_builder(&engine.kernels.frame_out);
                launch.arg(&instance.output).arg(&h).arg(&w).arg(&output_args).arg(&input_args);
                // SAFETY: as for the input frame.
                unsafe { launch.launch(grid_for(threads)?) }.map_err(cuda_error("writing the output frame"))?;
                // The caller's later work starts after the output is written.
                let done = ours.record_event(no_timing).map_err(cuda_error("recording an event"))?;
                // SAFETY: as above.
                unsafe {
                    cudarc::driver::result::stream::wait_event(
                        caller,
                        done.cu_event(),
                        CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                }
                .map_err(cuda_error("ordering the caller's stream after the engine"))
            })();
            if enqueued.is_err() {
                // What was enqueued may still read the caller's frames, which the caller may
                // reuse once this returns: let it finish first.
                let _ = ours.synchronize();
            }
            enqueued
        })
    }

    /// Device memory: the weights, and the buffers the instance of one run allocates (a tile's
    /// with local tiling) plus cuBLASLt's workspace. The CUDA context, the loaded kernels, the
    /// recorded graph and page-locked host staging of the planar input and output come on top.
    fn memory_estimate(&self, width: usize, height: usize) -> Result<MemoryEstimate> {
        check_size(width, height)?;
        let run = largest_run(self.local_tiles(width, height)?, width, height);
        Ok(MemoryEstimate {
            weights: self.weight_bytes as u64,
            activations: (self.instance_bytes(run) + WORKSPACE_BYTES) as u64,
        })
    }

    fn local_tiles(&self, width: usize, height: usize) -> Result<Option<LocalTiles>> {
        check_size(width, height)?;
        let Some(tiling) = self.tiles else { return Ok(None) };
        tiling.local_tiles((width, height), self.size_multiple, self.memory_limit, |run| {
            (self.fixed_bytes() + self.instance_bytes(run)) as u64
        })
    }

    fn device_timing(&self, batch: usize, width: usize, height: usize, runs: usize) -> Result<Option<DeviceTiming>> {
        check_size(width, height)?;
        let shape = self.shape(batch, width, height);
        let stream = &self.device.stream;
        self.with_instance(shape, |Resident { instance, .. }, engine| {
            // Warm-up: the first run enqueues directly and records the graph; the second is
            // the first replay.
            for _ in 0..2 {
                instance.run(&engine.lt, stream)?;
            }
            stream.synchronize().map_err(cuda_error("running the network"))?;
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs.max(1) {
                let start = Instant::now();
                instance.run(&engine.lt, stream)?;
                stream.synchronize().map_err(cuda_error("running the network"))?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            Ok(Some(DeviceTiming {
                median_ms: times[times.len() / 2],
                min_ms: times[0],
                device: engine.device_name(),
                memory_bytes: (engine.fixed_bytes() + instance.bytes) as u64,
                launch_overlap: engine.overlap,
                profile: instance.profile(&engine.lt, stream)?,
                choices: instance.choices.clone(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, CudaOptions, Engine, EngineOptions, Fusion, build_engine};
    use crate::error::Error;
    use crate::image::Image;
    use crate::model::testing::random_model;
    use crate::spec::{Family, ModelSpec};

    /// The CUDA engine for `fp16`, or `None` (with a message) on hosts without a GPU; with
    /// MASKDCPT_REQUIRE_GPU set a missing GPU fails instead.
    fn engine(model: &crate::model::Model, fp16: bool) -> Option<Box<dyn Engine>> {
        engine_with(model, CudaOptions { fp16, ..Default::default() })
    }

    /// [`engine`] with any CUDA options.
    fn engine_with(model: &crate::model::Model, cuda: CudaOptions) -> Option<Box<dyn Engine>> {
        let options = EngineOptions { backend: Backend::Cuda(cuda), ..Default::default() };
        match build_engine(model, &options) {
            Ok(engine) => Some(engine),
            Err(Error::Unsupported(why)) if std::env::var_os("MASKDCPT_REQUIRE_GPU").is_none() => {
                eprintln!("skipped: no usable CUDA GPU here ({why})");
                None
            }
            Err(e) => panic!("building the CUDA engine: {e}"),
        }
    }

    fn image(width: usize, height: usize, seed: u32) -> Image {
        let mut state = seed.max(1);
        let data = (0..width * height * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as f32 / u32::MAX as f32
            })
            .collect();
        Image::new(width, height, data).unwrap()
    }

    /// A width-8 MaskDCPT network with two levels.
    fn two_levels() -> ModelSpec {
        ModelSpec {
            family: Family::MaskDcpt,
            width: 8,
            enc_blocks: vec![1, 1],
            middle_blocks: 1,
            dec_blocks: vec![1, 1],
        }
    }

    /// The largest difference between two images; infinite where either has a NaN.
    fn max_abs(a: &Image, b: &Image) -> f32 {
        a.data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
    }

    /// Both families, three levels, odd sizes (padding and cropping), against the CPU engine.
    #[test]
    fn cuda_matches_the_cpu_engine() {
        for family in [Family::MaskDcpt, Family::Nafnet] {
            let spec =
                ModelSpec { family, width: 8, enc_blocks: vec![1, 2, 1], middle_blocks: 2, dec_blocks: vec![1, 1, 2] };
            let model = random_model(&spec, 7);
            let cpu = build_engine(&model, &EngineOptions::default()).unwrap();
            for (fp16, bound) in [(false, 1e-4), (true, 2e-2)] {
                let Some(gpu) = engine(&model, fp16) else { return };
                for (w, h) in [(37, 29), (64, 48), (5, 3)] {
                    let input = image(w, h, (w * h) as u32);
                    let want = cpu.restore(&input).unwrap();
                    let got = gpu.restore(&input).unwrap();
                    let diff = max_abs(&want, &got);
                    eprintln!("{family:?} fp16={fp16} {w}×{h}: max |Δ| {diff:.3e}");
                    assert!(diff <= bound, "{family:?} fp16={fp16} {w}×{h}: max |Δ| {diff}");
                }
            }
        }
    }

    /// The fused tensor-core kernels (FP16, compute capability 8.0+), forced and as timed, are
    /// as exact as the launches they replace: against the CPU engine, within 1.5× the launches'
    /// error plus 5e-4 of the output's peak, at channel counts 16 to 256 (5 levels of width 16,
    /// 3 of width 64) and with partial blocks of pixels. Random weights at full scale amplify
    /// FP16 rounding (outputs up to ~60 and errors up to ~6e-2 either way on an H200, run 5);
    /// at half scale outputs and errors are what trained weights give.
    #[test]
    fn fused_kernels_are_as_exact_as_the_launches() {
        let specs = [(16, vec![1; 4], vec![1; 4]), (64, vec![1, 1], vec![1, 1])];
        let mut failures = Vec::new();
        for (width, enc_blocks, dec_blocks) in specs {
            let spec = ModelSpec { family: Family::MaskDcpt, width, enc_blocks, middle_blocks: 1, dec_blocks };
            for scale in [1.0, 0.5] {
                let model = scaled_model(&spec, 9, scale);
                let cpu = build_engine(&model, &EngineOptions::default()).unwrap();
                let cuda = |fusion| CudaOptions { fp16: true, fusion, ..Default::default() };
                let Some(launches) = engine_with(&model, cuda(Fusion::Launches)) else { return };
                for fusion in [Fusion::Fused, Fusion::Split, Fusion::Fastest] {
                    let fused = engine_with(&model, cuda(fusion)).unwrap();
                    for (w, h) in [(72, 40), (35, 19)] {
                        let input = image(w, h, (3 * w + h) as u32);
                        let want = cpu.restore(&input).unwrap();
                        let peak = want.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
                        let (launched, fused) = (launches.restore(&input).unwrap(), fused.restore(&input).unwrap());
                        let (launched, fused) = (max_abs(&want, &launched), max_abs(&want, &fused));
                        let case = format!("width {width} ×{scale} {fusion:?} {w}×{h}");
                        eprintln!("{case}: peak {peak:.3e}, vs cpu: launches {launched:.3e}, fused {fused:.3e}");
                        if fused > 1.5 * launched + 5e-4 * peak {
                            failures.push(case);
                        }
                    }
                }
            }
        }
        assert!(failures.is_empty(), "fused kernels less exact than the launches: {failures:?}");
    }

    /// [`random_model`] with every weight times `scale`.
    fn scaled_model(spec: &ModelSpec, seed: u32, scale: f32) -> crate::model::Model {
        let tensors = random_model(spec, seed)
            .weights()
            .iter()
            .map(|(key, t)| {
                let values: Vec<f32> = t.to_f32().iter().map(|v| v * scale).collect();
                (key.to_string(), crate::weights::Tensor::from_f32(t.shape().to_vec(), &values).unwrap())
            })
            .collect();
        let store = crate::weights::WeightStore::new(tensors, crate::weights::Format::Safetensors, None);
        crate::model::Model::from_weights(store).unwrap()
    }

    /// A batch restores each image as a run of its own would, and shapes can alternate.
    #[test]
    fn batches_equal_single_runs() {
        let model = random_model(&two_levels(), 3);
        let Some(gpu) = engine(&model, false) else { return };
        let images: Vec<Image> = (0..3).map(|i| image(40, 24, 11 + i)).collect();
        let batch = gpu.restore_batch(&images).unwrap();
        for (image, batched) in images.iter().zip(&batch) {
            let single = gpu.restore(image).unwrap();
            assert!(max_abs(&single, batched) <= 1e-5);
        }
        let other = image(17, 9, 5);
        assert_eq!(gpu.restore(&other).unwrap().width(), 17);
        assert!(gpu.restore_batch(&[images[0].clone(), other]).unwrap_err().to_string().contains("one size"));
    }

    /// Runs are deterministic: the channel sums of the attention are added in a fixed order
    /// (no atomics), so restoring one image again (the first run launches op by op, the
    /// next ones replay the CUDA graph) gives the same bits, in both precisions.
    #[test]
    fn repeated_runs_are_bitwise_identical() {
        let model = random_model(&two_levels(), 9);
        for fp16 in [false, true] {
            let Some(gpu) = engine(&model, fp16) else { return };
            let input = image(301, 203, 4);
            let first = gpu.restore(&input).unwrap();
            for _ in 0..3 {
                let again = gpu.restore(&input).unwrap();
                let same = first.data().iter().zip(again.data()).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "fp16={fp16}: a repeated run differs by up to {}", max_abs(&first, &again));
            }
        }
    }

    /// Kernels that start early (programmatic dependent launch, compute capability 9.0+) give
    /// what serial launches give: every kernel waits for its predecessor before touching
    /// memory, so a missing wait would show here as a race (three levels, a width that runs the
    /// fused kernels in FP16, direct runs and graph replays), and a device of compute
    /// capability 9.0+ starts them early (its driver passed the launch probe). The two engines time their
    /// kernel choices separately, so FP16 is compared within rounding, f32 near exactly.
    #[test]
    fn overlapped_launches_equal_serial_ones() {
        let spec = ModelSpec {
            family: Family::MaskDcpt,
            width: 16,
            enc_blocks: vec![1, 2],
            middle_blocks: 2,
            dec_blocks: vec![1, 1],
        };
        let model = random_model(&spec, 21);
        for (fp16, bound) in [(false, 1e-5), (true, 2e-2)] {
            let cuda = |serial_launches| CudaOptions { fp16, serial_launches, ..Default::default() };
            let Some(overlapped) = engine_with(&model, cuda(false)) else { return };
            let serial = engine_with(&model, cuda(true)).unwrap();
            // Early starts where the device has them (the launch probe passed), never when
            // serial launches are asked for.
            let timing = overlapped.device_timing(1, 96, 64, 1).unwrap().unwrap();
            let sm = timing.device.rsplit("(sm_").next().unwrap().trim_end_matches(')');
            let major: u32 = sm[..sm.len() - 1].parse().unwrap();
            assert_eq!(timing.launch_overlap, major >= 9, "{}", timing.device);
            assert!(!serial.device_timing(1, 96, 64, 1).unwrap().unwrap().launch_overlap);
            for (w, h) in [(96, 64), (37, 29)] {
                let input = image(w, h, (w + 7 * h) as u32);
                let want = serial.restore(&input).unwrap();
                for run in 0..3 {
                    let diff = max_abs(&want, &overlapped.restore(&input).unwrap());
                    assert!(diff <= bound, "fp16={fp16} {w}×{h} run {run}: max |Δ| {diff}");
                }
            }
        }
    }

    /// The timing report names every choice the FP16 engine timed (each stretch of a block
    /// at each level has at least two candidates there: launches and a fused kernel, or the
    /// depthwise variants), with the fastest taken; an engine told to run launches only
    /// times no fusion.
    #[test]
    fn timed_choices_are_reported_and_take_the_fastest() {
        let model = random_model(&ModelSpec { width: 16, ..two_levels() }, 22);
        let Some(gpu) = engine(&model, true) else { return };
        let choices = gpu.device_timing(1, 64, 48, 1).unwrap().unwrap().choices;
        for what in ["depthwise", "layer_norm", "norm_conv1", "second half"] {
            assert!(choices.iter().any(|c| c.what == what), "{what} not timed: {choices:?}");
        }
        for choice in &choices {
            let fastest = choice.candidates.iter().map(|(_, ms)| *ms).fold(f64::INFINITY, f64::min);
            assert!(choice.candidates.len() >= 2, "{choice:?}");
            assert_eq!(choice.candidates[choice.chosen].1, fastest, "{choice:?}");
        }
        let launches = engine_with(&model, CudaOptions { fp16: true, fusion: Fusion::Launches, ..Default::default() });
        let choices = launches.unwrap().device_timing(1, 64, 48, 1).unwrap().unwrap().choices;
        assert!(choices.iter().all(|c| c.what == "depthwise" || c.what == "layer_norm"), "{choices:?}");
    }

    /// `prepare` builds and records the instance of a size: a restore of that size then gives
    /// what a cold engine gives, and an empty size is refused.
    #[test]
    fn prepared_engines_restore_as_cold_ones() {
        let model = random_model(&two_levels(), 12);
        let (Some(cold), Some(warm)) = (engine(&model, false), engine(&model, false)) else { return };
        let input = image(45, 31, 6);
        warm.prepare(45, 31).unwrap();
        let diff = max_abs(&cold.restore(&input).unwrap(), &warm.restore(&input).unwrap());
        assert!(diff <= 1e-5, "max |Δ| {diff}");
        assert!(warm.prepare(0, 31).is_err());
    }

    /// The up-front estimate (from the plan) is what a run allocates on the device (weights,
    /// workspace and the instance's buffers, counted from the buffers), and a memory limit
    /// below it refuses the run before allocating, one at it does not.
    #[test]
    fn memory_estimates_are_exact_and_limits_refuse() {
        let model = random_model(&two_levels(), 13);
        let Some(gpu) = engine(&model, true) else { return };
        let estimate = gpu.memory_estimate(45, 31).unwrap();
        let timing = gpu.device_timing(1, 45, 31, 1).unwrap().unwrap();
        assert_eq!(estimate.total(), timing.memory_bytes);
        let limited = |limit: u64| {
            let cuda = CudaOptions { fp16: true, ..Default::default() };
            let options =
                EngineOptions { backend: Backend::Cuda(cuda), memory_limit: Some(limit), ..Default::default() };
            build_engine(&model, &options).unwrap()
        };
        let err = limited(estimate.total() - 1).restore(&image(45, 31, 2)).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }) && err.to_string().contains("memory limit"), "{err}");
        limited(estimate.total()).restore(&image(45, 31, 2)).unwrap();
    }

    /// Threads other than the builder's may restore on one engine at once (the engine binds its
    /// context and serialises runs on its stream).
    #[test]
    fn engines_serve_several_threads() {
        let model = random_model(&two_levels(), 5);
        let Some(gpu) = engine(&model, false) else { return };
        let input = image(24, 16, 8);
        let want = gpu.restore(&input).unwrap();
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..4).map(|_| scope.spawn(|| gpu.restore(&input).unwrap())).collect();
            for run in runs {
                assert!(max_abs(&run.join().unwrap(), &want) <= 1e-6);
            }
        });
    }

    /// An engine file is written on first build, reused when intact for the same model, GPU
    /// and precision (computing what a fresh engine computes), extended by an engine with TLC
    /// attention, and rebuilt when damaged or written for other weights.
    #[test]
    fn engine_files_are_reused_and_stale_ones_rebuilt() {
        use super::build_engine_file;
        use crate::backend::cuda::saved::FileUse;
        use crate::tlc::AttentionPool::{self, Global};
        let model = random_model(&two_levels(), 12);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.cuda-engine");
        let cuda = CudaOptions { fp16: true, engine_file: Some(path.clone()), ..Default::default() };
        let shapes = [(1, 48, 40), (2, 17, 9)];
        let first = match build_engine_file(&model, &cuda, Global, &shapes) {
            Ok(report) => report,
            Err(Error::Unsupported(why)) if std::env::var_os("MASKDCPT_REQUIRE_GPU").is_none() => {
                eprintln!("skipped: no usable CUDA GPU here ({why})");
                return;
            }
            Err(e) => panic!("building the engine file: {e}"),
        };
        assert_eq!((first.found, first.path.as_path()), (FileUse::Missing, path.as_path()));
        assert!(first.products > 0);
        let again = build_engine_file(&model, &cuda, Global, &shapes).unwrap();
        assert_eq!((again.found, again.products), (FileUse::Reused, first.products));
        // TLC attention adds the products of its per-pixel attention to the same file.
        let tlc = AttentionPool::Tlc { train_height: 16, train_width: 16 };
        let windowed = build_engine_file(&model, &cuda, tlc, &shapes).unwrap();
        assert_eq!(windowed.found, FileUse::Reused);
        assert!(windowed.products > first.products, "{} products with TLC", windowed.products);

        let options = EngineOptions { backend: Backend::Cuda(cuda.clone()), ..Default::default() };
        let reused = build_engine(&model, &options).unwrap();
        let fresh = engine(&model, true).unwrap();
        let input = image(40, 48, 21);
        assert!(max_abs(&reused.restore(&input).unwrap(), &fresh.restore(&input).unwrap()) <= 2e-3);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let damaged = build_engine_file(&model, &cuda, Global, &shapes).unwrap();
        assert!(matches!(&damaged.found, FileUse::Rejected(why) if why.contains("checksum")), "{damaged:?}");
        assert_eq!(build_engine_file(&model, &cuda, Global, &shapes).unwrap().found, FileUse::Reused);

        let other = random_model(&two_levels(), 13);
        let stale = build_engine_file(&other, &cuda, Global, &shapes).unwrap();
        assert!(matches!(&stale.found, FileUse::Rejected(why) if why.contains("another")), "{stale:?}");
    }

    /// Frames in device memory, in every pixel format, get the bytes the host path writes
    /// (decode → restore → encode), in place too; host memory is refused by name.
    #[test]
    fn device_frames_match_the_host_path() {
        use crate::backend::cuda::emulation::{random_bytes, random_planes};
        use crate::pixels::{DeviceFrame, FrameDesc, PixelFormat, PlaneMut, PlaneRef, YuvMatrix, decode, encode};
        use cudarc::driver::{CudaContext, DevicePtr};
        let model = random_model(&two_levels(), 14);
        let Some(gpu) = engine(&model, true) else { return };
        let ctx = CudaContext::new(0).unwrap();
        let stream = ctx.new_stream().unwrap();
        let (w, h) = (34, 22);
        let mut byte = random_bytes(7);
        for format in PixelFormat::ALL {
            let desc = FrameDesc { format, width: w, height: h, yuv: YuvMatrix::Bt709Limited };
            let planes = random_planes(&desc, &mut byte);
            let refs: Vec<PlaneRef> = planes.iter().map(|(data, stride)| PlaneRef { data, stride: *stride }).collect();
            let decoded = decode(&desc, &refs).unwrap();
            let restored = gpu.restore(&decoded.image).unwrap();
            let mut want = planes.clone();
            let mut muts: Vec<PlaneMut> =
                want.iter_mut().map(|(data, stride)| PlaneMut { data, stride: *stride }).collect();
            encode(&desc, &restored, decoded.alpha.as_deref(), &mut muts).unwrap();

            let upload = |planes: &[(Vec<u8>, usize)]| -> Vec<_> {
                planes.iter().map(|(data, _)| stream.clone_htod(data).unwrap()).collect()
            };
            let frame = |buffers: &[cudarc::driver::CudaSlice<u8>]| DeviceFrame {
                desc,
                planes: buffers
                    .iter()
                    .zip(&planes)
                    .map(|(b, (_, stride))| (b.device_ptr(&stream).0, *stride))
                    .collect(),
            };
            let (input, output) = (upload(&planes), upload(&planes));
            for (name, out) in [("separate", &output), ("in place", &input)] {
                unsafe { gpu.restore_device(&frame(&input), &frame(out), stream.cu_stream().cast()) }
                    .unwrap_or_else(|e| panic!("{} {name}: {e}", format.name()));
                for (i, (got, (want, _))) in out.iter().zip(&want).enumerate() {
                    let got = stream.clone_dtoh(got).unwrap();
                    let wrong = got.iter().zip(want).filter(|(a, b)| a != b).count();
                    assert_eq!(wrong, 0, "{} {name}: plane {i} differs in {wrong} bytes", format.name());
                }
            }
        }
        let host = vec![0u8; w * h * 3];
        let host_frame = DeviceFrame {
            desc: FrameDesc { format: PixelFormat::Rgb8, width: w, height: h, yuv: YuvMatrix::default() },
            planes: vec![(host.as_ptr() as u64, w * 3)],
        };
        let refused = unsafe { gpu.restore_device(&host_frame, &host_frame, std::ptr::null_mut()) }.unwrap_err();
        assert!(refused.to_string().contains("not memory the CUDA driver knows"), "{refused}");
    }

    /// Tiled engines give what the CPU engine gives with the same tiling: local tiles (the
    /// same crops, each padded and restored on its own) and global means (the untiled result),
    /// with global and with TLC attention (crop 8: windows of 12 and 6, within a tile's maps).
    #[test]
    fn tiles_match_the_cpu_engine_in_both_channel_attention_modes() {
        use crate::backend::{ScaMode, TileSize, Tiling};
        use crate::tlc::AttentionPool;
        let model = random_model(&two_levels(), 15);
        let Some(_) = engine(&model, false) else { return };
        let input = image(45, 37, 3);
        let tlc = AttentionPool::Tlc { train_height: 8, train_width: 8 };
        for (sca, attention_pool) in
            [ScaMode::Local, ScaMode::Global].into_iter().flat_map(|sca| [(sca, AttentionPool::Global), (sca, tlc)])
        {
            let options = |backend| EngineOptions {
                backend,
                tiling: Some(Tiling { tile: TileSize::Pixels(16), overlap: 4, sca, blend: false }),
                attention_pool,
                ..Default::default()
            };
            let gpu = build_engine(&model, &options(Backend::Cuda(CudaOptions::default()))).unwrap();
            let cpu = build_engine(&model, &options(Backend::Cpu)).unwrap();
            let diff = max_abs(&cpu.restore(&input).unwrap(), &gpu.restore(&input).unwrap());
            eprintln!("{sca:?} tiles, {attention_pool:?}: max |Δ| {diff:.3e}");
            assert!(diff <= 1e-4, "{sca:?} tiles, {attention_pool:?}: max |Δ| {diff}");
        }
    }

    /// An automatic tile size on the GPU fits the instance of its largest tile with the weights
    /// and workspace into the memory limit, runs whole when that fits, and restores what the
    /// CPU engine restores with the tile it picked.
    #[test]
    fn automatic_tiles_fit_the_device_memory_limit() {
        use crate::backend::{ScaMode, TileSize, Tiling};
        let model = random_model(&two_levels(), 16);
        let Some(_) = engine(&model, false) else { return };
        let (w, h) = (300, 200);
        let input = image(w, h, 4);
        let options = |backend, tile, memory_limit| EngineOptions {
            backend,
            tiling: Some(Tiling { tile, overlap: 8, sca: ScaMode::Local, blend: false }),
            memory_limit,
            ..Default::default()
        };
        let cuda = || Backend::Cuda(CudaOptions::default());
        let whole = build_engine(&model, &options(cuda(), TileSize::Pixels(w), None)).unwrap();
        let needed = whole.memory_estimate(w, h).unwrap().total();
        let roomy = build_engine(&model, &options(cuda(), TileSize::Auto, None)).unwrap();
        assert_eq!(roomy.local_tiles(w, h).unwrap(), None, "{needed} bytes fit a free GPU");
        let limit = needed - (needed - whole.memory_estimate(64, 64).unwrap().total()) / 2;
        let gpu = build_engine(&model, &options(cuda(), TileSize::Auto, Some(limit))).unwrap();
        let tile = gpu.local_tiles(w, h).unwrap().expect("a limit under the whole run needs tiles").tile;
        assert!(gpu.memory_estimate(w, h).unwrap().total() <= limit);
        let cpu = build_engine(&model, &options(Backend::Cpu, TileSize::Pixels(tile), None)).unwrap();
        let diff = max_abs(&cpu.restore(&input).unwrap(), &gpu.restore(&input).unwrap());
        eprintln!("automatic tile {tile} in {limit} of {needed} bytes: max |Δ| {diff:.3e}");
        assert!(diff <= 1e-4, "tile {tile}: max |Δ| {diff}");
    }

    /// TLC channel attention gives what the CPU engine gives: both families, three levels,
    /// windows smaller than the maps both ways (crop 16: 24/12/6/3 pixels on 64×48), as tall
    /// as the map (crop 32 on 64×48: 48 rows of 48), and clipped to a thin map (crop 16 on
    /// 8×104), for a batch of two, in f32 and FP16; and TLC moved the result (the test is not
    /// of global attention twice).
    #[test]
    fn tlc_attention_matches_the_cpu_engine() {
        use crate::tlc::AttentionPool;
        for family in [Family::MaskDcpt, Family::Nafnet] {
            let spec =
                ModelSpec { family, width: 16, enc_blocks: vec![1, 1, 1], middle_blocks: 2, dec_blocks: vec![1, 1, 1] };
            let model = random_model(&spec, 5);
            let Some(global) = engine(&model, false) else { return };
            for (train, (w, h)) in [(16, (61, 45)), (32, (64, 48)), (16, (8, 100))] {
                let options = |backend| EngineOptions {
                    backend,
                    attention_pool: AttentionPool::Tlc { train_height: train, train_width: train },
                    ..Default::default()
                };
                let cpu = build_engine(&model, &options(Backend::Cpu)).unwrap();
                let inputs = [image(w, h, 3), image(w, h, 4)];
                let want: Vec<Image> = inputs.iter().map(|i| cpu.restore(i).unwrap()).collect();
                let moved = max_abs(&want[0], &global.restore(&inputs[0]).unwrap());
                assert!(moved > 1e-3, "{family:?} TLC {train} on {w}×{h} moved the result by only {moved}");
                for (fp16, bound) in [(false, 1e-4), (true, 2e-2)] {
                    let cuda = CudaOptions { fp16, ..Default::default() };
                    let gpu = build_engine(&model, &options(Backend::Cuda(cuda))).unwrap();
                    let got = gpu.restore_batch(&inputs).unwrap();
                    for (got, want) in got.iter().zip(&want) {
                        let diff = max_abs(want, got);
                        eprintln!("{family:?} TLC {train} fp16={fp16} {w}×{h}: max |Δ| {diff:.3e}");
                        assert!(diff <= bound, "{family:?} TLC {train} fp16={fp16} {w}×{h}: max |Δ| {diff}");
                    }
                }
            }
        }
    }

    /// The classification head over the CUDA engine's features gives the CPU engine's
    /// probabilities (f32 closely, FP16 within rounding): the default model's head over the
    /// decoder's, and the same head told by the metadata to read the encoder's.
    #[cfg(feature = "default-model")]
    #[test]
    fn classification_matches_the_cpu_engine() {
        use crate::head::FEATURES_METADATA;
        use crate::model::{DEFAULT_MODEL, Model};
        use crate::weights::{LoadOptions, WeightStore};

        let default = Model::load_default().unwrap();
        let Some(_) = engine(&default, false) else { return };
        let store = WeightStore::from_bytes(DEFAULT_MODEL, &LoadOptions::default()).unwrap();
        let encoder = [(FEATURES_METADATA.to_owned(), "encoder".to_owned())].into_iter().collect();
        let encoder_head = Model::from_weights(store.with_metadata(encoder)).unwrap();
        let input = image(70, 50, 5);
        for model in [default, encoder_head] {
            let source = model.head().unwrap().features;
            let cpu = build_engine(&model, &EngineOptions::default()).unwrap();
            let want = cpu.classify(&input).unwrap();
            for (fp16, bound) in [(false, 1e-4), (true, 2e-2)] {
                let cuda = CudaOptions { fp16, ..Default::default() };
                let options = EngineOptions { backend: Backend::Cuda(cuda), ..Default::default() };
                let got = build_engine(&model, &options).unwrap().classify(&input).unwrap();
                let diff = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                eprintln!("classify over {source:?} features, fp16={fp16}: max |Δp| {diff:.3e}");
                assert!(diff <= bound, "{source:?} fp16={fp16}: max |Δp| {diff}");
            }
        }
    }

    /// An engine may be dropped on a thread other than the one that built and ran it.
    #[test]
    fn engines_drop_on_other_threads() {
        let model = random_model(&two_levels(), 6);
        let Some(gpu) = engine(&model, true) else { return };
        gpu.restore(&image(16, 16, 2)).unwrap();
        std::thread::spawn(move || drop(gpu)).join().unwrap();
    }

    /// Inputs whose bottleneck activations reach thousands stay finite in FP16 (the LayerNorm
    /// statistics are f32).
    #[test]
    fn large_activations_stay_finite_in_fp16() {
        let model = random_model(&two_levels(), 9);
        let Some(gpu) = engine(&model, true) else { return };
        let loud: Vec<f32> = image(32, 32, 4).data().iter().map(|v| v * 300.0).collect();
        let out = gpu.restore(&Image::new(32, 32, loud).unwrap()).unwrap();
        assert!(out.data().iter().all(|v| v.is_finite()));
    }
}
