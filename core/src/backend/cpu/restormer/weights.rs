//! A Restormer's or PromptIR's weights converted once to f32 and laid out for the CPU kernels.

use super::super::dense_conv::{Conv3x3, PatchConv};
use super::super::kernels::matmul::{MatmulPrecision, PackedLhs};
use super::super::prepared::pack;
use crate::error::Result;
use crate::spec::restormer::{DOWNS, LEVELS, PromptStage, RestormerSpec, Stage, TransformerSite, UPS};
use crate::weights::WeightStore;

/// One transformer block.
pub struct TransformerWeights {
    /// Channels.
    pub c: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward hidden channels.
    pub hidden: usize,
    /// LayerNorm 1 scale / shift.
    pub norm1: (Vec<f32>, Vec<f32>),
    /// Per-head attention temperature.
    pub temperature: Vec<f32>,
    /// `qkv` 1×1 `[3c][c]`.
    pub qkv: PackedLhs,
    /// `qkv_dwconv` depthwise `[3c][9]`.
    pub qkv_dw: Vec<f32>,
    /// `project_out` `[c][c]`, row-major (folded with each image's attention matrix).
    pub project_out: Vec<f32>,
    /// LayerNorm 2 scale / shift.
    pub norm2: (Vec<f32>, Vec<f32>),
    /// `project_in` 1×1 `[2h][c]`.
    pub project_in: PackedLhs,
    /// `dwconv` depthwise `[2h][9]`.
    pub ffn_dw: Vec<f32>,
    /// Feed-forward `project_out` `[c][h]`.
    pub ffn_out: PackedLhs,
    /// PromptIR's biases (a Restormer's blocks have none).
    pub biases: Option<BlockBiases>,
}

/// The biases of a PromptIR block, one per output channel of each conv.
pub struct BlockBiases {
    /// `qkv` `[3c]`.
    pub qkv: Vec<f32>,
    /// `qkv_dwconv` `[3c]`.
    pub qkv_dw: Vec<f32>,
    /// Attention `project_out` `[c]`.
    pub project_out: Vec<f32>,
    /// `project_in` `[2h]`.
    pub project_in: Vec<f32>,
    /// `dwconv` `[2h]`.
    pub ffn_dw: Vec<f32>,
    /// Feed-forward `project_out` `[c]`.
    pub ffn_out: Vec<f32>,
}

impl BlockBiases {
    fn len(&self) -> usize {
        [&self.qkv, &self.qkv_dw, &self.project_out, &self.project_in, &self.ffn_dw, &self.ffn_out]
            .iter()
            .map(|v| v.len())
            .sum()
    }
}

/// PromptIR's stage before an up-sampling ([`PromptStage`]).
pub struct PromptWeights {
    /// The learned prompts, `[count][channels][size][size]`.
    pub prompts: Vec<f32>,
    /// Their shape.
    pub stage: PromptStage,
    /// The linear map of the feature's mean to the prompts' logits, `[count][features]`.
    pub linear: Vec<f32>,
    /// Its bias `[count]`.
    pub linear_bias: Vec<f32>,
    /// The 3×3 conv of the resized prompt.
    pub conv: PatchConv,
    /// The block over the feature and its prompt.
    pub block: TransformerWeights,
    /// The 1×1 conv after it, `[out][features + channels]`, and its bias.
    pub reduce: (PackedLhs, Vec<f32>),
}

/// One decoder level: PromptIR's prompt stage, the up conv (PixelShuffle follows), the 1×1
/// channel reduction after the skip is concatenated, and the stage's blocks.
pub struct DecoderWeights {
    /// PromptIR's prompt stage at the level below (none in a Restormer).
    pub prompt: Option<PromptWeights>,
    /// Up conv `c → 2c` at the level below.
    pub up: PatchConv,
    /// 1×1 after the concatenation, with PromptIR's bias (none at full resolution).
    pub reduce: Option<(PackedLhs, Option<Vec<f32>>)>,
    /// The stage's blocks.
    pub blocks: Vec<TransformerWeights>,
}

