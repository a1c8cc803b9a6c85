//! The degradation-classification head on the CPU ([`HeadSpec`]): weights converted once
//! (1×1 convs packed for the engine's matrix product, f32 whatever the engine's precision),
//! then a forward pass over the decoder features a run captured.

use super::kernels::conv::conv3x3;
use super::kernels::layernorm::layer_norm_stats;
use super::kernels::matmul::{Epilogue, MatMut, MatRef, MatmulPrecision, PackedLhs, matmul};
use crate::error::{Error, Result};
use crate::head::{Feature, HEAD_LAYER_NORM_EPS, HeadSpec};
use crate::spec::CLASSIFIER_PREFIX;
use crate::weights::WeightStore;

/// A bias-free conv followed by a channel LayerNorm.
struct NormedConv {
    conv: Conv,
    norm: (Vec<f32>, Vec<f32>),
}

enum Conv {
    /// 1×1, packed `[cout][cin]`.
    Pointwise(PackedLhs),
    /// 3×3, `[cout][cin][3][3]`.
    Spatial { weight: Vec<f32>, cin: usize, cout: usize },
}

/// Inverted bottleneck d → 2d → 2d → d with residual.
struct Bottleneck {
    conv1: NormedConv,
    conv2: NormedConv,
    conv3: NormedConv,
}

/// The head's weights, ready to run.
pub struct HeadWeights {
    /// softmax(mixing_weights): one factor per feature scale.
    mixing: Vec<f32>,
    scales: Vec<Vec<Bottleneck>>,
    downsamples: Vec<PackedLhs>,
    last_stage: Vec<Bottleneck>,
    fc: (Vec<f32>, Vec<f32>),
}

impl HeadWeights {
    /// Converts the head `spec` describes from `store`.
    pub fn new(spec: &HeadSpec, store: &WeightStore) -> Result<Self> {
        let get = |name: &str| -> Result<(Vec<f32>, Vec<usize>)> {
            let t = store.require(&format!("{CLASSIFIER_PREFIX}{name}"))?;
            Ok((t.to_f32(), t.shape().to_vec()))
        };
        let pack = |w: &[f32], shape: &[usize]| {
            PackedLhs::new(w, shape[0], shape[1], MatmulPrecision::F32).map_err(Error::Unsupported)
        };
        let normed = |prefix: &str| -> Result<NormedConv> {
            let (w, shape) = get(&format!("{prefix}.weight"))?;
            let conv = if shape[2] == 1 {
                Conv::Pointwise(pack(&w, &shape)?)
            } else {
                Conv::Spatial { weight: w, cin: shape[1], cout: shape[0] }
            };
            let norm = (get(&format!("{prefix}.norm.weight"))?.0, get(&format!("{prefix}.norm.bias"))?.0);
            Ok(NormedConv { conv, norm })
        };
        let stage = |prefix: &str| -> Result<Vec<Bottleneck>> {
            (0..spec.blocks_per_scale)
                .map(|j| {
                    Ok(Bottleneck {
                        conv1: normed(&format!("{prefix}.{j}.conv1"))?,
                        conv2: normed(&format!("{prefix}.{j}.conv2"))?,
                        conv3: normed(&format!("{prefix}.{j}.conv3"))?,
                    })
                })
                .collect()
        };
        let scales =
            (0..spec.feature_dims.len()).map(|i| stage(&format!("bottleneck_layers.{i}"))).collect::<Result<_>>()?;
        let downsamples = (0..spec.feature_dims.len())
            .map(|i| {
                let (w, shape) = get(&format!("downsample_layers.{i}.0.weight"))?;
                pack(&w, &shape)
            })
            .collect::<Result<_>>()?;
        Ok(HeadWeights {
            mixing: softmax(&get("mixing_weights")?.0),
            scales,
            downsamples,
            last_stage: stage("last_stage")?,
            fc: (get("fc.weight")?.0, get("fc.bias")?.0),
        })
    }

