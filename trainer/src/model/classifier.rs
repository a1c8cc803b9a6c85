//! The degradation-classification decoder (spec §2.6): an ODISE-style multi-scale aggregator
//! over the backbone's decoder features, highest resolution first, as `PromptIR_NoImg_DC`
//! (state s = 0) or, with [`ClassifierShape::embed_image`], `PromptIR_DC` (s = the input
//! image through a 7×7 stride-2 conv and a channel LayerNorm, features from level 1 down).
//! For each scale i: s = Stage_i(s + softmax(mixing_weights)_i · feature_i), then
//! 1×1 conv to the next scale's width (the last keeps its width) → 2×2 max-pool → ReLU; then
//! `last_stage`, global mean, `fc`. Stages are inverted bottlenecks (1×1 → 3×3 → 1×1 at twice
//! the width, no bias, each followed by a channel LayerNorm with eps 1e-6). With
//! [`ClassifierShape::spectrum`] a spectral branch adds its logits: the image's
//! [`spectral_signature`], standardised per value (`spectrum.centre`, `spectrum.scale`: set
//! from the training data by [`Classifier::calibrate_spectrum`], not trained), through
//! `spectrum.0` (linear, ReLU) and `spectrum.2` (linear).

use anyhow::{Result, ensure};
pub use maskdcpt_core::graph::FeatureSource;
pub use maskdcpt_core::head::SPECTRUM_PREFIX;
use maskdcpt_core::head::{SPECTRUM_CENTRE, SPECTRUM_HIDDEN_LAYER, SPECTRUM_OUTPUT_LAYER, SPECTRUM_SCALE};
use maskdcpt_core::spectrum::{SPECTRUM_FEATURES, spectral_signature};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::layers::{ChannelNorm, Conv, ConvInit, ConvShape, Linear};
use crate::params::{Init, ParamBuilder, ParamId, ParamSet};

/// LayerNorm epsilon of the head (`LayerNorm(channels_first)` in the reference, eps 1e-6).
const LAYER_NORM_EPS: f64 = 1e-6;

/// Hidden width of a spectral branch unless a config or file says otherwise.
pub const DEFAULT_SPECTRUM_HIDDEN: i64 = 64;

/// Added to the standard deviation of each signature value when calibrating (a value that
/// never varies in the sample then stays near its centre instead of dividing by zero).
const SPECTRUM_MIN_SCALE: f64 = 1e-3;

/// Sizes of the classification head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierShape {
    /// Number of degradation classes.
    pub classes: i64,
    /// Bottleneck blocks per scale and in `last_stage` (`num_res_blocks`, reference default 2).
    #[serde(default = "default_blocks")]
    pub blocks_per_scale: usize,
    /// Start from the input image (`PromptIR_DC`'s `conv_embed`: 7×7 conv, stride 2, to the
    /// first scale's width, then a channel LayerNorm) instead of zeros. Its first scale is
    /// then the half-resolution one: the head reads the decoder features from level 1 down.
    #[serde(default)]
    pub embed_image: bool,
    /// Which of the backbone's features the head reads: `decoder` (DCPT's hooks, the
    /// default) or `encoder`.
    #[serde(default, with = "feature_source")]
    pub features: FeatureSource,
    /// Add a spectral branch: the image's power-spectrum signature (maskdcpt-core's
    /// `spectrum` module) through a two-layer perceptron, its logits added to the head's.
    #[serde(default)]
    pub spectrum: bool,
    /// Hidden units of the spectral branch ([`DEFAULT_SPECTRUM_HIDDEN`]; a branch grown by
    /// `trainer fit-spectrum --add` has its own and its specialist's).
    #[serde(default = "default_spectrum_hidden")]
    pub spectrum_hidden: i64,
}

fn default_blocks() -> usize {
    2
}

fn default_spectrum_hidden() -> i64 {
    DEFAULT_SPECTRUM_HIDDEN
}

