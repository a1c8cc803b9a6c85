//! A Restormer's weights converted once to f32 and laid out for the CPU kernels.

use super::super::kernels::matmul::{MatmulPrecision, PackedLhs};
use super::super::prepared::pack;
use crate::error::Result;
use crate::spec::restormer::{LEVELS, RestormerSpec, Stage};
use crate::weights::WeightStore;

/// A dense 3×3 conv without bias: `[cout][cin][9]`, and zeros for the kernel's bias.
pub struct Conv3x3 {
    /// Weights `[cout][cin][9]`.
    pub weight: Vec<f32>,
    /// Zeros, one per output channel (the convs have no bias).
    pub bias: Vec<f32>,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

/// A dense 3×3 conv without bias run as a product over its patches: `[cout][cin · 9]` packed.
pub struct PatchConv {
    /// Weights `[cout][cin · 9]`.
    pub weight: PackedLhs,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

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
}

/// One decoder level: the up conv (PixelShuffle follows), the optional 1×1 channel reduction
/// after the skip is concatenated, and the stage's blocks.
pub struct DecoderWeights {
    /// Up conv `c → 2c` at the level below.
    pub up: PatchConv,
    /// 1×1 `[c/2][c]` after the concatenation (none at full resolution).
    pub reduce: Option<PackedLhs>,
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
        let conv = |key: &str| -> Result<Conv3x3> {
            let t = store.require(key)?;
            let (cout, cin) = (t.shape()[0], t.shape()[1]);
            Ok(Conv3x3 { weight: t.to_f32(), bias: vec![0.0; cout], cin, cout })
        };
        let patch_conv = |key: &str| -> Result<PatchConv> {
            let t = store.require(key)?;
            let (cout, cin) = (t.shape()[0], t.shape()[1]);
            Ok(PatchConv { weight: pack(&t.to_f32(), cout, precision)?, cin, cout })
        };
        let stage = |stage: &Stage| -> Result<Vec<TransformerWeights>> {
            (0..stage.blocks)
                .map(|b| {
                    let site = spec.block(stage, b);
                    let key = |suffix: &str| format!("{}.{suffix}", site.prefix);
                    let (c, h) = (site.channels, site.hidden);
                    Ok(TransformerWeights {
                        c,
                        heads: site.heads,
                        hidden: h,
                        norm1: (get(&key("norm1.weight"))?, get(&key("norm1.bias"))?),
                        temperature: get(&key("attn.temperature"))?,
                        qkv: pack(&get(&key("attn.qkv.weight"))?, 3 * c, precision)?,
                        qkv_dw: get(&key("attn.qkv_dwconv.weight"))?,
                        project_out: get(&key("attn.project_out.weight"))?,
                        norm2: (get(&key("norm2.weight"))?, get(&key("norm2.bias"))?),
                        project_in: pack(&get(&key("ffn.project_in.weight"))?, 2 * h, precision)?,
                        ffn_dw: get(&key("ffn.dwconv.weight"))?,
                        ffn_out: pack(&get(&key("ffn.project_out.weight"))?, c, precision)?,
                    })
                })
                .collect()
        };
        let [dec3, dec2, dec1, refinement] = spec.decoder_stages();
        let reduce = |key: &str, rows: usize| -> Result<PackedLhs> { pack(&get(key)?, rows, precision) };
        Ok(RestormerWeights {
            embed: conv("patch_embed.proj.weight")?,
            encoders: spec.encoder_stages().iter().map(stage).collect::<Result<_>>()?,
            downs: ["down1_2", "down2_3", "down3_4"]
                .iter()
                .map(|d| patch_conv(&format!("{d}.conv.weight")))
                .collect::<Result<_>>()?,
            decoders: vec![
                DecoderWeights {
                    up: patch_conv("up4_3.conv.weight")?,
                    reduce: Some(reduce("reduce_chan_level3.weight", spec.width(2))?),
                    blocks: stage(&dec3)?,
                },
                DecoderWeights {
                    up: patch_conv("up3_2.conv.weight")?,
                    reduce: Some(reduce("reduce_chan_level2.weight", spec.width(1))?),
                    blocks: stage(&dec2)?,
                },
                DecoderWeights { up: patch_conv("up2_1.conv.weight")?, reduce: None, blocks: stage(&dec1)? },
            ],
            refinement: stage(&refinement)?,
            output: conv("output.weight")?,
        })
    }

    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        let conv = |c: &Conv3x3| c.weight.len() + c.bias.len();
        let blocks = |blocks: &[TransformerWeights]| -> usize {
            blocks
                .iter()
                .map(|b| {
                    let plain = [
                        &b.norm1.0,
                        &b.norm1.1,
                        &b.temperature,
                        &b.qkv_dw,
                        &b.project_out,
                        &b.norm2.0,
                        &b.norm2.1,
                        &b.ffn_dw,
                    ];
                    plain.iter().map(|v| v.len()).sum::<usize>()
                        + [&b.qkv, &b.project_in, &b.ffn_out].iter().map(|p| p.stored_len()).sum::<usize>()
                })
                .sum()
        };
        let decoders: usize = self
            .decoders
            .iter()
            .map(|d| d.up.weight.stored_len() + d.reduce.as_ref().map_or(0, PackedLhs::stored_len) + blocks(&d.blocks))
            .sum();
        conv(&self.embed)
            + conv(&self.output)
            + self.downs.iter().map(|d| d.weight.stored_len()).sum::<usize>()
            + self.encoders.iter().map(|s| blocks(s)).sum::<usize>()
            + decoders
            + blocks(&self.refinement)
    }

    /// Every patch conv of the network, with the resolution level of its input.
    pub fn patch_convs(&self) -> impl Iterator<Item = (usize, &PatchConv)> {
        let downs = self.downs.iter().enumerate();
        downs.chain(self.decoders.iter().enumerate().map(|(i, d)| (LEVELS - 1 - i, &d.up)))
    }

    /// Every block of the network, with its resolution level.
    pub fn blocks(&self) -> impl Iterator<Item = (usize, &TransformerWeights)> {
        let encoders = self.encoders.iter().enumerate().flat_map(|(level, s)| s.iter().map(move |b| (level, b)));
        let decoders =
            self.decoders.iter().enumerate().flat_map(|(i, d)| d.blocks.iter().map(move |b| (LEVELS - 2 - i, b)));
        encoders.chain(decoders).chain(self.refinement.iter().map(|b| (0, b)))
    }
}