    /// Class probabilities (softmax of the logits) from the decoder `features`, highest
    /// resolution first, using `threads` workers of the current rayon pool.
    pub fn probabilities(&self, features: &[Feature], threads: usize) -> Vec<f32> {
        let mut state: Option<Feature> = None;
        for ((feature, blocks), (factor, down)) in
            features.iter().zip(&self.scales).zip(self.mixing.iter().zip(&self.downsamples))
        {
            let mut x = Feature { data: feature.data.iter().map(|v| v * factor).collect(), ..*feature };
            if let Some(s) = state.take() {
                x.data.iter_mut().zip(&s.data).for_each(|(a, b)| *a += b);
            }
            let x = blocks.iter().fold(x, |x, block| block.forward(x, threads));
            let mut down = pointwise(down, &x, threads);
            relu(&mut down.data);
            state = Some(max_pool2(&down));
        }
        let state = state.expect("at least one feature scale");
        let x = self.last_stage.iter().fold(state, |x, block| block.forward(x, threads));
        let n = x.h * x.w;
        let mean: Vec<f32> = x.data.chunks_exact(n).map(|plane| plane.iter().sum::<f32>() / n as f32).collect();
        let (weight, bias) = &self.fc;
        let logits: Vec<f32> = bias.iter().zip(weight.chunks_exact(x.c)).map(|(b, row)| b + dot(row, &mean)).collect();
        softmax(&logits)
    }
}

impl NormedConv {
    fn forward(&self, x: &Feature, threads: usize) -> Feature {
        let mut y = match &self.conv {
            Conv::Pointwise(w) => pointwise(w, x, threads),
            Conv::Spatial { weight, cin, cout } => {
                let mut data = vec![0.0f32; cout * x.h * x.w];
                conv3x3(&mut data, &x.data, None, weight, &vec![0.0; *cout], (*cin, *cout), (x.h, x.w));
                Feature { data, c: *cout, h: x.h, w: x.w }
            }
        };
        let n = y.h * y.w;
        let stats = layer_norm_stats(&y.data, n, y.c, n, HEAD_LAYER_NORM_EPS);
        let (scale, shift) = &self.norm;
        for (ch, plane) in y.data.chunks_exact_mut(n).enumerate() {
            for ((v, m), r) in plane.iter_mut().zip(&stats.mean).zip(&stats.rstd) {
                *v = (*v - m) * r * scale[ch] + shift[ch];
            }
        }
        y
    }
}

impl Bottleneck {
    fn forward(&self, x: Feature, threads: usize) -> Feature {
        let mut y = self.conv1.forward(&x, threads);
        relu(&mut y.data);
        let mut y = self.conv2.forward(&y, threads);
        relu(&mut y.data);
        let mut y = self.conv3.forward(&y, threads);
        y.data.iter_mut().zip(&x.data).for_each(|(a, b)| *a = (*a + b).max(0.0));
        y
    }
}

fn pointwise(w: &PackedLhs, x: &Feature, threads: usize) -> Feature {
    let n = x.h * x.w;
    let mut data = vec![0.0f32; w.rows() * n];
    let dst = MatMut { data: &mut data, row_stride: n };
    matmul(dst, w, MatRef { data: &x.data, row_stride: n }, n, Epilogue::default(), threads);
    Feature { data, c: w.rows(), h: x.h, w: x.w }
}

fn relu(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// 2×2 max-pool, stride 2 (floor: an odd last row or column is dropped, as in PyTorch).
fn max_pool2(x: &Feature) -> Feature {
    let (h, w) = (x.h / 2, x.w / 2);
    let mut data = Vec::with_capacity(x.c * h * w);
    for plane in x.data.chunks_exact(x.h * x.w) {
        for y in 0..h {
            for xx in 0..w {
                let at = |dy: usize, dx: usize| plane[(2 * y + dy) * x.w + 2 * xx + dx];
                data.push(at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1)));
            }
        }
    }
    Feature { data, c: x.c, h, w }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}