/// (De)serialises a [`FeatureSource`] by its name.
mod feature_source {
    use maskdcpt_core::graph::FeatureSource;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(source: &FeatureSource, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(source.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FeatureSource, D::Error> {
        let name = String::deserialize(d)?;
        FeatureSource::from_name(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown features {name:?}: `decoder` or `encoder`")))
    }
}

/// A conv (no bias) followed by a channel LayerNorm: keys `{prefix}.weight`, `{prefix}.norm.*`.
struct NormedConv {
    conv: Conv,
    norm: ChannelNorm,
}

impl NormedConv {
    fn new(params: &mut ParamBuilder, prefix: &str, shape: ConvShape) -> Self {
        let conv = Conv::new(params, prefix, ConvShape { bias: false, ..shape }, ConvInit::MsraFanOut);
        let norm = ChannelNorm::new(params, &format!("{prefix}.norm"), shape.output, LAYER_NORM_EPS);
        Self { conv, norm }
    }

    fn forward(&self, p: &ParamSet, x: &Tensor) -> Tensor {
        self.norm.forward(p, &self.conv.forward(p, x))
    }
}

/// An inverted bottleneck block: d → 2d (1×1) → 2d (3×3) → d (1×1), residual, ReLUs.
struct Bottleneck {
    conv1: NormedConv,
    conv2: NormedConv,
    conv3: NormedConv,
}

impl Bottleneck {
    fn new(params: &mut ParamBuilder, prefix: &str, d: i64) -> Self {
        Self {
            conv1: NormedConv::new(params, &format!("{prefix}.conv1"), ConvShape::same(d, 2 * d, 1)),
            conv2: NormedConv::new(params, &format!("{prefix}.conv2"), ConvShape::same(2 * d, 2 * d, 3)),
            conv3: NormedConv::new(params, &format!("{prefix}.conv3"), ConvShape::same(2 * d, d, 1)),
        }
    }

    fn forward(&self, p: &ParamSet, x: &Tensor) -> Tensor {
        let y = self.conv1.forward(p, x).relu();
        let y = self.conv2.forward(p, &y).relu();
        (self.conv3.forward(p, &y) + x).relu()
    }
}

fn stage(params: &mut ParamBuilder, prefix: &str, d: i64, blocks: usize) -> Vec<Bottleneck> {
    (0..blocks).map(|j| Bottleneck::new(params, &format!("{prefix}.{j}"), d)).collect()
}

fn run_stage(blocks: &[Bottleneck], p: &ParamSet, x: Tensor) -> Tensor {
    blocks.iter().fold(x, |x, block| block.forward(p, &x))
}

/// The classification head over features of widths `feature_dims` (highest resolution first,
/// each scale half the resolution of the previous).
pub struct Classifier {
    embed: Option<(Conv, ChannelNorm)>,
    mixing_weights: ParamId,
    scales: Vec<Vec<Bottleneck>>,
    downsamples: Vec<Conv>,
    last_stage: Vec<Bottleneck>,
    fc: Linear,
    spectrum: Option<SpectralBranch>,
    feature_dims: Vec<i64>,
    source: FeatureSource,
}

impl Classifier {
    /// Declares the head's parameters with the reference keys, for a backbone whose decoder
    /// features have widths `decoder_dims` (every level, highest resolution first).
    pub fn new(params: &mut ParamBuilder, decoder_dims: &[i64], shape: &ClassifierShape) -> Result<Self> {
        ensure!(shape.classes >= 2, "the classifier needs at least 2 classes, got {}", shape.classes);
        let feature_dims = decoder_dims.get(usize::from(shape.embed_image)..).unwrap_or_default();
        ensure!(
            !feature_dims.is_empty(),
            "the classifier needs at least one feature scale (a head that embeds the image reads the decoder \
             features from half resolution down)"
        );
        let embed = shape.embed_image.then(|| {
            let d = feature_dims[0];
            let conv = ConvShape { stride: 2, ..ConvShape::same(3, d, 7) };
            let conv = Conv::new(params, "conv_embed.0", conv, ConvInit::TorchDefault);
            (conv, ChannelNorm::new(params, "conv_embed.1", d, LAYER_NORM_EPS))
        });
        let mixing_weights = params.add("mixing_weights".into(), &[feature_dims.len() as i64], Init::Ones);
        let mut scales = Vec::new();
        let mut downsamples = Vec::new();
        for (i, &d) in feature_dims.iter().enumerate() {
            scales.push(stage(params, &format!("bottleneck_layers.{i}"), d, shape.blocks_per_scale));
            let next = feature_dims.get(i + 1).copied().unwrap_or(d);
            let conv = ConvShape { bias: false, ..ConvShape::same(d, next, 1) };
            downsamples.push(Conv::new(params, &format!("downsample_layers.{i}.0"), conv, ConvInit::TorchDefault));
        }
        let last = *feature_dims.last().expect("checked non-empty");
        let last_stage = stage(params, "last_stage", last, shape.blocks_per_scale);
        let fc = Linear::new(params, "fc", last, shape.classes);
        let spectrum = shape.spectrum.then(|| SpectralBranch::new(params, shape.classes, shape.spectrum_hidden));
        Ok(Self {
            embed,
            mixing_weights,
            scales,
            downsamples,
            last_stage,
            fc,
            spectrum,
            feature_dims: feature_dims.to_vec(),
            source: shape.features,
        })
    }

    /// Whether the head reads the image (`PromptIR_DC`).
    pub fn embeds_image(&self) -> bool {
        self.embed.is_some()
    }

    /// Which backbone features the head reads.
    pub fn source(&self) -> FeatureSource {
        self.source
    }

    /// Class logits `[N, classes]` from the backbone's features of [`Self::source`] (every
    /// level, highest resolution first; a head that embeds the image reads them from level 1
    /// down) and the image the backbone read (which a head that embeds the image or has a
    /// spectral branch reads): [`Self::feature_logits`] plus the spectral branch's.
    pub fn forward(&self, p: &ParamSet, image: &Tensor, level_features: &[Tensor]) -> Tensor {
        let logits = self.feature_logits(p, image, level_features);
        match &self.spectrum {
            Some(branch) => {
                let kind = logits.kind();
                logits + branch.forward(p, &spectral_signatures(image)).to_kind(kind)
            }
            None => logits,
        }
    }

    /// The head's logits without its spectral branch (arguments as [`Self::forward`]).
    pub fn feature_logits(&self, p: &ParamSet, image: &Tensor, level_features: &[Tensor]) -> Tensor {
        let features = &level_features[usize::from(self.embeds_image())..];
        debug_assert_eq!(features.len(), self.feature_dims.len());
        let weights = p.get(self.mixing_weights).softmax(0, Kind::Float);
        let mut state = self.embed.as_ref().map(|(conv, norm)| norm.forward(p, &conv.forward(p, image)));
        for (i, (feature, blocks)) in features.iter().zip(&self.scales).enumerate() {
            let weighted = feature * weights.get(i as i64).to_kind(feature.kind());
            let input = match state.take() {
                Some(s) => s + weighted,
                None => weighted,
            };
            let s = run_stage(blocks, p, input);
            let down = &self.downsamples[i];
            state = Some(down.forward(p, &s).max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false).relu());
        }
        let s = run_stage(&self.last_stage, p, state.expect("at least one scale"));
        self.fc.forward(p, &s.mean_dim([2i64, 3].as_slice(), false, None))
    }

    /// Sets the spectral branch's standardisation from the signatures of `images` (`[N, 3,
    /// H, W]`, a sample of the training inputs); nothing without a branch.
    pub fn calibrate_spectrum(&self, p: &ParamSet, images: &Tensor) {
        if let Some(branch) = &self.spectrum {
            branch.calibrate(p, &spectral_signatures(images));
        }
    }

    /// Whether the head has a spectral branch.
    pub fn has_spectrum(&self) -> bool {
        self.spectrum.is_some()
    }
}

/// The spectral branch: standardised signature → linear → ReLU → linear. Its parameters are
/// named `spectrum.*` in the builder it is declared in.
pub struct SpectralBranch {
    centre: ParamId,
    scale: ParamId,
    hidden: Linear,
    out: Linear,
}

impl SpectralBranch {
    /// Declares the branch's parameters for `classes` outputs and `hidden` units.
    pub fn new(params: &mut ParamBuilder, classes: i64, hidden: i64) -> Self {
        let features = SPECTRUM_FEATURES as i64;
        Self {
            centre: params.add(SPECTRUM_CENTRE.into(), &[features], Init::Zeros),
            scale: params.add(SPECTRUM_SCALE.into(), &[features], Init::Ones),
            hidden: Linear::new(params, SPECTRUM_HIDDEN_LAYER, features, hidden),
            out: Linear::new(params, SPECTRUM_OUTPUT_LAYER, hidden, classes),
        }
    }

    /// Names of the output layer's weight (`[classes, hidden]`) and bias (`[classes]`): one
    /// row per class.
    pub fn output_layer() -> [String; 2] {
        [format!("{SPECTRUM_OUTPUT_LAYER}.weight"), format!("{SPECTRUM_OUTPUT_LAYER}.bias")]
    }

    /// Logits `[N, classes]` of signatures `[N, SPECTRUM_FEATURES]` (from
    /// [`spectral_signatures`]); the standardisation gets no gradient.
    pub fn forward(&self, p: &ParamSet, signatures: &Tensor) -> Tensor {
        let x = (signatures - p.get(self.centre).detach()) / p.get(self.scale).detach();
        self.out.forward(p, &self.hidden.forward(p, &x).relu())
    }

    /// Sets the standardisation to the mean and standard deviation (plus
    /// [`SPECTRUM_MIN_SCALE`]) of `signatures` (`[N, SPECTRUM_FEATURES]`, a sample of the
    /// training inputs').
    pub fn calibrate(&self, p: &ParamSet, signatures: &Tensor) {
        let signatures = signatures.to_device(p.get(self.centre).device());
        tch::no_grad(|| {
            p.get(self.centre).detach().copy_(&signatures.mean_dim(0, false, Kind::Float));
            let std = signatures.std_dim(0, false, false) + SPECTRUM_MIN_SCALE;
            p.get(self.scale).detach().copy_(&std);
        });
    }
}

/// The [`spectral_signature`] of each image of `images` (`[N, C, H, W]`), computed on the CPU
/// by maskdcpt-core (what the library reads), as `[N, SPECTRUM_FEATURES]` float on their device.
pub fn spectral_signatures(images: &Tensor) -> Tensor {
    let (n, c, h, w) = images.size4().expect("a batch of images is 4-D");
    let host = images.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().flatten(0, -1);
    let values = Vec::<f32>::try_from(&host).expect("a float tensor converts to Vec<f32>");
    let per_image = (c * h * w) as usize;
    let signatures: Vec<f32> = values
        .chunks_exact(per_image)
        .flat_map(|image| spectral_signature(image, c as usize, h as usize, w as usize))
        .collect();
    Tensor::from_slice(&signatures).view([n, SPECTRUM_FEATURES as i64]).to_device(images.device())
}
