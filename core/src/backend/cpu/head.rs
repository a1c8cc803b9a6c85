//! The degradation-classification head on the CPU ([`HeadSpec`]): weights converted once
//! (1×1 convs packed for the engine's matrix product, f32 whatever the engine's precision),
//! then a forward pass over the decoder features a run captured (and the input image, for a
//! head that embeds it or has a spectral branch).

use std::borrow::Cow;

use super::kernels::conv::conv3x3;
use super::kernels::layernorm::layer_norm_stats;
use super::kernels::matmul::{Epilogue, MatMut, MatRef, MatmulPrecision, PackedLhs, matmul};
use super::kernels::strided_conv::{conv_strided, strided_len};
use crate::error::{Error, Result};
use crate::graph::FeatureSource;
use crate::head::{
    EMBED_KERNEL, Feature, HEAD_LAYER_NORM_EPS, HeadSpec, SPECTRUM_CENTRE, SPECTRUM_HIDDEN_LAYER,
    SPECTRUM_OUTPUT_LAYER, SPECTRUM_SCALE,
};
use crate::image::{Image, pad_planar_into};
use crate::spec::{CLASSIFIER_PREFIX, IMAGE_CHANNELS, PadMode};
use crate::spectrum::spectral_signature;
use crate::weights::WeightStore;

/// Scale and shift of a channel LayerNorm.
type Norm = (Vec<f32>, Vec<f32>);

/// A bias-free conv followed by a channel LayerNorm.
struct NormedConv {
    conv: Conv,
    norm: Norm,
}

/// Weight (`[out][in]`) and bias of a linear layer.
type Linear = (Vec<f32>, Vec<f32>);

/// The image embedding (`conv_embed`): a 7×7 stride-2 conv with bias, then a channel
/// LayerNorm, over the input padded as the backbone pads it.
struct Embed {
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    norm: Norm,
}

/// The spectral branch: the padded input's signature, standardised (`(s − centre) / scale`)
/// → linear → ReLU → linear (logits).
struct Spectrum {
    centre: Vec<f32>,
    scale: Vec<f32>,
    hidden: Linear,
    out: Linear,
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
    /// The image embedding, for a head that reads the image.
    embed: Option<Embed>,
    /// The spectral branch, for a head that has one.
    spectrum: Option<Spectrum>,
    /// How the backbone pads its input (what the embedding and the spectral branch read).
    pad_mode: PadMode,
    /// The network features the head reads.
    source: FeatureSource,
    /// The first level of them it reads.
    first_level: usize,
    /// softmax(mixing_weights): one factor per feature scale.
    mixing: Vec<f32>,
    scales: Vec<Vec<Bottleneck>>,
    downsamples: Vec<PackedLhs>,
    last_stage: Vec<Bottleneck>,
    fc: Linear,
}

impl HeadWeights {
    /// Converts the head `spec` describes from `store`; `pad_mode` is the backbone's (the
    /// image embedding reads the input padded as the backbone does).
    pub fn new(spec: &HeadSpec, store: &WeightStore, pad_mode: PadMode) -> Result<Self> {
        // Borrowed from the checkpoint where it holds aligned f32: the 1×1 convs (most of the
        // head's weights) are packed from there without a copy.
        let get = |name: &str| -> Result<(Cow<'_, [f32]>, Vec<usize>)> {
            let t = store.require(&format!("{CLASSIFIER_PREFIX}{name}"))?;
            Ok((t.f32_values(), t.shape().to_vec()))
        };
        let owned = |name: &str| -> Result<Vec<f32>> { Ok(get(name)?.0.into_owned()) };
        let pack = |w: &[f32], shape: &[usize]| {
            PackedLhs::new(w, shape[0], shape[1], MatmulPrecision::F32).map_err(Error::Unsupported)
        };
        // A LayerNorm's or a linear layer's weight and bias.
        let weight_and_bias = |prefix: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((owned(&format!("{prefix}.weight"))?, owned(&format!("{prefix}.bias"))?))
        };
        let normed = |prefix: &str| -> Result<NormedConv> {
            let (w, shape) = get(&format!("{prefix}.weight"))?;
            let conv = if shape[2] == 1 {
                Conv::Pointwise(pack(&w, &shape)?)
            } else {
                Conv::Spatial { weight: w.into_owned(), cin: shape[1], cout: shape[0] }
            };
            Ok(NormedConv { conv, norm: weight_and_bias(&format!("{prefix}.norm"))? })
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
        let embed = if spec.embeds_image {
            let (weight, shape) = get("conv_embed.0.weight")?;
            let bias = owned("conv_embed.0.bias")?;
            Some(Embed {
                weight: weight.into_owned(),
                bias,
                channels: shape[0],
                norm: weight_and_bias("conv_embed.1")?,
            })
        } else {
            None
        };
        let spectrum = match spec.spectrum_hidden {
            Some(_) => Some(Spectrum {
                centre: owned(SPECTRUM_CENTRE)?,
                scale: owned(SPECTRUM_SCALE)?,
                hidden: weight_and_bias(SPECTRUM_HIDDEN_LAYER)?,
                out: weight_and_bias(SPECTRUM_OUTPUT_LAYER)?,
            }),
            None => None,
        };
        Ok(HeadWeights {
            embed,
            spectrum,
            pad_mode,
            source: spec.features,
            first_level: spec.first_level(),
            mixing: softmax(&get("mixing_weights")?.0),
            scales,
            downsamples,
            last_stage: stage("last_stage")?,
            fc: weight_and_bias("fc")?,
        })
    }

