//! `maskdcpt info`: what a checkpoint holds, as aligned text or one JSON object.

use maskdcpt_core::model::Model;
use maskdcpt_core::spec::{Architecture, PadMode, swinir};
use maskdcpt_core::weights::Format;
use serde_json::json;

use crate::args::InfoArgs;
use crate::error::Result;

/// Loads the model and prints its description to stdout.
pub fn run(args: &InfoArgs) -> Result<()> {
    let path = args.model.as_deref().or(args.model_option.as_deref());
    let model = crate::model::load_or_default(path, args.param_key.as_deref())?;
    let info = describe(&model);
    if args.json {
        let value = json!({
            "model": crate::model::describe(path),
            "format": info.format,
            "param_key": info.param_key,
            "family": info.family,
            "width": info.width,
            "enc_blocks": info.enc_blocks,
            "middle_blocks": info.middle_blocks,
            "dec_blocks": info.dec_blocks,
            "refinement_blocks": info.refinement_blocks,
            "heads": info.heads,
            "window": info.window,
            "assumed": info.assumed,
            "parameters": info.parameters,
            "tensors": info.tensors,
            "dtype": info.dtype,
            "size_multiple": info.size_multiple,
            "padding": info.padding,
            "classes": info.classes,
            "head_features": info.head_features,
            "head_spectrum": info.head_spectrum,
        });
        println!("{value}");
    } else {
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(", ");
        println!("model:          {}", crate::model::describe(path));
        println!("format:         {}", info.format);
        println!("checkpoint key: {}", info.param_key.unwrap_or("none"));
        println!("family:         {}", info.family);
        println!("width:          {}", info.width);
        println!("encoder blocks: {}", list(&info.enc_blocks));
        println!("middle blocks:  {}", info.middle_blocks);
        println!("decoder blocks: {}", list(&info.dec_blocks));
        if let Some(refinement) = info.refinement_blocks {
            println!("refinement:     {refinement}");
        }
        let assumed = |name: &str| {
            if info.assumed.contains(&name) {
                " (the fork's default: not in the weights; see `convert --metadata`)"
            } else {
                ""
            }
        };
        if let Some(heads) = &info.heads {
            println!("heads:          {}{}", list(heads), assumed("heads"));
        }
        if let Some(window) = info.window {
            println!("window:         {window}, odd blocks shift by {}{}", window / 2, assumed("window"));
        }
        println!("parameters:     {}", thousands(info.parameters));
        println!("tensors:        {}", info.tensors);
        println!("dtype:          {}", info.dtype);
        println!("size multiple:  {}", info.size_multiple);
        println!("padding:        {} (bottom/right, to the size multiple)", info.padding);
        match (&info.classes, info.head_features) {
            (Some(names), Some(features)) => {
                let spectrum = if info.head_spectrum == Some(true) { " and the image's power spectrum" } else { "" };
                let list = names.join(", ");
                println!("classifier:     {} classes ({list}), over the {features} features{spectrum}", names.len())
            }
            _ => println!("classifier:     none"),
        }
    }
    Ok(())
}

/// The facts `info` reports, shared by both renderings.
struct Info<'a> {
    format: &'static str,
    param_key: Option<&'a str>,
    family: &'static str,
    width: usize,
    enc_blocks: Vec<usize>,
    middle_blocks: usize,
    dec_blocks: Vec<usize>,
    /// Blocks of a Restormer's refinement stage.
    refinement_blocks: Option<usize>,
    /// A transformer's attention heads per level (Restormer) or residual group (SwinIR).
    heads: Option<Vec<usize>>,
    /// A SwinIR's attention window side.
    window: Option<usize>,
    /// Hyper-parameters not in the file, taken from the fork's defaults (a SwinIR's `heads`
    /// and `window` without metadata).
    assumed: Vec<&'static str>,
    parameters: usize,
    tensors: usize,
    dtype: &'static str,
    size_multiple: usize,
    padding: &'static str,
    /// Class names of the classification head, if the model has one.
    classes: Option<&'a [String]>,
    /// The network features the head reads (`decoder` or `encoder`), if there is one.
    head_features: Option<&'static str>,
    /// Whether the head has a spectral branch, if there is one.
    head_spectrum: Option<bool>,
}

fn describe(model: &Model) -> Info<'_> {
    let architecture = model.architecture();
    let weights = model.weights();
    let (width, enc_blocks, middle_blocks, dec_blocks, refinement_blocks, heads) = match architecture {
        Architecture::Nafnet(spec) => {
            (spec.width, spec.enc_blocks.clone(), spec.middle_blocks, spec.dec_blocks.clone(), None, None)
        }
        Architecture::Restormer(spec) => {
            let [b1, b2, b3, latent] = spec.blocks;
            (spec.dim, vec![b1, b2, b3], latent, vec![b3, b2, b1], Some(spec.refinement), Some(spec.heads.to_vec()))
        }
        // The residual groups: `encode_layers` as the encoder, `decode_layers` as the decoder.
        Architecture::Swinir(spec) => {
            let (encoder, decoder) = spec.depths.split_at(spec.encode_layers);
            (spec.embed_dim, encoder.to_vec(), 0, decoder.to_vec(), None, Some(spec.heads.clone()))
        }
    };
    // A SwinIR's window, and which of its hyper-parameters the file does not give.
    let (window, assumed) = match architecture {
        Architecture::Swinir(spec) => {
            let assumed = [("heads", swinir::HEADS_METADATA), ("window", swinir::WINDOW_METADATA)]
                .into_iter()
                .filter(|(_, key)| weights.metadata(key).is_none())
                .map(|(name, _)| name)
                .collect();
            (Some(spec.window), assumed)
        }
        _ => (None, Vec::new()),
    };
    Info {
        format: match weights.format() {
            Format::Safetensors => "safetensors",
            Format::TorchZip => "pth",
        },
        param_key: weights.param_key(),
        family: architecture.name(),
        width,
        enc_blocks,
        middle_blocks,
        dec_blocks,
        refinement_blocks,
        heads,
        window,
        assumed,
        parameters: architecture.param_count(),
        tensors: weights.len(),
        dtype: weights.common_dtype().map_or("mixed", |d| d.name()),
        size_multiple: architecture.size_multiple(),
        padding: match architecture.pad_mode() {
            PadMode::Reflect => "reflect",
            PadMode::Zero => "zero",
        },
        classes: model.head().map(|h| h.class_names.as_slice()),
        head_features: model.head().map(|h| h.features.name()),
        head_spectrum: model.head().map(|h| h.spectrum_hidden.is_some()),
    }
}

/// `67888835` → `"67,888,835"`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(67_888_835), "67,888,835");
        assert_eq!(thousands(123_456_789_012), "123,456,789,012");
    }
}
