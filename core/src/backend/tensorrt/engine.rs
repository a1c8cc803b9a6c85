//! Engine building and running through the C++ shim (`shim.cpp`, feature `tensorrt`). Nothing
//! here has run: no host this project is tested on has TensorRT. Everything it computes
//! beforehand (layers, weights, profile, cache key and file) is in the tested modules.

use std::ffi::{CStr, c_char, c_void};
use std::path::PathBuf;
use std::ptr::NonNull;

use super::cache::{self, CacheKey};
use super::ffi;
use super::network::{DataType, ElementWiseOp, HostWeights, Layer, Network, TrtPrecision};
use super::profile::{Profile, ShapeRange, Size};
use crate::error::{Error, Result};
use crate::model::Model;

/// Settings for building a TensorRT engine.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Network precision.
    pub precision: TrtPrecision,
    /// Input sizes the engine must accept (before padding).
    pub shapes: ShapeRange,
    /// Builder workspace limit in bytes (`None`: TensorRT's default, the device memory).
    pub workspace: Option<u64>,
    /// Folder for cached engines and the timing cache (`None`: no caching).
    pub cache_dir: Option<PathBuf>,
}

/// Calls `f` with an error buffer; a non-zero status becomes an error with the shim's message
/// (each names TensorRT or CUDA).
fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<()> {
    let mut err = [0 as c_char; 1024];
    if f(err.as_mut_ptr(), err.len()) == 0 {
        return Ok(());
    }
    // SAFETY: the shim writes a NUL-terminated message of at most `err.len()` bytes.
    let message = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    Err(Error::Unsupported(message))
}

/// Version `[major, minor, patch]` of the TensorRT library this process loads.
pub fn library_version() -> Result<[u32; 3]> {
    let mut v = 0;
    // SAFETY: `v` outlives the call.
    call(|err, len| unsafe { ffi::mdt_library_version(&mut v, err, len) })?;
    let v = v as u32;
    Ok([v / 10000, v / 100 % 100, v % 100])
}

/// Compute capability `[major, minor]` of the current CUDA device.
pub fn compute_capability() -> Result<[u32; 2]> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both outlive the call.
    call(|err, len| unsafe { ffi::mdt_compute_capability(&mut major, &mut minor, err, len) })?;
    Ok([major as u32, minor as u32])
}

fn dtype(d: DataType) -> i32 {
    match d {
        DataType::F32 => ffi::F32,
        DataType::F16 => ffi::F16,
    }
}

fn weights(w: Option<&HostWeights>) -> ffi::Weights {
    match w {
        Some(w) => ffi::Weights { dtype: dtype(w.dtype), values: w.bytes.as_ptr().cast(), count: w.count as i64 },
        None => ffi::Weights { dtype: ffi::F32, values: std::ptr::null(), count: 0 },
    }
}

/// The shim's record of `layer`, pointing into `w` (which must outlive the record's use).
fn record(layer: &Layer, w: &super::network::LayerWeights) -> ffi::Layer {
    let mut r = ffi::Layer {
        kind: ffi::INPUT,
        input: 0,
        input2: 0,
        channels: 0,
        kernel: 0,
        stride: 0,
        pad: 0,
        groups: 0,
        start: 0,
        op: 0,
        eps: 0.0,
        weight: weights(w.weight.as_ref()),
        bias: weights(w.bias.as_ref()),
    };
    let i = |id: super::network::LayerId| id.0 as i32;
    match layer {
        Layer::Input => {}
        Layer::Cast { input, to } => (r.kind, r.input, r.op) = (ffi::CAST, i(*input), dtype(*to)),
        Layer::Conv { input, cout, kernel, stride, pad, groups, .. } => {
            (r.kind, r.input, r.channels) = (ffi::CONV, i(*input), *cout as i32);
            (r.kernel, r.stride, r.pad, r.groups) = (*kernel as i32, *stride as i32, *pad as i32, *groups as i32);
        }
        Layer::Normalize { input, eps, .. } => (r.kind, r.input, r.eps) = (ffi::NORMALIZE, i(*input), *eps),
        Layer::Mean { input } => (r.kind, r.input) = (ffi::MEAN, i(*input)),
        Layer::SliceChannels { input, start, channels } => {
            (r.kind, r.input, r.start, r.channels) = (ffi::SLICE_CHANNELS, i(*input), *start as i32, *channels as i32);
        }
        Layer::Constant { channels, .. } => (r.kind, r.channels) = (ffi::CONSTANT, *channels as i32),
        Layer::ElementWise { a, b, op } => {
            let op = match op {
                ElementWiseOp::Sum => ffi::SUM,
                ElementWiseOp::Prod => ffi::PROD,
            };
            (r.kind, r.input, r.input2, r.op) = (ffi::ELEMENTWISE, i(*a), i(*b), op);
        }
        Layer::PixelShuffle { input, channels } => {
            (r.kind, r.input, r.channels) = (ffi::PIXEL_SHUFFLE, i(*input), *channels as i32);
        }
    }
    r
}

