//! `trainer fit-spectrum`: fits a classification head's spectral branch alone, over a frozen
//! network and head. One forward per crop in all: the head's own logits (without a branch)
//! and the spectral signature of every crop of a fixed sample of training batches are
//! computed once; the branch (the model's own, or with [`FitOptions::fresh`] or when it has
//! none a fresh one: standardisation from the sample, perceptron from the seed) then trains
//! for several epochs on that cache, its logits added to the cached ones as in the head.
//! Everything but the branch stays bit for bit as loaded.
//!
//! With [`FitOptions::add`] the loaded branch stays as it is and a specialist of
//! [`DEFAULT_SPECTRUM_HIDDEN`] units trains beside it on the head's and the branch's logits;
//! the two are written as one branch of their summed widths (the hidden layers stacked, the
//! output layers side by side, the biases added: the same logits), which the library reads
//! like any other. With [`FitOptions::classes`] the branch (or specialist) moves only those
//! classes' logits (the rows of its output layer for the others are zero, and stay zero in the
//! written file): a specialist that tells apart classes the head confuses, e.g. the three blur
//! kinds, without touching its answers elsewhere. [`FitOptions::cache`] keeps the cached
//! sample in a file, keyed by what it depends on, so fits with other options skip the pass
//! through the network.
//!
//! Training the branch jointly with the head (`[classifier] spectrum = true` in a run) gives
//! it a few blur crops a batch against a head already confident in its answer; here it sees
//! the whole sample every epoch for the cost of one pass through the network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use maskdcpt_core::head::{SPECTRUM_CENTRE, SPECTRUM_HIDDEN_LAYER, SPECTRUM_SCALE};
use maskdcpt_core::spectrum::SPECTRUM_FEATURES;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::data::{Loader, TrainData};
use crate::export::read_model_tensors;
use crate::loss;
use crate::model::classifier::{
    ClassifierShape, DEFAULT_SPECTRUM_HIDDEN, SPECTRUM_PREFIX, SpectralBranch, spectral_signatures,
};
use crate::net::{CLASSIFIER_PREFIX, HeadLoad, MaskDcptNet};
use crate::optim::AdamW;
use crate::params::{ParamBuilder, ParamSet};
use crate::train::{TORCH_RNG, parse_device};

/// How much data the fit caches and how long it trains on it.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Batches of the config's `[data]` to cache (each `[data] batch` crops).
    pub batches: u64,
    /// Passes over the cached training part.
    pub epochs: usize,
    /// Samples per optimiser step.
    pub minibatch: i64,
    /// Fraction of the cached samples held out to report accuracy on (the last ones).
    pub validation: f64,
    /// Start from a fresh branch even when the model has one.
    pub fresh: bool,
    /// Class indices whose logits the branch moves (empty: all).
    pub classes: Vec<i64>,
    /// Keep the model's branch and train a specialist beside it (see the module docs).
    pub add: bool,
    /// File holding the cached sample: read when it exists (it must hold `batches` batches),
    /// written after caching otherwise.
    pub cache: Option<PathBuf>,
}

/// Accuracy of one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss (the config's focal loss).
    pub loss: f64,
    /// Top-1 on the validation part after the epoch.
    pub validation_top1: f64,
}

/// What a fit saw and reached.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Cached samples trained on.
    pub train_samples: i64,
    /// Cached samples held out.
    pub validation_samples: i64,
    /// Top-1 on the validation part of the head without a branch.
    pub head_alone_top1: f64,
    /// Top-1 on the validation part of the model as loaded (its own branch, if any).
    pub loaded_top1: f64,
    /// Per epoch.
    pub epochs: Vec<EpochRow>,
}

/// Head logits without the branch, signatures and labels of the cached samples (on the
/// config's device).
struct Cache {
    logits: Tensor,
    signatures: Tensor,
    labels: Tensor,
}

/// Every tensor of the network and its head but the spectral branch's, named as in model files.
fn without_branch(net: &MaskDcptNet) -> Vec<(String, Tensor)> {
    let branch = format!("{CLASSIFIER_PREFIX}{SPECTRUM_PREFIX}");
    net.named_values().into_iter().filter(|(n, _)| !n.starts_with(&branch)).collect()
}

