//! The library's classification head (maskdcpt-core on the CPU) against the trainer's (tch,
//! itself checked against the official PyTorch `PromptIR_NoImg_DC` / `PromptIR_DC`) on the
//! embedded default model and the held-out images of tests/default-model, cropped to sizes
//! that are not multiples of 16 (so both pad): the same class probabilities, for the shipped
//! head, a head that also embeds the image, a head on the encoder's outputs and a head with a
//! spectral branch.

use std::collections::BTreeMap;
use std::path::Path;

use maskdcpt_core::backend::{EngineOptions, build_engine};
use maskdcpt_core::head::FEATURES_METADATA;
use maskdcpt_core::image::Image;
use maskdcpt_core::model::{DEFAULT_MODEL, Model};
use maskdcpt_core::weights::LoadOptions;
use maskdcpt_degrade::{Rgb, image_files};
use maskdcpt_trainer::host::safetensors_bytes;
use maskdcpt_trainer::model::classifier::{ClassifierShape, DEFAULT_SPECTRUM_HIDDEN, FeatureSource};
use maskdcpt_trainer::net::{CLASSIFIER_PREFIX, MaskDcptNet};
use maskdcpt_trainer::{eval, export};
use safetensors::tensor::Dtype;
use tch::{Device, Kind};

/// The embedded default model as the trainer loads it, through a file in `dir`.
fn default_net(dir: &Path) -> MaskDcptNet {
    let path = dir.join("default.safetensors");
    std::fs::write(&path, DEFAULT_MODEL).unwrap();
    eval::load_model(&path, Device::Cpu).unwrap()
}

#[test]
fn library_classification_matches_tch() {
    let dir = tempfile::tempdir().unwrap();
    assert_same_probabilities(&default_net(dir.path()), &Model::load_default().unwrap());
}

/// The default backbone with a freshly initialised head that embeds the image, written as
/// safetensors and loaded by the library. Its `fc` is scaled down so that the probabilities
/// spread (top class 0.14–0.7 here) instead of saturating at 1, where differences would not
/// show: reading the embedding's input zero-padded instead of reflected fails at 2.9e-4.
#[test]
fn library_image_embedding_head_matches_tch() {
    let dir = tempfile::tempdir().unwrap();
    let head = ClassifierShape { embed_image: true, ..small_head() };
    let (net, model) = fresh_head(dir.path(), &head);
    assert!(model.head().unwrap().embeds_image);
    assert_same_probabilities(&net, &model);
}

/// A fresh head on the encoder's outputs: the file's metadata says so, the library reads
/// those features (reading the decoder's instead changes a top class and fails), and a
/// trainer told otherwise refuses the file.
#[test]
fn library_encoder_head_matches_tch() {
    let dir = tempfile::tempdir().unwrap();
    let head = ClassifierShape { features: FeatureSource::Encoder, ..small_head() };
    let (net, model) = fresh_head(dir.path(), &head);
    assert_eq!(model.head().unwrap().features, FeatureSource::Encoder);
    assert_same_probabilities(&net, &model);
    let decoder_head = ClassifierShape { features: FeatureSource::Decoder, ..head };
    let other = MaskDcptNet::new(net.backbone.module.shape(), Some(&decoder_head), Device::Cpu).unwrap();
    let file = export::read_model_tensors(&dir.path().join("fresh-head.safetensors"), Device::Cpu).unwrap();
    let err = other.load_model_tensors(&file, "fresh head").unwrap_err().to_string();
    assert!(err.contains("reads the encoder features"), "{err}");
}

/// A fresh head with a spectral branch: the library computes the signature of the padded input
/// as the trainer does (the crops pad to two tiles, one with reflected columns) and adds the
/// branch's logits.
#[test]
fn library_spectral_head_matches_tch() {
    let dir = tempfile::tempdir().unwrap();
    let head = ClassifierShape { spectrum: true, ..small_head() };
    let (net, model) = fresh_head(dir.path(), &head);
    assert_eq!(model.head().unwrap().spectrum_hidden, Some(64));
    assert_same_probabilities(&net, &model);
}

/// A 19-class head with one block per scale over the decoder's features, nothing else.
fn small_head() -> ClassifierShape {
    ClassifierShape {
        classes: 19,
        blocks_per_scale: 1,
        embed_image: false,
        features: FeatureSource::Decoder,
        spectrum: false,
        spectrum_hidden: DEFAULT_SPECTRUM_HIDDEN,
    }
}

/// The default backbone with a freshly initialised `head` (seeded; `fc` scaled by 0.2, a
/// spectral branch's centre and scale drawn), and
/// the same weights written to a safetensors file in `dir` (with the head's class names and
/// features in the metadata) and loaded by the library.
fn fresh_head(dir: &Path, head: &ClassifierShape) -> (MaskDcptNet, Model) {
    let default = default_net(dir);
    tch::manual_seed(5);
    let net = MaskDcptNet::new(default.backbone.module.shape(), Some(head), Device::Cpu).unwrap();
    let mut named = default.backbone.params.named_values();
    for (name, value) in net.classifier.as_ref().unwrap().params.named_values() {
        let value = match name.as_str() {
            n if n.starts_with("fc.") => value * 0.2,
            // A spectral branch's standardisation away from the identity: both sides apply it.
            "spectrum.centre" => value.randn_like(),
            "spectrum.scale" => value.rand_like() + 0.5,
            _ => value,
        };
        named.push((format!("{CLASSIFIER_PREFIX}{name}"), value));
    }
    let file = export::ModelTensors { named, head_features: head.features, config: None };
    net.load_model_tensors(&file, "default backbone").unwrap();
    let metadata = BTreeMap::from([(FEATURES_METADATA.to_owned(), head.features.name().to_owned())]);
    let path = dir.join("fresh-head.safetensors");
    std::fs::write(&path, safetensors_bytes(&file.named, Dtype::F32, &metadata).unwrap()).unwrap();
    (net, Model::load(&path, &LoadOptions::default()).unwrap())
}

fn assert_same_probabilities(net: &MaskDcptNet, model: &Model) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let engine = build_engine(model, &EngineOptions { threads: Some(2), ..Default::default() }).unwrap();
    let mut worst = 0.0f32;
    let images = image_files(&root.join("tests/default-model/lq")).unwrap();
    assert!(images.len() >= 6);
    for (i, path) in images.iter().enumerate() {
        let rgb = top_left(&Rgb::load(path).unwrap(), 117 + i % 5, 101 + i);
        let (_, logits) = eval::restore(net, &rgb, Device::Cpu);
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

/// The `width × height` top-left corner of `image`.
fn top_left(image: &Rgb, width: usize, height: usize) -> Rgb {
    let rows = image.data.chunks_exact(image.width * 3).take(height);
    Rgb::new(width, height, rows.flat_map(|row| row[..width * 3].iter().copied()).collect()).unwrap()
}
