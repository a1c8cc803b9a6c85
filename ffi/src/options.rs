//! `maskdcpt_options`: how to build an engine, as a plain C struct versioned by its leading
//! `struct_size`, and its translation into core engine options.

use std::ffi::c_char;
use std::mem::size_of;

use maskdcpt_core::backend::{Backend, CudaOptions, EngineOptions, Precision, ScaMode, TensorRtOptions, Tiling};

use crate::args::{c_enum, c_str, enum_arg, to_path};
use crate::status::{Failure, FfiResult, maskdcpt_status};

/// Where an engine runs.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_backend {
    /// The best backend this build and host have (the CPU in this version).
    Auto = 0,
    /// The CPU (always available).
    Cpu = 1,
    /// The fused CUDA engine on an NVIDIA GPU (fp16 or f32; the driver, NVRTC and cuBLASLt are
    /// loaded when the engine is created, and their absence is reported then).
    Cuda = 2,
    /// TensorRT on an NVIDIA GPU (libraries built with the `tensorrt` feature and a host with
    /// TensorRT; otherwise `maskdcpt_engine_new` says which is missing).
    Tensorrt = 3,
}

c_enum!(maskdcpt_backend: Auto, Cpu, Cuda, Tensorrt);

/// Arithmetic precision of an engine.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_precision {
    /// IEEE f32 everywhere.
    F32 = 0,
    /// Matrix products on bf16 inputs with f32 accumulation (CPUs with AVX512-BF16).
    Bf16 = 1,
    /// IEEE f16 (GPU backends only).
    Fp16 = 2,
}

c_enum!(maskdcpt_precision: F32, Bf16, Fp16);

/// How channel-attention means are taken when an image is processed in tiles.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum maskdcpt_sca_mode {
    /// Means over the whole image: tiled output equals untiled output.
    Global = 0,
    /// Means per tile: memory bounded by the tile, output differs slightly near tile borders.
    Local = 1,
}

c_enum!(maskdcpt_sca_mode: Global, Local);

/// Engine settings. Start from `maskdcpt_options_default()`, which sets `struct_size`, then
/// change fields; a `struct_size` other than this library's `sizeof(maskdcpt_options)` is
/// refused with `MASKDCPT_STATUS_ABI_MISMATCH`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct maskdcpt_options {
    /// `sizeof(maskdcpt_options)` of the header the caller was compiled with.
    pub struct_size: usize,
    /// A `maskdcpt_backend` value.
    pub backend: u32,
    /// A `maskdcpt_precision` value.
    pub precision: u32,
    /// GPU ordinal for the GPU backends (ignored by the CPU).
    pub device_id: i32,
    /// Worker threads; 0 uses every core.
    pub threads: u32,
    /// Tile edge in pixels; 0 processes the whole image at once.
    pub tile_size: u32,
    /// Context pixels around each tile in `MASKDCPT_SCA_MODE_LOCAL` mode.
    pub tile_overlap: u32,
    /// A `maskdcpt_sca_mode` value (used when `tile_size` > 0).
    pub sca_mode: u32,
    /// Refuse runs whose estimated memory exceeds this many bytes
    /// (`maskdcpt_engine_memory_estimate`); 0 uses the memory the operating system reports as
    /// available. On the CUDA backend it bounds the device memory of the weights, cuBLASLt's
    /// workspace and the sizes kept built (the least recently used are dropped first); 0 uses
    /// the device's free memory.
    pub memory_limit: u64,
    /// Folder for compiled GPU engines and kernels (may be NULL; ignored by the CPU). The CUDA
    /// backend keeps its kernels and one engine file per model, GPU and precision there (the
    /// algorithms it timed), so later processes skip compiling and tuning.
    pub engine_cache_dir: *const c_char,
}

/// The default engine settings: automatic backend, f32, device 0, all cores, whole image,
/// overlap 32, global channel attention, available memory, no engine cache.
#[unsafe(no_mangle)]
pub extern "C" fn maskdcpt_options_default() -> maskdcpt_options {
    maskdcpt_options {
        struct_size: size_of::<maskdcpt_options>(),
        backend: maskdcpt_backend::Auto as u32,
        precision: maskdcpt_precision::F32 as u32,
        device_id: 0,
        threads: 0,
        tile_size: 0,
        tile_overlap: 32,
        sca_mode: maskdcpt_sca_mode::Global as u32,
        memory_limit: 0,
        engine_cache_dir: std::ptr::null(),
    }
}