/// SHA-256 of what a cached sample depends on: the config's `[data]` and seed, the batch
/// count, and every tensor of the network and head but the branch (names and f32 values).
fn cache_key(config: &Config, net: &MaskDcptNet, batches: u64) -> Result<Tensor> {
    // The folders as the file system resolves them: the same data however a config spells it.
    let mut data = config.data.clone();
    let resolved = |path: &mut std::path::PathBuf| {
        if let Ok(canonical) = path.canonicalize() {
            *path = canonical;
        }
    };
    data.clean.iter_mut().for_each(resolved);
    data.paired.iter_mut().for_each(|source| resolved(&mut source.dir));
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(&(&data, config.train.seed, batches))?);
    for (name, value) in without_branch(net) {
        hash.update(name.as_bytes());
        let values = Vec::<f32>::try_from(value.to_kind(Kind::Float).flatten(0, -1))?;
        values.iter().for_each(|v| hash.update(v.to_le_bytes()));
    }
    Ok(Tensor::from_slice(hash.finalize().as_slice()))
}

impl Cache {
    /// The cache in `path`, on `device`, if it was made with `key` ([`cache_key`]) and holds
    /// `samples` samples of `classes` classes.
    fn read(path: &Path, key: &Tensor, samples: i64, classes: i64, device: Device) -> Result<Self> {
        let what = path.display();
        let mut tensors = Tensor::read_safetensors(path)
            .with_context(|| format!("cannot read the fit cache {what} (delete it to cache anew)"))?;
        let mut take = |name: &str| -> Result<Tensor> {
            let at = tensors.iter().position(|(n, _)| n == name);
            let (_, t) = tensors.swap_remove(at.with_context(|| format!("fit cache {what} has no `{name}`"))?);
            Ok(t.to_device(device))
        };
        ensure!(
            take("key")?.equal(key),
            "fit cache {what} was made from another model (network or head), [data], seed or --batches: delete \
             it to cache anew, or name another --cache"
        );
        let cache = Self { logits: take("logits")?, signatures: take("signatures")?, labels: take("labels")? };
        let shapes = [cache.logits.size(), cache.signatures.size(), cache.labels.size()];
        ensure!(
            shapes == [vec![samples, classes], vec![samples, SPECTRUM_FEATURES as i64], vec![samples]],
            "fit cache {what} is damaged: its key matches, but it holds tensors of shapes {shapes:?} where --batches \
             and [data] batch make {samples} samples of {classes} classes; delete it to cache anew"
        );
        Ok(cache)
    }

    fn write(&self, path: &Path, key: &Tensor) -> Result<()> {
        let named =
            [("key", key), ("logits", &self.logits), ("signatures", &self.signatures), ("labels", &self.labels)];
        Tensor::write_safetensors(&named, path)
            .with_context(|| format!("cannot write the fit cache {}", path.display()))
    }

    fn rows(&self, index: &Tensor) -> Self {
        let pick = |t: &Tensor| t.index_select(0, index);
        Self { logits: pick(&self.logits), signatures: pick(&self.signatures), labels: pick(&self.labels) }
    }

    fn split(&self, at: i64) -> (Self, Self) {
        let n = self.labels.size()[0];
        let part = |start: i64, len: i64| Self {
            logits: self.logits.narrow(0, start, len),
            signatures: self.signatures.narrow(0, start, len),
            labels: self.labels.narrow(0, start, len),
        };
        (part(0, at), part(at, n - at))
    }

