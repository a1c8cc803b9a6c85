//! End-to-end tests of the trainer on the committed 96×96 photos: the pre-training loss
//! falls, an interrupted run resumes bit-for-bit, exports load in `maskdcpt-core` and give
//! tch's output, fine-tuning from pre-training and evaluation run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use maskdcpt_core::backend::{EngineOptions, build_engine};
use maskdcpt_core::image::Image;
use maskdcpt_core::model::Model;
use maskdcpt_core::weights::LoadOptions;
use maskdcpt_degrade::{Class, Crop, DatasetOptions, Rgb, write_dataset};
use maskdcpt_trainer::checkpoint;
use maskdcpt_trainer::config::Config;
use maskdcpt_trainer::eval;
use maskdcpt_trainer::export::{ExportDtype, ExportOptions, Format, export, model_safetensors, read_model_tensors};
use maskdcpt_trainer::model::classifier::FeatureSource;
use maskdcpt_trainer::net::MaskDcptNet;
use maskdcpt_trainer::spectrum_fit::{FitOptions, fit_spectrum};
use maskdcpt_trainer::train::{Phase, Trainer};
use tch::{Device, Tensor};

/// Held by every test for its whole run: libtorch's CPU kernels split reductions over the
/// threads of a pool the tests of this binary share, so a test running beside another can
/// sum in another order, and the resume test compares runs bit for bit.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TORCH: Mutex<()> = Mutex::new(());
    TORCH.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn clean_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/trainer-data/clean")
}

fn config(out: &Path, steps: u64, every: u64, extra_train: &str) -> Config {
    let text = format!(
        r#"
[model]
width = 8
enc_blocks = [1, 1]
middle_blocks = 1
dec_blocks = [1, 1]
[classifier]
classes = 19
blocks_per_scale = 1
[data]
clean = ["{clean}"]
crop = 32
batch = 4
workers = 2
[train]
steps = {steps}
seed = 7
threads = 2
mask_patch = 8
classify_weight = 0.1
ema_decay = 0.9
grad_clip = 1.0
{extra_train}
[optim]
lr = 2e-3
betas = [0.9, 0.99]
[schedule]
warmup_steps = 3
min_lr = 1e-5
[output]
dir = "{out}"
checkpoint_every = {every}
keep_last = 5
log_every = 5
"#,
        clean = clean_dir().display(),
        out = out.display()
    );
    let config: Config = toml::from_str(&text).unwrap();
    config.validate().unwrap();
    config
}

fn losses(dir: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    text.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect()
}

#[test]
fn pretraining_loss_falls() {
    let _torch = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config(dir.path(), 60, 60, ""), Phase::Pretrain, None).unwrap();
    trainer.run(None, false).unwrap();
    let l = losses(dir.path());
    assert_eq!(l.len(), 12);
    let (first, last) = (l[0], l[l.len() - 2..].iter().sum::<f64>() / 2.0);
    assert!(last < 0.7 * first, "loss did not fall: {l:?}");
    if cfg!(feature = "plots") {
        assert!(dir.path().join("loss.png").exists() && dir.path().join("psnr.png").exists());
    }
}

#[test]
fn a_frozen_backbone_keeps_its_weights_while_the_head_trains() {
    let _torch = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config(dir.path(), 6, 6, "freeze_backbone = true"), Phase::Finetune, None).unwrap();
    let values = |t: &Trainer| -> Vec<Vec<f32>> {
        t.net().param_sets().iter().map(|(_, p)| Vec::<f32>::try_from(p.values()).unwrap()).collect()
    };
    let before = values(&trainer);
    trainer.run(None, false).unwrap();
    let after = values(&trainer);
    assert_eq!(before[0], after[0], "the frozen backbone changed");
    assert_ne!(before[1], after[1], "the head did not train");
    // The exported EMA weights of the backbone are the initial ones too.
    let saved = checkpoint_tensors(&dir.path().join(checkpoint::file_name(6)));
    let ema_backbone = saved.iter().filter(|(n, _)| n.starts_with("ema.") && !n.contains("classifier."));
    for (name, ema) in ema_backbone {
        let live = saved.iter().find(|(n, _)| *n == name.replacen("ema.", "params.", 1)).unwrap();
        assert_eq!(ema, &live.1, "{name}");
    }
}

