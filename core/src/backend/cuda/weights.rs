//! Weights of each fused step uploaded once, laid out for the kernels and products: matrices
//! in the engine's storage type with the branch scales β and γ folded into conv3 and conv5,
//! everything the element-wise kernels read in f32.

use std::borrow::Cow;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};

use super::device::cuda_error;
use super::gemm::GemmType;
use crate::error::{Error, Result};
use crate::passes::{BlockKeys, Step, fold_branch_scale};
use crate::weights::WeightStore;

/// Storage type of feature maps and matrices (`half::f16` or `f32`).
pub trait Element: DeviceRepr + Copy + Default + Send + Sync + Unpin + 'static {
    /// The matching cuBLASLt type.
    const GEMM: GemmType;
    /// Converts (rounding to nearest) from f32.
    fn from_f32(v: f32) -> Self;
    /// Converts (exactly) to f32.
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const GEMM: GemmType = GemmType::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for half::f16 {
    const GEMM: GemmType = GemmType::F16;
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// A weight matrix (row-major `[rows][cols]`) and its bias, in the storage type.
pub struct Dense<T> {
    /// The matrix.
    pub weight: CudaSlice<T>,
    /// The bias over rows.
    pub bias: Option<CudaSlice<T>>,
    /// Rows (output channels).
    pub rows: usize,
    /// Columns (input channels).
    pub cols: usize,
}

/// A scale/shift or weight/bias pair in f32.
pub type Pair = (CudaSlice<f32>, CudaSlice<f32>);

/// NAFBlock weights on the device.
pub struct BlockWeights<T> {
    /// Channels.
    pub c: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// LayerNorm 1 scale / shift.
    pub norm1: Pair,
    /// conv1 `[2c][c]` with bias.
    pub conv1: Dense<T>,
    /// Depthwise as `[tap][2c]`, bias `[2c]`.
    pub dw: Pair,
    /// Channel attention `[c_out][c_in]`, bias `[c]`.
    pub sca: Pair,
    /// The same in the storage type, for TLC's per-pixel attention product (uploaded only
    /// for engines with TLC attention).
    pub sca_product: Option<Dense<T>>,
    /// β·conv3 with β·bias (scaled per image by the attention vector at run time).
    pub conv3: Dense<T>,
    /// LayerNorm 2 scale / shift.
    pub norm2: Pair,
    /// conv4 `[2c][c]` with bias.
    pub conv4: Dense<T>,
    /// γ·conv5 with γ·bias.
    pub conv5: Dense<T>,
}

/// A step's weights on the device.
pub enum StepWeights<T> {
    /// The intro 3×3 conv (3 → cout) as `[ci·9 + tap][cout]`, f32.
    ConvIn {
        /// Rearranged weight, bias `[cout]`.
        conv: Pair,
        /// Output channels.
        cout: usize,
    },
    /// The ending 3×3 conv (cin → 3), as `[tap][cin][3]`, f32.
    ConvOut {
        /// Rearranged weight, bias `[3]`.
        conv: Pair,
        /// Input channels.
        cin: usize,
    },
    /// 2×2 stride-2 conv as one product per kernel row `dy`: `[cout][dx·cin + i]`.
    Down {
        /// Kernel row 0 (with the bias) and kernel row 1.
        rows: [Dense<T>; 2],
    },
    /// The 1×1 up conv `[4c][cin]` (before the pixel shuffle).
    Up(Dense<T>),
    /// A NAFBlock.
    Block(Box<BlockWeights<T>>),
}

impl<T> StepWeights<T> {
    /// Bytes held on the device.
    pub fn bytes(&self) -> usize {
        let pair = |p: &Pair| (p.0.len() + p.1.len()) * 4;
        let dense = |d: &Dense<T>| (d.weight.len() + d.bias.as_ref().map_or(0, |b| b.len())) * size_of::<T>();
        match self {
            StepWeights::ConvIn { conv, .. } | StepWeights::ConvOut { conv, .. } => pair(conv),
            StepWeights::Down { rows } => rows.iter().map(dense).sum(),
            StepWeights::Up(d) => dense(d),
            StepWeights::Block(b) => {
                [&b.norm1, &b.dw, &b.sca, &b.norm2].into_iter().map(pair).sum::<usize>()
                    + [&b.conv1, &b.conv3, &b.conv4, &b.conv5]
                        .into_iter()
                        .chain(&b.sca_product)
                        .map(dense)
                        .sum::<usize>()
            }
        }
    }
}

/// Reads tensors of a store as f32 and uploads converted copies.
pub struct Uploader<'a> {
    store: &'a WeightStore,
    stream: &'a Arc<CudaStream>,
    /// Whether blocks also get their attention as a product ([`BlockWeights::sca_product`]).
    windowed_attention: bool,
}

impl<'a> Uploader<'a> {
    /// Uploads from `store` on `stream`; with `windowed_attention`, for TLC attention too.
    pub fn new(store: &'a WeightStore, stream: &'a Arc<CudaStream>, windowed_attention: bool) -> Self {
        Uploader { store, stream, windowed_attention }
    }

    fn get(&self, key: &str) -> Result<(Cow<'a, [f32]>, Vec<usize>)> {
        let t = self.store.require(key)?;
        Ok((t.f32_values(), t.shape().to_vec()))
    }