    /// Top-1 of the cached logits plus `extra` (`[N, classes]`).
    fn top1(&self, extra: Option<&Tensor>) -> f64 {
        let logits = match extra {
            Some(extra) => &self.logits + extra,
            None => self.logits.shallow_clone(),
        };
        logits.argmax(1, false).eq_tensor(&self.labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
    }
}

/// Fits the spectral branch of the head of `model` (a model file with a classification
/// head of the config's shape) on batches of the config's `[data]`; returns the model with the
/// fitted branch (every other tensor as loaded, named as in model files) and the report.
pub fn fit_spectrum(
    config: &Config,
    model: &Path,
    options: &FitOptions,
    show_progress: bool,
) -> Result<(Vec<(String, Tensor)>, FitReport)> {
    let shape = check(config, options)?;
    let device = parse_device(&config.train.device)?;
    if config.train.threads > 0 {
        tch::set_num_threads(config.train.threads);
    }
    let fresh_hidden = if options.add { DEFAULT_SPECTRUM_HIDDEN } else { shape.spectrum_hidden };
    let (net, loaded, fresh) = load(config, shape, model, fresh_hidden, device)?;
    ensure!(
        !options.add || loaded.is_some(),
        "--add trains a specialist beside the model's spectral branch, but {} has none",
        model.display()
    );

    let cache = match &options.cache {
        Some(path) => {
            let key = cache_key(config, &net, options.batches)?;
            if path.exists() {
                Cache::read(path, &key, options.batches as i64 * config.data.batch, shape.classes, device)?
            } else {
                let cache = cache_samples(config, &net, options, show_progress)?;
                cache.write(path, &key)?;
                cache
            }
        }
        None => cache_samples(config, &net, options, show_progress)?,
    };
    let samples = cache.labels.size()[0];
    let held_out = ((samples as f64 * options.validation).round() as i64).clamp(1, samples - 1);
    let (mut train, mut validation) = cache.split(samples - held_out);
    let head_alone_top1 = validation.top1(None);
    let loaded_top1 = match &loaded {
        Some(branch) => branch.top1(&validation),
        None => head_alone_top1,
    };

    let (base, mut fitted) = match loaded {
        Some(branch) if options.add => {
            for part in [&mut train, &mut validation] {
                part.logits = &part.logits + tch::no_grad(|| branch.logits(&part.signatures));
            }
            fresh.copy_standardisation(&branch);
            (Some(branch), fresh)
        }
        Some(branch) if !options.fresh => (None, branch),
        _ => {
            fresh.module.calibrate(&fresh.params, &train.signatures);
            (None, fresh)
        }
    };
    if !options.classes.is_empty() {
        fitted.restrict(&options.classes, shape.classes)?;
    }
    let epochs = fitted.train(config, &train, &validation, options);
    let branch = match &base {
        Some(base) => base.stacked_with(&fitted),
        None => fitted.params.named_values(),
    };
    let mut named = without_branch(&net);
    named.extend(branch.into_iter().map(|(name, value)| (format!("{CLASSIFIER_PREFIX}{name}"), value)));
    let report = FitReport {
        train_samples: train.labels.size()[0],
        validation_samples: held_out,
        head_alone_top1,
        loaded_top1,
        epochs,
    };
    Ok((named, report))
}

/// The config's head, once the options and the config suit a fit.
fn check<'a>(config: &'a Config, options: &FitOptions) -> Result<&'a ClassifierShape> {
    ensure!(options.batches >= 2, "--batches {}: the fit needs at least 2 batches", options.batches);
    ensure!(options.epochs >= 1 && options.minibatch >= 1, "--epochs and --minibatch must be at least 1");
    ensure!(!(options.add && options.fresh), "--add keeps the model's branch and --fresh replaces it: choose one");
    ensure!(
        options.validation > 0.0 && options.validation < 1.0,
        "--validation {} must be between 0 and 1 (a fraction of the cached samples)",
        options.validation
    );
    let Some(shape) = config.classifier.as_ref().filter(|c| c.spectrum) else {
        bail!("fit-spectrum fits a spectral branch: the config needs [classifier] with spectrum = true");
    };
    if let Some(&class) = options.classes.iter().find(|&&c| !(0..shape.classes).contains(&c)) {
        bail!("class index {class} is out of range: the head has {} classes", shape.classes);
    }
    let decay = config.classifier_optim().weight_decay;
    ensure!(
        decay == 0.0,
        "the classifier optimiser's weight_decay is {decay}: fit-spectrum needs 0 (decay would shrink the \
         standardisation, which is fixed from the sample)"
    );
    Ok(shape)
}