/// Copies and frees bytes the shim allocated.
fn take(bytes: ffi::Bytes) -> Vec<u8> {
    let out = if bytes.data.is_null() {
        Vec::new()
    } else {
        // SAFETY: the shim returned `len` readable bytes at `data`.
        unsafe { std::slice::from_raw_parts(bytes.data, bytes.len) }.to_vec()
    };
    // SAFETY: `bytes` came from the shim and is freed once.
    unsafe { ffi::mdt_free(bytes) };
    out
}

fn read_optional(path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// A serialized TensorRT engine for `model`: from the cache folder when a file there matches
/// the [`CacheKey`] and is intact, else built (and then cached, with the timing cache).
pub fn build_serialized(model: &Model, options: &BuildOptions) -> Result<Vec<u8>> {
    let multiple = model.nafnet("the TensorRT backend")?.size_multiple();
    let profile = Profile::new(&options.shapes, multiple)?;
    let key = CacheKey {
        tensorrt_version: library_version()?,
        compute_capability: compute_capability()?,
        precision: options.precision,
        profile,
        weights: crate::engine_file::weights_hash(model),
    };
    let engine_path = options.cache_dir.as_ref().map(|d| d.join(key.file_name()));
    if let Some(path) = &engine_path
        && let Some(file) = read_optional(path)?
        && let Ok(engine) = cache::decode(&key, &file)
    {
        return Ok(engine.to_vec());
    }
    let network = Network::lower(&model.graph("the TensorRT backend")?, options.precision);
    let host = network.layer_weights(model)?;
    let records: Vec<ffi::Layer> = network.layers.iter().zip(&host).map(|(l, w)| record(l, w)).collect();
    let desc =
        ffi::Network { layers: records.as_ptr(), layer_count: records.len() as i32, output: network.output.0 as i32 };
    let p = |s: Size| (s.height as i64, s.width as i64);
    let ((min_h, min_w), (opt_h, opt_w), (max_h, max_w)) = (p(profile.min), p(profile.opt), p(profile.max));
    let shim_profile = ffi::Profile { min_h, min_w, opt_h, opt_w, max_h, max_w };
    let timing_path = options.cache_dir.as_ref().map(|d| d.join("timing.cache"));
    let timing_in = match &timing_path {
        Some(path) => read_optional(path)?.unwrap_or_default(),
        None => Vec::new(),
    };
    let empty = || ffi::Bytes { data: std::ptr::null_mut(), len: 0 };
    let (mut engine, mut timing) = (empty(), empty());
    // SAFETY: every pointer (records, their weights in `host`, the timing bytes, the outputs)
    // is valid for the duration of the call.
    call(|err, len| unsafe {
        ffi::mdt_build(
            &desc,
            &shim_profile,
            options.workspace.unwrap_or(0),
            timing_in.as_ptr(),
            timing_in.len(),
            &mut engine,
            &mut timing,
            err,
            len,
        )
    })?;
    let (engine, timing) = (take(engine), take(timing));
    if let (Some(dir), Some(engine_path), Some(timing_path)) = (&options.cache_dir, &engine_path, &timing_path) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        std::fs::write(engine_path, cache::encode(&key, &engine)).map_err(|e| Error::io(engine_path, e))?;
        std::fs::write(timing_path, &timing).map_err(|e| Error::io(timing_path, e))?;
    }
    Ok(engine)
}

