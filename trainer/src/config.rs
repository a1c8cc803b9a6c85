//! Training configuration, read from TOML (see `trainer/configs/*.toml` for commented examples).
//! Unknown keys are errors, so a typo never silently falls back to a default.
//!
//! A file may start from another: a top-level `extends = "other.toml"` (before any table)
//! takes that file's values, then this file's on top (tables merge key by key; a value or an
//! array replaces the other's). Relative paths are taken from the folder of the file that
//! names them, and relative `extends` names from the folder of the file that holds them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::model::classifier::{ClassifierShape, FeatureSource};
use crate::model::nafnet::NafnetShape;
use crate::optim::{AdamWConfig, Schedule};

/// A whole run: model, data, optimisation and output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Backbone shape.
    pub model: NafnetShape,
    /// Degradation-classification head; absent = no classification loss.
    #[serde(default)]
    pub classifier: Option<ClassifierShape>,
    /// Where training samples come from.
    pub data: DataConfig,
    /// Loop settings.
    pub train: TrainConfig,
    /// Backbone optimiser.
    pub optim: AdamWConfig,
    /// Classifier optimiser (defaults to `optim`).
    #[serde(default)]
    pub optim_classifier: Option<AdamWConfig>,
    /// Learning-rate schedule.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Output folder and checkpoint policy.
    pub output: OutputConfig,
}

fn default_schedule() -> Schedule {
    Schedule { warmup_steps: 0, min_lr: 0.0 }
}

/// Training data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Folders of clean images, degraded on the fly (one random class and level per sample).
    #[serde(default)]
    pub clean: Vec<PathBuf>,
    /// Paired folders (BasicSR `lq/` and `gt/` with identical file names); labels come from
    /// a `manifest.json` written by `trainer degrade`, or from `class`.
    #[serde(default)]
    pub paired: Vec<PairedSource>,
    /// Degradation classes (ids) synthesised from `clean`, each sample's drawn uniformly from
    /// this list (a class listed twice is drawn twice as often); empty = all 19.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Square crop size in pixels.
    pub crop: i64,
    /// Images per batch.
    pub batch: i64,
    /// Bits per sample the synthesised inputs are rounded to, as the 8-bit images the
    /// library reads are (default 8); 0 leaves them unrounded, as every stage before
    /// 2026-11-28 trained (docs/results.md, "Eight-bit inputs").
    #[serde(default = "default_lq_bits")]
    pub lq_bits: u32,
    /// Threads preparing batches.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches prepared ahead per worker.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
}

fn default_lq_bits() -> u32 {
    8
}

fn default_workers() -> usize {
    2
}

fn default_prefetch() -> usize {
    2
}

/// One paired folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairedSource {
    /// Folder holding `lq/` and `gt/`.
    pub dir: PathBuf,
    /// Class id for every pair (when the folder has no manifest).
    #[serde(default)]
    pub class: Option<String>,
}

/// Mixed precision on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Amp {
    /// Float32 everywhere.
    #[default]
    Off,
    /// Autocast to FP16 with dynamic loss scaling (CUDA only).
    Fp16,
}

/// Loop settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Total optimiser steps.
    pub steps: u64,
    /// Seed of everything random (weights, crops, degradations, masks).
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads for torch (0 = torch's default).
    #[serde(default)]
    pub threads: i32,
    /// Fraction of patches masked in pre-training.
    #[serde(default = "default_mask_ratio")]
    pub mask_ratio: f64,
    /// Mask patch size in pixels (a multiple of 2^levels; crops must be multiples of it).
    #[serde(default = "default_mask_patch")]
    pub mask_patch: i64,
    /// Weight of the L1 reconstruction/restoration loss.
    #[serde(default = "one")]
    pub l1_weight: f64,
    /// Weight of the focal classification loss (needs `[classifier]`).
    #[serde(default = "one")]
    pub classify_weight: f64,
    /// Focal loss γ (0 = cross-entropy).
    #[serde(default = "default_gamma")]
    pub focal_gamma: f64,
    /// EMA decay of the weights (0 = EMA equals the live weights).
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[serde(default)]
    pub grad_clip: f64,
    /// Mixed precision.
    #[serde(default)]
    pub amp: Amp,
    /// Trains the classification head alone: the backbone's weights (and so the restoration)
    /// stay exactly those of `--init`.
    #[serde(default)]
    pub freeze_backbone: bool,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_mask_ratio() -> f64 {
    0.5
}

fn default_mask_patch() -> i64 {
    16
}

fn one() -> f64 {
    1.0
}

fn default_gamma() -> f64 {
    2.0
}

fn default_ema() -> f64 {
    0.999
}

/// Output folder and checkpoint policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Run folder (checkpoints, `metrics.csv`, curves).
    pub dir: PathBuf,
    /// Steps between checkpoints (the last step always writes one).
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    /// Checkpoints kept (oldest deleted first).
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// Steps between metric rows.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
}

