//! Command-line syntax (clap derive) and its translation into core options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::CliError;
use maskdcpt_core::backend::tensorrt::profile::Size;
use maskdcpt_core::backend::{
    AttentionPool, Backend, CudaOptions, EngineOptions, Fusion, Precision, ScaMode, TileSize, Tiling,
};

/// Restore images with MaskDCPT / NAFNet checkpoints, and inspect, convert or benchmark them.
#[derive(Debug, Parser)]
#[command(name = "maskdcpt", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore an image, or every file of a folder, with a model.
    Restore(RestoreArgs),
    /// Name the degradations of an image with the model's classification head.
    Classify(ClassifyArgs),
    /// Rewrite a checkpoint as a validated `.safetensors` file (f32 or f16).
    Convert(ConvertArgs),
    /// Describe a checkpoint: architecture, parameter count, dtype, format.
    Info(InfoArgs),
    /// Time restores of a synthetic image and print one JSON line.
    Bench(BenchArgs),
    /// Write the model as ONNX (opset 17, LayerNormalization), padding and cropping included.
    ExportOnnx(ExportOnnxArgs),
    /// Build an engine file for a range of image sizes: TensorRT (needs TensorRT) or the CUDA engine.
    BuildEngine(BuildEngineArgs),
}

/// Options of `maskdcpt restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Checkpoint (`.pth` or `.safetensors`); default: the embedded default model.
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Input image (PNG, JPEG, TIFF, PPM, WebP or float32 H×W×3 `.npy`), or a folder of them.
    #[arg(short, long, value_name = "INPUT")]
    pub input: PathBuf,
    /// Output file (format from its extension), or a folder when INPUT is a folder.
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: PathBuf,
    /// Checkpoint entry to use (default: `params_ema`, then `params`; for a SwinIR `params`,
    /// then `params_ema`, as the fork's 5-task test configs read them).
    #[arg(long, value_name = "K")]
    pub param_key: Option<String>,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Engine settings shared by `restore` and `bench`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Worker threads (default: all available cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Process the image in tiles of N×N pixels to bound memory; `auto` (with `--sca local`)
    /// runs each image whole when it fits the memory budget (`--memory-limit-mb`, else the
    /// memory available when the engine is built) and otherwise in the largest tiles that fit.
    #[arg(long, value_name = "N|auto", value_parser = parse_tile)]
    pub tile: Option<TileSize>,
    /// Context pixels added around each tile in `--sca local` mode.
    #[arg(long, value_name = "N", default_value_t = 32, requires = "tile")]
    pub tile_overlap: u32,
    /// How tiles take channel-attention means: `global` equals the untiled result, `local`
    /// bounds memory by the tile but differs slightly.
    #[arg(long, value_enum, default_value_t = Sca::Global, requires = "tile")]
    pub sca: Sca,
    /// With `--sca local`, feather neighbouring tiles across their overlap (weights ramping
    /// over 2 × `--tile-overlap` pixels) instead of pasting each tile's centre: no seam is a
    /// step.
    #[arg(long, requires = "tile")]
    pub tile_blend: bool,
    /// Refuse runs whose estimated memory exceeds this many MiB (default: the memory available;
    /// on `--backend cuda` the device's free memory), and fit `--tile auto` into it.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..(1 << 44)))]
    pub memory_limit_mb: Option<u64>,
    /// Channel attention (`--tlc`).
    #[command(flatten)]
    pub attention: TlcArg,
    /// Arithmetic precision: `bf16` runs the CPU engine's matrix products on bf16 inputs with
    /// f32 accumulation (CPUs with AVX512-BF16; 1.7–1.8× faster where `vdpbf16ps` keeps pace
    /// with the FMAs, as on AMD Zen 4, slower on Intel Xeons where it does not); `fp16` stores the CUDA
    /// engine's feature maps and weights as FP16 (f32 arithmetic and statistics).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
    /// Engine: `cpu` (always available) or `cuda` (NVIDIA GPU; the driver, NVRTC and cuBLASLt
    /// are loaded at run time).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// CUDA device ordinal for `--backend cuda`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub device: u32,
    /// CUDA engine file (from `maskdcpt build-engine --backend cuda`) to reuse and keep up to
    /// date; one written for another model, GPU, precision or version is rebuilt. Default:
    /// one per key in the kernel cache folder.
    #[arg(long, value_name = "FILE")]
    pub engine: Option<PathBuf>,
    /// NAFBlock kernels on `--backend cuda`: `fused` runs LayerNorm + conv1 and everything
    /// after the channel attention as one tensor-core kernel each where they run (FP16, compute
    /// capability 8.0+), `split` runs LayerNorm + conv1 and LayerNorm + conv4 + gate as kernels
    /// split over their outputs (then conv5 as a product), `launches` as separate kernels and
    /// cuBLASLt products, `fastest` times the variants per shape.
    #[arg(long, value_enum, default_value_t = FusionArg::Fastest)]
    pub fusion: FusionArg,
    /// On `--backend cuda`, start each kernel only once the one before it has finished
    /// (default on compute capability 9.0+: kernels start early and wait on the device for
    /// their inputs, hiding launch latency). For timing the difference.
    #[arg(long)]
    pub serial_launches: bool,
}

