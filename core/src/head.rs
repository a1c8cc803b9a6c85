//! The degradation-classification head (`PromptIR_NoImg_DC` or `PromptIR_DC` of MaskDCPT
//! pre-training, as exported by `trainer export --with-classifier` under
//! [`CLASSIFIER_PREFIX`]): its shape inferred and checked from the keys, and its class names
//! from the file's metadata.
//!
//! Over the backbone's decoder features (highest resolution first; the encoder's where the
//! metadata [`FEATURES_METADATA`] says `encoder`): state s = 0, or for a head
//! that embeds the image ([`HeadSpec::embeds_image`], keys `conv_embed.*`) s = the padded input
//! through a 7×7 stride-2 conv (zero padding 3, bias) and a channel LayerNorm, with features
//! from level 1 down; for each scale i: s = Stage_i(s + softmax(mixing_weights)_i · feature_i), then a 1×1 conv to the next
//! scale's width (the last keeps its width), 2×2 max-pool and ReLU; then `last_stage`, the
//! spatial mean and `fc`. Stages are inverted bottlenecks (1×1 → 3×3 → 1×1 at twice the width,
//! no bias, each conv followed by a channel LayerNorm with eps 1e-6, ReLUs, residual). A head
//! with a spectral branch (keys `spectrum.*`, [`HeadSpec::spectrum_hidden`]) adds
//! `spectrum.2(relu(spectrum.0((signature − spectrum.centre) / spectrum.scale)))` to the
//! logits, the signature being the padded input's
//! [`spectral_signature`](crate::spectrum::spectral_signature).

use crate::error::{Error, Result};
use crate::graph::FeatureSource;
use crate::spec::{CLASSIFIER_PREFIX, ModelSpec};
use crate::spectrum::SPECTRUM_FEATURES;
use crate::weights::WeightStore;

/// Safetensors metadata key holding the comma-separated class names.
pub const CLASSES_METADATA: &str = "maskdcpt.classes";

/// Safetensors metadata key naming the features the head reads ([`FeatureSource::name`];
/// `decoder` when absent).
pub const FEATURES_METADATA: &str = "maskdcpt.head_features";

/// LayerNorm epsilon of the head's channel norms.
pub const HEAD_LAYER_NORM_EPS: f32 = 1e-6;

/// Kernel size of the image embedding's conv (stride 2, zero padding `EMBED_KERNEL / 2`).
pub const EMBED_KERNEL: usize = 7;

/// Key of the image embedding's conv weight, whose presence marks a head that reads the image.
const EMBED_WEIGHT: &str = "conv_embed.0.weight";

/// Prefix of the spectral branch's tensor names within the head (the file's keys add
/// [`CLASSIFIER_PREFIX`]); the trainer names its parameters with these constants too.
pub const SPECTRUM_PREFIX: &str = "spectrum.";
/// The branch's standardisation centre, `[SPECTRUM_FEATURES]`.
pub const SPECTRUM_CENTRE: &str = "spectrum.centre";
/// The branch's standardisation scale, `[SPECTRUM_FEATURES]`: it divides by it, so its values
/// must be positive.
pub const SPECTRUM_SCALE: &str = "spectrum.scale";
/// The branch's hidden linear layer (`.weight` `[hidden, SPECTRUM_FEATURES]`, `.bias`), whose
/// weight's presence marks a head that has a branch.
pub const SPECTRUM_HIDDEN_LAYER: &str = "spectrum.0";
/// The branch's output linear layer (`.weight` `[classes, hidden]`, `.bias`: one row per class).
pub const SPECTRUM_OUTPUT_LAYER: &str = "spectrum.2";

/// The features a head stored in `weights` reads: the metadata [`FEATURES_METADATA`], decoder
/// when absent; another value is an error.
pub fn feature_source(weights: &WeightStore) -> Result<FeatureSource> {
    match weights.metadata(FEATURES_METADATA) {
        None => Ok(FeatureSource::Decoder),
        Some(name) => FeatureSource::from_name(name).ok_or_else(|| {
            Error::corrupt(
                "classifier",
                format!("the metadata `{FEATURES_METADATA}` is {name:?}; it must be `decoder` or `encoder`"),
            )
        }),
    }
}

