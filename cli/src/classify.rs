//! `maskdcpt classify`: the degradation classes of one image, from the model's classification
//! head (the network on the chosen backend, the head on the CPU), as a ranked list or one
//! JSON object.

use maskdcpt_core::backend::{EngineOptions, build_engine};
use serde_json::json;

use crate::args::ClassifyArgs;
use crate::error::{CliError, Result};

/// Classifies the input and prints the ranking to stdout.
pub fn run(args: &ClassifyArgs) -> Result<()> {
    let model = crate::model::load_or_default(args.model.as_deref(), None)?;
    let names = match model.head() {
        Some(head) => head.class_names.clone(),
        None => {
            return Err(CliError::Invalid(format!(
                "{} has no degradation-classification head (export one with `trainer export --with-classifier`, \
                 or omit -m for the embedded default model)",
                crate::model::describe(args.model.as_deref())
            )));
        }
    };
    let image = crate::image_io::read(&args.input)?.image;
    let options = EngineOptions { tiling: None, ..args.engine.to_options()? };
    let probabilities = build_engine(&model, &options)?.classify(&image)?;
    let mut ranked: Vec<(&str, f32)> = names.iter().map(String::as_str).zip(probabilities.iter().copied()).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    if args.json {
        let all: serde_json::Map<String, serde_json::Value> =
            names.iter().zip(&probabilities).map(|(name, p)| (name.clone(), json!(p))).collect();
        println!("{}", json!({ "input": args.input, "top": ranked[0].0, "probabilities": all }));
    } else {
        for (name, p) in ranked.iter().take(args.top as usize) {
            println!("{:6.2} %  {name}", 100.0 * p);
        }
    }
    Ok(())
}