    fn upload<T: Element>(&self, values: &[f32]) -> Result<CudaSlice<T>> {
        let converted: Vec<T> = values.iter().map(|&v| T::from_f32(v)).collect();
        self.stream.clone_htod(&converted).map_err(cuda_error("uploading weights"))
    }

    fn pair(&self, (w, b): &(String, String)) -> Result<Pair> {
        Ok((self.upload(&self.get(w)?.0)?, self.upload(&self.get(b)?.0)?))
    }

    /// A `[rows][cols]` matrix with an optional bias.
    fn dense<T: Element>(&self, w: &[f32], bias: Option<&[f32]>, rows: usize) -> Result<Dense<T>> {
        let bias = bias.map(|b| self.upload(b)).transpose()?;
        Ok(Dense { weight: self.upload(w)?, bias, rows, cols: w.len() / rows })
    }

    /// A 1×1 conv with its bias, with the branch scale `scale` folded in when given.
    fn conv1x1<T: Element>(&self, (w, b): &(String, String), scale: Option<&str>) -> Result<Dense<T>> {
        let (mut w, shape) = self.get(w)?;
        let mut bias = self.get(b)?.0.into_owned();
        if let Some(key) = scale {
            fold_branch_scale(w.to_mut(), &mut bias, &self.get(key)?.0);
        }
        self.dense(&w, Some(&bias), shape[0])
    }

    /// The weights of `step`; `is_input`/`is_output` say whether a 3×3 conv reads the network
    /// input or writes its output (the only 3×3 convs the graph has).
    pub fn step<T: Element>(&self, step: &Step, is_input: bool, is_output: bool) -> Result<StepWeights<T>> {
        Ok(match step {
            Step::Conv3x3 { weight, bias, .. } => {
                let (w, shape) = self.get(weight)?;
                let b = self.get(bias)?.0;
                let (cout, cin) = (shape[0], shape[1]);
                if is_input && cin == 3 {
                    StepWeights::ConvIn { conv: (self.upload(&transpose(&w, cout))?, self.upload(&b)?), cout }
                } else if is_output && cout == 3 {
                    let mut taps = vec![0f32; 9 * cin * 3];
                    for co in 0..3 {
                        for ci in 0..cin {
                            for tap in 0..9 {
                                taps[(tap * cin + ci) * 3 + co] = w[(co * cin + ci) * 9 + tap];
                            }
                        }
                    }
                    StepWeights::ConvOut { conv: (self.upload(&taps)?, self.upload(&b)?), cin }
                } else {
                    return Err(Error::Unsupported(format!(
                        "the cuda backend runs 3×3 convs only as the network's intro and ending (`{weight}` is \
                         {cin} → {cout} channels elsewhere)"
                    )));
                }
            }
            Step::Down { weight, bias, .. } => {
                let (w, shape) = self.get(weight)?;
                let b = self.get(bias)?.0;
                let (cout, cin) = (shape[0], shape[1]);
                let row = |dy: usize| {
                    let mut m = vec![0f32; cout * 2 * cin];
                    for o in 0..cout {
                        for i in 0..cin {
                            for dx in 0..2 {
                                m[o * 2 * cin + dx * cin + i] = w[((o * cin + i) * 2 + dy) * 2 + dx];
                            }
                        }
                    }
                    m
                };
                StepWeights::Down { rows: [self.dense(&row(0), Some(&b), cout)?, self.dense(&row(1), None, cout)?] }
            }
            Step::UpShuffleAdd { weight, .. } => {
                let (w, shape) = self.get(weight)?;
                StepWeights::Up(self.dense(&w, None, shape[0])?)
            }
            Step::NafBlock { keys, eps, .. } => StepWeights::Block(Box::new(self.block(keys, *eps)?)),
        })
    }

    fn block<T: Element>(&self, keys: &BlockKeys, eps: f32) -> Result<BlockWeights<T>> {
        let c = self.get(&keys.sca.1)?.0.len();
        let (dw_w, dw_b) = (self.get(&keys.conv2.0)?.0, self.get(&keys.conv2.1)?.0);
        Ok(BlockWeights {
            c,
            eps,
            norm1: self.pair(&keys.norm1)?,
            conv1: self.conv1x1(&keys.conv1, None)?,
            dw: (self.upload(&transpose(&dw_w, 2 * c))?, self.upload(&dw_b)?),
            sca: self.pair(&keys.sca)?,
            sca_product: self.windowed_attention.then(|| self.conv1x1(&keys.sca, None)).transpose()?,
            conv3: self.conv1x1(&keys.conv3, Some(&keys.beta))?,
            norm2: self.pair(&keys.norm2)?,
            conv4: self.conv1x1(&keys.conv4, None)?,
            conv5: self.conv1x1(&keys.conv5, Some(&keys.gamma))?,
        })
    }
}

/// The row-major `rows × (len / rows)` matrix `m` transposed (per-channel weights laid out
/// tap-major, so neighbouring threads read neighbouring channels).
fn transpose(m: &[f32], rows: usize) -> Vec<f32> {
    let cols = m.len() / rows;
    (0..cols).flat_map(|c| (0..rows).map(move |r| m[r * cols + c])).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(super::transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
