//! The fork's Restormer and PromptIR lowered from their spec (`spec::restormer`), NCHW
//! throughout.
//!
//! A block's attention splits q, k and v per head as `[N, heads, c / heads, H·W]`,
//! L2-normalises q and k over the pixels (`x / max(‖x‖, 1e-12)`, as `F.normalize`), and takes
//! `softmax(q kᵀ · temperature) v`; PixelUnshuffle is `SpaceToDepth` with its channels
//! gathered back into PyTorch's order, PixelShuffle `DepthToSpace` (CRD). PromptIR's prompt
//! mixes the learned prompts by the softmax of a linear map of the feature's mean and resizes
//! them bilinearly (`Resize`, linear, half-pixel: `align_corners=False`).

use super::OnnxOptions;
use super::builder::{Builder, attr_int, attr_ints, attr_string};
use crate::error::Result;
use crate::model::Model;
use crate::spec::PadMode;
use crate::spec::restormer::{
    DOWNS, LAYER_NORM_EPS, LEVELS, PromptStage, RestormerSpec, SIZE_MULTIPLE, TransformerSite, UPS,
};

/// `F.normalize`'s floor on a norm.
const NORMALIZE_EPS: f32 = 1e-12;

/// Serialises the Restormer or PromptIR `model` (of `spec`).
pub fn export(model: &Model, spec: &RestormerSpec, options: &OnnxOptions) -> Result<Vec<u8>> {
    let mut b = Builder::new(model.weights(), options.fp16);
    let input = b.pad_input(options.shape, SIZE_MULTIPLE, PadMode::Reflect);
    let network_input = input.padded.clone();
    let mut x = b.conv_layer(&network_input, "patch_embed.proj", 3, 1)?;
    let mut skips = Vec::with_capacity(LEVELS - 1);
    for stage in spec.encoder_stages() {
        for block in 0..stage.blocks {
            x = transformer_block(&mut b, &x, &spec.block(&stage, block))?;
        }
        if let Some(down) = DOWNS.get(stage.level) {
            skips.push(x.clone());
            let conv = b.conv_layer(&x, &format!("{down}.conv"), 3, 1)?;
            x = pixel_unshuffle(&mut b, &conv, spec.width(stage.level) / 2);
        }
    }
    let stages = spec.decoder_stages();
    for (i, (up, reduce)) in UPS.into_iter().enumerate() {
        if let Some(prompts) = &spec.prompts {
            x = prompt_stage(&mut b, &x, spec, i, &prompts[i])?;
        }
        let conv = b.conv_layer(&x, &format!("{up}.conv"), 3, 1)?;
        let shuffled = b.node("DepthToSpace", &[&conv], &[attr_int("blocksize", 2), attr_string("mode", "CRD")]);
        let skip = skips.pop().expect("one skip per down-sampling");
        x = b.node("Concat", &[&shuffled, &skip], &[attr_int("axis", 1)]);
        if let Some(reduce) = reduce {
            x = b.conv_layer(&x, reduce, 1, 1)?;
        }
        for block in 0..stages[i].blocks {
            x = transformer_block(&mut b, &x, &spec.block(&stages[i], block))?;
        }
    }
    let refinement = &stages[LEVELS - 1];
    for block in 0..refinement.blocks {
        x = transformer_block(&mut b, &x, &spec.block(refinement, block))?;
    }
    let out = b.conv_layer(&x, "output", 3, 1)?;
    let out = b.node("Add", &[&out, &network_input], &[]);
    b.crop_output(&out, &input.size);
    let doc = format!(
        "MaskDCPT {} (dim {}): RGB float32 in [0,1], reflect-padded inside to a multiple of {} and cropped back",
        spec.name(),
        spec.dim,
        SIZE_MULTIPLE
    );
    Ok(b.finish(input.dims, &doc))
}

