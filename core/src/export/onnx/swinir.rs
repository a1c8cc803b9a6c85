//! The fork's SwinIR lowered from its spec (`spec::swinir`), its tokens kept as an
//! `[N, H, W, C]` map between the convs.
//!
//! A Swin block rolls the map (`Slice` + `Concat`; odd blocks by half a window up and left),
//! cuts it into windows (`Reshape` → `Transpose` → `Reshape` to `[N · windows, window², C]`),
//! runs multi-head attention within each window without bias or mask, puts the windows back
//! and rolls back; its linear layers are `MatMul`s with transposed weights plus their biases.

use super::OnnxOptions;
use super::builder::{Builder, attr_int};
use crate::error::Result;
use crate::model::Model;
use crate::spec::PadMode;
use crate::spec::swinir::{LAYER_NORM_EPS, RGB_MEAN, SwinirSpec};

/// Serialises the SwinIR `model` (of `spec`).
pub fn export(model: &Model, spec: &SwinirSpec, options: &OnnxOptions) -> Result<Vec<u8>> {
    let mut b = Builder::new(model.weights(), options.fp16);
    let input = b.pad_input(options.shape, spec.window, PadMode::Reflect);
    let mean = b.constant(&[1, RGB_MEAN.len(), 1, 1], &RGB_MEAN, false)?;
    let centred = b.node("Sub", &[&input.padded, &mean], &[]);
    let first = b.conv_layer(&centred, "conv_first", 3, 1)?;
    let mut t = b.transpose(&first, &[0, 2, 3, 1]);
    let grid = WindowGrid::new(&mut b, &t, spec);
    if spec.patch_norm {
        t = b.layer_norm(&t, "patch_embed.norm.weight", "patch_embed.norm.bias", LAYER_NORM_EPS)?;
    }
    for (i, &depth) in spec.depths.iter().enumerate() {
        let mut u = t.clone();
        for j in 0..depth {
            u = swin_block(&mut b, &u, &grid, &spec.block_prefix(i, j), spec.heads[i], spec.shift(j))?;
        }
        let map = b.transpose(&u, &[0, 3, 1, 2]);
        let conv = b.conv_layer(&map, &format!("{}.conv", spec.group_prefix(i)), 3, 1)?;
        let conv = b.transpose(&conv, &[0, 2, 3, 1]);
        t = b.node("Add", &[&conv, &t], &[]);
    }
    let t = b.layer_norm(&t, "norm.weight", "norm.bias", LAYER_NORM_EPS)?;
    let map = b.transpose(&t, &[0, 3, 1, 2]);
    let body = b.conv_layer(&map, "conv_after_body", 3, 1)?;
    let body = b.node("Add", &[&body, &first], &[]);
    let last = b.conv_layer(&body, "conv_last", 3, 1)?;
    let out = b.node("Add", &[&centred, &last], &[]);
    let out = b.node("Add", &[&out, &mean], &[]);
    b.crop_output(&out, &input.size);
    let doc = format!(
        "MaskDCPT swinir (embed {}, windows of {}): RGB float32 in [0,1], reflect-padded inside to a multiple of {} \
         and cropped back",
        spec.embed_dim, spec.window, spec.window
    );
    Ok(b.finish(input.dims, &doc))
}

/// The shapes that cut an `[N, H, W, C]` map into windows and put them back, computed once
/// from the map's size.
struct WindowGrid {
    /// Window side.
    window: i64,
    /// Channels of the tokens.
    channels: i64,
    /// `[N, H / window, window, W / window, window, C]` (N copied).
    cut: String,
    /// `[N, H / window, W / window, window, window, C]` (N inferred).
    join: String,
    /// `[N, H, W, C]`.
    map: String,
}

impl WindowGrid {
    /// The grid of windows over the `[N, H, W, C]` token map `map`.
    fn new(b: &mut Builder<'_>, map: &str, spec: &SwinirSpec) -> Self {
        let (window, channels) = (spec.window as i64, spec.embed_dim as i64);
        let side = b.int64s(&[window]);
        // Windows down and across: the map's height and width over the window side.
        let [rows, cols] = [1, 2].map(|axis| {
            let length = b.dims(map, axis, axis + 1);
            b.node("Div", &[&length, &side], &[])
        });
        let (copy, inferred, side_c) = (b.int64s(&[0]), b.int64s(&[-1]), b.int64s(&[window, channels]));
        let concat = |b: &mut Builder<'_>, parts: &[&str]| b.node("Concat", parts, &[attr_int("axis", 0)]);
        let cut = concat(b, &[&copy, &rows, &side, &cols, &side_c]);
        let sides = b.int64s(&[window, window, channels]);
        let join = concat(b, &[&inferred, &rows, &cols, &sides]);
        let map = b.node("Shape", &[map], &[]);
        WindowGrid { window, channels, cut, join, map }
    }