/// `--tlc [TRAIN]` and `--tlc-sampled [TRAIN]`, for the commands that run or export a network.
#[derive(Debug, Args)]
pub struct TlcArg {
    /// Channel attention over a window around each pixel, as upstream NAFNet's test-time local
    /// converter (`NAFNetLocal`, with which its GoPro and REDS checkpoints are evaluated), for a
    /// network trained on TRAIN×TRAIN crops (default 256).
    #[arg(long, value_name = "TRAIN", num_args = 0..=1, default_missing_value = "256",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tlc: Option<u32>,
    /// Channel attention as MaskDCPT's own `NAFNet` class computes it (TLC with its
    /// `fast_imp=True` default: the windows of --tlc, averaged over every r-th row and column)
    /// for TRAIN×TRAIN crops (default 384, that class's). CPU engine only.
    #[arg(long, value_name = "TRAIN", num_args = 0..=1, default_missing_value = "384", conflicts_with = "tlc",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tlc_sampled: Option<u32>,
}

impl TlcArg {
    /// The core setting: TLC windows (exact or sampled) for the training crop, else whole-map
    /// means.
    pub fn attention_pool(&self) -> AttentionPool {
        match (self.tlc, self.tlc_sampled) {
            (Some(train), _) => AttentionPool::Tlc { train_height: train as usize, train_width: train as usize },
            (None, Some(train)) => {
                AttentionPool::TlcSampled { train_height: train as usize, train_width: train as usize }
            }
            (None, None) => AttentionPool::Global,
        }
    }
}

/// `--fusion` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FusionArg {
    /// The faster, timed per shape.
    Fastest,
    /// Separate launches (cuBLASLt products).
    Launches,
    /// The tensor-core kernels split over their outputs (norm_conv1, norm_gate).
    Split,
    /// The most fused tensor-core kernels.
    Fused,
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The CPU engine.
    Cpu,
    /// The fused CUDA engine.
    Cuda,
}

/// `--sca` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sca {
    /// Whole-image means (exact).
    Global,
    /// Per-tile means (approximate, least memory).
    Local,
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// IEEE f32 everywhere.
    F32,
    /// bf16 matrix-product inputs, f32 accumulation and everything else (CPU).
    Bf16,
    /// FP16 feature maps and weights, f32 arithmetic (CUDA).
    Fp16,
}

impl PrecisionArg {
    /// The name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionArg::F32 => "f32",
            PrecisionArg::Bf16 => "bf16",
            PrecisionArg::Fp16 => "fp16",
        }
    }
}

impl EngineArgs {
    /// Core engine options for these settings; a precision the chosen backend lacks is an
    /// error.
    pub fn to_options(&self) -> Result<EngineOptions, CliError> {
        let (precision, backend) = match (self.backend, self.precision) {
            (BackendArg::Cpu, PrecisionArg::F32) => (Precision::F32, Backend::Cpu),
            (BackendArg::Cpu, PrecisionArg::Bf16) => (Precision::Bf16, Backend::Cpu),
            (BackendArg::Cuda, PrecisionArg::F32 | PrecisionArg::Fp16) => (
                Precision::F32,
                Backend::Cuda(CudaOptions {
                    fp16: self.precision == PrecisionArg::Fp16,
                    device: self.device as usize,
                    cache_dir: kernel_cache_dir(),
                    engine_file: self.engine.clone(),
                    fusion: match self.fusion {
                        FusionArg::Fastest => Fusion::Fastest,
                        FusionArg::Launches => Fusion::Launches,
                        FusionArg::Split => Fusion::Split,
                        FusionArg::Fused => Fusion::Fused,
                    },
                    serial_launches: self.serial_launches,
                }),
            ),
            (BackendArg::Cpu, PrecisionArg::Fp16) => {
                return Err(CliError::Invalid(
                    "--precision fp16 runs on --backend cuda; the CPU engine has f32 and bf16".into(),
                ));
            }
            (BackendArg::Cuda, PrecisionArg::Bf16) => {
                return Err(CliError::Invalid(
                    "--precision bf16 runs on --backend cpu; the CUDA engine has fp16 and f32".into(),
                ));
            }
        };
        if self.engine.is_some() && self.backend != BackendArg::Cuda {
            return Err(CliError::Invalid("--engine names a CUDA engine file: add --backend cuda".into()));
        }
        if self.fusion != FusionArg::Fastest && self.backend != BackendArg::Cuda {
            return Err(CliError::Invalid("--fusion chooses CUDA kernels: add --backend cuda".into()));
        }
        if self.serial_launches && self.backend != BackendArg::Cuda {
            return Err(CliError::Invalid("--serial-launches orders CUDA kernels: add --backend cuda".into()));
        }
        Ok(EngineOptions {
            threads: self.threads.map(|t| t as usize),
            tiling: self.tile.map(|tile| Tiling {
                tile,
                overlap: self.tile_overlap as usize,
                sca: match self.sca {
                    Sca::Global => ScaMode::Global,
                    Sca::Local => ScaMode::Local,
                },
                blend: self.tile_blend,
            }),
            precision,
            memory_limit: self.memory_limit_mb.map(|mib| mib << 20),
            backend,
            attention_pool: self.attention.attention_pool(),
        })
    }
}

