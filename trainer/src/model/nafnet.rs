//! NAFNet in the MaskDCPT fork's layout (`encoders.L.blocks.i`, `middle_blks.blocks.i`,
//! `decoderL.blocks.i`, `ups.L.0`, LayerNorm eps 1e-5), with two forwards: restoration
//! (`ending(x) + input`) and masked pre-training (spec §2.6: input, intro output, every
//! LayerNorm output and every spatial branch multiplied by the mask at that level; the
//! reconstruction is `ending(x)` without the input residual).

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::layers::{ChannelNorm, Conv, ConvInit, ConvShape};
use super::mask::PatchMask;
use crate::params::{Init, ParamBuilder, ParamId, ParamSet};

/// LayerNorm epsilon of the fork (`nn.LayerNorm` default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Shape of a NAFNet: width and blocks per stage (the released model: 64, [1,1,1,28], 1, [1,1,1,1]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NafnetShape {
    /// Channels at full resolution.
    pub width: i64,
    /// Blocks of each encoder level (one level per entry).
    pub enc_blocks: Vec<usize>,
    /// Blocks at the bottleneck.
    pub middle_blocks: usize,
    /// Blocks of each decoder stage (same count as `enc_blocks`).
    pub dec_blocks: Vec<usize>,
}

impl NafnetShape {
    /// Number of down-sampling levels; inputs must be multiples of `2^levels`.
    pub fn levels(&self) -> usize {
        self.enc_blocks.len()
    }

    /// Channels of decoder stage `stage` (`decoder0` is the deepest).
    pub fn decoder_channels(&self, stage: usize) -> i64 {
        self.width << (self.levels() - 1 - stage)
    }

    /// Checks the shape is buildable.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.width > 0, "model width must be positive, got {}", self.width);
        anyhow::ensure!(!self.enc_blocks.is_empty(), "enc_blocks must list at least one level");
        anyhow::ensure!(
            self.enc_blocks.len() == self.dec_blocks.len(),
            "enc_blocks has {} levels but dec_blocks has {}: they must match",
            self.enc_blocks.len(),
            self.dec_blocks.len()
        );
        Ok(())
    }
}

/// One NAFBlock(c).
struct NafBlock {
    norm1: ChannelNorm,
    conv1: Conv,
    conv2: Conv,
    sca: Conv,
    conv3: Conv,
    norm2: ChannelNorm,
    conv4: Conv,
    conv5: Conv,
    beta: ParamId,
    gamma: ParamId,
}

impl NafBlock {
    fn new(params: &mut ParamBuilder, prefix: &str, c: i64) -> Self {
        let pointwise = |input, output| ConvShape::same(input, output, 1);
        let conv = |params: &mut ParamBuilder, name: &str, shape| {
            Conv::new(params, &format!("{prefix}.{name}"), shape, ConvInit::TorchDefault)
        };
        let norm1 = ChannelNorm::new(params, &format!("{prefix}.norm1"), c, LAYER_NORM_EPS);
        let conv1 = conv(params, "conv1", pointwise(c, 2 * c));
        let conv2 = conv(params, "conv2", ConvShape { groups: 2 * c, ..ConvShape::same(2 * c, 2 * c, 3) });
        let sca = conv(params, "sca.1", pointwise(c, c));
        let conv3 = conv(params, "conv3", pointwise(c, c));
        let norm2 = ChannelNorm::new(params, &format!("{prefix}.norm2"), c, LAYER_NORM_EPS);
        let conv4 = conv(params, "conv4", pointwise(c, 2 * c));
        let conv5 = conv(params, "conv5", pointwise(c, c));
        let beta = params.add(format!("{prefix}.beta"), &[1, c, 1, 1], Init::Zeros);
        let gamma = params.add(format!("{prefix}.gamma"), &[1, c, 1, 1], Init::Zeros);
        Self { norm1, conv1, conv2, sca, conv3, norm2, conv4, conv5, beta, gamma }
    }

    fn forward(&self, p: &ParamSet, input: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let masked = |x: Tensor| match mask {
            Some(m) => x * m,
            None => x,
        };
        let x = masked(self.norm1.forward(p, input));
        let x = self.conv2.forward(p, &self.conv1.forward(p, &x));
        let x = simple_gate(&x);
        let attention = self.sca.forward(p, &x.mean_dim([2i64, 3].as_slice(), true, None));
        let x = masked(self.conv3.forward(p, &(x * attention)));
        let y = input + x * p.get(self.beta);
        let x = masked(self.norm2.forward(p, &y));
        let x = self.conv5.forward(p, &simple_gate(&self.conv4.forward(p, &x)));
        y + x * p.get(self.gamma)
    }
}

/// SimpleGate: first half of the channels times the second half.
fn simple_gate(x: &Tensor) -> Tensor {
    let halves = x.chunk(2, 1);
    &halves[0] * &halves[1]
}

/// A stage: `{prefix}.blocks.{i}`.
struct Stage(Vec<NafBlock>);