/// The whole network.
pub struct RestormerWeights {
    /// `patch_embed.proj`.
    pub embed: Conv3x3,
    /// Encoder stages, full resolution first; the last is the latent.
    pub encoders: Vec<Vec<TransformerWeights>>,
    /// Down convs after each encoder stage but the latent (PixelUnshuffle follows).
    pub downs: Vec<PatchConv>,
    /// Decoder levels, lowest resolution first.
    pub decoders: Vec<DecoderWeights>,
    /// Refinement blocks.
    pub refinement: Vec<TransformerWeights>,
    /// `output`.
    pub output: Conv3x3,
}

impl RestormerWeights {
    /// Converts the weights of `spec` from `store` for products in `precision`.
    pub fn new(spec: &RestormerSpec, store: &WeightStore, precision: MatmulPrecision) -> Result<Self> {
        let get = |key: &str| -> Result<Vec<f32>> { Ok(store.require(key)?.to_f32()) };
        let packed = |key: &str, rows: usize| pack(&store.require(key)?.f32_values(), rows, precision);
        let bias = |key: &str| -> Result<Option<Vec<f32>>> { spec.has_bias().then(|| get(key)).transpose() };
        let patch_conv = |key: &str| PatchConv::load(store, key, false, precision);
        let block = |site: &TransformerSite| -> Result<TransformerWeights> {
            let key = |suffix: &str| format!("{}.{suffix}", site.prefix);
            let (c, h) = (site.channels, site.hidden);
            let biases = match spec.has_bias() {
                true => Some(BlockBiases {
                    qkv: get(&key("attn.qkv.bias"))?,
                    qkv_dw: get(&key("attn.qkv_dwconv.bias"))?,
                    project_out: get(&key("attn.project_out.bias"))?,
                    project_in: get(&key("ffn.project_in.bias"))?,
                    ffn_dw: get(&key("ffn.dwconv.bias"))?,
                    ffn_out: get(&key("ffn.project_out.bias"))?,
                }),
                false => None,
            };
            Ok(TransformerWeights {
                c,
                heads: site.heads,
                hidden: h,
                norm1: (get(&key("norm1.weight"))?, get(&key("norm1.bias"))?),
                temperature: get(&key("attn.temperature"))?,
                qkv: packed(&key("attn.qkv.weight"), 3 * c)?,
                qkv_dw: get(&key("attn.qkv_dwconv.weight"))?,
                project_out: get(&key("attn.project_out.weight"))?,
                norm2: (get(&key("norm2.weight"))?, get(&key("norm2.bias"))?),
                project_in: packed(&key("ffn.project_in.weight"), 2 * h)?,
                ffn_dw: get(&key("ffn.dwconv.weight"))?,
                ffn_out: packed(&key("ffn.project_out.weight"), c)?,
                biases,
            })
        };
        let stage = |stage: &Stage| -> Result<Vec<TransformerWeights>> {
            (0..stage.blocks).map(|b| block(&spec.block(stage, b))).collect()
        };
        let prompt = |i: usize| -> Result<Option<PromptWeights>> {
            let Some(stage) = spec.prompts.map(|p| p[i]) else { return Ok(None) };
            let level = LEVELS - 1 - i;
            let site = spec.prompt_block(i, &stage);
            Ok(Some(PromptWeights {
                prompts: get(&format!("prompt{level}.prompt_param"))?,
                stage,
                linear: get(&format!("prompt{level}.linear_layer.weight"))?,
                linear_bias: get(&format!("prompt{level}.linear_layer.bias"))?,
                conv: patch_conv(&format!("prompt{level}.conv3x3"))?,
                block: block(&site)?,
                reduce: (
                    packed(&format!("reduce_noise_level{level}.weight"), stage.out)?,
                    get(&format!("reduce_noise_level{level}.bias"))?,
                ),
            }))
        };
        let reduce = |key: &str, rows: usize| -> Result<(PackedLhs, Option<Vec<f32>>)> {
            Ok((packed(&format!("{key}.weight"), rows)?, bias(&format!("{key}.bias"))?))
        };
        let stages = spec.decoder_stages();
        let decoder = |i: usize| -> Result<DecoderWeights> {
            let (up, reduce_key) = UPS[i];
            Ok(DecoderWeights {
                prompt: prompt(i)?,
                up: patch_conv(&format!("{up}.conv"))?,
                reduce: reduce_key.map(|key| reduce(key, spec.width(stages[i].level))).transpose()?,
                blocks: stage(&stages[i])?,
            })
        };
        Ok(RestormerWeights {
            // `patch_embed` has no bias in either network; PromptIR's `output` has one.
            embed: Conv3x3::load(store, "patch_embed.proj", false)?,
            encoders: spec.encoder_stages().iter().map(stage).collect::<Result<_>>()?,
            downs: DOWNS.iter().map(|d| patch_conv(&format!("{d}.conv"))).collect::<Result<_>>()?,
            decoders: (0..UPS.len()).map(decoder).collect::<Result<_>>()?,
            refinement: stage(&stages[LEVELS - 1])?,
            output: Conv3x3::load(store, "output", spec.has_bias())?,
        })
    }

    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        let block = |b: &TransformerWeights| -> usize {
            let plain =
                [&b.norm1.0, &b.norm1.1, &b.temperature, &b.qkv_dw, &b.project_out, &b.norm2.0, &b.norm2.1, &b.ffn_dw];
            plain.iter().map(|v| v.len()).sum::<usize>()
                + [&b.qkv, &b.project_in, &b.ffn_out].iter().map(|p| p.stored_len()).sum::<usize>()
                + b.biases.as_ref().map_or(0, BlockBiases::len)
        };
        let prompt = |p: &PromptWeights| {
            p.prompts.len()
                + p.linear.len()
                + p.linear_bias.len()
                + p.conv.len()
                + block(&p.block)
                + p.reduce.0.stored_len()
                + p.reduce.1.len()
        };
        let decoders: usize = self
            .decoders
            .iter()
            .map(|d| {
                let reduce = d.reduce.as_ref().map_or(0, |(w, b)| w.stored_len() + b.as_ref().map_or(0, Vec::len));
                d.prompt.as_ref().map_or(0, prompt) + d.up.len() + reduce
            })
            .sum();
        self.embed.len()
            + self.output.len()
            + self.downs.iter().map(PatchConv::len).sum::<usize>()
            + self.blocks().map(|(_, b)| block(b)).sum::<usize>()
            + decoders
    }

    /// Every patch conv of the network, with the resolution level of its input.
    pub fn patch_convs(&self) -> impl Iterator<Item = (usize, &PatchConv)> {
        let downs = self.downs.iter().enumerate();
        let decoders = self.decoders.iter().enumerate().flat_map(|(i, d)| {
            let prompt = d.prompt.as_ref().map(|p| (LEVELS - 1 - i, &p.conv));
            prompt.into_iter().chain([(LEVELS - 1 - i, &d.up)])
        });
        downs.chain(decoders)
    }

    /// Every block of the network, with its resolution level (prompt stages' included).
    pub fn blocks(&self) -> impl Iterator<Item = (usize, &TransformerWeights)> {
        let encoders = self.encoders.iter().enumerate().flat_map(|(level, s)| s.iter().map(move |b| (level, b)));
        let decoders = self.decoders.iter().enumerate().flat_map(|(i, d)| {
            let prompt = d.prompt.as_ref().map(|p| (LEVELS - 1 - i, &p.block));
            prompt.into_iter().chain(d.blocks.iter().map(move |b| (LEVELS - 2 - i, b)))
        });
        encoders.chain(decoders).chain(self.refinement.iter().map(|b| (0, b)))
    }
}
