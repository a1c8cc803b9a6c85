//! Weights of each fused step converted to f32 and laid out for the CPU kernels, with the
//! per-channel branch scales (β, γ) folded into the 1×1 conv that feeds them.

use super::kernels::matmul::{MatmulPrecision, PackedLhs};
use crate::error::{Error, Result};
use crate::passes::{BlockKeys, Step, fold_branch_scale};
use crate::weights::WeightStore;

/// A 1×1-conv style weight matrix, packed, with its bias.
pub type Dense = (PackedLhs, Vec<f32>);

/// NAFBlock weights in kernel layout.
pub struct BlockWeights {
    /// Channels.
    pub c: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// LayerNorm 1 scale / shift.
    pub norm1: (Vec<f32>, Vec<f32>),
    /// conv1 `[2c][c]`, bias `[2c]`.
    pub conv1: Dense,
    /// Depthwise `[2c][9]`, bias `[2c]`.
    pub dw: (Vec<f32>, Vec<f32>),
    /// SCA `[c][c]`, bias `[c]`.
    pub sca: (Vec<f32>, Vec<f32>),
    /// SCA `[c][c]` packed for the per-pixel product of windowed attention (TLC only).
    pub sca_windowed: Option<PackedLhs>,
    /// β·conv3 `[c][c]`, β·bias `[c]`.
    pub conv3_beta: Dense,
    /// LayerNorm 2 scale / shift.
    pub norm2: (Vec<f32>, Vec<f32>),
    /// conv4 `[2c][c]` packed with SimpleGate fused (c output rows), bias `[2c]`.
    pub conv4: Dense,
    /// γ·conv5 `[c][c]`, γ·bias `[c]`.
    pub conv5_gamma: Dense,
}

/// A step's weights.
pub enum StepWeights {
    /// Dense 3×3: `[cout][cin][9]`, bias, (cin, cout).
    Conv3x3 { weight: Vec<f32>, bias: Vec<f32>, cin: usize, cout: usize },
    /// 2×2 stride 2 as a product over space-to-depth input: `[cout][cin·4]`, bias.
    Down { weight: Dense, cin: usize },
    /// 1×1 up conv `[cout][cin]` (cout = 4 × output channels).
    Up { weight: PackedLhs },
    /// A NAFBlock.
    Block(Box<BlockWeights>),
}

impl StepWeights {
    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        match self {
            StepWeights::Conv3x3 { weight, bias, .. } => weight.len() + bias.len(),
            StepWeights::Down { weight: (w, b), .. } => w.stored_len() + b.len(),
            StepWeights::Up { weight, .. } => weight.stored_len(),
            StepWeights::Block(b) => {
                let plain: usize = [&b.norm1, &b.dw, &b.sca, &b.norm2].iter().map(|(w, b)| w.len() + b.len()).sum();
                let packed: usize = [&b.conv1, &b.conv3_beta, &b.conv4, &b.conv5_gamma]
                    .iter()
                    .map(|(w, b)| w.stored_len() + b.len())
                    .sum();
                plain + packed + b.sca_windowed.as_ref().map_or(0, PackedLhs::stored_len)
            }
        }
    }
}

/// Packs row-major `w` (`rows × len/rows`) for products in `precision`.
pub(super) fn pack(w: &[f32], rows: usize, precision: MatmulPrecision) -> Result<PackedLhs> {
    PackedLhs::new(w, rows, w.len() / rows, precision).map_err(Error::Unsupported)
}

/// A copy of tensor `key` as f32 (for weights the kernels read as they are).
fn f32_copy(store: &WeightStore, key: &str) -> Result<Vec<f32>> {
    Ok(store.require(key)?.to_f32())
}

/// Converts the weights `step` references (`windowed`: blocks also pack their attention's
/// weights for windowed attention). Matrices stored as f32 are packed straight from the file.
pub fn prepare(step: &Step, store: &WeightStore, precision: MatmulPrecision, windowed: bool) -> Result<StepWeights> {
    let owned = |key: &str| f32_copy(store, key);
    Ok(match step {
        Step::Conv3x3 { weight, bias, .. } => {
            let t = store.require(weight)?;
            StepWeights::Conv3x3 { weight: t.to_f32(), bias: owned(bias)?, cin: t.shape()[1], cout: t.shape()[0] }
        }
        Step::Down { weight, bias, .. } => {
            let t = store.require(weight)?;
            StepWeights::Down {
                weight: (pack(&t.f32_values(), t.shape()[0], precision)?, owned(bias)?),
                cin: t.shape()[1],
            }
        }
        Step::UpShuffleAdd { weight, .. } => {
            let t = store.require(weight)?;
            StepWeights::Up { weight: pack(&t.f32_values(), t.shape()[0], precision)? }
        }
        Step::NafBlock { keys, eps, .. } => {
            let mut block = prepare_block(keys, *eps, store, precision)?;
            if windowed {
                block.sca_windowed = Some(pack(&block.sca.0, block.c, precision)?);
            }
            StepWeights::Block(Box::new(block))
        }
    })
}

fn prepare_block(keys: &BlockKeys, eps: f32, store: &WeightStore, precision: MatmulPrecision) -> Result<BlockWeights> {
    let owned = |key: &str| f32_copy(store, key);
    let pair = |(w, b): &(String, String)| -> Result<(Vec<f32>, Vec<f32>)> { Ok((owned(w)?, owned(b)?)) };
    let dense = |(w, b): &(String, String), gated: bool| -> Result<Dense> {
        let (w, b) = (store.require(w)?.f32_values(), owned(b)?);
        let (m, k) = (b.len(), w.len() / b.len());
        let packed = match gated {
            true => PackedLhs::gated(&w, m, k, precision).map_err(Error::Unsupported)?,
            false => pack(&w, m, precision)?,
        };
        Ok((packed, b))
    };
    let scaled = |(w, b): &(String, String), scale: &str| -> Result<Dense> {
        let (mut w, mut b, s) = (store.require(w)?.f32_values(), owned(b)?, owned(scale)?);
        fold_branch_scale(w.to_mut(), &mut b, &s);
        Ok((pack(&w, s.len(), precision)?, b))
    };
    let norm1 = pair(&keys.norm1)?;
    Ok(BlockWeights {
        c: norm1.0.len(),
        eps,
        norm1,
        conv1: dense(&keys.conv1, false)?,
        dw: pair(&keys.conv2)?,
        sca: pair(&keys.sca)?,
        sca_windowed: None,
        conv3_beta: scaled(&keys.conv3, &keys.beta)?,
        norm2: pair(&keys.norm2)?,
        conv4: dense(&keys.conv4, true)?,
        conv5_gamma: scaled(&keys.conv5, &keys.gamma)?,
    })
}
