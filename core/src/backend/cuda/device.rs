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
    let mut driver = 0;
    // SAFETY: the driver library is present (checked above); the call only writes `driver`.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) }
        .result()
        .map_err(cuda_error("reading the CUDA driver's version"))?;
    check_driver_version(driver)?;
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "cuBLASLt (libcublasLt.so.13) not found: install the CUDA 13 runtime libraries (or the PyPI \
             wheel nvidia-cublas) and add them to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    // SAFETY: the library is present (checked above); the call takes no arguments.
    check_cublaslt_version(unsafe { cudarc::cublaslt::sys::cublasLtGetVersion() })?;
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

/// The oldest CUDA the driver must support (`cuDriverGetVersion`'s `1000 · major + 10 · minor`):
/// the engine calls the driver through CUDA 13.0's API, so an older driver could lack a
/// function it calls.
const MIN_DRIVER_VERSION: i32 = 13000;

/// Refuses a driver older than [`MIN_DRIVER_VERSION`], saying what it supports.
fn check_driver_version(version: i32) -> Result<()> {
    if version >= MIN_DRIVER_VERSION {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "the CUDA driver on this host supports CUDA {}.{}, and the cuda backend needs CUDA 13.0 or newer \
         (NVIDIA driver 580 or newer; on a Jetson, a JetPack with CUDA 13): update the driver, or use the cpu \
         backend",
        version / 1000,
        version % 1000 / 10
    )))
}

/// Refuses a cuBLASLt other than 13.x (`cublasLtGetVersion`'s `10000 · major + 100 · minor +
/// patch`), whose interface the engine is built against: the loader also finds other versions.
fn check_cublaslt_version(version: usize) -> Result<()> {
    let (major, minor, patch) = (version / 10000, version / 100 % 100, version % 100);
    if major == 13 {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "the cuBLASLt library found is version {major}.{minor}.{patch}, and the cuda backend is built against \
         cuBLASLt 13 (libcublasLt.so.13): install the CUDA 13 runtime libraries (or the PyPI wheel nvidia-cublas) \
         and put their folder first in LD_LIBRARY_PATH"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_before_cuda_13_are_refused_with_their_version() {
        assert!(check_driver_version(13000).is_ok() && check_driver_version(13020).is_ok());
        let message = check_driver_version(12060).unwrap_err().to_string();
        assert!(message.contains("supports CUDA 12.6") && message.contains("CUDA 13.0 or newer"), "{message}");
    }

    #[test]
    fn cublaslt_other_than_13_is_refused_with_its_version() {
        assert!(check_cublaslt_version(130000).is_ok() && check_cublaslt_version(130102).is_ok());
        for (version, shown) in [(120604, "12.6.4"), (140000, "14.0.0")] {
            let message = check_cublaslt_version(version).unwrap_err().to_string();
            assert!(message.contains(&format!("version {shown}")) && message.contains("cuBLASLt 13"), "{message}");
        }
    }
}
