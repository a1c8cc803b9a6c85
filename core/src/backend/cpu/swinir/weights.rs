//! A SwinIR's weights converted once to f32 and laid out for the CPU kernels.

use super::super::dense_conv::{Conv3x3, PatchConv};
use super::super::kernels::matmul::{MatmulPrecision, PackedLhs};
use super::super::prepared::pack;
use crate::error::Result;
use crate::spec::SwinirSpec;
use crate::weights::WeightStore;

/// A LayerNorm's scale and shift.
pub type Norm = (Vec<f32>, Vec<f32>);

/// A linear layer: its packed `[out][in]` weights and bias.
pub struct Linear {
    /// Weights, `[out][in]`.
    pub weight: PackedLhs,
    /// One per output (none for a qkv projection without bias).
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    fn len(&self) -> usize {
        self.weight.stored_len() + self.bias.as_ref().map_or(0, Vec::len)
    }
}

/// One Swin block.
pub struct SwinBlockWeights {
    /// Attention heads.
    pub heads: usize,
    /// How far the block rolls the map before its window attention.
    pub shift: usize,
    /// LayerNorm before the attention.
    pub norm1: Norm,
    /// `attn.qkv`, `[3e][e]`.
    pub qkv: Linear,
    /// `attn.proj`, `[e][e]`.
    pub proj: Linear,
    /// LayerNorm before the MLP.
    pub norm2: Norm,
    /// `mlp.fc1`, `[hidden][e]`.
    pub fc1: Linear,
    /// `mlp.fc2`, `[e][hidden]`.
    pub fc2: Linear,
}

/// One residual group: its blocks and the 3×3 conv after them.
pub struct GroupWeights {
    /// The blocks, in order.
    pub blocks: Vec<SwinBlockWeights>,
    /// `conv`, with bias.
    pub conv: PatchConv,
}

/// The whole network.
pub struct SwinirWeights {
    /// `conv_first`.
    pub first: Conv3x3,
    /// `patch_embed.norm`, where the network normalises its embedded tokens.
    pub patch_norm: Option<Norm>,
    /// The residual groups, in order.
    pub groups: Vec<GroupWeights>,
    /// `norm`.
    pub norm: Norm,
    /// `conv_after_body`.
    pub after_body: PatchConv,
    /// `conv_last`.
    pub last: Conv3x3,
}

impl SwinirWeights {
    /// Converts the weights of `spec` from `store` for products in `precision`.
    pub fn new(spec: &SwinirSpec, store: &WeightStore, precision: MatmulPrecision) -> Result<Self> {
        let get = |key: &str| -> Result<Vec<f32>> { Ok(store.require(key)?.to_f32()) };
        let norm = |key: &str| -> Result<Norm> { Ok((get(&format!("{key}.weight"))?, get(&format!("{key}.bias"))?)) };
        let linear = |key: &str, biased: bool| -> Result<Linear> {
            let t = store.require(&format!("{key}.weight"))?;
            let bias = biased.then(|| get(&format!("{key}.bias"))).transpose()?;
            Ok(Linear { weight: pack(&t.f32_values(), t.shape()[0], precision)?, bias })
        };
        let block = |i: usize, j: usize| -> Result<SwinBlockWeights> {
            let p = spec.block_prefix(i, j);
            Ok(SwinBlockWeights {
                heads: spec.heads[i],
                shift: spec.shift(j),
                norm1: norm(&format!("{p}.norm1"))?,
                qkv: linear(&format!("{p}.attn.qkv"), spec.qkv_bias)?,
                proj: linear(&format!("{p}.attn.proj"), true)?,
                norm2: norm(&format!("{p}.norm2"))?,
                fc1: linear(&format!("{p}.mlp.fc1"), true)?,
                fc2: linear(&format!("{p}.mlp.fc2"), true)?,
            })
        };
        let groups = spec
            .depths
            .iter()
            .enumerate()
            .map(|(i, &depth)| {
                Ok(GroupWeights {
                    blocks: (0..depth).map(|j| block(i, j)).collect::<Result<_>>()?,
                    conv: PatchConv::load(store, &format!("{}.conv", spec.group_prefix(i)), true, precision)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(SwinirWeights {
            first: Conv3x3::load(store, "conv_first", true)?,
            patch_norm: spec.patch_norm.then(|| norm("patch_embed.norm")).transpose()?,
            groups,
            norm: norm("norm")?,
            after_body: PatchConv::load(store, "conv_after_body", true, precision)?,
            last: Conv3x3::load(store, "conv_last", true)?,
        })
    }

    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        let norm = |n: &Norm| n.0.len() + n.1.len();
        let block = |b: &SwinBlockWeights| {
            norm(&b.norm1) + norm(&b.norm2) + [&b.qkv, &b.proj, &b.fc1, &b.fc2].iter().map(|l| l.len()).sum::<usize>()
        };
        let groups: usize = self.groups.iter().map(|g| g.blocks.iter().map(block).sum::<usize>() + g.conv.len()).sum();
        self.first.len()
            + self.patch_norm.as_ref().map_or(0, norm)
            + groups
            + norm(&self.norm)
            + self.after_body.len()
            + self.last.len()
    }

    /// Every patch conv of the network.
    pub fn patch_convs(&self) -> impl Iterator<Item = &PatchConv> {
        self.groups.iter().map(|g| &g.conv).chain([&self.after_body])
    }
}
