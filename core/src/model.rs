//! A loaded model: validated weights plus the spec inferred from them. Immutable and cheap to
//! share between threads; engines are built from it.

use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::head::HeadSpec;
use crate::spec::{Architecture, ModelSpec};
use crate::weights::{LoadOptions, Tensor, WeightStore};

/// The BasicSR entry read by default from a SwinIR checkpoint: the fork's `test_SwinIR_5d.yml`
/// names no `param_key`, so BasicSR reads `params` (its `_dn` config reads `params_ema`).
const SWINIR_PARAM_KEY: &str = "params";

/// Weights whose architecture has been recognised and validated.
#[derive(Debug, Clone)]
pub struct Model {
    architecture: Architecture,
    head: Option<HeadSpec>,
    weights: WeightStore,
}

/// The embedded default model: FP16 safetensors written by `trainer export` (see
/// docs/model-card.md for its data, training and measured quality).
#[cfg(feature = "default-model")]
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../models/default.safetensors");

impl Model {
    /// The embedded default model ([`DEFAULT_MODEL`]).
    #[cfg(feature = "default-model")]
    pub fn load_default() -> Result<Self> {
        Self::from_bytes(DEFAULT_MODEL, &LoadOptions::default())
    }

    /// Loads and validates a checkpoint file (`.pth` or `.safetensors`); see
    /// [`Model::from_bytes`] for the entry read when `options` names none.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        Self::read_with(options, |o| WeightStore::load(path, o))
    }

    /// Loads and validates a checkpoint held in memory. When `options` names no entry of a
    /// BasicSR checkpoint, the one the fork's 5-task test config reads: `params_ema` (then
    /// `params`), except for SwinIR, whose config reads `params` (then `params_ema`).
    pub fn from_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Self> {
        Self::read_with(options, |o| WeightStore::from_bytes(bytes, o))
    }

    /// The model `read` gives, read again from `params` if it is a SwinIR read by default
    /// from `params_ema` and the file has `params`.
    fn read_with(options: &LoadOptions, read: impl Fn(&LoadOptions) -> Result<WeightStore>) -> Result<Self> {
        let model = Self::from_weights(read(options)?)?;
        let swinir_from_ema = options.param_key.is_none()
            && matches!(model.architecture, Architecture::Swinir(_))
            && model.weights.param_key() == Some("params_ema");
        if swinir_from_ema {
            let params = LoadOptions { param_key: Some(SWINIR_PARAM_KEY.to_owned()) };
            // A file without `params` keeps `params_ema`.
            if let Ok(store) = read(&params) {
                return Self::from_weights(store);
            }
        }
        Ok(model)
    }

    /// Infers the architecture of `weights` (and of its classification head, if it has one)
    /// and validates every key, shape and value.
    pub fn from_weights(weights: WeightStore) -> Result<Self> {
        let architecture = Architecture::infer(&weights)?;
        let head = match &architecture {
            Architecture::Nafnet(spec) => HeadSpec::from_weights(spec, &weights)?,
            Architecture::Restormer(_) | Architecture::Swinir(_) => None,
        };
        let tensors: Vec<(&str, &Tensor)> = weights.iter().collect();
        let non_finite = tensors.par_iter().find_map_first(|(key, tensor)| {
            tensor.first_non_finite().map(|(index, value)| Error::NonFinite { key: (*key).to_owned(), index, value })
        });
        if let Some(error) = non_finite {
            return Err(error);
        }
        Ok(Model { architecture, head, weights })
    }

    /// The degradation-classification head, when the file carries one.
    pub fn head(&self) -> Option<&HeadSpec> {
        self.head.as_ref()
    }

    /// The inferred architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The NAFNet spec, or an error saying that `user` (e.g. "the CUDA engine") runs NAFNet
    /// networks only.
    pub fn nafnet(&self, user: &str) -> Result<&ModelSpec> {
        self.architecture.nafnet(user)
    }

    /// The validated tensors.
    pub fn weights(&self) -> &WeightStore {
        &self.weights
    }

    /// The network as an op graph, for `user` (NAFNet networks only: see [`Model::nafnet`]).
    pub fn graph(&self, user: &str) -> Result<Graph> {
        Ok(Graph::from_spec(self.nafnet(user)?))
    }
}

/// Test support: models with deterministic random weights.
#[cfg(test)]
pub(crate) mod testing {
    use super::Model;
    use crate::spec::{Architecture, Family, ModelSpec};
    use crate::weights::{Format, Tensor, WeightStore};

    /// The smallest MaskDCPT network: width 4, one level, one block everywhere.
    pub fn tiny_spec() -> ModelSpec {
        ModelSpec { family: Family::MaskDcpt, width: 4, enc_blocks: vec![1], middle_blocks: 1, dec_blocks: vec![1] }
    }

    /// `spec` with LayerNorm scales 1 and every other value uniform in ±0.2 (xorshift, `seed`).
    pub fn random_model(spec: &ModelSpec, seed: u32) -> Model {
        random_architecture(&Architecture::Nafnet(spec.clone()), seed)
    }

    /// [`random_model`] for any architecture.
    pub fn random_architecture(architecture: &Architecture, seed: u32) -> Model {
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.4
        };
        let tensors = architecture
            .expected_tensors()
            .into_iter()
            .map(|(key, shape)| {
                let n: usize = shape.iter().product();
                let is_scale = key.contains("norm") && key.ends_with("weight");
                let values: Vec<f32> = (0..n).map(|_| if is_scale { 1.0 } else { next() }).collect();
                let tensor = Tensor::from_f32(shape, &values).expect("sizes match");
                (key, tensor)
            })
            .collect();
        Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None)).expect("valid by construction")
    }
}
