//! The library's classification head (maskdcpt-core on the CPU) against the trainer's (tch,
//! itself checked against the official PyTorch `PromptIR_NoImg_DC`) on the embedded default
//! model and the held-out images of tests/default-model: the same class probabilities.

use std::path::Path;

use maskdcpt_core::backend::{EngineOptions, build_engine};
use maskdcpt_core::image::Image;
use maskdcpt_core::model::{DEFAULT_MODEL, Model};
use maskdcpt_degrade::{Rgb, image_files};
use maskdcpt_trainer::eval;
use tch::{Device, Kind};

#[test]
fn library_classification_matches_tch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("default.safetensors");
    std::fs::write(&model_path, DEFAULT_MODEL).unwrap();
    let net = eval::load_model(&model_path, Device::Cpu).unwrap();
    let model = Model::load_default().unwrap();
    let engine = build_engine(&model, &EngineOptions { threads: Some(2), ..Default::default() }).unwrap();
    let mut worst = 0.0f32;
    let images = image_files(&root.join("tests/default-model/lq")).unwrap();
    assert!(images.len() >= 6);
    for path in &images {
        let rgb = Rgb::load(path).unwrap();
        let (_, logits) = eval::restore(&net, &rgb, Device::Cpu);
        let want =
            Vec::<f32>::try_from(logits.expect("the model has a head").softmax(1, Kind::Float).flatten(0, -1)).unwrap();
        let got = engine.classify(&Image::new(rgb.width, rgb.height, rgb.data.clone()).unwrap()).unwrap();
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let argmax = |p: &[f32]| p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
        assert_eq!(argmax(&got), argmax(&want), "{}", path.display());
        worst = worst.max(diff);
    }
    eprintln!("library vs tch class probabilities over {} images: max |Δ| {worst:.2e}", images.len());
    assert!(worst <= 1e-4, "max |Δ| {worst}");
}
