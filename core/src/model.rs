//! A loaded model: validated weights plus the spec inferred from them. Immutable and cheap to
//! share between threads; engines are built from it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::spec::ModelSpec;
use crate::weights::{LoadOptions, WeightStore};

/// Weights whose architecture has been recognised and validated.
#[derive(Debug, Clone)]
pub struct Model {
    spec: ModelSpec,
    weights: WeightStore,
}

impl Model {
    /// Loads and validates a checkpoint file (`.pth` or `.safetensors`).
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        Self::from_weights(WeightStore::load(path, options)?)
    }

    /// Loads and validates a checkpoint held in memory.
    pub fn from_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Self> {
        Self::from_weights(WeightStore::from_bytes(bytes, options)?)
    }

    /// Infers the architecture of `weights` and validates every key, shape and value.
    pub fn from_weights(weights: WeightStore) -> Result<Self> {
        let spec = ModelSpec::infer(&weights)?;
        for (key, tensor) in weights.iter() {
            if let Some((index, value)) = tensor.to_f32().into_iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::NonFinite { key: key.to_owned(), index, value });
            }
        }
        Ok(Model { spec, weights })
    }

    /// The inferred architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The validated tensors.
    pub fn weights(&self) -> &WeightStore {
        &self.weights
    }

    /// The network as an op graph.
    pub fn graph(&self) -> Graph {
        Graph::from_spec(&self.spec)
    }
}