/// A planar `c × h × w` feature map (a network output the head reads).
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Values, channel-major.
    pub data: Vec<f32>,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// Shape and class names of a classification head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadSpec {
    /// Channels of each feature the head reads, highest resolution first.
    pub feature_dims: Vec<usize>,
    /// Bottleneck blocks per scale and in `last_stage`.
    pub blocks_per_scale: usize,
    /// Class names, one per output (from the metadata, else `class N`).
    pub class_names: Vec<String>,
    /// Whether the head also reads the padded input image (`PromptIR_DC`'s `conv_embed`);
    /// its features then start at level 1, the embedding's resolution.
    pub embeds_image: bool,
    /// The network features the head reads.
    pub features: FeatureSource,
    /// Hidden width of the spectral branch, for a head that has one.
    pub spectrum_hidden: Option<usize>,
}

impl HeadSpec {
    /// The head stored in `weights` for the backbone `spec`, if there is one (`None` when no
    /// key has the [`CLASSIFIER_PREFIX`]); a head with missing, extra or mis-shaped tensors is
    /// an error naming the key.
    pub fn from_weights(spec: &ModelSpec, weights: &WeightStore) -> Result<Option<Self>> {
        if !weights.iter().any(|(key, _)| key.starts_with(CLASSIFIER_PREFIX)) {
            return Ok(None);
        }
        let key = |s: &str| format!("{CLASSIFIER_PREFIX}{s}");
        let embeds_image = weights.get(&key(EMBED_WEIGHT)).is_some();
        let first_level = usize::from(embeds_image);
        let feature_dims: Vec<usize> = (first_level..spec.levels()).map(|level| spec.channels_at(level)).collect();
        let fc = weights.require(&key("fc.weight"))?;
        let classes = fc.shape().first().copied().unwrap_or(0);
        let blocks_per_scale =
            (0..).take_while(|j| weights.get(&key(&format!("last_stage.{j}.conv1.weight"))).is_some()).count();
        let class_names = match weights.metadata(CLASSES_METADATA) {
            Some(names) => names.split(',').map(str::to_owned).collect(),
            None => (0..classes).map(|i| format!("class {i}")).collect(),
        };
        let spectrum_hidden = weights
            .get(&key(&format!("{SPECTRUM_HIDDEN_LAYER}.weight")))
            .map(|w| w.shape().first().copied().unwrap_or(0));
        let head = HeadSpec {
            feature_dims,
            blocks_per_scale,
            class_names,
            embeds_image,
            features: feature_source(weights)?,
            spectrum_hidden,
        };
        head.validate(weights, classes)?;
        Ok(Some(head))
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// The first level of its features the head reads: 1 when it embeds the image at stride 2,
    /// else 0.
    pub fn first_level(&self) -> usize {
        usize::from(self.embeds_image)
    }

    /// Every tensor of the head with its shape, keys without the prefix.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = vec![("mixing_weights".to_owned(), vec![self.feature_dims.len()])];
        if self.embeds_image {
            let d = self.feature_dims.first().copied().unwrap_or(0);
            out.push((EMBED_WEIGHT.to_owned(), vec![d, 3, EMBED_KERNEL, EMBED_KERNEL]));
            out.extend(
                ["conv_embed.0.bias", "conv_embed.1.weight", "conv_embed.1.bias"].map(|k| (k.to_owned(), vec![d])),
            );
        }
        let stage = |out: &mut Vec<(String, Vec<usize>)>, prefix: &str, d: usize| {
            for j in 0..self.blocks_per_scale {
                for (conv, cin, cout, k) in [("conv1", d, 2 * d, 1), ("conv2", 2 * d, 2 * d, 3), ("conv3", 2 * d, d, 1)]
                {
                    let p = format!("{prefix}.{j}.{conv}");
                    out.push((format!("{p}.weight"), vec![cout, cin, k, k]));
                    out.push((format!("{p}.norm.weight"), vec![cout]));
                    out.push((format!("{p}.norm.bias"), vec![cout]));
                }
            }
        };
        for (i, &d) in self.feature_dims.iter().enumerate() {
            stage(&mut out, &format!("bottleneck_layers.{i}"), d);
            let next = self.feature_dims.get(i + 1).copied().unwrap_or(d);
            out.push((format!("downsample_layers.{i}.0.weight"), vec![next, d, 1, 1]));
        }
        let last = *self.feature_dims.last().unwrap_or(&0);
        stage(&mut out, "last_stage", last);
        out.push(("fc.weight".to_owned(), vec![self.classes(), last]));
        out.push(("fc.bias".to_owned(), vec![self.classes()]));
        if let Some(hidden) = self.spectrum_hidden {
            out.push((SPECTRUM_CENTRE.to_owned(), vec![SPECTRUM_FEATURES]));
            out.push((SPECTRUM_SCALE.to_owned(), vec![SPECTRUM_FEATURES]));
            out.push((format!("{SPECTRUM_HIDDEN_LAYER}.weight"), vec![hidden, SPECTRUM_FEATURES]));
            out.push((format!("{SPECTRUM_HIDDEN_LAYER}.bias"), vec![hidden]));
            out.push((format!("{SPECTRUM_OUTPUT_LAYER}.weight"), vec![self.classes(), hidden]));
            out.push((format!("{SPECTRUM_OUTPUT_LAYER}.bias"), vec![self.classes()]));
        }
        out
    }

