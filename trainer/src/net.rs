//! The trained network: the NAFNet backbone plus, optionally, the classification head, each
//! with its own flat parameter set. Names: backbone keys as in the fork; head keys under
//! [`CLASSIFIER_PREFIX`] (the prefix exports and `maskdcpt-core` use).

use anyhow::{Context, Result, ensure};
use tch::{Device, Tensor};

use crate::export::ModelTensors;
use crate::model::classifier::{Classifier, ClassifierShape, FeatureSource, SPECTRUM_PREFIX};
use crate::model::mask::PatchMask;
use crate::model::nafnet::{Nafnet, NafnetOutput, NafnetShape};
use crate::params::{ParamBuilder, ParamSet};

/// Prefix of the classification head's tensors in checkpoints and exported files.
pub const CLASSIFIER_PREFIX: &str = "classifier.";

/// What a load took from the file for the classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLoad {
    /// Nothing: the network has no head, or the file none (the head keeps its initialisation).
    None,
    /// The head, without a spectral branch (a branch of the network keeps its initialisation).
    WithoutBranch,
    /// The head and its spectral branch.
    WithBranch,
}

impl HeadLoad {
    /// Whether the head came from the file.
    pub fn head(self) -> bool {
        self != HeadLoad::None
    }
}

/// A network with its parameters.
pub struct Network<M> {
    /// The module (parameter ids).
    pub module: M,
    /// Its parameters.
    pub params: ParamSet,
}

/// Backbone and optional head.
pub struct MaskDcptNet {
    /// The restoration network.
    pub backbone: Network<Nafnet>,
    /// The degradation classifier (pre-training, and fine-tuning when kept).
    pub classifier: Option<Network<Classifier>>,
}

/// Output of one forward pass.
pub struct NetOutput {
    /// Restored image (or masked reconstruction).
    pub image: Tensor,
    /// Class logits when the head exists.
    pub logits: Option<Tensor>,
}

impl MaskDcptNet {
    /// Builds freshly initialised networks on `device` (torch's RNG must be seeded first).
    pub fn new(shape: &NafnetShape, head: Option<&ClassifierShape>, device: Device) -> Result<Self> {
        let mut builder = ParamBuilder::default();
        let module = Nafnet::new(&mut builder, shape)?;
        let backbone = Network { module, params: builder.build(device) };
        let classifier = head
            .map(|head| -> Result<_> {
                let dims: Vec<i64> = (0..shape.levels()).rev().map(|stage| shape.decoder_channels(stage)).collect();
                let mut builder = ParamBuilder::default();
                let module = Classifier::new(&mut builder, &dims, head).context("classifier")?;
                Ok(Network { module, params: builder.build(device) })
            })
            .transpose()?;
        Ok(Self { backbone, classifier })
    }

    /// Restoration forward (`ending + input`), with logits when the head exists.
    pub fn forward(&self, input: &Tensor) -> NetOutput {
        let out = self.backbone.module.forward(&self.backbone.params, input);
        self.with_logits(input, out)
    }

    /// Masked pre-training forward (reconstruction without the input residual).
    pub fn forward_masked(&self, input: &Tensor, mask: &PatchMask) -> Result<NetOutput> {
        let out = self.backbone.module.forward_masked(&self.backbone.params, input, mask)?;
        let embeds_image = self.classifier.as_ref().is_some_and(|c| c.module.embeds_image());
        // Only a head that embeds the image reads the masked input.
        let seen = if embeds_image { input * mask.at_level(0)? } else { input.shallow_clone() };
        Ok(self.with_logits(&seen, out))
    }

    /// Adds the head's logits over `out`'s features (those the head reads) and `seen`, the
    /// image the backbone read (what a head that embeds the image reads).
    fn with_logits(&self, seen: &Tensor, out: NafnetOutput) -> NetOutput {
        let logits = self.classifier.as_ref().map(|c| c.module.forward(&c.params, seen, head_input(c, &out)));
        NetOutput { image: out.image, logits }
    }

