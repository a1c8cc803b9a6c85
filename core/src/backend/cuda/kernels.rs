//! The engine's kernels (`kernels.cu`, then `frames.cu`), compiled with NVRTC for the device's compute
//! capability in the engine's storage precision, cached on disk by a hash of everything that
//! went into the compile, and loaded as functions.

use std::path::Path;
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use sha2::{Digest, Sha256};

use super::depthwise::Depthwise;
use super::device::cuda_error;
use crate::error::{Error, Result};

/// CUDA C source of every kernel: the network's, then the frame conversions (which build on
/// its helpers and are also compiled for the CPU by the frame tests).
pub const SOURCE: &str = concat!(include_str!("kernels.cu"), include_str!("frames.cu"));

/// SHA-256 of [`SOURCE`].
pub fn source_hash() -> [u8; 32] {
    Sha256::digest(SOURCE.as_bytes()).into()
}

/// Entry points of [`SOURCE`], in [`Kernels`] field order, but for the depthwise kernels
/// (named by [`Depthwise::name`]).
pub const ENTRY_POINTS: [&str; 14] = [
    "conv_in",
    "conv_out",
    "layer_norm",
    "layer_norm_wide",
    "pool_sum",
    "sca_vector",
    "attention_weights",
    "gate",
    "shuffle_add",
    "frame_in",
    "frame_out",
    "window_row_sums",
    "window_means",
    "multiply",
];

/// The fused tensor-core kernels, in [`TensorCoreKernels`] field order: compiled only in FP16
/// for compute capability 8.0 and newer (they multiply with `mma.m16n8k16`).
pub const TENSOR_CORE_ENTRY_POINTS: [&str; 4] = ["norm_conv1", "norm_gate", "ffn", "attend_ffn"];

/// Whether a build for `arch` in FP16 or f32 holds [`TENSOR_CORE_ENTRY_POINTS`].
pub fn has_tensor_core_kernels(arch: (i32, i32), fp16: bool) -> bool {
    fp16 && arch >= (8, 0)
}

/// Whether the PTX text `ptx` defines the kernel `name`.
fn has_entry(ptx: &str, name: &str) -> bool {
    ptx.contains(&format!(".entry {name}("))
}

/// Every entry point a build for `arch` in FP16 or f32 holds.
fn entry_points(arch: (i32, i32), fp16: bool) -> impl Iterator<Item = &'static str> {
    let fused = if has_tensor_core_kernels(arch, fp16) { &TENSOR_CORE_ENTRY_POINTS[..] } else { &[] };
    ENTRY_POINTS.into_iter().chain(Depthwise::ALL.map(Depthwise::name)).chain(fused.iter().copied())
}

/// NVRTC options for compute capability `arch` (major, minor) storing activations in FP16 or f32.
pub fn compile_options(arch: (i32, i32), fp16: bool) -> Vec<String> {
    let mut options = vec![format!("--gpu-architecture=compute_{}{}", arch.0, arch.1), "--std=c++17".to_owned()];
    if fp16 {
        options.push("-DMASKDCPT_FP16".to_owned());
    }
    options
}