fn default_every() -> u64 {
    1000
}

fn default_keep() -> usize {
    3
}

fn default_log_every() -> u64 {
    10
}

impl Config {
    /// The features the classification head reads (decoder when there is no head).
    pub fn head_features(&self) -> FeatureSource {
        self.classifier.as_ref().map(|c| c.features).unwrap_or_default()
    }

    /// The classification head's optimiser: `[optim_classifier]`, else `[optim]`.
    pub fn classifier_optim(&self) -> &AdamWConfig {
        self.optim_classifier.as_ref().unwrap_or(&self.optim)
    }

    /// Reads and validates a TOML file (following its `extends` chain).
    pub fn load(path: &Path) -> Result<Self> {
        let table = resolved_table(path, 0)?;
        let config: Config =
            toml::Value::Table(table).try_into().with_context(|| format!("config {} is invalid", path.display()))?;
        config.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(config)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let d = &self.data;
        if d.clean.is_empty() && d.paired.is_empty() {
            bail!("[data] needs at least one `clean` folder or `paired` source");
        }
        if d.crop <= 0 || d.batch <= 0 {
            bail!("[data] crop ({}) and batch ({}) must be positive", d.crop, d.batch);
        }
        let multiple = 1i64 << self.model.levels();
        if d.crop % multiple != 0 {
            bail!("[data] crop {} must be a multiple of {multiple} (2^levels of the model)", d.crop);
        }
        if d.workers == 0 {
            bail!("[data] workers must be at least 1");
        }
        if d.lq_bits > 16 {
            bail!("[data] lq_bits {} must be 0 (unrounded) or 1 to 16", d.lq_bits);
        }
        let t = &self.train;
        if t.steps == 0 {
            bail!("[train] steps must be at least 1");
        }
        if !(0.0..1.0).contains(&t.ema_decay) {
            bail!("[train] ema_decay {} must be in [0, 1)", t.ema_decay);
        }
        if t.classify_weight > 0.0 && self.classifier.is_none() {
            bail!("[train] classify_weight is {} but there is no [classifier] section", t.classify_weight);
        }
        if t.freeze_backbone && (self.classifier.is_none() || t.classify_weight <= 0.0) {
            bail!(
                "[train] freeze_backbone trains the classification head alone: it needs a [classifier] section and \
                 classify_weight > 0"
            );
        }
        let classes = maskdcpt_degrade::Class::COUNT as i64;
        if let Some(head) = self.classifier.as_ref().filter(|h| h.classes != classes) {
            bail!(
                "[classifier] classes is {} but labels are the {classes} built-in degradation classes (synthesised or \
                 read from dataset manifests): set classes = {classes}",
                head.classes
            );
        }
        if self.output.checkpoint_every == 0 || self.output.keep_last == 0 || self.output.log_every == 0 {
            bail!("[output] checkpoint_every, keep_last and log_every must be at least 1");
        }
        Ok(())
    }

    /// The config as TOML (stored in checkpoints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

/// Top-level key naming the config file a config starts from.
const EXTENDS: &str = "extends";
/// How many `extends` links a chain may have (a longer one is taken for a cycle).
const MAX_EXTENDS: usize = 8;

/// The table of the config at `path` with its `extends` chain merged in, its relative paths
/// made relative to the current folder; `depth` links have been followed to reach it.
fn resolved_table(path: &Path, depth: usize) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config {} is invalid", path.display()))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    rebase(&mut table, folder).with_context(|| format!("config {}", path.display()))?;
    let Some(base) = table.remove(EXTENDS) else {
        return Ok(table);
    };
    let toml::Value::String(base) = base else {
        bail!("config {}: `{EXTENDS}` must name a config file (a string), not {base}", path.display());
    };
    if depth == MAX_EXTENDS {
        bail!("config {}: more than {MAX_EXTENDS} `{EXTENDS}` links in a row (a cycle?)", path.display());
    }
    let mut merged = resolved_table(&folder.join(&base), depth + 1)
        .with_context(|| format!("config {} extends `{base}`", path.display()))?;
    merge(&mut merged, table);
    Ok(merged)
}

