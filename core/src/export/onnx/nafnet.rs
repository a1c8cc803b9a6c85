//! NAFNet lowered from its op graph, one ONNX node group per graph op.
//!
//! With TLC channel attention ([`crate::tlc`]) the input size must be fixed: each block's
//! windows are then known, and its attention is `AveragePool` (the windows, stride 1) → `Pad`
//! (mode edge, centred) → the 1×1 `Conv` → `Mul`, the pooling in float32.

use super::builder::{Builder, attr_int, attr_ints, attr_string};
use super::{OnnxOptions, OnnxShape};
use crate::error::{Error, Result};
use crate::graph::{ConvKind, Op};
use crate::image::round_up;
use crate::model::Model;
use crate::spec::ModelSpec;
use crate::tlc::{AttentionPool, MapPool};

/// Serialises the NAFNet `model` (of `spec`).
pub fn export(model: &Model, spec: &ModelSpec, options: &OnnxOptions) -> Result<Vec<u8>> {
    let multiple = spec.size_multiple();
    options.attention_pool.validate(multiple)?;
    if let AttentionPool::TlcSampled { .. } = options.attention_pool {
        return Err(Error::Unsupported(
            "sampled TLC attention (MaskDCPT's NAFNet class) is not exported to ONNX: export exact TLC (--tlc) or \
             global attention"
                .into(),
        ));
    }
    // The padded input size, where the attention's windows need it.
    let padded_size = match (options.attention_pool, options.shape) {
        (AttentionPool::Global, _) => None,
        (_, OnnxShape::Fixed { height, width }) => Some((round_up(height, multiple), round_up(width, multiple))),
        (_, OnnxShape::Dynamic) => {
            return Err(Error::InvalidArgument(
                "TLC channel attention is exported for a fixed input size only (its windows depend on the feature \
                 maps' sizes): give the height and width instead of a dynamic shape"
                    .into(),
            ));
        }
    };
    let mut b = Builder::new(model.weights(), options.fp16);
    let input = b.pad_input(options.shape, multiple, spec.family.pad_mode());
    let graph = model.graph("the ONNX export")?;
    let mut names: Vec<String> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let pool = padded_size.map_or(MapPool::Global, |(h, w)| {
            options.attention_pool.map_pool(node.level, multiple, (h >> node.level, w >> node.level))
        });
        let name = match &node.op {
            Op::Input => input.padded.clone(),
            op => lower(&mut b, op, &names, node.channels, pool)?,
        };
        names.push(name);
    }
    b.crop_output(&names[graph.output.0], &input.size);
    let doc = format!(
        "{} NAFNet (width {}): RGB float32 in [0,1], padded inside to a multiple of {multiple} and cropped back",
        spec.family.name(),
        spec.width,
    );
    Ok(b.finish(input.dims, &doc))
}

/// Lowers one graph op whose inputs are named in `names` (`pool`: how a channel attention
/// averages its map); returns its output's name.
fn lower(b: &mut Builder<'_>, op: &Op, names: &[String], channels: usize, pool: MapPool) -> Result<String> {
    let name = |v: &crate::graph::ValueId| names[v.0].clone();
    Ok(match op {
        Op::Input => unreachable!("the input is lowered by `pad_input`"),
        Op::Conv { input, kind, weight, bias } => {
            let (k, stride) = match kind {
                ConvKind::K3x3 => (3, 1),
                ConvKind::K1x1 => (1, 1),
                ConvKind::K2x2Stride2 => (2, 2),
            };
            b.conv(&name(input), weight, bias.as_deref(), k, stride, 1)?
        }
        Op::DepthwiseConv3x3 { input, weight, bias } => b.conv(&name(input), weight, Some(bias), 3, 1, channels)?,
        Op::LayerNorm { input, weight, bias, eps } => b.layer_norm_channels(&name(input), weight, bias, *eps)?,
        Op::SimpleGate { input } => {
            let halves = b.split(&name(input), 1, &[channels; 2]);
            b.node("Mul", &[&halves[0], &halves[1]], &[])
        }
        Op::ChannelAttention { input, weight, bias } => {
            let x = name(input);
            let pooled = match pool {
                MapPool::Global => b.node("GlobalAveragePool", &[&x], &[]),
                MapPool::Window { rows, cols } => window_means(b, &x, rows, cols),
                MapPool::Sampled { .. } => {
                    return Err(Error::Unsupported("sampled TLC attention has no ONNX export".into()));
                }
            };
            let attention = b.conv(&pooled, weight, Some(bias), 1, 1, 1)?;
            b.node("Mul", &[&x, &attention], &[])
        }
        Op::PixelShuffle { input } => {
            b.node("DepthToSpace", &[&name(input)], &[attr_int("blocksize", 2), attr_string("mode", "CRD")])
        }
        Op::Add { a, b: other } => b.node("Add", &[&name(a), &name(other)], &[]),
        Op::Scale { input, scale } => {
            let s = b.weight(scale, false)?;
            b.node("Mul", &[&name(input), &s], &[])
        }
    })
}

/// The mean of the `rows × cols` window each pixel of `x` takes (see [`crate::tlc`]): the
/// valid windows' means, extended by repeating their edges, centred; summed in float32.
fn window_means(b: &mut Builder<'_>, x: &str, rows: usize, cols: usize) -> String {
    let x = b.cast_to_f32(x);
    let attrs = [attr_ints("kernel_shape", &[rows as i64, cols as i64]), attr_ints("strides", &[1, 1])];
    let means = b.node("AveragePool", &[&x], &attrs);
    let (top, left, bottom, right) = ((rows - 1) / 2, (cols - 1) / 2, rows / 2, cols / 2);
    let pads = b.int64s(&[0, 0, top as i64, left as i64, 0, 0, bottom as i64, right as i64]);
    let extended = b.node("Pad", &[&means, &pads], &[attr_string("mode", "edge")]);
    b.cast_to_activation(&extended)
}
