//! From a trainer checkpoint to files other tools load: safetensors (the EMA backbone under
//! the fork's keys, optionally the classification head under `classifier.` and the class ids
//! in the metadata), and BasicSR `.pth` (`params` = live weights, `params_ema` = EMA; only
//! the backbone, so the official test script's strict load accepts it). Also reads any model
//! file back as named tensors (for `--init` and `eval`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use maskdcpt_core::head::{self, FEATURES_METADATA};
use maskdcpt_core::weights::{LoadOptions, WeightStore};
use safetensors::tensor::Dtype;
use tch::{Device, Tensor};

use crate::checkpoint::{self, CheckpointData};
use crate::config::Config;
use crate::host::{HostTensor, safetensors_bytes};
use crate::model::classifier::FeatureSource;
use crate::net::CLASSIFIER_PREFIX;
use crate::pickle_writer;

/// Metadata key listing the class ids (comma separated, index order) of an exported head.
pub const CLASSES_METADATA: &str = "maskdcpt.classes";

/// Output format of `trainer export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// safetensors with the EMA weights.
    Safetensors,
    /// BasicSR `.pth` with `params` and `params_ema`.
    Pth,
}

/// Precision of exported safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDtype {
    /// float32.
    F32,
    /// float16 (half the size; `maskdcpt-core` converts on load).
    F16,
}

/// A model file read as named float tensors.
pub struct ModelTensors {
    /// Every tensor by name (head keys under [`CLASSIFIER_PREFIX`]).
    pub named: Vec<(String, Tensor)>,
    /// The features its classification head reads (a checkpoint's `[classifier]`, a file's
    /// metadata; decoder when neither says).
    pub head_features: FeatureSource,
    /// The config a trainer checkpoint stores (`None` for exported and official files).
    pub config: Option<Config>,
}

/// A model file: a trainer checkpoint's EMA weights (head included) with its config, or an
/// exported/official `.safetensors` / `.pth` (BasicSR `params_ema`, then `params`) through
/// maskdcpt-core's readers.
pub fn read_model_tensors(path: &Path, device: Device) -> Result<ModelTensors> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    if checkpoint::is_checkpoint(&bytes) {
        let data = checkpoint::from_bytes(&bytes, path, device)?;
        let config = checkpoint_config(&data, path)?;
        return Ok(ModelTensors {
            named: data.with_prefix("ema."),
            head_features: config.head_features(),
            config: Some(config),
        });
    }
    let store = WeightStore::from_bytes(&bytes, &LoadOptions::default())
        .with_context(|| format!("cannot load model {}", path.display()))?;
    let head_features = head::feature_source(&store).with_context(|| format!("model {}", path.display()))?;
    let named = store
        .iter()
        .map(|(name, t)| {
            let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            (name.to_string(), Tensor::from_slice(&t.to_f32()).view(shape.as_slice()).to_device(device))
        })
        .collect();
    Ok(ModelTensors { named, head_features, config: None })
}

/// The config a trainer checkpoint stores (`path` named in errors).
pub fn checkpoint_config(data: &CheckpointData, path: &Path) -> Result<Config> {
    toml::from_str(data.meta("config", path)?).with_context(|| format!("{}: stored config is invalid", path.display()))
}

fn backbone_only(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named.into_iter().filter(|(n, _)| !n.starts_with(CLASSIFIER_PREFIX)).collect()
}

/// Options of [`export`].
pub struct ExportOptions {
    /// Output format.
    pub format: Format,
    /// Include the classification head (safetensors only).
    pub with_classifier: bool,
    /// Precision (safetensors only).
    pub dtype: ExportDtype,
}

/// Writes the model of a trainer checkpoint to `out` (atomically).
pub fn export(checkpoint_path: &Path, out: &Path, options: &ExportOptions) -> Result<()> {
    let data = checkpoint::load(checkpoint_path, Device::Cpu)?;
    let bytes = match options.format {
        Format::Pth => {
            if options.with_classifier {
                bail!(
                    "--with-classifier needs --format safetensors: the official loader's strict key check rejects extra keys"
                );
            }
            let host = |prefix: &str| -> Vec<(String, HostTensor)> {
                backbone_only(data.with_prefix(prefix))
                    .iter()
                    .map(|(n, t)| (n.clone(), HostTensor::from_tensor(t)))
                    .collect()
            };
            pickle_writer::write_state_dicts(&[("params", host("params.")), ("params_ema", host("ema."))])?
        }
        Format::Safetensors => exported_safetensors(&data, checkpoint_path, options)?,
    };
    checkpoint::write_atomically(out, &bytes)
}

fn exported_safetensors(data: &CheckpointData, path: &Path, options: &ExportOptions) -> Result<Vec<u8>> {
    let ema = data.with_prefix("ema.");
    if !options.with_classifier {
        return model_safetensors(&backbone_only(ema), None, options.dtype);
    }
    if !ema.iter().any(|(n, _)| n.starts_with(CLASSIFIER_PREFIX)) {
        bail!("--with-classifier: this checkpoint has no classification head (its config has no [classifier])");
    }
    let features = checkpoint_config(data, path)?.head_features();
    model_safetensors(&ema, Some(features), options.dtype).context("--with-classifier")
}

/// A model file's bytes: `named` tensors (head keys under [`CLASSIFIER_PREFIX`]) as `dtype`.
/// With `head_features` (the file keeps the head, which reads those features) the metadata
/// also names the classes and the features, for `maskdcpt-core`; the head must then have
/// one output per built-in class.
pub fn model_safetensors(
    named: &[(String, Tensor)],
    head_features: Option<FeatureSource>,
    dtype: ExportDtype,
) -> Result<Vec<u8>> {
    let mut metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    if let Some(features) = head_features {
        let classes = named
            .iter()
            .find(|(n, _)| n == &format!("{CLASSIFIER_PREFIX}fc.weight"))
            .map(|(_, t)| t.size()[0])
            .unwrap_or_default();
        if classes != maskdcpt_degrade::Class::COUNT as i64 {
            bail!(
                "the head has {classes} outputs but the exported class names are the {} built-in classes",
                maskdcpt_degrade::Class::COUNT
            );
        }
        let ids: Vec<&str> = maskdcpt_degrade::Class::ALL.iter().map(|c| c.id()).collect();
        metadata.insert(CLASSES_METADATA.into(), ids.join(","));
        metadata.insert(FEATURES_METADATA.into(), features.name().into());
    }
    let dtype = match dtype {
        ExportDtype::F32 => Dtype::F32,
        ExportDtype::F16 => Dtype::F16,
    };
    safetensors_bytes(named, dtype, &metadata)
}