/// Compiles [`SOURCE`] to PTX (needs only NVRTC, no GPU).
pub fn compile(arch: (i32, i32), fp16: bool) -> Result<String> {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Unsupported(
            "NVRTC (libnvrtc.so.13) not found: install the CUDA 13 toolkit or the PyPI wheel \
             nvidia-cuda-nvrtc==13.0.88 and add its lib folder to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let options = CompileOptions {
        options: compile_options(arch, fp16),
        name: Some("maskdcpt_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(SOURCE, options)
        .map_err(|e| Error::Cuda(format!("NVRTC failed to compile the engine's kernels: {e}")))?;
    Ok(ptx.to_src())
}

/// Where the PTX for `arch`/`fp16` is cached in `dir`: the file name is a hash of the source
/// and the options, so a changed kernel never loads a stale file.
fn cache_path(dir: &Path, arch: (i32, i32), fp16: bool) -> std::path::PathBuf {
    let mut hash = Sha256::new();
    hash.update(SOURCE.as_bytes());
    for option in compile_options(arch, fp16) {
        hash.update(option.as_bytes());
        hash.update([0]);
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("kernels-{}.ptx", &digest[..32]))
}

/// The PTX for `arch`/`fp16` an earlier compile stored in `dir`, if it holds every entry point.
fn cached(dir: &Path, arch: (i32, i32), fp16: bool) -> Option<String> {
    std::fs::read_to_string(cache_path(dir, arch, fp16))
        .ok()
        .filter(|text| entry_points(arch, fp16).all(|name| has_entry(text, name)))
}

/// Writes `text`, the PTX for `arch`/`fp16`, to the cache in `cache_dir` (nothing without one).
fn store(cache_dir: Option<&Path>, arch: (i32, i32), fp16: bool, text: &str) -> Result<()> {
    let Some(dir) = cache_dir else { return Ok(()) };
    let path = cache_path(dir, arch, fp16);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::atomic_file::write(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))
}

/// The loaded kernels.
pub struct Kernels {
    /// Intro 3×3 conv: planar f32 image → NHWC features.
    pub conv_in: CudaFunction,
    /// Ending 3×3 conv plus the input residual: NHWC features → planar f32 image.
    pub conv_out: CudaFunction,
    /// Per-pixel LayerNorm with f32 statistics, 8 lanes per pixel.
    pub layer_norm: CudaFunction,
    /// The same with a warp per pixel (for small maps of many channels).
    pub layer_norm_wide: CudaFunction,
    /// Depthwise 3×3 + SimpleGate + per-block channel sums for the attention, one kernel per
    /// [`Depthwise`] variant in [`Depthwise::ALL`] order (the gated map bit for bit the same):
    /// [`Depthwise::function`] picks one.
    pub depthwise: Vec<CudaFunction>,
    /// The per-image channel sums from the depthwise kernels' per-block sums, in a fixed order.
    pub pool_sum: CudaFunction,
    /// Channel-attention vector from the channel sums (for `attend_ffn`).
    pub sca_vector: CudaFunction,
    /// Per-image conv3 weights with the channel attention folded in, from the channel sums.
    pub attention_weights: CudaFunction,
    /// SimpleGate.
    pub gate: CudaFunction,
    /// PixelShuffle(2) added into the skip.
    pub shuffle_add: CudaFunction,
    /// The fused tensor-core kernels, where the build has them ([`has_tensor_core_kernels`]).
    pub tensor_cores: Option<TensorCoreKernels>,
    /// A caller's device frame → the padded planar f32 input.
    pub frame_in: CudaFunction,
    /// The planar f32 output → a caller's device frame.
    pub frame_out: CudaFunction,
    /// TLC attention: window sums along the rows of the gated map (f32).
    pub window_row_sums: CudaFunction,
    /// TLC attention: window means from the row sums, along the columns.
    pub window_means: CudaFunction,
    /// Element-wise product in place (the gated map times TLC's per-pixel attention).
    pub multiply: CudaFunction,
}

/// The fused kernels that multiply on the tensor cores (FP16, compute capability 8.0+).
pub struct TensorCoreKernels {
    /// LayerNorm and conv1 in one launch.
    pub norm_conv1: CudaFunction,
    /// LayerNorm, conv4 and SimpleGate in one launch (conv5 follows as a product).
    pub norm_gate: CudaFunction,
    /// The feed-forward half of a NAFBlock (LayerNorm → conv4 → gate → conv5 + residual).
    pub ffn: CudaFunction,
    /// conv3 with the channel attention (+ residual), then the feed-forward half.
    pub attend_ffn: CudaFunction,
    /// The most dynamic shared memory they may use on this device (bytes).
    pub shared_limit: usize,
}

impl Kernels {
    /// The kernels for `arch`/`fp16` loaded into `ctx`, and their PTX: the PTX cached in
    /// `cache_dir` by an earlier compile, or, where there is none or the driver refuses it
    /// (damaged, or from an NVRTC newer than the driver), PTX compiled now, stored there once
    /// it loads.
    pub fn compile_or_load_cached(
        ctx: &Arc<CudaContext>,
        arch: (i32, i32),
        fp16: bool,
        cache_dir: Option<&Path>,
    ) -> Result<(Self, String)> {
        if let Some(text) = cache_dir.and_then(|dir| cached(dir, arch, fp16))
            && let Ok(kernels) = Self::load(ctx, text.clone())
        {
            return Ok((kernels, text));
        }
        let text = compile(arch, fp16)?;
        let kernels = Self::load(ctx, text.clone())?;
        store(cache_dir, arch, fp16, &text)?;
        Ok((kernels, text))
    }

    /// Loads `ptx` into `ctx`, the tensor-core kernels allowed all the shared memory a block may
    /// opt into.
    pub fn load(ctx: &Arc<CudaContext>, ptx: String) -> Result<Self> {
        let fused = TENSOR_CORE_ENTRY_POINTS.iter().all(|name| has_entry(&ptx, name));
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(cuda_error("loading the kernel module"))?;
        let f = |name: &str| module.load_function(name).map_err(cuda_error(&format!("loading kernel {name}")));
        let tensor_cores = if fused {
            let limit = ctx
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .map_err(cuda_error("querying the shared memory per block"))?;
            let [norm_conv1, norm_gate, ffn, attend_ffn] = TENSOR_CORE_ENTRY_POINTS.map(|name| {
                let function = f(name)?;
                function
                    .set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, limit)
                    .map_err(cuda_error(&format!("raising the shared memory of kernel {name}")))?;
                Ok::<_, Error>(function)
            });
            Some(TensorCoreKernels {
                norm_conv1: norm_conv1?,
                norm_gate: norm_gate?,
                ffn: ffn?,
                attend_ffn: attend_ffn?,
                shared_limit: usize::try_from(limit).unwrap_or(0),
            })
        } else {
            None
        };
        Ok(Kernels {
            conv_in: f(ENTRY_POINTS[0])?,
            conv_out: f(ENTRY_POINTS[1])?,
            layer_norm: f(ENTRY_POINTS[2])?,
            layer_norm_wide: f(ENTRY_POINTS[3])?,
            depthwise: Depthwise::ALL.iter().map(|d| f(d.name())).collect::<Result<_>>()?,
            pool_sum: f(ENTRY_POINTS[4])?,
            sca_vector: f(ENTRY_POINTS[5])?,
            attention_weights: f(ENTRY_POINTS[6])?,
            gate: f(ENTRY_POINTS[7])?,
            shuffle_add: f(ENTRY_POINTS[8])?,
            tensor_cores,
            frame_in: f(ENTRY_POINTS[9])?,
            frame_out: f(ENTRY_POINTS[10])?,
            window_row_sums: f(ENTRY_POINTS[11])?,
            window_means: f(ENTRY_POINTS[12])?,
            multiply: f(ENTRY_POINTS[13])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether NVRTC is here; without it a test skips with a message, or fails where
    /// MASKDCPT_REQUIRE_NVRTC is set (CI).
    fn nvrtc_present() -> bool {
        let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        if !present {
            assert!(
                std::env::var_os("MASKDCPT_REQUIRE_NVRTC").is_none(),
                "MASKDCPT_REQUIRE_NVRTC is set but NVRTC is missing"
            );
            eprintln!(
                "skipped: NVRTC (libnvrtc.so.13) not found; run scripts/setup-nvrtc.sh and add its output to LD_LIBRARY_PATH"
            );
        }
        present
    }

    /// Every kernel compiles to PTX for Turing, Jetson Orin and Hopper in both precisions (the
    /// fused tensor-core kernels in FP16 from Ampere on, and only there). Needs
    /// NVRTC only (CI installs the PyPI wheel and sets MASKDCPT_REQUIRE_NVRTC=1 so that a
    /// missing library fails instead of skipping).
    #[test]
    fn every_kernel_compiles_with_nvrtc() {
        if !nvrtc_present() {
            return;
        }
        for arch in [(7, 5), (8, 7), (9, 0)] {
            for fp16 in [false, true] {
                let ptx = compile(arch, fp16).unwrap_or_else(|e| panic!("sm_{}{} fp16={fp16}: {e}", arch.0, arch.1));
                for name in entry_points(arch, fp16) {
                    assert!(has_entry(&ptx, name), "{name} missing for {arch:?}");
                }
                let fused = has_tensor_core_kernels(arch, fp16);
                for name in TENSOR_CORE_ENTRY_POINTS {
                    assert_eq!(has_entry(&ptx, name), fused, "{name} in sm_{}{} fp16={fp16}", arch.0, arch.1);
                }
                assert_eq!(ptx.contains("mma.sync.aligned.m16n8k16"), fused);
                assert_eq!(ptx.contains("cvt.rn.f16.f32"), fp16);
            }
        }
    }

    /// The instructions of entry point `name` in the PTX text `ptx` (up to the next entry).
    fn entry_body<'a>(ptx: &'a str, name: &str) -> &'a str {
        let start = ptx.find(&format!(".entry {name}(")).unwrap_or_else(|| panic!("{name} missing"));
        let body = &ptx[start + 1..];
        &body[..body.find(".entry ").unwrap_or(body.len())]
    }

    /// Programmatic dependent launch is safe only if every kernel the instance launches waits
    /// for its predecessor grid before it reads or writes device memory or calls anything:
    /// `griddepcontrol.wait` (from `await_inputs`) comes first in each network kernel for
    /// compute capability 9.0, and is absent below it (no such instruction there).
    #[test]
    fn every_network_kernel_waits_for_its_predecessor_first() {
        if !nvrtc_present() {
            return;
        }
        let touches_memory = |line: &str| {
            let op = line.split_whitespace().find(|token| !token.starts_with('@')).unwrap_or("");
            let access = ["ld.", "st.", "atom.", "red.", "ldmatrix.", "cp."].iter().any(|p| op.starts_with(p));
            (access && !op.contains(".param") && !op.contains(".shared") && !op.contains(".local"))
                || op.starts_with("call")
        };
        for arch in [(8, 7), (9, 0)] {
            for fp16 in [false, true] {
                let ptx = compile(arch, fp16).unwrap();
                let network = entry_points(arch, fp16).filter(|name| !name.starts_with("frame_"));
                for name in network {
                    let body = entry_body(&ptx, name);
                    let wait = body.lines().position(|line| line.contains("griddepcontrol.wait"));
                    let first_access = body.lines().position(touches_memory);
                    if arch < (9, 0) {
                        assert_eq!(wait, None, "{name} sm_{}{}", arch.0, arch.1);
                        continue;
                    }
                    let wait = wait.unwrap_or_else(|| panic!("{name} (fp16={fp16}) never waits for its predecessor"));
                    assert!(
                        first_access.is_some_and(|access| access > wait),
                        "{name} (fp16={fp16}) touches memory before it waits for its predecessor"
                    );
                }
            }
        }
    }

    /// The disk cache returns what the compiler produced and keys on the options.
    #[test]
    fn cached_ptx_is_reused_per_options() {
        if !nvrtc_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let first = compile((8, 0), true).unwrap();
        store(Some(dir), (8, 0), true, &first).unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
        assert_eq!(cached(dir, (8, 0), true).unwrap(), first);
        assert!(cached(dir, (8, 0), false).is_none(), "another build's options miss the cache");
        store(Some(dir), (8, 0), false, &compile((8, 0), false).unwrap()).unwrap();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 2);
        // A file missing an entry point (cut short) is not reused.
        std::fs::write(cache_path(dir, (8, 0), true), &first[..first.len() / 2]).unwrap();
        assert!(cached(dir, (8, 0), true).is_none());
    }
}