/// The network of the config's shape with `model`'s weights, a copy of the file's spectral
/// branch (if it has one) and a fresh branch of `fresh_hidden` units, from the config's seed.
fn load(
    config: &Config,
    shape: &ClassifierShape,
    model: &Path,
    fresh_hidden: i64,
    device: Device,
) -> Result<(MaskDcptNet, Option<BranchParams>, BranchParams)> {
    let what = model.display().to_string();
    let tensors = read_model_tensors(model, device)?;
    let (net, fresh) = {
        let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(config.train.seed as i64);
        let net = MaskDcptNet::new(&config.model, Some(shape), device)?;
        (net, BranchParams::new(shape.classes, fresh_hidden, device))
    };
    let loaded = match net.load_model_tensors(&tensors, &what)? {
        HeadLoad::None => bail!("{what} has no classification head: fit-spectrum fits the branch of a trained head"),
        HeadLoad::WithoutBranch => None,
        HeadLoad::WithBranch => {
            let head = &net.classifier.as_ref().expect("the head loaded").params;
            let named: Vec<_> =
                head.named_values().into_iter().filter(|(n, _)| n.starts_with(SPECTRUM_PREFIX)).collect();
            let branch = BranchParams::new(shape.classes, shape.spectrum_hidden, device);
            branch.params.load_flat(branch.params.values(), &named, &what)?;
            Some(branch)
        }
    };
    Ok((net, loaded, fresh))
}