    /// The head's logits without its spectral branch on a restoration forward of `input`, when
    /// the head exists.
    pub fn feature_logits(&self, input: &Tensor) -> Option<Tensor> {
        let c = self.classifier.as_ref()?;
        let out = self.backbone.module.forward(&self.backbone.params, input);
        Some(c.module.feature_logits(&c.params, input, head_input(c, &out)))
    }

    /// Every tensor by the name files give it (head keys under [`CLASSIFIER_PREFIX`]).
    pub fn named_values(&self) -> Vec<(String, Tensor)> {
        self.param_sets()
            .into_iter()
            .flat_map(|(prefix, params)| {
                params.named_values().into_iter().map(move |(name, t)| (format!("{prefix}{name}"), t))
            })
            .collect()
    }

    /// Every parameter set with the prefix its names carry in files.
    pub fn param_sets(&self) -> Vec<(&'static str, &ParamSet)> {
        let mut sets = vec![("", &self.backbone.params)];
        if let Some(c) = &self.classifier {
            sets.push((CLASSIFIER_PREFIX, &c.params));
        }
        sets
    }

    /// Loads weights by name (backbone keys, head keys under [`CLASSIFIER_PREFIX`]; a head
    /// reading decoder features); the head is loaded only when `named` has it, otherwise it
    /// keeps its initialisation. Returns what the head took.
    pub fn load_named(&self, named: &[(String, Tensor)], what: &str) -> Result<HeadLoad> {
        self.load_with_head_source(named, FeatureSource::Decoder, what)
    }

    /// [`Self::load_named`] for a model file, whose head must read the features this
    /// network's head reads (a head trained on decoder features is no head for encoder ones).
    /// A head without a spectral branch loads into one with a branch, which keeps its
    /// initialisation.
    pub fn load_model_tensors(&self, model: &ModelTensors, what: &str) -> Result<HeadLoad> {
        self.load_with_head_source(&model.named, model.head_features, what)
    }

    fn load_with_head_source(
        &self,
        named: &[(String, Tensor)],
        head_features: FeatureSource,
        what: &str,
    ) -> Result<HeadLoad> {
        let (head, body): (Vec<_>, Vec<_>) = named
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .partition(|(name, _)| name.starts_with(CLASSIFIER_PREFIX));
        let backbone = &self.backbone.params;
        backbone.load_flat(backbone.values(), &body, what)?;
        match &self.classifier {
            Some(c) if !head.is_empty() => {
                ensure!(
                    c.module.source() == head_features,
                    "{what}: its classification head reads the {} features but [classifier] features is {:?}",
                    head_features.name(),
                    c.module.source().name()
                );
                let mut head: Vec<_> =
                    head.into_iter().map(|(n, t)| (n[CLASSIFIER_PREFIX.len()..].to_string(), t)).collect();
                let loaded = if head.iter().any(|(n, _)| n.starts_with(SPECTRUM_PREFIX)) {
                    HeadLoad::WithBranch
                } else {
                    HeadLoad::WithoutBranch
                };
                if loaded == HeadLoad::WithoutBranch {
                    // A head trained without a spectral branch: the branch keeps its initialisation.
                    head.extend(c.params.named_values().into_iter().filter(|(n, _)| n.starts_with(SPECTRUM_PREFIX)));
                }
                c.params.load_flat(c.params.values(), &head, what)?;
                Ok(loaded)
            }
            _ => Ok(HeadLoad::None),
        }
    }
}

/// The backbone features of `out` that the head `c` reads.
fn head_input<'a>(c: &Network<Classifier>, out: &'a NafnetOutput) -> &'a [Tensor] {
    match c.module.source() {
        FeatureSource::Decoder => &out.decoder_features,
        FeatureSource::Encoder => &out.encoder_features,
    }
}