impl maskdcpt_options {
    /// Checks every field and translates them into core engine options.
    ///
    /// # Safety
    /// `engine_cache_dir` is NULL or a NUL-terminated string.
    pub(crate) unsafe fn to_core(self) -> FfiResult<EngineOptions> {
        if self.struct_size != size_of::<maskdcpt_options>() {
            return Err(Failure::new(
                maskdcpt_status::AbiMismatch,
                format!(
                    "options.struct_size is {} but this library's maskdcpt_options is {} bytes: the header and \
                     the library are from different versions (initialise options with maskdcpt_options_default())",
                    self.struct_size,
                    size_of::<maskdcpt_options>()
                ),
            ));
        }
        let precision = enum_arg(self.precision, "options.precision")?;
        let gpu_fp16 = |backend: &str| match precision {
            maskdcpt_precision::F32 => Ok(false),
            maskdcpt_precision::Fp16 => Ok(true),
            maskdcpt_precision::Bf16 => {
                Err(Failure::unsupported(format!("bf16 precision is CPU-only: use fp16 or f32 with {backend}")))
            }
        };
        // SAFETY: NULL or NUL-terminated per the function contract.
        let cache_dir = || -> FfiResult<_> {
            if self.engine_cache_dir.is_null() {
                return Ok(None);
            }
            Ok(Some(to_path(unsafe { c_str(self.engine_cache_dir, "options.engine_cache_dir") }?)?))
        };
        let backend = match enum_arg(self.backend, "options.backend")? {
            maskdcpt_backend::Auto | maskdcpt_backend::Cpu => Backend::Cpu,
            maskdcpt_backend::Cuda => {
                let device = usize::try_from(self.device_id)
                    .map_err(|_| Failure::invalid(format!("options.device_id {} is negative", self.device_id)))?;
                Backend::Cuda(CudaOptions {
                    fp16: gpu_fp16("CUDA")?,
                    device,
                    cache_dir: cache_dir()?,
                    engine_file: None,
                    ..Default::default()
                })
            }
            maskdcpt_backend::Tensorrt => {
                if self.device_id != 0 {
                    return Err(Failure::unsupported(format!(
                        "options.device_id {}: the TensorRT backend runs on the current CUDA device (set device_id 0 \
                         and choose the GPU with CUDA_VISIBLE_DEVICES)",
                        self.device_id
                    )));
                }
                Backend::TensorRt(TensorRtOptions {
                    fp16: gpu_fp16("TensorRT")?,
                    shapes: None,
                    workspace: None,
                    cache_dir: cache_dir()?,
                })
            }
        };
        let precision = match (precision, &backend) {
            (_, Backend::TensorRt(_) | Backend::Cuda(_)) | (maskdcpt_precision::F32, _) => Precision::F32,
            (maskdcpt_precision::Bf16, _) => Precision::Bf16,
            (maskdcpt_precision::Fp16, _) => {
                return Err(Failure::unsupported("fp16 precision needs a GPU backend: use f32 or bf16 on the CPU"));
            }
        };
        let sca = match enum_arg(self.sca_mode, "options.sca_mode")? {
            maskdcpt_sca_mode::Global => ScaMode::Global,
            maskdcpt_sca_mode::Local => ScaMode::Local,
        };
        let tiling = (self.tile_size > 0).then_some(Tiling {
            tile: self.tile_size as usize,
            overlap: self.tile_overlap as usize,
            sca,
        });
        Ok(EngineOptions {
            threads: (self.threads > 0).then_some(self.threads as usize),
            tiling,
            precision,
            memory_limit: (self.memory_limit > 0).then_some(self.memory_limit),
            backend,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_translate_to_the_core_defaults() {
        // SAFETY: the default has no cache folder.
        let core = unsafe { maskdcpt_options_default().to_core() }.unwrap();
        assert_eq!((core.threads, core.tiling, core.precision, core.memory_limit), (None, None, Precision::F32, None));
    }

    #[test]
    fn every_field_is_checked() {
        let status = |change: fn(&mut maskdcpt_options)| {
            let mut o = maskdcpt_options_default();
            change(&mut o);
            // SAFETY: no test sets a cache folder.
            unsafe { o.to_core() }.map(|_| ()).map_err(|f| format!("{f:?}"))
        };
        assert!(status(|o| o.struct_size -= 8).unwrap_err().contains("AbiMismatch"));
        assert!(status(|o| o.backend = maskdcpt_backend::Cuda as u32).is_ok());
        assert!(
            status(|o| {
                o.backend = maskdcpt_backend::Cuda as u32;
                o.device_id = -1;
            })
            .unwrap_err()
            .contains("InvalidArgument")
        );
        assert!(status(|o| o.backend = 17).unwrap_err().contains("InvalidArgument"));
        assert!(status(|o| o.precision = maskdcpt_precision::Fp16 as u32).unwrap_err().contains("Unsupported"));
        assert!(status(|o| o.sca_mode = 5).unwrap_err().contains("InvalidArgument"));
        assert!(status(|o| o.backend = maskdcpt_backend::Cpu as u32).is_ok());
        assert!(status(|o| o.backend = maskdcpt_backend::Tensorrt as u32).is_ok());
        assert!(
            status(|o| {
                o.backend = maskdcpt_backend::Tensorrt as u32;
                o.precision = maskdcpt_precision::Bf16 as u32;
            })
            .unwrap_err()
            .contains("Unsupported")
        );
        assert!(
            status(|o| {
                o.backend = maskdcpt_backend::Tensorrt as u32;
                o.device_id = 1;
            })
            .unwrap_err()
            .contains("device_id")
        );
    }
}