/// `--tile`: a positive number of pixels, or `auto`.
fn parse_tile(value: &str) -> std::result::Result<TileSize, String> {
    if value == "auto" {
        return Ok(TileSize::Auto);
    }
    match value.parse::<u32>() {
        Ok(0) => Err("a tile has at least 1 pixel".into()),
        Ok(pixels) => Ok(TileSize::Pixels(pixels as usize)),
        Err(_) => Err(format!("`{value}` is neither a number of pixels nor `auto`")),
    }
}

/// Where compiled CUDA kernels and engine files are cached: `$XDG_CACHE_HOME/maskdcpt`, else
/// `~/.cache/maskdcpt` (none when neither variable is set).
pub fn kernel_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("maskdcpt"))
}

/// Options of `maskdcpt convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Checkpoint to convert (`.pth` or `.safetensors`).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Output `.safetensors` file.
    #[arg(short, long, value_name = "OUT.safetensors")]
    pub output: PathBuf,
    /// Checkpoint entry to use (default: `params_ema`, then `params`; for a SwinIR `params`,
    /// then `params_ema`, as the fork's 5-task test configs read them).
    #[arg(long, value_name = "K")]
    pub param_key: Option<String>,
    /// Element type of the written tensors.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Metadata to write besides the input's (repeatable), e.g. a SwinIR's
    /// `swinir.num_heads=6` or `swinir.window_size=8`, which its weights do not say.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
}

/// `--dtype` values of `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
}

