//! Weights of each fused step converted to f32 and laid out for the CPU kernels, with the
//! per-channel branch scales (β, γ) folded into the 1×1 conv that feeds them.

use crate::error::{Error, Result};
use crate::passes::{BlockKeys, Step};
use crate::weights::WeightStore;

/// NAFBlock weights in kernel layout.
pub struct BlockWeights {
    /// Channels.
    pub c: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// LayerNorm 1 scale / shift.
    pub norm1: (Vec<f32>, Vec<f32>),
    /// conv1 `[2c][c]`, bias `[2c]`.
    pub conv1: (Vec<f32>, Vec<f32>),
    /// Depthwise `[2c][9]`, bias `[2c]`.
    pub dw: (Vec<f32>, Vec<f32>),
    /// SCA `[c][c]`, bias `[c]`.
    pub sca: (Vec<f32>, Vec<f32>),
    /// β·conv3 `[c][c]`, β·bias `[c]`.
    pub conv3_beta: (Vec<f32>, Vec<f32>),
    /// LayerNorm 2 scale / shift.
    pub norm2: (Vec<f32>, Vec<f32>),
    /// conv4 `[2c][c]`, bias `[2c]`.
    pub conv4: (Vec<f32>, Vec<f32>),
    /// γ·conv5 `[c][c]`, γ·bias `[c]`.
    pub conv5_gamma: (Vec<f32>, Vec<f32>),
}

/// A step's weights.
pub enum StepWeights {
    /// Dense 3×3: `[cout][cin][9]`, bias, (cin, cout).
    Conv3x3 { weight: Vec<f32>, bias: Vec<f32>, cin: usize, cout: usize },
    /// 2×2 stride 2: `[cout][cin·4]`, bias, (cin, cout).
    Down { weight: Vec<f32>, bias: Vec<f32>, cin: usize, cout: usize },
    /// 1×1 up conv `[cout][cin]` (cout = 4 × output channels).
    Up { weight: Vec<f32>, cin: usize, cout: usize },
    /// A NAFBlock.
    Block(Box<BlockWeights>),
}

impl StepWeights {
    /// Number of f32 values held.
    pub fn len(&self) -> usize {
        match self {
            StepWeights::Conv3x3 { weight, bias, .. } | StepWeights::Down { weight, bias, .. } => weight.len() + bias.len(),
            StepWeights::Up { weight, .. } => weight.len(),
            StepWeights::Block(b) => [
                &b.norm1, &b.conv1, &b.dw, &b.sca, &b.conv3_beta, &b.norm2, &b.conv4, &b.conv5_gamma,
            ]
            .iter()
            .map(|(w, b)| w.len() + b.len())
            .sum(),
        }
    }
}

/// Converts the weights `step` references.
pub fn prepare(step: &Step, store: &WeightStore) -> Result<StepWeights> {
    let get = |key: &str| -> Result<(Vec<f32>, Vec<usize>)> {
        let t = store
            .get(key)
            .ok_or_else(|| Error::MissingKey { key: key.to_owned(), expected: vec![] })?;
        Ok((t.to_f32(), t.shape().to_vec()))
    };
    Ok(match step {
        Step::Conv3x3 { weight, bias, .. } => {
            let (w, shape) = get(weight)?;
            StepWeights::Conv3x3 { weight: w, bias: get(bias)?.0, cin: shape[1], cout: shape[0] }
        }
        Step::Down { weight, bias, .. } => {
            let (w, shape) = get(weight)?;
            StepWeights::Down { weight: w, bias: get(bias)?.0, cin: shape[1], cout: shape[0] }
        }
        Step::UpShuffleAdd { weight, .. } => {
            let (w, shape) = get(weight)?;
            StepWeights::Up { weight: w, cin: shape[1], cout: shape[0] }
        }
        Step::NafBlock { keys, eps, .. } => StepWeights::Block(Box::new(prepare_block(keys, *eps, &get)?)),
    })
}

type Getter<'a> = dyn Fn(&str) -> Result<(Vec<f32>, Vec<usize>)> + 'a;

fn prepare_block(keys: &BlockKeys, eps: f32, get: &Getter<'_>) -> Result<BlockWeights> {
    let pair = |(w, b): &(String, String)| -> Result<(Vec<f32>, Vec<f32>)> { Ok((get(w)?.0, get(b)?.0)) };
    let scaled = |(w, b): &(String, String), scale: &str| -> Result<(Vec<f32>, Vec<f32>)> {
        let s = get(scale)?.0;
        let (mut w, mut b) = pair(&(w.clone(), b.clone()))?;
        let cin = w.len() / s.len();
        for (o, so) in s.iter().enumerate() {
            w[o * cin..(o + 1) * cin].iter_mut().for_each(|v| *v *= so);
            b[o] *= so;
        }
        Ok((w, b))
    };
    let norm1 = pair(&keys.norm1)?;
    Ok(BlockWeights {
        c: norm1.0.len(),
        eps,
        norm1,
        conv1: pair(&keys.conv1)?,
        dw: pair(&keys.conv2)?,
        sca: pair(&keys.sca)?,
        conv3_beta: scaled(&keys.conv3, &keys.beta)?,
        norm2: pair(&keys.norm2)?,
        conv4: pair(&keys.conv4)?,
        conv5_gamma: scaled(&keys.conv5, &keys.gamma)?,
    })
}
