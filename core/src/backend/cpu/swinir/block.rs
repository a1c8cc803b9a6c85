//! One Swin block on window-major tokens, a group of windows at a time in parallel, in place:
//! `x += proj(attention(LN1(x)))` within each window, then `x += fc2(GELU(fc1(LN2(x))))`.
//!
//! A window holds every token its attention reads and the MLP is per token, so each group of
//! windows runs the whole block on its own, in scratch small enough to stay in cache: the
//! products over the group's tokens at once, the attention window by window. The LayerNorms
//! are applied while the products read their input.

use rayon::prelude::*;

use super::super::kernels::activation::gelu_in_place;
use super::super::kernels::layernorm::layer_norm_stats_into;
use super::super::kernels::matmul::{Epilogue, MatMut, MatRef, RhsNorm, matmul};
use super::super::kernels::window_attention::{Qkv, attend};
use super::weights::{Linear, Norm, SwinBlockWeights};
use crate::spec::swinir::LAYER_NORM_EPS;

/// f32 values of one worker's scratch for a block of `channels` channels and `hidden` MLP
/// channels over groups of `group` windows of `window_tokens` tokens.
pub fn scratch_len(channels: usize, hidden: usize, group: usize, window_tokens: usize) -> usize {
    let tokens = group * window_tokens;
    (4 * channels + hidden + 2) * tokens + window_tokens * window_tokens
}

/// The scratch of one worker's block over a group of windows ([`scratch_len`] values).
struct Scratch {
    qkv: Vec<f32>,
    attention: Vec<f32>,
    hidden: Vec<f32>,
    scores: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

impl Scratch {
    fn new(channels: usize, hidden: usize, tokens: usize, window_tokens: usize) -> Self {
        Scratch {
            qkv: vec![0.0; 3 * channels * tokens],
            attention: vec![0.0; channels * tokens],
            hidden: vec![0.0; hidden * tokens],
            scores: vec![0.0; window_tokens * window_tokens],
            mean: vec![0.0; tokens],
            rstd: vec![0.0; tokens],
        }
    }
}

/// Runs `b` on `windows` (window-major, [`Windows`](super::windows::Windows)): groups of
/// `group` windows of `window_tokens` tokens with `channels` channels.
pub fn run_block(b: &SwinBlockWeights, windows: &mut [f32], channels: usize, window_tokens: usize, group: usize) {
    let hidden = b.fc1.weight.rows();
    windows.par_chunks_mut(group * channels * window_tokens).for_each_init(
        || Scratch::new(channels, hidden, group * window_tokens, window_tokens),
        |s, x| group_block(b, x, s, channels, window_tokens),
    );
}

/// The block on one group: `x` is `channels × (k · window_tokens)` for its `k` windows.
fn group_block(b: &SwinBlockWeights, x: &mut [f32], s: &mut Scratch, channels: usize, window_tokens: usize) {
    let tokens = x.len() / channels;
    let Scratch { qkv, attention, hidden, scores, mean, rstd } = s;
    let (mean, rstd) = (&mut mean[..tokens], &mut rstd[..tokens]);
    normed_product(qkv, &b.qkv, x, &b.norm1, (mean, rstd), tokens);
    for start in (0..tokens).step_by(window_tokens) {
        let qkv = Qkv { data: &mut qkv[start..], row_stride: tokens };
        attend(qkv, &mut attention[start..], (channels, b.heads, window_tokens), tokens, scores);
    }
    add_product(x, &b.proj, attention, tokens);
    normed_product(hidden, &b.fc1, x, &b.norm2, (mean, rstd), tokens);
    gelu_in_place(&mut hidden[..b.fc1.weight.rows() * tokens]);
    add_product(x, &b.fc2, hidden, tokens);
}

/// `dst = linear(LayerNorm(x))` over `tokens` columns.
fn normed_product(
    dst: &mut [f32],
    linear: &Linear,
    x: &[f32],
    (scale, shift): &Norm,
    (mean, rstd): (&mut [f32], &mut [f32]),
    tokens: usize,
) {
    layer_norm_stats_into(mean, rstd, x, tokens, scale.len(), LAYER_NORM_EPS);
    let norm = RhsNorm { mean, rstd, weight: scale, bias: shift };
    let epilogue = Epilogue { rhs_norm: Some(norm), bias: linear.bias.as_deref(), ..Default::default() };
    let (dst, rhs) = (MatMut { data: dst, row_stride: tokens }, MatRef { data: x, row_stride: tokens });
    matmul(dst, &linear.weight, rhs, tokens, epilogue, 1);
}

/// `x += linear(input)` over `tokens` columns.
fn add_product(x: &mut [f32], linear: &Linear, input: &[f32], tokens: usize) {
    let epilogue = Epilogue { accumulate: true, bias: linear.bias.as_deref(), ..Default::default() };
    let (dst, rhs) = (MatMut { data: x, row_stride: tokens }, MatRef { data: input, row_stride: tokens });
    matmul(dst, &linear.weight, rhs, tokens, epilogue, 1);
}