    /// The network features the head reads (what [`Self::probabilities`] takes).
    pub fn source(&self) -> FeatureSource {
        self.source
    }

    /// Class probabilities (softmax of the logits) of `input` from the `features` of its run
    /// that [`Self::source`] names (every level, highest resolution first), using `threads`
    /// workers of the current rayon pool.
    pub fn probabilities(&self, input: &Image, features: &[Feature], threads: usize) -> Vec<f32> {
        // The input padded as the backbone padded it: the size of the level-0 features.
        let (h, w) = (features[0].h, features[0].w);
        let padded = (self.embed.is_some() || self.spectrum.is_some()).then(|| {
            let mut padded = vec![0.0f32; IMAGE_CHANNELS * h * w];
            pad_planar_into(input, h, w, self.pad_mode, &mut padded);
            padded
        });
        let features = &features[self.first_level..];
        let mut state = self.embed.as_ref().zip(padded.as_deref()).map(|(embed, image)| embed.forward(image, h, w));
        debug_assert!(state.as_ref().is_none_or(|s| (s.h, s.w) == (features[0].h, features[0].w)));
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
        let mut logits = linear(&self.fc, &mean);
        if let Some((spectrum, image)) = self.spectrum.as_ref().zip(padded.as_deref()) {
            logits.iter_mut().zip(spectrum.logits(image, h, w)).for_each(|(l, s)| *l += s);
        }
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
        channel_norm(&mut y, &self.norm);
        y
    }
}

impl Embed {
    /// The embedding of the padded planar input `padded` (`h × w`).
    fn forward(&self, padded: &[f32], h: usize, w: usize) -> Feature {
        let (oh, ow) = (strided_len(h, EMBED_KERNEL, 2), strided_len(w, EMBED_KERNEL, 2));
        let mut data = vec![0.0f32; self.channels * oh * ow];
        let shape = ((IMAGE_CHANNELS, self.channels), (h, w), (EMBED_KERNEL, 2));
        conv_strided(&mut data, padded, (&self.weight, &self.bias), shape.0, shape.1, shape.2);
        let mut y = Feature { data, c: self.channels, h: oh, w: ow };
        channel_norm(&mut y, &self.norm);
        y
    }
}

impl Spectrum {
    /// The branch's logits for the padded planar input `padded` (`h × w`).
    fn logits(&self, padded: &[f32], h: usize, w: usize) -> Vec<f32> {
        let signature: Vec<f32> = spectral_signature(padded, IMAGE_CHANNELS, h, w)
            .iter()
            .zip(self.centre.iter().zip(&self.scale))
            .map(|(s, (centre, scale))| (s - centre) / scale)
            .collect();
        let mut hidden = linear(&self.hidden, &signature);
        relu(&mut hidden);
        linear(&self.out, &hidden)
    }
}

/// `W · x + b` for the linear layer `(W, b)`.
fn linear((weight, bias): &Linear, x: &[f32]) -> Vec<f32> {
    bias.iter().zip(weight.chunks_exact(x.len())).map(|(b, row)| b + dot(row, x)).collect()
}

/// Normalises every pixel's channel vector of `y` in place, then scales and shifts.
fn channel_norm(y: &mut Feature, (scale, shift): &Norm) {
    let n = y.h * y.w;
    let stats = layer_norm_stats(&y.data, n, y.c, n, HEAD_LAYER_NORM_EPS);
    for (ch, plane) in y.data.chunks_exact_mut(n).enumerate() {
        for ((v, m), r) in plane.iter_mut().zip(&stats.mean).zip(&stats.rstd) {
            *v = (*v - m) * r * scale[ch] + shift[ch];
        }
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
