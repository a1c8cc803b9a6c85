//! `maskdcpt_options`: how to build an engine, as a plain C struct versioned by its leading
//! `struct_size`, and its translation into core engine options.

use std::ffi::c_char;
use std::mem::{align_of, offset_of, size_of};

use maskdcpt_core::backend::{
    AttentionPool, Backend, CudaOptions, EngineOptions, Precision, ScaMode, TensorRtOptions, TileSize, Tiling,
};

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
/// change fields. `struct_size` is this header's `sizeof(maskdcpt_options)` or that of an
/// earlier header whose fields are a prefix of these (the first ABI 1 header ended with
/// `engine_cache_dir`, the second with `tlc_train_size`; the fields it lacks take their
/// defaults); any other size is refused with `MASKDCPT_STATUS_ABI_MISMATCH`.
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
    /// Tile edge in pixels; 0 processes the whole image at once; `MASKDCPT_TILE_SIZE_AUTO`
    /// (with `MASKDCPT_SCA_MODE_LOCAL`) runs each frame whole when it fits `memory_limit` (0:
    /// the memory available when the engine is built) and otherwise in the largest tiles that
    /// fit (`maskdcpt_engine_tile_size` tells which).
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
    /// Channel attention over a window around each pixel, as upstream NAFNet's test-time local
    /// converter (`NAFNetLocal`, with which its GoPro and REDS checkpoints are evaluated), for a
    /// network trained on crops of this many pixels a side (upstream: 256); 0 averages the whole
    /// map (`NAFNet`, MaskDCPT). CPU and CUDA backends (TensorRT refuses it).
    pub tlc_train_size: u32,
    /// With `MASKDCPT_SCA_MODE_LOCAL` tiles: 1 feathers neighbouring tiles across their
    /// overlap (weights ramping over 2 × `tile_overlap` pixels, so no seam is a step), 0 pastes
    /// each tile's centre.
    pub tile_blend: u32,
    /// Channel attention as MaskDCPT's own `NAFNet` class computes it (TLC with its
    /// `fast_imp=True`: the windows of `tlc_train_size`, averaged over every r-th row and
    /// column) for crops of this many pixels a side (that class's default: 384); 0: off. At most
    /// one of this and `tlc_train_size` is set. CPU backend only.
    pub tlc_sampled_train_size: u32,
}

/// `maskdcpt_options.tile_size` asking the engine to pick the tile from its memory budget.
pub const MASKDCPT_TILE_SIZE_AUTO: u32 = u32::MAX;

/// `sizeof(maskdcpt_options)` and the bytes of its fields in each earlier ABI 1 header: the
/// first ended before `tlc_train_size`, the second before `tile_blend`.
const EARLIER_HEADERS: [(usize, usize); 2] = [
    header_ending_at(offset_of!(maskdcpt_options, tlc_train_size)),
    header_ending_at(offset_of!(maskdcpt_options, tile_blend)),
];

/// `sizeof` and field bytes of a header whose struct has the fields before byte `fields`.
const fn header_ending_at(fields: usize) -> (usize, usize) {
    let align = align_of::<maskdcpt_options>();
    (fields.div_ceil(align) * align, fields)
}

// Every header's struct has its own size, which tells them apart.
const _: () =
    assert!(EARLIER_HEADERS[0].0 < EARLIER_HEADERS[1].0 && EARLIER_HEADERS[1].0 < size_of::<maskdcpt_options>());

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
        tlc_train_size: 0,
        tile_blend: 0,
        tlc_sampled_train_size: 0,
    }
}

impl maskdcpt_options {
    /// Reads the caller's options (NULL: the defaults), of this header or an earlier one: only
    /// the `struct_size` bytes the caller's header has are read.
    ///
    /// # Safety
    /// `options` is NULL or points to at least `struct_size` readable bytes that start with it.
    pub(crate) unsafe fn read(options: *const maskdcpt_options) -> FfiResult<maskdcpt_options> {
        let mut read = maskdcpt_options_default();
        if options.is_null() {
            return Ok(read);
        }
        // SAFETY: every header's struct starts with `struct_size`.
        let size = unsafe { options.cast::<usize>().read_unaligned() };
        let earlier = EARLIER_HEADERS.iter().find(|&&(earlier_size, _)| earlier_size == size);
        let fields = match earlier {
            _ if size == size_of::<maskdcpt_options>() => size,
            Some(&(_, fields)) => fields,
            None => {
                return Err(Failure::new(
                    maskdcpt_status::AbiMismatch,
                    format!(
                        "options.struct_size is {size} but this library's maskdcpt_options is {} bytes (or {} and {} \
                         from earlier headers): the header and the library are from different versions \
                         (initialise options with maskdcpt_options_default())",
                        size_of::<maskdcpt_options>(),
                        EARLIER_HEADERS[0].0,
                        EARLIER_HEADERS[1].0,
                    ),
                ));
            }
        };
        // SAFETY: the caller's struct has `size ≥ fields` bytes; `read` has `fields` bytes of
        // the same fields at the same offsets.
        unsafe { std::ptr::copy_nonoverlapping(options.cast::<u8>(), (&raw mut read).cast::<u8>(), fields) };
        read.struct_size = size_of::<maskdcpt_options>();
        Ok(read)
    }