/// `over`'s values on top of `base`'s: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Joins the relative paths `table` holds (data `clean` folders, `paired` dirs, output `dir`)
/// to `folder`, the folder of their file.
fn rebase(table: &mut toml::Table, folder: &Path) -> Result<()> {
    let Some(folder) = folder.to_str() else {
        bail!("the folder {} is not UTF-8: configs with relative paths must sit in a UTF-8 folder", folder.display());
    };
    let join = |value: &mut toml::Value| {
        if let toml::Value::String(path) = value
            && Path::new(path.as_str()).is_relative()
        {
            *path = Path::new(folder).join(&*path).to_string_lossy().into_owned();
        }
    };
    if let Some(toml::Value::Table(data)) = table.get_mut("data") {
        if let Some(toml::Value::Array(clean)) = data.get_mut("clean") {
            clean.iter_mut().for_each(join);
        }
        if let Some(toml::Value::Array(paired)) = data.get_mut("paired") {
            for source in paired {
                if let Some(dir) = source.as_table_mut().and_then(|t| t.get_mut("dir")) {
                    join(dir);
                }
            }
        }
    }
    if let Some(dir) = table.get_mut("output").and_then(toml::Value::as_table_mut).and_then(|t| t.get_mut("dir")) {
        join(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 4, "expected the example configs in {}", dir.display());
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny-cpu.toml")).unwrap();
        let cases = [
            (base.replace("batch = 4", "batchsize = 4"), "unknown field `batchsize`"),
            (base.replace("crop = 32", "crop = 40"), "multiple of 16"),
            (base.replace("batch = 4", "batch = 4\nlq_bits = 17"), "lq_bits 17"),
            (base.replace("ema_decay = 0.9", "ema_decay = 1.5"), "ema_decay"),
            (base.replace("[classifier]", "[unused]").replace("classes = 19\n", ""), "unknown field `unused`"),
            (base.replace("classes = 19", "classes = 5"), "set classes = 19"),
            (base.replace("classes = 19", "classes = 19\nfeatures = \"middle\""), "unknown features \"middle\""),
            (base.replace("classify_weight = 0.1", "classify_weight = 0.0\nfreeze_backbone = true"), "freeze_backbone"),
        ];
        for (text, expected) in cases {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Config::load(&path).unwrap_err());
            assert!(err.contains(expected), "{err}");
        }
    }

    /// tiny-cpu.toml in `dir`, its clean images in `dir/photos`.
    fn tiny_cpu_in(dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny-cpu.toml"))
            .unwrap()
            .replace("../../tests/trainer-data/clean", "photos");
        let path = dir.join("tiny-cpu.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_config_extends_another_with_its_own_values_on_top() {
        let dir = tempfile::tempdir().unwrap();
        let base = Config::load(&tiny_cpu_in(dir.path())).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let child = sub.join("child.toml");
        std::fs::write(
            &child,
            "extends = \"../tiny-cpu.toml\"\n[train]\nsteps = 123\n[optim]\nbetas = [0.5, 0.6]\n\
             [output]\ndir = \"runs/child\"\n",
        )
        .unwrap();
        let config = Config::load(&child).unwrap();
        assert_eq!(config.train.steps, 123);
        assert_eq!(config.optim.betas, (0.5, 0.6));
        // The rest of [train] and [optim] is the base's.
        assert_eq!(config.train.seed, base.train.seed);
        assert_eq!(config.optim.lr, base.optim.lr);
        assert_eq!(config.data.crop, base.data.crop);
        // Relative paths from the folder of the file that names them (here `dir/sub/..`).
        std::fs::create_dir_all(dir.path().join("photos")).unwrap();
        let clean = |c: &Config| c.data.clean.iter().map(|p| p.canonicalize().unwrap()).collect::<Vec<_>>();
        assert_eq!(clean(&config), clean(&base));
        assert_eq!(config.output.dir, sub.join("runs/child"));
        // The chain goes on through a second link; an identical override changes nothing.
        let grandchild = sub.join("grandchild.toml");
        std::fs::write(&grandchild, "extends = \"child.toml\"\n[train]\nsteps = 123\n").unwrap();
        assert_eq!(Config::load(&grandchild).unwrap().to_toml(), config.to_toml());
    }

    #[test]
    fn bad_extends_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        tiny_cpu_in(dir.path());
        let cases = [
            ("extends = \"missing.toml\"\n", "cannot read config"),
            ("extends = 3\n", "must name a config file"),
            ("extends = \"c.toml\"\n", "`extends` links in a row (a cycle?)"),
            ("extends = \"tiny-cpu.toml\"\n[train]\nstepz = 4\n", "unknown field `stepz`"),
            ("[train]\nextends = \"tiny-cpu.toml\"\n", "unknown field `extends`"),
            ("extends = \"tiny-cpu.toml\"\n[data]\ncrop = 40\n", "multiple of 16"),
        ];
        for (text, expected) in cases {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Config::load(&path).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
