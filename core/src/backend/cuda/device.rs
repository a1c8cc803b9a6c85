//! Opening a CUDA device. The driver, NVRTC and cuBLASLt are loaded when an engine is built,
//! not when the library loads: a host without them gets an error naming what is missing
//! (cudarc panics if a library is used without that check, so every entry checks first).

use std::fmt::Display;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use crate::error::{Error, Result};

/// Maps a CUDA library error to [`Error::Cuda`] with what was being done.
pub fn cuda_error<E: Display>(what: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// An opened device with the stream the engine runs on.
pub struct Device {
    /// The device's primary context.
    pub ctx: Arc<CudaContext>,
    /// The engine's stream (non-blocking, so it can be captured into CUDA graphs).
    pub stream: Arc<CudaStream>,
    /// Compute capability (major, minor).
    pub arch: (i32, i32),
    /// Marketing name, e.g. "NVIDIA H200".
    pub name: String,
    /// Device ordinal.
    pub ordinal: usize,
}

/// Opens device `ordinal`, after checking that the driver and cuBLASLt libraries exist and
/// that the device does.
pub fn open(ordinal: usize) -> Result<Device> {
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "no CUDA driver on this host (libcuda.so.1 not found): the cuda backend needs an NVIDIA GPU \
             and its driver; use the cpu backend"
                .into(),
        ));
    }
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "cuBLASLt (libcublasLt.so.13) not found: install the CUDA 13 runtime libraries (or the PyPI \
             wheel nvidia-cublas) and add them to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let count = CudaContext::device_count().map_err(|e| Error::Unsupported(format!("no CUDA device: {e}")))?;
    if ordinal >= count.max(0) as usize {
        return Err(Error::InvalidArgument(format!(
            "CUDA device {ordinal} does not exist: this host has {count} (numbered from 0)"
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(cuda_error("opening the CUDA device"))?;
    // One stream per engine, synchronised by the engine itself; cudarc's per-buffer events
    // would also be recorded into captured graphs.
    unsafe { ctx.disable_event_tracking() };
    let arch = ctx.compute_capability().map_err(cuda_error("reading the compute capability"))?;
    let name = ctx.name().map_err(cuda_error("reading the device name"))?;
    let stream = ctx.new_stream().map_err(cuda_error("creating a stream"))?;
    Ok(Device { ctx, stream, arch, name, ordinal })
}
