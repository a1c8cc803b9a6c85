//! The embedded default model on its held-out subsets (written by `trainer degrade` from
//! images no training step saw): `tests/default-model/`, the six degradations of issue 7 at
//! their evaluation levels, and `tests/default-model-19/`, all 19 classes at random levels. The
//! library's PSNR and top-1 per class must equal what `trainer eval` measured on the same file
//! and pairs (`eval.json`), so a regression in the library or a change of the weights fails
//! here. See docs/model-card.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maskdcpt_core::backend::{EngineOptions, build_engine};
use maskdcpt_core::image::Image;
use maskdcpt_core::model::Model;

/// The held-out subsets, each with its `manifest.json` and `eval.json`.
const SUBSETS: [&str; 2] = ["default-model", "default-model-19"];

fn subset_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests").join(name)
}

fn subset() -> PathBuf {
    subset_dir(SUBSETS[0])
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn load(path: &Path) -> Image {
    let rgb = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    let data = rgb.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    Image::new(rgb.width() as usize, rgb.height() as usize, data).unwrap()
}

/// PSNR (dB) of `a` against `b` after clamping both to [0, 1], in f64 (spec §6.3).
fn psnr(a: &Image, b: &Image) -> f64 {
    let squares: f64 = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| (f64::from(x.clamp(0.0, 1.0)) - f64::from(y.clamp(0.0, 1.0))).powi(2))
        .sum();
    10.0 * (a.data().len() as f64 / squares).log10()
}

#[test]
fn the_default_model_reproduces_its_measured_psnr() {
    let engine = build_engine(&Model::load_default().unwrap(), &EngineOptions::default()).unwrap();
    for name in SUBSETS {
        let dir = subset_dir(name);
        let report = read_json(&dir.join("eval.json"));
        let classes = report["folders"][0]["by_class"].as_object().unwrap();
        let mut sums: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
        for entry in read_json(&dir.join("manifest.json")).as_array().unwrap() {
            let lq = load(&dir.join(entry["lq"].as_str().unwrap()));
            let gt = load(&dir.join(entry["gt"].as_str().unwrap()));
            let restored = engine.restore(&lq).unwrap();
            let sum = sums.entry(entry["class"].as_str().unwrap().to_string()).or_default();
            *sum = (sum.0 + psnr(&lq, &gt), sum.1 + psnr(&restored, &gt), sum.2 + 1);
        }
        assert_eq!(sums.len(), classes.len(), "{name}");
        for (class, (input, output, n)) in sums {
            let (input, output) = (input / n as f64, output / n as f64);
            let measured = &classes[&class];
            let (want_in, want_out) = (measured["input_psnr"].as_f64().unwrap(), measured["psnr"].as_f64().unwrap());
            eprintln!(
                "{name}: {class:<26} input {input:6.2} dB  restored {output:6.2} dB  gain {:+.2} dB",
                output - input
            );
            assert!((input - want_in).abs() < 1e-3, "{name}, {class}: input PSNR {input} vs trainer eval {want_in}");
            assert!(
                (output - want_out).abs() < 1e-2,
                "{name}, {class}: restored PSNR {output} vs trainer eval {want_out}"
            );
        }
    }
}

#[test]
fn restore_without_a_model_uses_the_default() {
    let dir = std::env::temp_dir().join(format!("maskdcpt-default-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("restored.png");
    let input = subset().join("lq/coffee_low_light_0.png");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_maskdcpt"))
        .args(["restore", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let (restored, low_light) = (load(&out), load(&input));
    assert_eq!((restored.width(), restored.height()), (128, 128));
    let mean = |i: &Image| i.data().iter().map(|&v| f64::from(v)).sum::<f64>() / i.data().len() as f64;
    assert!(mean(&restored) > mean(&low_light) + 0.1, "the default model brightens low light");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The library's classifier reproduces the top-1 accuracy `trainer eval` measured per class
/// on the subset (labels from the manifest), and `maskdcpt classify` prints it.
#[test]
fn the_default_model_reproduces_its_measured_accuracy() {
    let model = Model::load_default().unwrap();
    let names = model.head().expect("the default model has a head").class_names.clone();
    let engine = build_engine(&model, &EngineOptions::default()).unwrap();
    for name in SUBSETS {
        let dir = subset_dir(name);
        let eval = read_json(&dir.join("eval.json"));
        let mut hits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for entry in read_json(&dir.join("manifest.json")).as_array().unwrap() {
            let class = entry["class"].as_str().unwrap().to_owned();
            let p = engine.classify(&load(&dir.join(entry["lq"].as_str().unwrap()))).unwrap();
            let top = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            let counts = hits.entry(class.clone()).or_default();
            counts.0 += usize::from(names[top] == class);
            counts.1 += 1;
        }
        let (right, total) = hits.values().fold((0, 0), |(r, t), (right, total)| (r + right, t + total));
        eprintln!("{name}: top-1 {right} of {total}");
        for (class, (right, total)) in &hits {
            let measured = eval["folders"][0]["by_class"][class]["accuracy"].as_f64().unwrap();
            assert_eq!(*right as f64 / *total as f64, measured, "{name}, {class}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskdcpt"))
        .args(["classify", "--json", "-i"])
        .arg(subset().join("lq/coffee_low_light_0.png"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["top"], "low_light");
    let total: f64 = json["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4 && json["probabilities"].as_object().unwrap().len() == 19);
}
