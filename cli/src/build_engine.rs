//! `maskdcpt build-engine`: build (or reuse from a cache folder) a serialized TensorRT engine.
//! Needs a binary built with the `tensorrt` feature and, at run time, the TensorRT library;
//! without either it fails with a message saying which is missing.

use crate::args::{BuildEngineArgs, EngineBackend};
use crate::error::Result;

/// Builds the engine and writes it atomically to the output file.
pub fn run(args: &BuildEngineArgs) -> Result<()> {
    match args.backend {
        EngineBackend::Tensorrt => tensorrt(args),
    }
}

#[cfg(feature = "tensorrt")]
fn tensorrt(args: &BuildEngineArgs) -> Result<()> {
    use std::io::Write;

    use maskdcpt_core::backend::tensorrt::network::TrtPrecision;
    use maskdcpt_core::backend::tensorrt::profile::ShapeRange;
    use maskdcpt_core::backend::tensorrt::{BuildOptions, build_serialized};

    use crate::atomic::write_atomically;

    let model = crate::model::load(&args.model, args.param_key.as_deref())?;
    let options = BuildOptions {
        precision: if args.fp16 { TrtPrecision::F16 } else { TrtPrecision::F32 },
        shapes: ShapeRange { min: args.min.0, opt: args.opt.unwrap_or(args.max).0, max: args.max.0 },
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
