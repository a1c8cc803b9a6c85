//! The CPU engine of the MaskDCPT fork's Restormer: the U-shape of transformer blocks run
//! from the spec (`spec::restormer`) over planar f32 maps, with the CPU kernels of the NAFNet
//! engine (products with LayerNorm fused into their input, direct 3×3 convs, space-to-depth
//! and PixelShuffle) and Restormer's own (depthwise 3×3, the GELU gate, the attention sums).
//! Restormer's attention spans the whole map, so the network runs whole (`WholeEngine`).

mod block;
mod prompt;
mod weights;

use super::dense_conv::PatchConv;
use super::kernels::elementwise::{add_pixel_shuffle, resize_bilinear, space_to_depth};
use super::kernels::matmul::{Epilogue, MatMut, MatRef, MatmulPrecision, matmul};
use super::whole::{WholeEngine, WholeNetwork};
use super::workspace::zeroed;
use crate::error::Result;
use crate::model::Model;
use crate::spec::RestormerSpec;
use crate::spec::restormer::LEVELS;
use block::{BlockScratch, band_rows, run_block, scratch_len};
use weights::{RestormerWeights, TransformerWeights};

/// The Restormer and PromptIR networks: their converted weights and forward pass.
pub struct RestormerNetwork {
    weights: RestormerWeights,
    dim: usize,
    precision: MatmulPrecision,
}

/// The Restormer and PromptIR CPU engine.
pub type RestormerEngine = WholeEngine<RestormerNetwork>;

/// Buffer lengths (f32 values) of one run on a padded `h × w` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Encoder outputs kept for the skips, full resolution first.
    skips: [usize; LEVELS - 1],
    /// The running feature map.
    x: usize,
    /// 3×3 conv outputs before (un)shuffling.
    conv: usize,
    /// Up-sampled features concatenated with their skip.
    concat: usize,
    /// A band of a 3×3 conv's patches.
    patches: usize,
    /// Block scratch: window, q and k, gated features, v.
    block: [usize; 4],
}

impl Layout {
    fn new(weights: &RestormerWeights, dim: usize, (h, w): (usize, usize)) -> Self {
        let pixels = |level: usize| (h >> level) * (w >> level);
        let mut block = [0; 4];
        for (level, b) in weights.blocks() {
            let map = (h >> level, w >> level);
            let lens = scratch_len(b, map, band_rows(b.c, b.hidden, map));
            block.iter_mut().zip(lens).for_each(|(a, n)| *a = (*a).max(n));
        }
        let decoders = weights.decoders.iter().enumerate().map(|(i, d)| (LEVELS - 2 - i, d));
        // Prompt stages: the feature with its prompt (in `concat`), the stage's output (in `x`).
        let prompts = || decoders.clone().filter_map(|(level, d)| d.prompt.as_ref().map(|p| (level + 1, p)));
        let concat = decoders
            .clone()
            .filter(|(_, d)| d.reduce.is_some())
            .map(|(level, d)| (d.up.cout / 4 + (dim << level)) * pixels(level));
        Layout {
            skips: std::array::from_fn(|level| (dim << level) * pixels(level)),
            // The full-resolution decoder's concatenation is the widest of the decoder's maps.
            x: prompts().map(|(level, p)| p.stage.out * pixels(level)).fold(2 * dim * pixels(0), usize::max),
            // A 3×3 conv's input (a resized prompt) or output before (un)shuffling.
            conv: weights.patch_convs().map(|(level, c)| c.cin.max(c.cout) * pixels(level)).max().unwrap_or(0),
            concat: concat.chain(prompts().map(|(level, p)| p.block.c * pixels(level))).max().unwrap_or(0),
            patches: weights
                .patch_convs()
                .map(|(level, conv)| conv.patches_len((h >> level, w >> level)))
                .max()
                .unwrap_or(0),
            block,
        }
    }

    fn total_len(&self) -> usize {
        self.skips.iter().sum::<usize>()
            + self.x
            + self.conv
            + self.concat
            + self.patches
            + self.block.iter().sum::<usize>()
    }
}

/// The buffers of one run.
pub struct Workspace {
    skips: Vec<Vec<f32>>,
    x: Vec<f32>,
    conv: Vec<f32>,
    concat: Vec<f32>,
    patches: Vec<f32>,
    window: Vec<f32>,
    qk: Vec<f32>,
    gated: Vec<f32>,
    v: Vec<f32>,
}

impl Workspace {
    fn allocate(layout: Layout) -> Result<Self> {
        let [window, qk, gated, v] = layout.block;
        Ok(Workspace {
            skips: layout.skips.iter().map(|&n| zeroed(n)).collect::<Result<_>>()?,
            x: zeroed(layout.x)?,
            conv: zeroed(layout.conv)?,
            concat: zeroed(layout.concat)?,
            patches: zeroed(layout.patches)?,
            window: zeroed(window)?,
            qk: zeroed(qk)?,
            gated: zeroed(gated)?,
            v: zeroed(v)?,
        })
    }
}