/// A deserialized engine with its execution context. Not `Sync`: one context runs one
/// enqueue at a time.
pub struct TrtRuntime {
    raw: NonNull<ffi::Runtime>,
}

// SAFETY: the runtime, engine and context may be moved between threads (TensorRT objects are
// not bound to the creating thread); `&mut self` on enqueue keeps uses exclusive.
unsafe impl Send for TrtRuntime {}

impl TrtRuntime {
    /// Deserializes an engine from [`build_serialized`].
    pub fn new(engine: &[u8]) -> Result<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `engine` and `raw` outlive the call.
        call(|err, len| unsafe { ffi::mdt_runtime_create(engine.as_ptr(), engine.len(), &mut raw, err, len) })?;
        NonNull::new(raw)
            .map(|raw| TrtRuntime { raw })
            .ok_or_else(|| Error::Unsupported("TensorRT returned no runtime".into()))
    }

    /// Enqueues one run on `stream` (a `cudaStream_t`) over a padded `height × width` input;
    /// returns once enqueued.
    ///
    /// # Safety
    /// `input` and `output` must be device pointers to FP32 `[1, 3, height, width]` buffers
    /// that stay valid until the stream reaches this work, and `stream` a valid CUDA stream
    /// (or null for the default stream).
    pub unsafe fn enqueue(
        &mut self,
        height: usize,
        width: usize,
        input: *const f32,
        output: *mut f32,
        stream: *mut c_void,
    ) -> Result<()> {
        // SAFETY: upheld by the caller; `self.raw` is live.
        call(|err, len| unsafe {
            ffi::mdt_runtime_enqueue(self.raw.as_ptr(), height as i64, width as i64, input, output, stream, err, len)
        })
    }
}

impl TrtRuntime {
    /// Runs once on host buffers (FP32 `[1, 3, height, width]`, a padded image): copies to the
    /// device buffers the runtime keeps, enqueues on its own stream and waits for the result.
    pub fn run_host(&mut self, height: usize, width: usize, input: &[f32], output: &mut [f32]) -> Result<()> {
        let len = 3 * height * width;
        if input.len() != len || output.len() != len {
            return Err(Error::InvalidImage(format!(
                "TensorRT run of {height}×{width}: buffers hold {} and {} values, expected {len}",
                input.len(),
                output.len()
            )));
        }
        // SAFETY: both buffers hold `len` floats (checked) and outlive the call, which waits.
        call(|err, err_len| unsafe {
            ffi::mdt_runtime_run_host(
                self.raw.as_ptr(),
                height as i64,
                width as i64,
                input.as_ptr(),
                output.as_mut_ptr(),
                err,
                err_len,
            )
        })
    }
}

impl Drop for TrtRuntime {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `mdt_runtime_create` and is destroyed once.
        unsafe { ffi::mdt_runtime_destroy(self.raw.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::testing::{random_model, tiny_spec};

    /// On hosts without TensorRT (every CI host) building an engine is an error naming the
    /// missing library, not a crash.
    #[test]
    fn missing_library_is_an_error_that_names_it() {
        if library_version().is_ok() {
            return; // a host with TensorRT
        }
        let spec = tiny_spec();
        let size = Size { height: 64, width: 64 };
        let options = BuildOptions {
            precision: TrtPrecision::F16,
            shapes: ShapeRange { min: size, opt: size, max: size },
            workspace: None,
            cache_dir: None,
        };
        let err = build_serialized(&random_model(&spec, 1), &options).unwrap_err().to_string();
        assert!(err.contains("TensorRT library not found: libnvinfer.so."), "{err}");
        let err = TrtRuntime::new(b"not an engine").err().expect("no library").to_string();
        assert!(err.contains("TensorRT library not found"), "{err}");
    }
}