fn checkpoint_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let data = checkpoint::load(path, Device::Cpu).unwrap();
    let mut named: Vec<_> =
        data.tensors.iter().map(|(n, t)| (n.clone(), Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let _torch = one_at_a_time();
    let straight = tempfile::tempdir().unwrap();
    Trainer::new(config(straight.path(), 8, 4, ""), Phase::Pretrain, None).unwrap().run(None, false).unwrap();

    let interrupted = tempfile::tempdir().unwrap();
    let cfg = config(interrupted.path(), 8, 4, "");
    let mut first = Trainer::new(cfg.clone(), Phase::Pretrain, None).unwrap();
    first.run(Some(3), false).unwrap();
    assert_eq!(first.step(), 3);
    drop(first);
    let latest = Trainer::latest_checkpoint(&cfg).unwrap().unwrap();
    let mut resumed = Trainer::resume(cfg, Phase::Pretrain, &latest).unwrap();
    assert_eq!(resumed.step(), 3);
    resumed.run(None, false).unwrap();

    let a = checkpoint_tensors(&straight.path().join(checkpoint::file_name(8)));
    let b = checkpoint_tensors(&interrupted.path().join(checkpoint::file_name(8)));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{name} differs after resume");
    }
    // Resuming a pre-training checkpoint as fine-tuning is refused.
    let cfg = config(interrupted.path(), 8, 4, "");
    let err = Trainer::resume(cfg, Phase::Finetune, &interrupted.path().join(checkpoint::file_name(8))).err().unwrap();
    assert!(err.to_string().contains("trainer pretrain"), "{err}");
}

fn core_restore(model_path: &Path, image: &Rgb) -> Vec<f32> {
    let model = Model::load(model_path, &LoadOptions::default()).unwrap();
    let engine = build_engine(&model, &EngineOptions { threads: Some(1), ..Default::default() }).unwrap();
    let input = Image::new(image.width, image.height, image.data.clone()).unwrap();
    engine.restore(&input).unwrap().into_data()
}

/// A 37×29 corner of a committed photo: an odd size exercises the reflect padding to the size
/// multiple and the crop.
fn odd_crop() -> Rgb {
    let photo = chelsea();
    Rgb {
        width: 37,
        height: 29,
        data: (0..29).flat_map(|y| photo.data[y * 96 * 3..y * 96 * 3 + 37 * 3].to_vec()).collect(),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn exports_load_in_core_and_match_tch() {
    let _torch = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 6, 6, "");
    Trainer::new(cfg, Phase::Finetune, None).unwrap().run(None, false).unwrap();
    let ckpt = dir.path().join(checkpoint::file_name(6));
    let image = odd_crop();
    let net = eval::load_model(&ckpt, Device::Cpu).unwrap();
    let (reference, logits) = eval::restore(&net, &image, Device::Cpu);
    assert_eq!(logits.unwrap().size(), [1, 19]);

    let cases = [
        ("model.safetensors", Format::Safetensors, false, ExportDtype::F32),
        ("model-head.safetensors", Format::Safetensors, true, ExportDtype::F32),
        ("model.pth", Format::Pth, false, ExportDtype::F32),
    ];
    for (name, format, with_classifier, dtype) in cases {
        let out = dir.path().join(name);
        export(&ckpt, &out, &ExportOptions { format, with_classifier, dtype }).unwrap();
        let diff = max_diff(&core_restore(&out, &image), &reference);
        assert!(diff < 1e-4, "{name}: core vs tch max |Δ| = {diff}");
        // The trainer reads its own exports back (head included when exported).
        let back = eval::load_model(&out, Device::Cpu).unwrap();
        assert_eq!(back.classifier.is_some(), with_classifier, "{name}");
        assert!(max_diff(&eval::restore(&back, &image, Device::Cpu).0, &reference) < 1e-6, "{name}");
        // Exporting again writes the same bytes (metadata included).
        let again = dir.path().join(format!("again-{name}"));
        export(&ckpt, &again, &ExportOptions { format, with_classifier, dtype }).unwrap();
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(), "{name}: two exports differ");
    }
    let half = dir.path().join("model-f16.safetensors");
    export(
        &ckpt,
        &half,
        &ExportOptions { format: Format::Safetensors, with_classifier: false, dtype: ExportDtype::F16 },
    )
    .unwrap();
    assert!(max_diff(&core_restore(&half, &image), &reference) < 2e-2);
    let err = export(
        &ckpt,
        &dir.path().join("x.pth"),
        &ExportOptions { format: Format::Pth, with_classifier: true, dtype: ExportDtype::F32 },
    )
    .unwrap_err();
    assert!(err.to_string().contains("--format safetensors"), "{err}");
}