impl RestormerNetwork {
    /// Converts the weights of `spec` once, for products in `precision`.
    pub fn new(model: &Model, spec: &RestormerSpec, precision: MatmulPrecision) -> Result<Self> {
        Ok(RestormerNetwork {
            weights: RestormerWeights::new(spec, model.weights(), precision)?,
            dim: spec.dim,
            precision,
        })
    }
}

impl WholeNetwork for RestormerNetwork {
    type Workspace = Workspace;

    fn weights_len(&self) -> usize {
        self.weights.len()
    }

    fn workspace_len(&self, size: (usize, usize)) -> usize {
        Layout::new(&self.weights, self.dim, size).total_len()
    }

    fn allocate(&self, size: (usize, usize)) -> Result<Workspace> {
        Workspace::allocate(Layout::new(&self.weights, self.dim, size))
    }

    fn forward(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        output: &mut [f32],
        (h, w): (usize, usize),
        threads: usize,
    ) -> Result<()> {
        let size = |level: usize| (h >> level, w >> level);
        let nets = &self.weights;
        let Workspace { skips, x, conv, concat, patches, window, qk, gated, v } = ws;
        let mut patch_conv = |c: &PatchConv, out: &mut [f32], input: &[f32], level: usize| {
            c.run(out, input, size(level), patches, false, threads)
        };
        let mut stage = |blocks: &[TransformerWeights], map: &mut [f32], level: usize| -> Result<()> {
            for b in blocks {
                let scratch =
                    BlockScratch { window: &mut window[..], qk: &mut qk[..], gated: &mut gated[..], v: &mut v[..] };
                let rows = band_rows(b.c, b.hidden, size(level));
                run_block(b, map, size(level), rows, scratch, self.precision, threads)?;
            }
            Ok(())
        };
        // Encoder: embed, then each level's blocks and its down-sampling (3×3 conv, unshuffle).
        nets.embed.run(&mut skips[0], input, None, size(0));
        for level in 0..LEVELS {
            let last = level == LEVELS - 1;
            let map: &mut [f32] = if last { &mut x[..] } else { &mut skips[level][..] };
            stage(&nets.encoders[level], map, level)?;
            if last {
                break;
            }
            let down = &nets.downs[level];
            patch_conv(down, conv, &skips[level], level);
            let next: &mut [f32] = if level + 2 == LEVELS { &mut x[..] } else { &mut skips[level + 1][..] };
            let (hl, wl) = size(level);
            space_to_depth(next, conv, down.cout, (hl, wl), (0, hl / 2));
        }
        // Decoder: PromptIR's prompt stage, up-sample (3×3 conv, shuffle), concatenate the skip,
        // reduce, blocks.
        for (i, decoder) in nets.decoders.iter().enumerate() {
            let level = LEVELS - 2 - i;
            if let Some(p) = &decoder.prompt {
                let below = size(level + 1);
                let plane = below.0 * below.1;
                let features = p.linear.len() / p.stage.count;
                let side = p.stage.size;
                let mixed = prompt::mixed_prompt(p, x, plane);
                resize_bilinear(conv, &mixed, p.stage.channels, (side, side), below);
                concat[..features * plane].copy_from_slice(&x[..features * plane]);
                patch_conv(&p.conv, &mut concat[features * plane..], conv, level + 1);
                stage(std::slice::from_ref(&p.block), concat, level + 1)?;
                let (dst, rhs) = (MatMut { data: x, row_stride: plane }, MatRef { data: concat, row_stride: plane });
                let reduce = Epilogue { bias: Some(&p.reduce.1), ..Default::default() };
                matmul(dst, &p.reduce.0, rhs, plane, reduce, threads);
            }
            let (hl, wl) = size(level);
            let (up, plane) = (&decoder.up, hl * wl);
            patch_conv(up, conv, x, level + 1);
            let target: &mut [f32] = if decoder.reduce.is_some() { &mut concat[..] } else { &mut x[..] };
            let shuffled = up.cout / 4;
            target[..shuffled * plane].fill(0.0);
            add_pixel_shuffle(target, conv, shuffled, (hl, wl), (0, hl / 2));
            let skip = &skips[level][..(self.dim << level) * plane];
            target[shuffled * plane..shuffled * plane + skip.len()].copy_from_slice(skip);
            if let Some((reduce, bias)) = &decoder.reduce {
                let (dst, rhs) = (MatMut { data: x, row_stride: plane }, MatRef { data: concat, row_stride: plane });
                let epilogue = Epilogue { bias: bias.as_deref(), ..Default::default() };
                matmul(dst, reduce, rhs, plane, epilogue, threads);
            }
            stage(&decoder.blocks, x, level)?;
        }
        stage(&nets.refinement, x, 0)?;
        nets.output.run(output, x, Some(input), size(0));
        Ok(())
    }
}