/// `x + attention(LN1(x))`, then `+ ffn(LN2(x))`, for the block at `site`.
fn transformer_block(b: &mut Builder<'_>, x: &str, site: &TransformerSite) -> Result<String> {
    let TransformerSite { prefix: p, channels: c, heads, hidden } = site;
    let (c, heads, hidden) = (*c, *heads, *hidden);
    let normed = b.layer_norm_channels(x, &format!("{p}.norm1.weight"), &format!("{p}.norm1.bias"), LAYER_NORM_EPS)?;
    let qkv = b.conv_layer(&normed, &format!("{p}.attn.qkv"), 1, 1)?;
    let qkv = b.conv_layer(&qkv, &format!("{p}.attn.qkv_dwconv"), 3, 3 * c)?;
    let per_head: Vec<String> =
        b.split(&qkv, 1, &[c; 3]).iter().map(|t| b.reshape(t, &[0, heads as i64, (c / heads) as i64, -1])).collect();
    let [q, k, v] = [&per_head[0], &per_head[1], &per_head[2]];
    let (q, k) = (l2_normalized(b, q)?, l2_normalized(b, k)?);
    let kt = b.transpose(&k, &[0, 1, 3, 2]);
    let scores = b.node("MatMul", &[&q, &kt], &[]);
    let temperature = b.weight(&format!("{p}.attn.temperature"), true)?;
    let scores = b.node("Mul", &[&scores, &temperature], &[]);
    let attention = b.node("Softmax", &[&scores], &[attr_int("axis", -1)]);
    let attention = b.cast_to_activation(&attention);
    let mixed = b.node("MatMul", &[&attention, v], &[]);
    let shape = b.node("Shape", &[&normed], &[]);
    let mixed = b.node("Reshape", &[&mixed, &shape], &[]);
    let attended = b.conv_layer(&mixed, &format!("{p}.attn.project_out"), 1, 1)?;
    let x = b.node("Add", &[x, &attended], &[]);

    let normed = b.layer_norm_channels(&x, &format!("{p}.norm2.weight"), &format!("{p}.norm2.bias"), LAYER_NORM_EPS)?;
    let h = b.conv_layer(&normed, &format!("{p}.ffn.project_in"), 1, 1)?;
    let h = b.conv_layer(&h, &format!("{p}.ffn.dwconv"), 3, 2 * hidden)?;
    let halves = b.split(&h, 1, &[hidden; 2]);
    let gelu = b.gelu(&halves[0])?;
    let gated = b.node("Mul", &[&gelu, &halves[1]], &[]);
    let out = b.conv_layer(&gated, &format!("{p}.ffn.project_out"), 1, 1)?;
    Ok(b.node("Add", &[&x, &out], &[]))
}

/// `x / max(‖x‖₂, 1e-12)` over the last axis, in float32 (the norms sum over every pixel).
fn l2_normalized(b: &mut Builder<'_>, x: &str) -> Result<String> {
    let x = b.cast_to_f32(x);
    let norm = b.node("ReduceL2", &[&x], &[attr_ints("axes", &[-1]), attr_int("keepdims", 1)]);
    let floor = b.scalar(NORMALIZE_EPS, true)?;
    let norm = b.node("Max", &[&norm, &floor], &[]);
    Ok(b.node("Div", &[&x, &norm], &[]))
}

/// PyTorch's `PixelUnshuffle(2)` of `x` (`channels` channels): `SpaceToDepth` puts channel
/// `c` of sub-pixel `s` at `s · channels + c`, PyTorch at `4c + s`.
fn pixel_unshuffle(b: &mut Builder<'_>, x: &str, channels: usize) -> String {
    let depth = b.node("SpaceToDepth", &[x], &[attr_int("blocksize", 2)]);
    let order: Vec<i64> = (0..4 * channels).map(|i| ((i % 4) * channels + i / 4) as i64).collect();
    let order = b.int64s(&order);
    b.node("Gather", &[&depth, &order], &[attr_int("axis", 1)])
}

/// PromptIR's stage `i` (lowest resolution first) on the features `x`: `x` concatenated with
/// its prompt, one transformer block, a 1×1 conv.
fn prompt_stage(b: &mut Builder<'_>, x: &str, spec: &RestormerSpec, i: usize, stage: &PromptStage) -> Result<String> {
    let level = LEVELS - 1 - i;
    let p = format!("prompt{level}");
    // Mixing weights: softmax(linear(mean over the pixels)), in float32.
    let x32 = b.cast_to_f32(x);
    let mean = b.node("ReduceMean", &[&x32], &[attr_ints("axes", &[2, 3]), attr_int("keepdims", 0)]);
    let (weight, bias) =
        (b.weight(&format!("{p}.linear_layer.weight"), true)?, b.weight(&format!("{p}.linear_layer.bias"), true)?);
    let logits = b.node("Gemm", &[&mean, &weight, &bias], &[attr_int("transB", 1)]);
    let mixing = b.node("Softmax", &[&logits], &[attr_int("axis", 1)]);
    // The prompts as `[count, channels · size²]`: one product mixes them.
    let (count, channels, side) = (stage.count, stage.channels, stage.size);
    let prompts = b.weight_as(&format!("{p}.prompt_param"), &[count, channels * side * side], true)?;
    let mixed = b.node("MatMul", &[&mixing, &prompts], &[]);
    let mixed = b.reshape(&mixed, &[-1, channels as i64, side as i64, side as i64]);
    // Resized to the features' size.
    let (batch, hw) = (b.dims(x, 0, 1), b.spatial_dims(x));
    let width = b.int64s(&[channels as i64]);
    let sizes = b.node("Concat", &[&batch, &width, &hw], &[attr_int("axis", 0)]);
    let attrs = [attr_string("mode", "linear"), attr_string("coordinate_transformation_mode", "half_pixel")];
    let resized = b.node("Resize", &[&mixed, "", "", &sizes], &attrs);
    let resized = b.cast_to_activation(&resized);
    let prompt = b.conv_layer(&resized, &format!("{p}.conv3x3"), 3, 1)?;
    let joined = b.node("Concat", &[x, &prompt], &[attr_int("axis", 1)]);
    let joined = transformer_block(b, &joined, &spec.prompt_block(i, stage))?;
    b.conv_layer(&joined, &format!("reduce_noise_level{level}"), 1, 1)
}