    /// The `[N, H, W, C]` map `x` as `[N · windows, window², C]`.
    fn windows(&self, b: &mut Builder<'_>, x: &str) -> String {
        let cut = b.node("Reshape", &[x, &self.cut], &[]);
        let grouped = b.transpose(&cut, &[0, 1, 3, 2, 4, 5]);
        b.reshape(&grouped, &[-1, self.window * self.window, self.channels])
    }

    /// The windows `w` back as an `[N, H, W, C]` map.
    fn map(&self, b: &mut Builder<'_>, w: &str) -> String {
        let joined = b.node("Reshape", &[w, &self.join], &[]);
        let rows = b.transpose(&joined, &[0, 1, 3, 2, 4, 5]);
        b.node("Reshape", &[&rows, &self.map], &[])
    }
}

/// Swin block `p` on the `[N, H, W, C]` map `x`, rolled by `shift` around its attention.
fn swin_block(b: &mut Builder<'_>, x: &str, grid: &WindowGrid, p: &str, heads: usize, shift: usize) -> Result<String> {
    let y = b.layer_norm(x, &format!("{p}.norm1.weight"), &format!("{p}.norm1.bias"), LAYER_NORM_EPS)?;
    let shift = shift as i64;
    let y = if shift > 0 { roll_map(b, &y, -shift) } else { y };
    let windows = grid.windows(b, &y);
    let attended = window_attention(b, &windows, &format!("{p}.attn"), grid.channels as usize, heads)?;
    let y = grid.map(b, &attended);
    let y = if shift > 0 { roll_map(b, &y, shift) } else { y };
    let x = b.node("Add", &[x, &y], &[]);
    let m = b.layer_norm(&x, &format!("{p}.norm2.weight"), &format!("{p}.norm2.bias"), LAYER_NORM_EPS)?;
    let m = linear(b, &m, &format!("{p}.mlp.fc1"))?;
    let m = b.gelu(&m)?;
    let m = linear(b, &m, &format!("{p}.mlp.fc2"))?;
    Ok(b.node("Add", &[&x, &m], &[]))
}

/// `torch.roll` of an `[N, H, W, C]` map by `shift` rows and columns.
fn roll_map(b: &mut Builder<'_>, x: &str, shift: i64) -> String {
    let rows = b.roll(x, shift, 1);
    b.roll(&rows, shift, 2)
}

/// Multi-head attention within each window of `w` (`[windows, tokens, c]`), module `p`:
/// `proj(softmax(q · scale · kᵀ) v)`, the scores and softmax in float32.
fn window_attention(b: &mut Builder<'_>, w: &str, p: &str, c: usize, heads: usize) -> Result<String> {
    let head_dim = c / heads;
    let qkv = linear(b, w, &format!("{p}.qkv"))?;
    let qkv = b.reshape(&qkv, &[0, 0, 3, heads as i64, head_dim as i64]);
    let qkv = b.transpose(&qkv, &[2, 0, 3, 1, 4]);
    let part = |b: &mut Builder<'_>, index: i64| {
        let index = b.int64_scalar(index);
        b.node("Gather", &[&qkv, &index], &[attr_int("axis", 0)])
    };
    let (q, k, v) = (part(b, 0), part(b, 1), part(b, 2));
    let (q, k) = (b.cast_to_f32(&q), b.cast_to_f32(&k));
    // PyTorch multiplies a float32 q by the Python float `head_dim ** -0.5`, i.e. by its f32.
    let scale = b.scalar((head_dim as f64).powf(-0.5) as f32, true)?;
    let q = b.node("Mul", &[&q, &scale], &[]);
    let kt = b.transpose(&k, &[0, 1, 3, 2]);
    let scores = b.node("MatMul", &[&q, &kt], &[]);
    let attention = b.node("Softmax", &[&scores], &[attr_int("axis", -1)]);
    let attention = b.cast_to_activation(&attention);
    let mixed = b.node("MatMul", &[&attention, &v], &[]);
    let mixed = b.transpose(&mixed, &[0, 2, 1, 3]);
    let mixed = b.reshape(&mixed, &[0, 0, c as i64]);
    linear(b, &mixed, &format!("{p}.proj"))
}

/// `nn.Linear` `p` on the last axis of `x`: `x · weightᵀ (+ bias)`.
fn linear(b: &mut Builder<'_>, x: &str, p: &str) -> Result<String> {
    let weight = b.weight_transposed(&format!("{p}.weight"))?;
    let product = b.node("MatMul", &[x, &weight], &[]);
    let bias = format!("{p}.bias");
    if !b.has(&bias) {
        return Ok(product);
    }
    let bias = b.weight(&bias, false)?;
    Ok(b.node("Add", &[&product, &bias], &[]))
}