/// Options of `maskdcpt info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Checkpoint (`.pth` or `.safetensors`); default: the embedded default model.
    #[arg(value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// The checkpoint as the other commands take it (`-m MODEL`), instead of the positional one.
    #[arg(short = 'm', long = "model", value_name = "MODEL", conflicts_with = "model")]
    pub model_option: Option<PathBuf>,
    /// Checkpoint entry to use (default: `params_ema`, then `params`; for a SwinIR `params`,
    /// then `params_ema`, as the fork's 5-task test configs read them).
    #[arg(long, value_name = "K")]
    pub param_key: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `maskdcpt classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Checkpoint with a classification head; default: the embedded default model.
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Input image (PNG, JPEG, TIFF, PPM, WebP or float32 H×W×3 `.npy`).
    #[arg(short, long, value_name = "INPUT")]
    pub input: PathBuf,
    /// Classes to print, most probable first.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,
    /// Print one JSON object with every class's probability instead of text.
    #[arg(long)]
    pub json: bool,
    /// Engine settings (the network runs on the chosen backend, the head on the CPU; tiling
    /// does not apply: the head reads one whole-image run).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Options of `maskdcpt export-onnx`.
#[derive(Debug, Args)]
pub struct ExportOnnxArgs {
    /// Checkpoint (`.pth` or `.safetensors`).
    #[arg(short, long, value_name = "MODEL")]
    pub model: PathBuf,
    /// Output `.onnx` file.
    #[arg(short, long, value_name = "OUT.onnx")]
    pub output: PathBuf,
    /// Checkpoint entry to use (default: `params_ema`, then `params`; for a SwinIR `params`,
    /// then `params_ema`, as the fork's 5-task test configs read them).
    #[arg(long, value_name = "K")]
    pub param_key: Option<String>,
    /// Float16 weights and activations; LayerNorm (and a transformer's attention maps) stay float32.
    #[arg(long)]
    pub fp16: bool,
    /// Symbolic batch, height and width (instead of --height/--width).
    #[arg(long, conflicts_with_all = ["height", "width"])]
    pub dynamic: bool,
    /// Fixed input height.
    #[arg(long, value_name = "H", requires = "width", value_parser = clap::value_parser!(u32).range(1..))]
    pub height: Option<u32>,
    /// Fixed input width.
    #[arg(long, value_name = "W", requires = "height", value_parser = clap::value_parser!(u32).range(1..))]
    pub width: Option<u32>,
    /// Channel attention (`--tlc` needs --height and --width).
    #[command(flatten)]
    pub attention: TlcArg,
}

/// Backends `build-engine` can build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineBackend {
    /// NVIDIA TensorRT (desktop GPUs and Jetson).
    Tensorrt,
    /// The fused CUDA engine: the file holds its compiled kernels and the cuBLASLt algorithm
    /// timed for every product of the shapes built (`--max`, `--opt`), and is used with
    /// `maskdcpt restore --backend cuda --engine FILE`.
    Cuda,
}

/// An image size given as `HxW` (height first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HxW(pub Size);

/// Parses `HxW` with both sides at least 1.
fn parse_hxw(s: &str) -> Result<HxW, String> {
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(|| format!("`{s}` is not HxW (e.g. 720x1280)"))?;
    let side = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match (side(h), side(w)) {
        (Some(height), Some(width)) => Ok(HxW(Size { height, width })),
        _ => Err(format!("`{s}` is not HxW with both sides at least 1 (e.g. 720x1280)")),
    }
}

/// Options of `maskdcpt build-engine`.
#[derive(Debug, Args)]
pub struct BuildEngineArgs {
    /// Checkpoint (`.pth` or `.safetensors`); default: the embedded default model.
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Output file: the serialized engine (TensorRT: as `trtexec --loadEngine` takes it; CUDA:
    /// an engine file that is reused as it is when already up to date).
    #[arg(short, long, value_name = "OUT.engine")]
    pub output: PathBuf,
    /// Checkpoint entry to use (default: `params_ema`, then `params`; for a SwinIR `params`,
    /// then `params_ema`, as the fork's 5-task test configs read them).
    #[arg(long, value_name = "K")]
    pub param_key: Option<String>,
    /// Backend to build for.
    #[arg(long, value_enum)]
    pub backend: EngineBackend,
    /// FP16 weights and tensors (normalizations and means stay FP32).
    #[arg(long)]
    pub fp16: bool,
    /// Smallest input image the engine accepts, `HxW`.
    #[arg(long, value_name = "HxW", value_parser = parse_hxw, default_value = "16x16")]
    pub min: HxW,
    /// Size the kernels are tuned for, `HxW` (default: --max).
    #[arg(long, value_name = "HxW", value_parser = parse_hxw)]
    pub opt: Option<HxW>,
    /// Largest input image the engine accepts, `HxW`.
    #[arg(long, value_name = "HxW", value_parser = parse_hxw, required_unless_present = "height")]
    pub max: Option<HxW>,
    /// One input height the engine is built for (with --width; instead of --min/--opt/--max).
    #[arg(long, value_name = "H", requires = "width", conflicts_with_all = ["min", "opt", "max"],
          value_parser = clap::value_parser!(u32).range(1..))]
    pub height: Option<u32>,
    /// One input width the engine is built for (with --height).
    #[arg(long, value_name = "W", requires = "height", value_parser = clap::value_parser!(u32).range(1..))]
    pub width: Option<u32>,
    /// Builder workspace limit in MiB (default: TensorRT's).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..))]
    pub workspace_mb: Option<u32>,
    /// Folder of cached engines and the timing cache: a matching intact engine is reused.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Images per run the CUDA engine is built for.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// CUDA device ordinal.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub device: u32,
    /// Channel attention the CUDA engine is built for (`--tlc`).
    #[command(flatten)]
    pub attention: TlcArg,
}

impl BuildEngineArgs {
    /// The smallest, tuned and largest input sizes: `--height`/`--width` fix all three.
    pub fn sizes(&self) -> (Size, Size, Size) {
        match (self.height, self.width, self.max) {
            (Some(height), Some(width), _) => {
                let fixed = Size { height: height as usize, width: width as usize };
                (fixed, fixed, fixed)
            }
            (_, _, Some(HxW(max))) => (self.min.0, self.opt.map_or(max, |opt| opt.0), max),
            _ => unreachable!("clap requires --max or --height with --width"),
        }
    }
}

/// Options of `maskdcpt bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Checkpoint (`.pth` or `.safetensors`); default: the embedded default model.
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<PathBuf>,
    /// Checkpoint entry to use (default: `params_ema`, then `params`; for a SwinIR `params`,
    /// then `params_ema`, as the fork's 5-task test configs read them).
    #[arg(long, value_name = "K")]
    pub param_key: Option<String>,
    /// Input height in pixels.
    #[arg(long, value_name = "H", value_parser = clap::value_parser!(u32).range(1..))]
    pub height: u32,
    /// Input width in pixels.
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..))]
    pub width: u32,
    /// Timed runs.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed runs before the timed ones.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub warmup: u32,
    /// Images per run (GPU engines run them as one batch).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
