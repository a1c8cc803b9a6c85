//! `maskdcpt build-engine`: build (or reuse from a cache folder) a serialized TensorRT engine,
//! or a CUDA engine file. TensorRT needs a binary built with the `tensorrt` feature and, at
//! run time, the TensorRT library; CUDA needs an NVIDIA GPU. Without them it fails with a
//! message saying what is missing.

use maskdcpt_core::backend::AttentionPool;

use crate::args::{BuildEngineArgs, EngineBackend};
use crate::error::Result;

/// Builds the engine and writes it atomically to the output file.
pub fn run(args: &BuildEngineArgs) -> Result<()> {
    match args.backend {
        EngineBackend::Tensorrt if args.attention.attention_pool() != AttentionPool::Global => {
            Err(crate::error::CliError::Invalid(
                "--tlc runs on the CPU and CUDA engines, not TensorRT: build with --backend cuda".into(),
            ))
        }
        EngineBackend::Tensorrt => tensorrt(args),
        EngineBackend::Cuda => cuda(args),
    }
}

/// Builds the CUDA engine for the largest and tuned sizes at `--batch` and writes its engine
/// file.
fn cuda(args: &BuildEngineArgs) -> Result<()> {
    use maskdcpt_core::backend::CudaOptions;
    use maskdcpt_core::backend::cuda::engine::build_engine_file;
    use maskdcpt_core::backend::cuda::saved::FileUse;

    let model = crate::model::load_or_default(args.model.as_deref(), args.param_key.as_deref())?;
    let cuda = CudaOptions {
        fp16: args.fp16,
        device: args.device as usize,
        cache_dir: args.cache_dir.clone().or_else(crate::args::kernel_cache_dir),
        engine_file: Some(args.output.clone()),
        ..Default::default()
    };
    let batch = args.batch as usize;
    let (_, opt, max) = args.sizes();
    let mut shapes = vec![(batch, max.height, max.width)];
    if opt != max {
        shapes.push((batch, opt.height, opt.width));
    }
    let report = build_engine_file(&model, &cuda, args.attention.attention_pool(), &shapes)?;
    let what = match &report.found {
        FileUse::Reused => "up to date, reused".to_owned(),
        FileUse::Missing => "written".to_owned(),
        FileUse::Rejected(why) => format!("rebuilt (the file there was {why})"),
    };
    eprintln!("{}: {what}; {} tuned products on {}", report.path.display(), report.products, report.device);
    Ok(())
}

#[cfg(feature = "tensorrt")]
fn tensorrt(args: &BuildEngineArgs) -> Result<()> {
    use std::io::Write;

    use maskdcpt_core::backend::tensorrt::network::TrtPrecision;
    use maskdcpt_core::backend::tensorrt::profile::ShapeRange;
    use maskdcpt_core::backend::tensorrt::{BuildOptions, build_serialized};

    use crate::atomic::write_atomically;

    let model = crate::model::load_or_default(args.model.as_deref(), args.param_key.as_deref())?;
    let (min, opt, max) = args.sizes();
    let options = BuildOptions {
        precision: if args.fp16 { TrtPrecision::F16 } else { TrtPrecision::F32 },
        shapes: ShapeRange { min, opt, max },
        workspace: args.workspace_mb.map(|mb| u64::from(mb) << 20),
        cache_dir: args.cache_dir.clone(),
    };
    let engine = build_serialized(&model, &options)?;
    write_atomically(&args.output, |file| file.write_all(&engine))?;
    eprintln!("wrote {} ({} bytes)", args.output.display(), engine.len());
    Ok(())
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt(_: &BuildEngineArgs) -> Result<()> {
    Err(crate::error::CliError::Invalid(
        "this maskdcpt was built without the TensorRT backend: rebuild with `cargo build --release --features \
         tensorrt` where the TensorRT headers are installed (docs/tensorrt.md)"
            .into(),
    ))
}