    fn validate(&self, weights: &WeightStore, classes: usize) -> Result<()> {
        if self.blocks_per_scale == 0 {
            weights.require(&format!("{CLASSIFIER_PREFIX}last_stage.0.conv1.weight"))?;
        }
        if self.feature_dims.is_empty() {
            return Err(Error::corrupt(
                "classifier",
                "the head embeds the image at half resolution but the network has no half-resolution decoder \
                 features (it has one level)",
            ));
        }
        if classes < 2 || self.classes() != classes {
            return Err(Error::corrupt(
                "classifier",
                format!(
                    "the head has {classes} outputs but the metadata `{CLASSES_METADATA}` names {} classes",
                    self.classes()
                ),
            ));
        }
        let expected = self.expected_tensors();
        for (name, shape) in &expected {
            let key = format!("{CLASSIFIER_PREFIX}{name}");
            let tensor =
                weights.get(&key).ok_or_else(|| Error::MissingKey { key: key.clone(), expected: shape.clone() })?;
            if tensor.shape() != shape.as_slice() {
                return Err(Error::ShapeMismatch { key, expected: shape.clone(), found: tensor.shape().to_vec() });
            }
        }
        let scale_key = format!("{CLASSIFIER_PREFIX}{SPECTRUM_SCALE}");
        let scale = weights.get(&scale_key).map(|t| t.to_f32()).unwrap_or_default();
        if let Some(bad) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::corrupt(
                "classifier",
                format!(
                    "`{scale_key}` holds {bad}; the spectral branch divides by it, so every value must be positive and finite"
                ),
            ));
        }
        for (key, tensor) in weights.iter().filter(|(k, _)| k.starts_with(CLASSIFIER_PREFIX)) {
            let name = &key[CLASSIFIER_PREFIX.len()..];
            if !expected.iter().any(|(n, _)| n == name) {
                return Err(Error::UnexpectedKey {
                    key: key.to_owned(),
                    shape: tensor.shape().to_vec(),
                    family: "classification head",
                });
            }
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "default-model"))]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::backend::{EngineOptions, build_engine};
    use crate::image::Image;
    use crate::model::Model;
    use crate::weights::{Format, LoadOptions};

    fn default_store() -> WeightStore {
        WeightStore::from_bytes(crate::model::DEFAULT_MODEL, &LoadOptions::default()).unwrap()
    }

    #[test]
    fn the_default_model_has_a_19_class_head() {
        let model = Model::load_default().unwrap();
        let head = model.head().expect("the default model carries its head");
        assert_eq!(head.feature_dims, [16, 32, 64, 128]);
        assert_eq!(head.blocks_per_scale, 1);
        assert_eq!(head.classes(), 19);
        assert_eq!(head.class_names[12], "low_light");
        assert_eq!(head.spectrum_hidden, Some(128)); // 64 trained with the head + a 64-unit blur-kind specialist
        let engine = build_engine(&model, &EngineOptions { threads: Some(2), ..Default::default() }).unwrap();
        let image = Image::new(21, 18, (0..21 * 18 * 3).map(|i| (i % 7) as f32 / 7.0).collect()).unwrap();
        let p = engine.classify(&image).unwrap();
        assert_eq!(p.len(), 19);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5 && p.iter().all(|v| (0.0..=1.0).contains(v)));
        // The head needs one whole-image run, whatever the tiling: its memory is checked as such.
        let small = EngineOptions { threads: Some(1), memory_limit: Some(1 << 16), ..Default::default() };
        let err = build_engine(&model, &small).unwrap().classify(&image).unwrap_err().to_string();
        assert!(err.contains("not enough memory") && err.contains("downscaled"), "{err}");
    }

    /// Heads with a missing, mis-shaped or extra tensor, or names that do not match the
    /// outputs, are refused when the model loads, naming the problem.
    #[test]
    fn malformed_heads_are_refused_at_load() {
        let store = default_store();
        let tensors = |edit: &dyn Fn(&mut BTreeMap<String, crate::weights::Tensor>)| {
            let mut t: BTreeMap<_, _> = store.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
            edit(&mut t);
            t
        };
        let names = BTreeMap::from([(CLASSES_METADATA.to_owned(), "a,b,c".to_owned())]);
        let fc = "classifier.fc.weight".to_owned();
        // The default head's spectral branch: 64 units over 128 signature values.
        let spectrum = "classifier.spectrum.0.weight".to_owned();
        let zeros = |shape: Vec<usize>| {
            let n = shape.iter().product();
            crate::weights::Tensor::from_f32(shape, &vec![0.0; n]).unwrap()
        };
        let cases: Vec<(WeightStore, &str)> = vec![
            (
                WeightStore::new(
                    tensors(&|t| drop(t.remove("classifier.last_stage.0.conv2.weight"))),
                    Format::Safetensors,
                    None,
                ),
                "missing key `classifier.last_stage.0.conv2.weight`",
            ),
            (
                WeightStore::new(
                    tensors(&|t| {
                        let w = t[&fc].clone();
                        t.insert("classifier.extra.weight".into(), w);
                    }),
                    Format::Safetensors,
                    None,
                ),
                "unexpected key `classifier.extra.weight`",
            ),
            (WeightStore::new(tensors(&|_| {}), Format::Safetensors, None).with_metadata(names), "names 3 classes"),
            (
                WeightStore::new(tensors(&|t| drop(t.remove("classifier.spectrum.centre"))), Format::Safetensors, None),
                "missing key `classifier.spectrum.centre`",
            ),
            (
                WeightStore::new(
                    tensors(&|t| drop(t.insert(spectrum.clone(), zeros(vec![64, 100])))),
                    Format::Safetensors,
                    None,
                ),
                "`classifier.spectrum.0.weight`",
            ),
            (
                WeightStore::new(
                    tensors(&|t| drop(t.insert("classifier.spectrum.scale".into(), zeros(vec![128])))),
                    Format::Safetensors,
                    None,
                ),
                "`classifier.spectrum.scale` holds 0",
            ),
            (
                WeightStore::new(tensors(&|_| {}), Format::Safetensors, None)
                    .with_metadata(BTreeMap::from([(FEATURES_METADATA.to_owned(), "middle".to_owned())])),
                "`maskdcpt.head_features` is \"middle\"; it must be `decoder` or `encoder`",
            ),
        ];
        for (store, expected) in cases {
            let err = Model::from_weights(store).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn models_without_a_head_do_not_classify() {
        let store = default_store();
        let backbone: BTreeMap<_, _> = store
            .iter()
            .filter(|(k, _)| !k.starts_with(CLASSIFIER_PREFIX))
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        let model = Model::from_weights(WeightStore::new(backbone, Format::Safetensors, None)).unwrap();
        assert!(model.head().is_none());
        let engine = build_engine(&model, &EngineOptions { threads: Some(1), ..Default::default() }).unwrap();
        let image = Image::new(16, 16, vec![0.5; 16 * 16 * 3]).unwrap();
        assert!(engine.classify(&image).unwrap_err().to_string().contains("no degradation-classification head"));
    }
}