/// Head logits (no branch), signatures and labels of batches `1..=options.batches`.
fn cache_samples(config: &Config, net: &MaskDcptNet, options: &FitOptions, show_progress: bool) -> Result<Cache> {
    let data = Arc::new(TrainData::load(&config.data, config.train.seed)?);
    if !data.labelled() {
        bail!("fit-spectrum needs a class for every sample: add manifest.json or `class` to [data] paired");
    }
    let mut loader = Loader::spawn(data, 1, options.batches, config.data.workers, config.data.prefetch);
    let progress = crate::log::progress_bar(show_progress, 0, options.batches);
    let device = net.backbone.params.values().device();
    let (mut logits, mut signatures, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.batches {
        let batch = loader.next_batch()?;
        let lq = batch.lq.to_device(device);
        logits.push(tch::no_grad(|| net.feature_logits(&lq)).context("the model has a head")?);
        signatures.push(spectral_signatures(&lq));
        labels.push(batch.labels.to_device(device));
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(Cache {
        logits: Tensor::cat(&logits, 0),
        signatures: Tensor::cat(&signatures, 0),
        labels: Tensor::cat(&labels, 0),
    })
}

/// A spectral branch with its own parameters (`spectrum.*`) and, once restricted, the mask
/// (`[1, classes]`, 1 for the classes it moves) its logits are multiplied by.
struct BranchParams {
    module: SpectralBranch,
    params: ParamSet,
    mask: Option<Tensor>,
}

impl BranchParams {
    /// A branch from torch's generator (seed it first).
    fn new(classes: i64, hidden: i64, device: Device) -> Self {
        let mut builder = ParamBuilder::default();
        let module = SpectralBranch::new(&mut builder, classes, hidden);
        Self { module, params: builder.build(device), mask: None }
    }

    /// Takes `other`'s standardisation (centre and scale).
    fn copy_standardisation(&self, other: &Self) {
        let theirs: HashMap<String, Tensor> = other.params.named_values().into_iter().collect();
        for (name, value) in self.params.named_values() {
            if name == SPECTRUM_CENTRE || name == SPECTRUM_SCALE {
                tch::no_grad(|| value.detach().copy_(&theirs[&name]));
            }
        }
    }

    /// One branch whose logits are this one's plus `added`'s (which has this one's
    /// standardisation): hidden layers stacked, output weights side by side, biases summed.
    fn stacked_with(&self, added: &Self) -> Vec<(String, Tensor)> {
        let theirs: HashMap<String, Tensor> = added.params.named_values().into_iter().collect();
        let hidden = format!("{SPECTRUM_HIDDEN_LAYER}.");
        let [out_weight, out_bias] = SpectralBranch::output_layer();
        self.params
            .named_values()
            .into_iter()
            .map(|(name, value)| {
                let other = &theirs[&name];
                let stacked = if name.starts_with(&hidden) {
                    Tensor::cat(&[&value, other], 0)
                } else if name == out_weight {
                    Tensor::cat(&[&value, other], 1)
                } else if name == out_bias {
                    &value + other
                } else {
                    value.copy()
                };
                (name, stacked)
            })
            .collect()
    }

    /// Zeroes the output rows of every class but `classes` and masks the logits, so those rows
    /// get no gradient and stay zero (what the library, which adds every row, then reads).
    fn restrict(&mut self, classes: &[i64], count: i64) -> Result<()> {
        let device = self.params.values().device();
        let mask = Tensor::zeros([count], (Kind::Float, device)).index_fill(
            0,
            &Tensor::from_slice(classes).to_device(device),
            1.0,
        );
        let others = mask.eq(0.0).nonzero().squeeze_dim(1);
        let out = SpectralBranch::output_layer();
        let mut zeroed = 0;
        for (name, value) in self.params.named_values() {
            if out.contains(&name) {
                let _ = tch::no_grad(|| value.detach().index_fill_(0, &others, 0.0));
                zeroed += 1;
            }
        }
        ensure!(zeroed == out.len(), "the branch's output layer {out:?} was not found among its parameters");
        self.mask = Some(mask.unsqueeze(0));
        Ok(())
    }

    fn logits(&self, signatures: &Tensor) -> Tensor {
        let logits = self.module.forward(&self.params, signatures);
        match &self.mask {
            Some(mask) => logits * mask,
            None => logits,
        }
    }

    /// Top-1 of the cached head logits plus this branch's.
    fn top1(&self, cache: &Cache) -> f64 {
        cache.top1(Some(&tch::no_grad(|| self.logits(&cache.signatures))))
    }

    /// AdamW (the config's classifier optimiser, its schedule over all steps) on shuffled
    /// minibatches of `train` for `options.epochs` epochs.
    fn train(&mut self, config: &Config, train: &Cache, validation: &Cache, options: &FitOptions) -> Vec<EpochRow> {
        let optim = config.classifier_optim().clone();
        let peak = optim.lr;
        let mut adamw = AdamW::new(optim, self.params.values());
        let samples = train.labels.size()[0];
        let per_epoch = (samples + options.minibatch - 1) / options.minibatch;
        let total = per_epoch as u64 * options.epochs as u64;
        let device = self.params.values().device();
        let mut step = 0u64;
        let mut rows = Vec::new();
        for epoch in 1..=options.epochs {
            let order = Tensor::randperm(samples, (Kind::Int64, device));
            let mut loss_sum = 0.0;
            for k in 0..per_epoch {
                let start = k * options.minibatch;
                let part = train.rows(&order.narrow(0, start, options.minibatch.min(samples - start)));
                let loss = loss::focal(
                    &(&part.logits + self.logits(&part.signatures)),
                    &part.labels,
                    config.train.focal_gamma,
                );
                self.params.zero_grads();
                loss.backward();
                self.params.bind_grads();
                step += 1;
                adamw.step(self.params.values(), self.params.grads(), step, config.schedule.lr_at(peak, step, total));
                loss_sum += loss.double_value(&[]);
            }
            let validation_top1 = self.top1(validation);
            rows.push(EpochRow { epoch, loss: loss_sum / per_epoch as f64, validation_top1 });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stacked branch gives the sum of the two branches' logits.
    #[test]
    fn stacking_branches_adds_their_logits() {
        let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(3);
        let (classes, device) = (5, Device::Cpu);
        let base = BranchParams::new(classes, 64, device);
        let signatures = Tensor::randn([7, SPECTRUM_FEATURES as i64], (Kind::Float, device));
        base.module.calibrate(&base.params, &signatures);
        let added = BranchParams::new(classes, 32, device);
        added.copy_standardisation(&base);
        let stacked = BranchParams::new(classes, 96, device);
        stacked.params.load_flat(stacked.params.values(), &base.stacked_with(&added), "stacked").unwrap();
        let want = base.logits(&signatures) + added.logits(&signatures);
        let diff = (stacked.logits(&signatures) - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "stacked vs summed logits: {diff}");
        assert!(want.abs().max().double_value(&[]) > 0.1, "logits too small to tell");
    }
}