/// A head on the encoder's outputs keeps its features through export: the file's metadata
/// says so, the library reads them (same probabilities as tch) and the trainer reads the
/// export back as such.
#[test]
fn encoder_heads_export_with_their_features() {
    let _torch = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2, 2, "");
    cfg.classifier.as_mut().unwrap().features = FeatureSource::Encoder;
    let (model, back) = train_export_and_classify(cfg, dir.path(), &odd_crop());
    assert_eq!(model.head().unwrap().features, FeatureSource::Encoder);
    assert_eq!(back.classifier.as_ref().unwrap().module.source(), FeatureSource::Encoder);
}

/// [`config`] (2 steps) with a spectral branch and 64-pixel crops, one whole tile.
fn spectral_config(out: &Path, extra_train: &str) -> Config {
    let mut cfg = config(out, 2, 2, extra_train);
    cfg.classifier.as_mut().unwrap().spectrum = true;
    cfg.data.crop = 64;
    cfg
}

/// The 96×96 `chelsea` test photo.
fn chelsea() -> Rgb {
    Rgb::load(&clean_dir().join("chelsea.png")).unwrap()
}

/// A fresh spectral branch is standardised from the training inputs before the first step
/// (its centre and scale leave 0 and 1), and the library applies that as tch does on an image
/// with a whole tile after padding.
#[test]
fn spectral_branches_calibrate_and_export() {
    let _torch = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (model, back) = train_export_and_classify(spectral_config(dir.path(), ""), dir.path(), &chelsea());
    assert_eq!(model.head().unwrap().spectrum_hidden, Some(64));
    assert!(back.classifier.as_ref().unwrap().module.has_spectrum());
    let values = |key: &str| model.weights().require(&format!("classifier.spectrum.{key}")).unwrap().to_f32();
    assert!(values("centre").iter().filter(|&&v| v != 0.0).count() > 100);
    assert!(values("scale").iter().all(|&v| v != 1.0 && v > 0.0));
}

