//! `maskdcpt export-onnx`: write a checkpoint as a self-contained ONNX model.

use std::io::Write;

use maskdcpt_core::export::onnx::{OnnxOptions, OnnxShape, export};

use crate::args::ExportOnnxArgs;
use crate::atomic::write_atomically;
use crate::error::{CliError, Result};

/// Loads the checkpoint, exports it and writes the `.onnx` file atomically.
pub fn run(args: &ExportOnnxArgs) -> Result<()> {
    let shape = match (args.dynamic, args.height, args.width) {
        (true, _, _) => OnnxShape::Dynamic,
        (false, Some(h), Some(w)) => OnnxShape::Fixed { height: h as usize, width: w as usize },
        _ => return Err(CliError::Invalid("give --height and --width for a fixed input shape, or --dynamic".into())),
    };
    let model = crate::model::load(&args.model, args.param_key.as_deref())?;
    let options = OnnxOptions { fp16: args.fp16, shape, attention_pool: args.attention.attention_pool() };
    let bytes = export(&model, &options).map_err(|e| CliError::file(&args.model, e))?;
    write_atomically(&args.output, |file| file.write_all(&bytes))?;
    eprintln!("wrote {} ({} bytes)", args.output.display(), bytes.len());
    Ok(())
}