impl Stage {
    fn new(params: &mut ParamBuilder, prefix: &str, c: i64, blocks: usize) -> Self {
        Self((0..blocks).map(|i| NafBlock::new(params, &format!("{prefix}.blocks.{i}"), c)).collect())
    }

    fn forward(&self, p: &ParamSet, x: Tensor, mask: Option<&Tensor>) -> Tensor {
        self.0.iter().fold(x, |x, block| block.forward(p, &x, mask))
    }
}

/// The NAFNet backbone.
pub struct Nafnet {
    shape: NafnetShape,
    intro: Conv,
    encoders: Vec<Stage>,
    downs: Vec<Conv>,
    middle: Stage,
    ups: Vec<Conv>,
    decoders: Vec<Stage>,
    ending: Conv,
}

/// What a forward pass returns.
pub struct NafnetOutput {
    /// The image: restoration (`ending + input`) or the masked reconstruction (`ending` alone).
    pub image: Tensor,
    /// Output of each decoder stage, highest resolution first (what the classifier reads).
    pub decoder_features: Vec<Tensor>,
    /// Output of each encoder stage, highest resolution first (what a head reading
    /// [`FeatureSource::Encoder`](super::classifier::FeatureSource::Encoder) gets).
    pub encoder_features: Vec<Tensor>,
}

impl Nafnet {
    /// Declares every parameter with the fork's keys.
    pub fn new(params: &mut ParamBuilder, shape: &NafnetShape) -> Result<Self> {
        shape.validate()?;
        let w = shape.width;
        let intro = Conv::new(params, "intro", ConvShape::same(3, w, 3), ConvInit::TorchDefault);
        let mut encoders = Vec::new();
        let mut downs = Vec::new();
        for (level, &blocks) in shape.enc_blocks.iter().enumerate() {
            let c = w << level;
            encoders.push(Stage::new(params, &format!("encoders.{level}"), c, blocks));
            let down = ConvShape { stride: 2, padding: 0, ..ConvShape::same(c, 2 * c, 2) };
            downs.push(Conv::new(params, &format!("downs.{level}"), down, ConvInit::TorchDefault));
        }
        let deepest = w << shape.levels();
        let middle = Stage::new(params, "middle_blks", deepest, shape.middle_blocks);
        let mut ups = Vec::new();
        let mut decoders = Vec::new();
        for (stage, &blocks) in shape.dec_blocks.iter().enumerate() {
            let c = shape.decoder_channels(stage);
            let up = ConvShape { bias: false, ..ConvShape::same(2 * c, 4 * c, 1) };
            ups.push(Conv::new(params, &format!("ups.{stage}.0"), up, ConvInit::TorchDefault));
            decoders.push(Stage::new(params, &format!("decoder{stage}"), c, blocks));
        }
        let ending = Conv::new(params, "ending", ConvShape::same(w, 3, 3), ConvInit::TorchDefault);
        Ok(Self { shape: shape.clone(), intro, encoders, downs, middle, ups, decoders, ending })
    }

    /// The shape this network was built with.
    pub fn shape(&self) -> &NafnetShape {
        &self.shape
    }

    /// Restoration forward: `ending(body(x)) + x`. Height and width must be multiples of 2^levels.
    pub fn forward(&self, p: &ParamSet, input: &Tensor) -> NafnetOutput {
        let body = self.body(p, input, None);
        NafnetOutput { image: body.image + input, ..body }
    }

    /// Masked pre-training forward: the reconstruction `ending(body(x·m))` (no input residual).
    pub fn forward_masked(&self, p: &ParamSet, input: &Tensor, mask: &PatchMask) -> Result<NafnetOutput> {
        let masks = (0..=self.shape.levels() as u32).map(|level| mask.at_level(level)).collect::<Result<Vec<_>>>()?;
        Ok(self.body(p, &(input * &masks[0]), Some(&masks)))
    }

    fn body(&self, p: &ParamSet, input: &Tensor, masks: Option<&[Tensor]>) -> NafnetOutput {
        let mask_at = |level: usize| masks.map(|m| &m[level]);
        let apply = |x: Tensor, level: usize| match mask_at(level) {
            Some(m) => x * m,
            None => x,
        };
        let mut x = apply(self.intro.forward(p, input), 0);
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (level, (encoder, down)) in self.encoders.iter().zip(&self.downs).enumerate() {
            x = encoder.forward(p, x, mask_at(level));
            skips.push(x.shallow_clone());
            x = down.forward(p, &x);
        }
        let levels = self.shape.levels();
        x = self.middle.forward(p, x, mask_at(levels));
        let mut features = Vec::with_capacity(levels);
        for (stage, (up, decoder)) in self.ups.iter().zip(&self.decoders).enumerate() {
            let level = levels - 1 - stage;
            x = up.forward(p, &x).pixel_shuffle(2) + &skips[level];
            x = decoder.forward(p, x, mask_at(level));
            features.push(x.shallow_clone());
        }
        features.reverse();
        NafnetOutput { image: self.ending.forward(p, &x), decoder_features: features, encoder_features: skips }
    }
}