    /// Checks every field and translates them into core engine options (`struct_size` is
    /// checked by [`Self::read`], which every caller's options go through).
    ///
    /// # Safety
    /// `engine_cache_dir` is NULL or a NUL-terminated string.
    pub(crate) unsafe fn to_core(self) -> FfiResult<EngineOptions> {
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
        let tile = match self.tile_size {
            MASKDCPT_TILE_SIZE_AUTO => TileSize::Auto,
            pixels => TileSize::Pixels(pixels as usize),
        };
        let blend = match self.tile_blend {
            0 => false,
            1 => true,
            other => {
                return Err(Failure::invalid(format!(
                    "options.tile_blend is {other}: use 0 (paste tile centres) or 1 (feather tiles across their overlap)"
                )));
            }
        };
        let tiling = (self.tile_size > 0).then_some(Tiling { tile, overlap: self.tile_overlap as usize, sca, blend });
        let (tlc, sampled) = (self.tlc_train_size as usize, self.tlc_sampled_train_size as usize);
        let attention_pool = match (tlc, sampled) {
            (0, 0) => AttentionPool::Global,
            (train, 0) => AttentionPool::Tlc { train_height: train, train_width: train },
            (0, train) => AttentionPool::TlcSampled { train_height: train, train_width: train },
            _ => {
                return Err(Failure::invalid(
                    "options.tlc_train_size and options.tlc_sampled_train_size are both set: set one (exact or \
                     sampled windows), or neither for global attention",
                ));
            }
        };
        Ok(EngineOptions {
            threads: (self.threads > 0).then_some(self.threads as usize),
            tiling,
            precision,
            memory_limit: (self.memory_limit > 0).then_some(self.memory_limit),
            backend,
            attention_pool,
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
    fn options_of_earlier_headers_are_read_with_later_fields_defaulted() {
        let set = maskdcpt_options {
            tile_size: 7,
            tlc_train_size: 256,
            tile_blend: 1,
            tlc_sampled_train_size: 384,
            ..maskdcpt_options_default()
        };
        let read_as = |(size, _): (usize, usize)| {
            let caller = maskdcpt_options { struct_size: size, ..set };
            // Only that header's bytes (a read past them would be out of bounds under Miri,
            // ASan or valgrind), in a buffer aligned for the struct.
            let mut aligned = vec![0u64; size.div_ceil(8)];
            // SAFETY: both hold at least `size` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping((&raw const caller).cast::<u8>(), aligned.as_mut_ptr().cast(), size)
            };
            // SAFETY: points to `size` readable bytes starting with struct_size.
            let read = unsafe { maskdcpt_options::read(aligned.as_ptr().cast()) }.unwrap();
            assert_eq!(read.struct_size, size_of::<maskdcpt_options>());
            (read.tile_size, read.tlc_train_size, read.tile_blend, read.tlc_sampled_train_size)
        };
        assert_eq!(read_as(EARLIER_HEADERS[0]), (7, 0, 0, 0));
        assert_eq!(read_as(EARLIER_HEADERS[1]), (7, 256, 0, 0));
        // This header's size reads every field; other sizes and NULL.
        // SAFETY: a live struct of this header.
        let read = unsafe { maskdcpt_options::read(&set) }.unwrap();
        assert_eq!((read.tlc_train_size, read.tile_blend, read.tlc_sampled_train_size), (256, 1, 384));
        for odd in [EARLIER_HEADERS[0].0 + 4, size_of::<maskdcpt_options>() - 4] {
            let odd = maskdcpt_options { struct_size: odd, ..set };
            // SAFETY: as above.
            let refused = unsafe { maskdcpt_options::read(&odd) }.map(|_| ()).unwrap_err();
            assert!(format!("{refused:?}").contains("AbiMismatch"));
        }
        // SAFETY: NULL reads the defaults.
        assert_eq!(unsafe { maskdcpt_options::read(std::ptr::null()) }.unwrap().tile_overlap, 32);
    }

    #[test]
    fn blending_and_sampled_windows_reach_the_core_options() {
        let options = maskdcpt_options {
            tile_size: 64,
            sca_mode: maskdcpt_sca_mode::Local as u32,
            tile_blend: 1,
            tlc_sampled_train_size: 384,
            ..maskdcpt_options_default()
        };
        // SAFETY: no cache folder (all three).
        let core = unsafe { options.to_core() }.unwrap();
        assert!(core.tiling.is_some_and(|t| t.blend && t.tile == TileSize::Pixels(64)), "{:?}", core.tiling);
        assert_eq!(core.attention_pool, AttentionPool::TlcSampled { train_height: 384, train_width: 384 });
        let both = maskdcpt_options { tlc_train_size: 256, ..options };
        let refused = format!("{:?}", unsafe { both.to_core() }.map(|_| ()).unwrap_err());
        assert!(refused.contains("InvalidArgument") && refused.contains("both set"), "{refused}");
        let odd_blend = maskdcpt_options { tile_blend: 2, ..options };
        let refused = format!("{:?}", unsafe { odd_blend.to_core() }.map(|_| ()).unwrap_err());
        assert!(refused.contains("tile_blend is 2"), "{refused}");
    }

    #[test]
    fn a_training_crop_asks_for_tlc_attention() {
        let options = maskdcpt_options { tlc_train_size: 256, ..maskdcpt_options_default() };
        // SAFETY: no cache folder.
        let core = unsafe { options.to_core() }.unwrap();
        assert_eq!(core.attention_pool, AttentionPool::Tlc { train_height: 256, train_width: 256 });
    }

    #[test]
    fn every_field_is_checked() {
        let status = |change: fn(&mut maskdcpt_options)| {
            let mut o = maskdcpt_options_default();
            change(&mut o);
            // SAFETY: a live struct of this header; no test sets a cache folder.
            unsafe { maskdcpt_options::read(&o).and_then(|o| o.to_core()) }.map(|_| ()).map_err(|f| format!("{f:?}"))
        };
        // (On 64-bit hosts 8 bytes fewer is the second header's size, which is accepted.)
        assert!(status(|o| o.struct_size += 8).unwrap_err().contains("AbiMismatch"));
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
