//! The transformers' dense 3×3 convolutions (padding 1): direct for the image-side convs
//! (three channels in or out), products over bands of patches for the wide ones.

use super::kernels::conv::{conv3x3, im2col3x3};
use super::kernels::matmul::{Epilogue, MatMut, MatRef, MatmulPrecision, PackedLhs, matmul};
use super::prepared::pack;
use super::row_bands;
use crate::error::Result;
use crate::weights::WeightStore;

/// Elements of the patch matrix a patch conv streams through.
const PATCH_ELEMENTS: usize = 1 << 21;

/// A 3×3 conv run directly: `[cout][cin][9]`, and its bias (zeros where it has none).
pub struct Conv3x3 {
    /// Weights `[cout][cin][9]`.
    pub weight: Vec<f32>,
    /// One per output channel.
    pub bias: Vec<f32>,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

impl Conv3x3 {
    /// Reads `{key}.weight` and, when `biased`, `{key}.bias`.
    pub fn load(store: &WeightStore, key: &str, biased: bool) -> Result<Self> {
        let t = store.require(&format!("{key}.weight"))?;
        let (cout, cin) = (t.shape()[0], t.shape()[1]);
        let bias = if biased { store.require(&format!("{key}.bias"))?.to_f32() } else { vec![0.0; cout] };
        Ok(Conv3x3 { weight: t.to_f32(), bias, cin, cout })
    }

    /// f32 values held.
    pub fn len(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// `out = conv(input) [+ residual]` on an `h × w` map.
    pub fn run(&self, out: &mut [f32], input: &[f32], residual: Option<&[f32]>, (h, w): (usize, usize)) {
        conv3x3(out, input, residual, &self.weight, &self.bias, (self.cin, self.cout), (h, w));
    }
}

/// A 3×3 conv run as a product over its patches: `[cout][cin · 9]` packed, and its bias.
pub struct PatchConv {
    /// Weights `[cout][cin · 9]`.
    pub weight: PackedLhs,
    /// One per output channel, where the conv has one.
    pub bias: Option<Vec<f32>>,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

impl PatchConv {
    /// Reads `{key}.weight` and, when `biased`, `{key}.bias`, for products in `precision`.
    pub fn load(store: &WeightStore, key: &str, biased: bool, precision: MatmulPrecision) -> Result<Self> {
        let t = store.require(&format!("{key}.weight"))?;
        let (cout, cin) = (t.shape()[0], t.shape()[1]);
        let bias = biased.then(|| store.require(&format!("{key}.bias")).map(|b| b.to_f32())).transpose()?;
        Ok(PatchConv { weight: pack(&t.f32_values(), cout, precision)?, bias, cin, cout })
    }

    /// f32 values held.
    pub fn len(&self) -> usize {
        self.weight.stored_len() + self.bias.as_ref().map_or(0, Vec::len)
    }

    /// Rows per band of patches on an `h × w` map.
    fn band_rows(&self, (h, w): (usize, usize)) -> usize {
        (PATCH_ELEMENTS / (9 * self.cin * w).max(1)).clamp(1, h.max(1))
    }

    /// Length of the patch buffer [`PatchConv::run`] needs on an `h × w` map.
    pub fn patches_len(&self, (h, w): (usize, usize)) -> usize {
        9 * self.cin * self.band_rows((h, w)) * w
    }

    /// `out = conv(input)` on an `h × w` map (`out += conv(input)` when `accumulate`), in row
    /// bands through `patches`, with `threads` workers.
    pub fn run(
        &self,
        out: &mut [f32],
        input: &[f32],
        (h, w): (usize, usize),
        patches: &mut [f32],
        accumulate: bool,
        threads: usize,
    ) {
        let epilogue = Epilogue { accumulate, bias: self.bias.as_deref(), ..Default::default() };
        for (r0, r1) in row_bands(h, self.band_rows((h, w))) {
            let n = (r1 - r0) * w;
            im2col3x3(patches, input, self.cin, (h, w), (r0, r1));
            let dst = MatMut { data: &mut out[r0 * w..], row_stride: h * w };
            matmul(dst, &self.weight, MatRef { data: patches, row_stride: n }, n, epilogue, threads);
        }
    }
}
