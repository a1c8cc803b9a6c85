//! The CPU engine of the MaskDCPT fork's SwinIR: the spec's network (`spec::swinir`) over
//! planar f32 maps. The Swin blocks run on window-major copies of the map (one per block, as
//! its shift rolls the windows), the 3×3 convs as products over patches or directly.
//!
//! Shifted windows wrap around the map, so a run is exact only whole (`WholeEngine`).

mod block;
mod weights;
mod windows;

use super::kernels::layernorm::layer_norm_in_place;
use super::kernels::matmul::MatmulPrecision;
use super::whole::{WholeEngine, WholeNetwork};
use super::workspace::zeroed;
use crate::error::Result;
use crate::model::Model;
use crate::spec::swinir::{LAYER_NORM_EPS, RGB_MEAN};
use crate::spec::{IMAGE_CHANNELS, SwinirSpec};
use weights::{Norm, SwinirWeights};
use windows::Windows;

/// Tokens a Swin block's products take at once: whole windows, as many as make this many.
const GROUP_TOKENS: usize = 256;

/// The SwinIR network: its converted weights and forward pass.
pub struct SwinirNetwork {
    weights: SwinirWeights,
    embed_dim: usize,
    window: usize,
}

/// The SwinIR CPU engine.
pub type SwinirEngine = WholeEngine<SwinirNetwork>;

impl SwinirNetwork {
    /// Converts the weights of `spec` once, for products in `precision`.
    pub fn new(model: &Model, spec: &SwinirSpec, precision: MatmulPrecision) -> Result<Self> {
        Ok(SwinirNetwork {
            weights: SwinirWeights::new(spec, model.weights(), precision)?,
            embed_dim: spec.embed_dim,
            window: spec.window,
        })
    }

    /// Windows per group of a block's products.
    fn windows_per_group(&self) -> usize {
        GROUP_TOKENS.div_ceil(self.window * self.window)
    }

    fn patches_len(&self, size: (usize, usize)) -> usize {
        self.weights.patch_convs().map(|c| c.patches_len(size)).max().unwrap_or(0)
    }
}

/// The buffers of one run.
pub struct Workspace {
    /// The input minus the RGB mean.
    shifted: Vec<f32>,
    /// The tokens.
    x: Vec<f32>,
    /// A residual group's block outputs; the `conv_first` output and the body's at the end.
    y: Vec<f32>,
    /// The tokens in window-major order.
    windows: Vec<f32>,
    /// A band of a 3×3 conv's patches.
    patches: Vec<f32>,
}

fn layer_norm(x: &mut [f32], pixels: usize, (scale, shift): &Norm) {
    layer_norm_in_place(x, pixels, pixels, (scale, shift), LAYER_NORM_EPS);
}

impl WholeNetwork for SwinirNetwork {
    type Workspace = Workspace;

    fn weights_len(&self) -> usize {
        self.weights.len()
    }

    fn workspace_len(&self, (h, w): (usize, usize)) -> usize {
        (IMAGE_CHANNELS + 3 * self.embed_dim) * h * w + self.patches_len((h, w))
    }

    fn worker_scratch_len(&self) -> usize {
        let hidden = self.weights.groups.iter().flat_map(|g| &g.blocks).map(|b| b.fc1.weight.rows()).max();
        let tokens = self.window * self.window;
        block::scratch_len(self.embed_dim, hidden.unwrap_or(0), self.windows_per_group(), tokens)
    }

    fn allocate(&self, (h, w): (usize, usize)) -> Result<Workspace> {
        let map = self.embed_dim * h * w;
        Ok(Workspace {
            shifted: zeroed(IMAGE_CHANNELS * h * w)?,
            x: zeroed(map)?,
            y: zeroed(map)?,
            windows: zeroed(map)?,
            patches: zeroed(self.patches_len((h, w)))?,
        })
    }

    fn forward(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        output: &mut [f32],
        (h, w): (usize, usize),
        threads: usize,
    ) -> Result<()> {
        let (nets, pixels, e) = (&self.weights, h * w, self.embed_dim);
        let Workspace { shifted, x, y, windows, patches } = ws;
        for (ch, mean) in RGB_MEAN.iter().enumerate() {
            let range = ch * pixels..(ch + 1) * pixels;
            shifted[range.clone()].iter_mut().zip(&input[range]).for_each(|(s, v)| *s = v - mean);
        }
        nets.first.run(x, shifted, None, (h, w));
        if let Some(norm) = &nets.patch_norm {
            layer_norm(x, pixels, norm);
        }
        let tokens = self.window * self.window;
        let windows_per_group = self.windows_per_group();
        for group in &nets.groups {
            if group.blocks.is_empty() {
                y.copy_from_slice(x);
            }
            for (j, block) in group.blocks.iter().enumerate() {
                let layout = Windows {
                    channels: e,
                    size: (h, w),
                    side: self.window,
                    shift: block.shift,
                    group: windows_per_group,
                };
                layout.gather(windows, if j == 0 { x } else { y });
                block::run_block(block, windows, e, tokens, windows_per_group);
                layout.scatter(y, windows);
            }
            group.conv.run(x, y, (h, w), patches, true, threads);
        }
        layer_norm(x, pixels, &nets.norm);
        nets.first.run(y, shifted, None, (h, w));
        nets.after_body.run(y, x, (h, w), patches, true, threads);
        nets.last.run(output, y, Some(shifted), (h, w));
        for (ch, mean) in RGB_MEAN.iter().enumerate() {
            output[ch * pixels..(ch + 1) * pixels].iter_mut().for_each(|v| *v += mean);
        }
        Ok(())
    }
}
