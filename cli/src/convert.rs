//! `maskdcpt convert`: load and validate a checkpoint, write its tensors as `.safetensors`
//! with the input's metadata and any given with `--metadata`.

use std::io::Write;

use maskdcpt_core::model::Model;
use maskdcpt_core::weights::Tensor;
use safetensors::Dtype;

use crate::args::{ConvertArgs, DtypeArg};
use crate::atomic::{same_file, write_atomically};
use crate::error::{CliError, Result};

/// Converts `args.input` to `args.output` in the requested dtype.
pub fn run(args: &ConvertArgs) -> Result<()> {
    let is_safetensors = args.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_safetensors {
        return Err(CliError::file(&args.output, "the output must be a `.safetensors` file"));
    }
    if same_file(&args.input, &args.output) {
        return Err(CliError::file(&args.output, "refusing to overwrite the input checkpoint"));
    }
    let loaded = crate::model::load(&args.input, args.param_key.as_deref())?;
    let mut metadata = loaded.weights().metadata_map().clone();
    metadata.insert("format".to_owned(), "pt".to_owned());
    for entry in &args.metadata {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(CliError::Invalid(format!("--metadata `{entry}`: give it as KEY=VALUE")));
        };
        metadata.insert(key.to_owned(), value.to_owned());
    }
    // With metadata given, the model as the written file will read it, checked before anything
    // is written (without, the loaded model is that model).
    let model = if args.metadata.is_empty() {
        loaded
    } else {
        Model::from_weights(loaded.weights().clone().with_metadata(metadata.clone()))
            .map_err(|e| CliError::Invalid(format!("with the metadata given: {e}")))?
    };
    let encoded = model
        .weights()
        .iter()
        .map(|(key, tensor)| Ok((key, tensor.shape().to_vec(), encode(key, tensor, args.dtype)?)))
        .collect::<Result<Vec<_>>>()?;
    let dtype = match args.dtype {
        DtypeArg::F32 => Dtype::F32,
        DtypeArg::F16 => Dtype::F16,
    };
    let views = encoded
        .iter()
        .map(|(key, shape, bytes)| {
            safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                .map(|view| (*key, view))
                .map_err(|e| CliError::Invalid(format!("tensor `{key}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Serialised in memory and written through `write_atomically` rather than with
    // `serialize_to_file`, whose own temporary file would leave the output readable by its
    // owner only (mode 0600).
    let bytes =
        maskdcpt_core::weights::serialize_sorted(views, &metadata).map_err(|e| CliError::file(&args.output, e))?;
    write_atomically(&args.output, |file| file.write_all(&bytes))?;
    eprintln!("wrote {} tensors to {}", model.weights().len(), args.output.display());
    Ok(())
}

/// Little-endian bytes of `tensor` in `dtype`; errors if a value does not fit in f16.
fn encode(key: &str, tensor: &Tensor, dtype: DtypeArg) -> Result<Vec<u8>> {
    let values = tensor.to_f32();
    match dtype {
        DtypeArg::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DtypeArg::F16 => values
            .iter()
            .enumerate()
            .map(|(index, &v)| {
                let h = half::f16::from_f32(v);
                if h.is_infinite() {
                    Err(CliError::Invalid(format!(
                        "key `{key}` holds {v} at flat index {index}, which does not fit in f16 (max 65504): \
                         keep --dtype f32"
                    )))
                } else {
                    Ok(h.to_le_bytes())
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(|pairs| pairs.concat()),
    }
}