/// `trainer fit-spectrum` on a head trained for 2 steps, with two classes whose spectra differ
/// (noise, defocus blur): the refitted branch tells them apart on held-out samples where the
/// model as loaded guesses, and every tensor but the branch's is written back unchanged; so
/// does a branch restricted to the two classes, fitted twice from one cache file, and one grown
/// by a specialist beside the loaded branch; a cache made from anything else is refused.
#[test]
fn a_fitted_spectral_branch_learns_and_leaves_the_rest_alone() {
    let _torch = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = spectral_config(dir.path(), "focal_gamma = 0.0");
    cfg.data.batch = 8;
    cfg.data.classes = vec!["noise".into(), "defocus_blur".into()];
    train_export_and_classify(cfg.clone(), dir.path(), &chelsea());
    let trained = dir.path().join("model-head.safetensors");

    let options = FitOptions {
        batches: 16,
        epochs: 40,
        minibatch: 16,
        validation: 0.25,
        fresh: false,
        classes: vec![],
        add: false,
        cache: None,
    };
    let (named, report) = fit_spectrum(&cfg, &trained, &options, false).unwrap();
    let fitted = report.epochs.last().unwrap().validation_top1;
    eprintln!("validation top-1: as loaded {:.3}, fitted {fitted:.3}", report.loaded_top1);
    assert_eq!((report.train_samples, report.validation_samples), (96, 32));
    assert!(fitted >= 0.9 && fitted > report.loaded_top1 + 0.2, "{report:?}");

    let before = read_model_tensors(&trained, Device::Cpu).unwrap().named;
    let after: HashMap<String, Tensor> = named.into_iter().collect();
    assert_eq!(before.len(), after.len());
    let mut branch_moved = false;
    for (name, value) in &before {
        let same = after[name].equal(value);
        match name.starts_with("classifier.spectrum.") {
            true => branch_moved |= !same,
            false => assert!(same, "{name} changed"),
        }
    }
    assert!(branch_moved, "the branch kept its weights");

    let mut plain = cfg.clone();
    plain.classifier.as_mut().unwrap().spectrum = false;
    let err = format!("{:#}", fit_spectrum(&plain, &trained, &options, false).err().unwrap());
    assert!(err.contains("spectrum = true"), "{err}");

    // A specialist moving the two classes' logits alone (the head as loaded names neither)
    // tells them apart too; its other output rows are zero in the file, and a second fit from
    // the cache file repeats the first.
    let cache = dir.path().join("cache.safetensors");
    let moved = [Class::Noise.index(), Class::DefocusBlur.index()];
    let specialist =
        FitOptions { classes: moved.map(|c| c as i64).to_vec(), cache: Some(cache.clone()), ..options.clone() };
    let (named, report) = fit_spectrum(&cfg, &trained, &specialist, false).unwrap();
    assert!(cache.exists());
    assert!(report.epochs.last().unwrap().validation_top1 >= 0.9, "{report:?}");
    let rows = |named: &[(String, Tensor)], key: &str| {
        let value = &named.iter().find(|(n, _)| n == &format!("classifier.spectrum.2.{key}")).unwrap().1;
        (0..value.size()[0]).map(|row| value.get(row).abs().sum(tch::Kind::Float).double_value(&[])).collect::<Vec<_>>()
    };
    for key in ["weight", "bias"] {
        let sums = rows(&named, key);
        assert!(moved.iter().all(|&row| sums[row] > 0.0), "{key}: {sums:?}");
        assert!(sums.iter().enumerate().all(|(row, &sum)| moved.contains(&row) || sum == 0.0), "{key}: {sums:?}");
    }
    let (again, repeat) = fit_spectrum(&cfg, &trained, &specialist, false).unwrap();
    assert_eq!(format!("{:?}", repeat.epochs), format!("{:?}", report.epochs));
    assert_eq!((rows(&again, "weight"), rows(&again, "bias")), (rows(&named, "weight"), rows(&named, "bias")));
    // The same folders spelled another way (as a config named by another path resolves them)
    // are the same data: the cache answers.
    let mut respelled = cfg.clone();
    for folder in &mut respelled.data.clean {
        *folder = folder.join("..").join(folder.file_name().unwrap());
    }
    let (_, reread) = fit_spectrum(&respelled, &trained, &specialist, false).unwrap();
    assert_eq!(format!("{:?}", reread.epochs), format!("{:?}", report.epochs));

    // Grown: the branch as loaded plus a specialist, one branch of 128 units in the file,
    // which the library reads as tch does.
    let grown = FitOptions { add: true, ..specialist.clone() };
    let (named, report) = fit_spectrum(&cfg, &trained, &grown, false).unwrap();
    assert!(report.epochs.last().unwrap().validation_top1 >= 0.9, "{report:?}");
    let hidden = named.iter().find(|(n, _)| n == "classifier.spectrum.0.weight").unwrap().1.size();
    assert_eq!(hidden, [128, 128]);
    let file = dir.path().join("grown.safetensors");
    let bytes = model_safetensors(&named, Some(FeatureSource::Decoder), ExportDtype::F32).unwrap();
    std::fs::write(&file, bytes).unwrap();
    assert_library_classifies_as_tch(&file, &file, &chelsea());

    // The cache answers only for what it was made from: batches, seed, the network and head.
    let fewer = FitOptions { batches: 8, ..specialist.clone() };
    let mut reseeded = cfg.clone();
    reseeded.train.seed += 1;
    let mut changed: Vec<_> = before.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    let fc = changed.iter_mut().find(|(n, _)| n == "classifier.fc.bias").unwrap();
    fc.1 = &fc.1 + 1e-3;
    let other = dir.path().join("other.safetensors");
    std::fs::write(&other, model_safetensors(&changed, Some(FeatureSource::Decoder), ExportDtype::F32).unwrap())
        .unwrap();
    for (cfg, model, options) in
        [(&cfg, &trained, &fewer), (&reseeded, &trained, &specialist), (&cfg, &other, &specialist)]
    {
        let err = format!("{:#}", fit_spectrum(cfg, model, options, false).err().unwrap());
        assert!(err.contains("was made from another model"), "{err}");
    }
    let both = FitOptions { fresh: true, ..grown };
    let err = format!("{:#}", fit_spectrum(&cfg, &trained, &both, false).err().unwrap());
    assert!(err.contains("choose one"), "{err}");
    let unknown = FitOptions { classes: vec![19], cache: None, ..specialist };
    let err = format!("{:#}", fit_spectrum(&cfg, &trained, &unknown, false).err().unwrap());
    assert!(err.contains("class index 19 is out of range"), "{err}");
}

