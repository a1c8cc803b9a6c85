//! One Swin block on window-major tokens, window by window in parallel, in place:
//! `x += proj(attention(LN1(x)))` within the window, then `x += fc2(GELU(fc1(LN2(x))))`.
//!
//! A window holds every token its attention reads and the MLP is per token, so each window
//! runs the whole block on its own, in scratch small enough to stay in cache; the LayerNorms
//! are applied while the products read their input.

use rayon::prelude::*;

use super::super::kernels::activation::gelu_in_place;
use super::super::kernels::layernorm::layer_norm_stats_into;
use super::super::kernels::matmul::{Epilogue, MatMut, MatRef, RhsNorm, matmul};
use super::super::kernels::window_attention::{Qkv, attend};
use super::weights::{Linear, Norm, SwinBlockWeights};
use crate::spec::swinir::LAYER_NORM_EPS;

/// The scratch of one window's block.
struct Scratch {
    qkv: Vec<f32>,
    attention: Vec<f32>,
    hidden: Vec<f32>,
    scores: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

impl Scratch {
    fn new(channels: usize, hidden: usize, tokens: usize) -> Self {
        Scratch {
            qkv: vec![0.0; 3 * channels * tokens],
            attention: vec![0.0; channels * tokens],
            hidden: vec![0.0; hidden * tokens],
            scores: vec![0.0; tokens * tokens],
            mean: vec![0.0; tokens],
            rstd: vec![0.0; tokens],
        }
    }
}

/// Runs `b` on `windows`: windows of `channels × tokens` values each, one after another.
pub fn run_block(b: &SwinBlockWeights, windows: &mut [f32], channels: usize, tokens: usize) {
    let hidden = b.fc1.weight.rows();
    windows
        .par_chunks_mut(channels * tokens)
        .for_each_init(|| Scratch::new(channels, hidden, tokens), |s, x| window_block(b, x, s, channels, tokens));
}

fn window_block(b: &SwinBlockWeights, x: &mut [f32], s: &mut Scratch, channels: usize, tokens: usize) {
    let Scratch { qkv, attention, hidden, scores, mean, rstd } = s;
    normed_product(qkv, &b.qkv, x, &b.norm1, (mean, rstd), tokens);
    attend(Qkv { data: qkv, row_stride: tokens }, attention, (channels, b.heads, tokens), tokens, scores);
    add_product(x, &b.proj, attention, tokens);
    normed_product(hidden, &b.fc1, x, &b.norm2, (mean, rstd), tokens);
    gelu_in_place(hidden);
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