/// Fine-tunes `cfg` (2 steps, in `dir`), exports the checkpoint with its head and checks that
/// the library's class probabilities for `image` are tch's; returns the loaded export and the
/// trainer's network read back from it.
fn train_export_and_classify(cfg: Config, dir: &Path, image: &Rgb) -> (Model, MaskDcptNet) {
    Trainer::new(cfg, Phase::Finetune, None).unwrap().run(None, false).unwrap();
    let ckpt = dir.join(checkpoint::file_name(2));
    let out = dir.join("model-head.safetensors");
    let options = ExportOptions { format: Format::Safetensors, with_classifier: true, dtype: ExportDtype::F32 };
    export(&ckpt, &out, &options).unwrap();
    (assert_library_classifies_as_tch(&ckpt, &out, image), eval::load_model(&out, Device::Cpu).unwrap())
}

/// Checks that the library's class probabilities for `image` from the model file `path` are
/// tch's from `reference` (a checkpoint or model file); returns the library's model.
fn assert_library_classifies_as_tch(reference: &Path, path: &Path, image: &Rgb) -> Model {
    let model = Model::load(path, &LoadOptions::default()).unwrap();
    let (_, logits) = eval::restore(&eval::load_model(reference, Device::Cpu).unwrap(), image, Device::Cpu);
    let want = Vec::<f32>::try_from(logits.unwrap().softmax(1, tch::Kind::Float).flatten(0, -1)).unwrap();
    let engine = build_engine(&model, &EngineOptions { threads: Some(1), ..Default::default() }).unwrap();
    let got = engine.classify(&Image::new(image.width, image.height, image.data.clone()).unwrap()).unwrap();
    assert!(max_diff(&got, &want) < 1e-5, "library vs tch probabilities: {}", max_diff(&got, &want));
    model
}

#[test]
fn finetuning_from_pretraining_then_evaluation() {
    let _torch = one_at_a_time();
    let runs = tempfile::tempdir().unwrap();
    let pre = runs.path().join("pre");
    Trainer::new(config(&pre, 4, 4, ""), Phase::Pretrain, None).unwrap().run(None, false).unwrap();
    let fine = runs.path().join("fine");
    let init = pre.join(checkpoint::file_name(4));
    let mut trainer = Trainer::new(config(&fine, 4, 4, ""), Phase::Finetune, Some(&init)).unwrap();
    trainer.run(None, false).unwrap();

    let data = runs.path().join("eval");
    let classes = vec![Class::from_id("noise").unwrap(), Class::from_id("jpeg").unwrap()];
    let options = DatasetOptions { classes, per_image: 1, crop: Some(Crop::Center(48)), seed: 3, ..Default::default() };
    write_dataset(&clean_dir(), &data, &options).unwrap();
    let net = eval::load_model(&fine.join(checkpoint::file_name(4)), Device::Cpu).unwrap();
    let report = eval::evaluate(&net, &[data], Device::Cpu).unwrap();
    let folder = &report.folders[0];
    assert_eq!(folder.all.images, 8);
    assert_eq!(folder.by_class.keys().collect::<Vec<_>>(), ["jpeg", "noise"]);
    assert!(folder.all.accuracy.is_some());
    assert!(folder.all.psnr.is_finite() && folder.all.input_psnr.is_finite());
    assert!(report.table().contains("noise"));
}
