//! The TensorRT network as data: layer records lowered from the op [`Graph`], in the order the
//! shim adds them to an `INetworkDefinition`. Everything TensorRT-specific that can be decided
//! without the library is decided here, where it is unit-tested.
//!
//! The network's input is the *padded* image, FP32 `[1, 3, H, W]` with `H` and `W` multiples of
//! the family's size multiple; the host pads and crops by the family rule (as the CPU engine
//! does), so no data-dependent padding runs inside TensorRT. The output is FP32 too. In
//! [`TrtPrecision::F16`] networks every tensor between the input and output casts is FP16
//! except the channel normalizations and the channel-attention means, which run in FP32
//! between explicit casts (engineering notes A3: FP16 reductions overflow on NAFNet).

use crate::error::{Error, Result};
use crate::graph::{ConvKind, Graph, Op};
use crate::model::Model;

/// Precision of a TensorRT network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrtPrecision {
    /// FP32 everywhere.
    F32,
    /// FP16 weights and tensors; normalizations and means in FP32 between explicit casts.
    F16,
}

/// Element type of a tensor in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
}

/// Index of a layer in [`Network::layers`]; each layer has one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerId(pub usize);

/// Element-wise operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementWiseOp {
    /// `a + b`.
    Sum,
    /// `a · b` (with broadcasting over size-1 dimensions).
    Prod,
}

/// One layer record.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// The padded input image, FP32 `[1, 3, H, W]`.
    Input,
    /// Converts to `to`.
    Cast {
        /// Input tensor.
        input: LayerId,
        /// Target type.
        to: DataType,
    },
    /// Convolution with zero padding; weight `[cout, cin / groups, k, k]`.
    Conv {
        /// Input tensor.
        input: LayerId,
        /// Output channels.
        cout: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
        /// Zero padding on every side.
        pad: usize,
        /// Channel groups (1: dense; `cout`: depthwise).
        groups: usize,
        /// Weight key.
        weight: String,
        /// Bias key, if any.
        bias: Option<String>,
    },
    /// Normalization over the channel axis of each pixel (LayerNorm of NCHW maps), FP32 input
    /// and output, FP32 scale and shift `[1, C, 1, 1]`.
    Normalize {
        /// Input tensor (FP32).
        input: LayerId,
        /// Scale key.
        weight: String,
        /// Shift key.
        bias: String,
        /// Epsilon added to the variance.
        eps: f32,
    },
    /// Mean over height and width, keeping the dimensions (`[1, C, 1, 1]`).
    Mean {
        /// Input tensor.
        input: LayerId,
    },
    /// Channels `start .. start + channels` (the halves of SimpleGate).
    SliceChannels {
        /// Input tensor.
        input: LayerId,
        /// First channel.
        start: usize,
        /// Number of channels.
        channels: usize,
    },
    /// A per-channel constant `[1, C, 1, 1]` in the network's precision.
    Constant {
        /// Weight key.
        key: String,
        /// Channels.
        channels: usize,
    },
    /// Element-wise operation.
    ElementWise {
        /// First operand.
        a: LayerId,
        /// Second operand.
        b: LayerId,
        /// Operation.
        op: ElementWiseOp,
    },
    /// PixelShuffle by 2 (`[1, 4C, H, W] → [1, C, 2H, 2W]`, ONNX `DepthToSpace` mode CRD): a
    /// reshape to `[C, 2, 2, H, W]`, a transpose to `[C, H, 2, W, 2]` and a reshape.
    PixelShuffle {
        /// Input tensor.
        input: LayerId,
        /// Output channels.
        channels: usize,
    },
}

/// A lowered network.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Layers in order; `layers[0]` is the input.
    pub layers: Vec<Layer>,
    /// The network output (FP32).
    pub output: LayerId,
    /// Precision the network was lowered for.
    pub precision: TrtPrecision,
}

impl Network {
    /// Lowers `graph` for `precision`.
    pub fn lower(graph: &Graph, precision: TrtPrecision) -> Self {
        let mut net = Lowering { layers: vec![Layer::Input], f16: precision == TrtPrecision::F16 };
        let mut ids = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let id = match &node.op {
                Op::Input => net.as_network_type(LayerId(0)),
                op => net.lower(op, &ids, node.channels),
            };
            ids.push(id);
        }
        let output = net.as_f32(ids[graph.output.0]);
        Network { layers: net.layers, output, precision }
    }

    /// Every weight key the layers reference, in layer order.
    pub fn weight_keys(&self) -> Vec<&str> {
        self.layers
            .iter()
            .flat_map(|layer| match layer {
                Layer::Conv { weight, bias, .. } => {
                    [Some(weight.as_str()), bias.as_deref()].into_iter().flatten().collect()
                }
                Layer::Normalize { weight, bias, .. } => vec![weight.as_str(), bias.as_str()],
                Layer::Constant { key, .. } => vec![key.as_str()],
                _ => vec![],
            })
            .collect()
    }
}

/// Host values of one weight tensor as TensorRT takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct HostWeights {
    /// Element type of `bytes`.
    pub dtype: DataType,
    /// Little-endian values.
    pub bytes: Vec<u8>,
    /// Number of values.
    pub count: usize,
}

/// The weights one layer reads: kernel/scale/constant values and bias/shift.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerWeights {
    /// Convolution kernel, normalization scale or constant values.
    pub weight: Option<HostWeights>,
    /// Convolution bias or normalization shift.
    pub bias: Option<HostWeights>,
}

impl Network {
    /// The weights of every layer (index-aligned with [`Network::layers`]): FP32 for
    /// normalizations, the network's precision elsewhere. Errors on a missing key and, for
    /// FP16 networks, on a value beyond the FP16 range.
    pub fn layer_weights(&self, model: &Model) -> Result<Vec<LayerWeights>> {
        let f16 = self.precision == TrtPrecision::F16;
        let get = |key: &str, keep_f32: bool| -> Result<HostWeights> {
            let tensor = model.weights().require(key)?;
            let values = tensor.to_f32();
            if !f16 || keep_f32 {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                return Ok(HostWeights { dtype: DataType::F32, bytes, count: values.len() });
            }
            let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
            if let Some(index) = halves.iter().position(|h| h.is_infinite()) {
                return Err(Error::InvalidArgument(format!(
                    "key `{key}` holds {} at flat index {index}, which does not fit in FP16 (max 65504): build an FP32 engine",
                    values[index]
                )));
            }
            Ok(HostWeights {
                dtype: DataType::F16,
                bytes: halves.iter().flat_map(|h| h.to_le_bytes()).collect(),
                count: halves.len(),
            })
        };
        self.layers
            .iter()
            .map(|layer| {
                Ok(match layer {
                    Layer::Conv { weight, bias, .. } => LayerWeights {
                        weight: Some(get(weight, false)?),
                        bias: bias.as_deref().map(|b| get(b, false)).transpose()?,
                    },
                    Layer::Normalize { weight, bias, .. } => {
                        LayerWeights { weight: Some(get(weight, true)?), bias: Some(get(bias, true)?) }
                    }
                    Layer::Constant { key, .. } => LayerWeights { weight: Some(get(key, false)?), bias: None },
                    _ => LayerWeights::default(),
                })
            })
            .collect()
    }
}

struct Lowering {
    layers: Vec<Layer>,
    f16: bool,
}

impl Lowering {
    fn push(&mut self, layer: Layer) -> LayerId {
        self.layers.push(layer);
        LayerId(self.layers.len() - 1)
    }

    fn cast(&mut self, input: LayerId, to: DataType) -> LayerId {
        self.push(Layer::Cast { input, to })
    }

    /// `input` (FP32) in the network's precision.
    fn as_network_type(&mut self, input: LayerId) -> LayerId {
        if self.f16 { self.cast(input, DataType::F16) } else { input }
    }

    /// `input` (network precision) in FP32.
    fn as_f32(&mut self, input: LayerId) -> LayerId {
        if self.f16 { self.cast(input, DataType::F32) } else { input }
    }

    fn conv(&mut self, input: LayerId, cout: usize, kind: ConvKind, weight: &str, bias: Option<&str>) -> LayerId {
        let (kernel, stride, pad) = match kind {
            ConvKind::K3x3 => (3, 1, 1),
            ConvKind::K1x1 => (1, 1, 0),
            ConvKind::K2x2Stride2 => (2, 2, 0),
        };
        let (weight, bias) = (weight.to_owned(), bias.map(str::to_owned));
        self.push(Layer::Conv { input, cout, kernel, stride, pad, groups: 1, weight, bias })
    }

    fn lower(&mut self, op: &Op, ids: &[LayerId], channels: usize) -> LayerId {
        let id = |v: &crate::graph::ValueId| ids[v.0];
        match op {
            Op::Input => unreachable!("the input is lowered by `Network::lower`"),
            Op::Conv { input, kind, weight, bias } => self.conv(id(input), channels, *kind, weight, bias.as_deref()),
            Op::DepthwiseConv3x3 { input, weight, bias } => self.push(Layer::Conv {
                input: id(input),
                cout: channels,
                kernel: 3,
                stride: 1,
                pad: 1,
                groups: channels,
                weight: weight.clone(),
                bias: Some(bias.clone()),
            }),
            Op::LayerNorm { input, weight, bias, eps } => {
                let x = self.as_f32(id(input));
                let n = self.push(Layer::Normalize { input: x, weight: weight.clone(), bias: bias.clone(), eps: *eps });
                self.as_network_type(n)
            }
            Op::SimpleGate { input } => {
                let x = id(input);
                let a = self.push(Layer::SliceChannels { input: x, start: 0, channels });
                let b = self.push(Layer::SliceChannels { input: x, start: channels, channels });
                self.push(Layer::ElementWise { a, b, op: ElementWiseOp::Prod })
            }
            Op::ChannelAttention { input, weight, bias } => {
                let x = id(input);
                let x32 = self.as_f32(x);
                let mean = self.push(Layer::Mean { input: x32 });
                let mean = self.as_network_type(mean);
                let attention = self.conv(mean, channels, ConvKind::K1x1, weight, Some(bias));
                self.push(Layer::ElementWise { a: x, b: attention, op: ElementWiseOp::Prod })
            }
            Op::PixelShuffle { input } => self.push(Layer::PixelShuffle { input: id(input), channels }),
            Op::Add { a, b } => self.push(Layer::ElementWise { a: id(a), b: id(b), op: ElementWiseOp::Sum }),
            Op::Scale { input, scale } => {
                let s = self.push(Layer::Constant { key: scale.clone(), channels });
                self.push(Layer::ElementWise { a: id(input), b: s, op: ElementWiseOp::Prod })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::onnx::{OnnxOptions, OnnxShape, export};
    use crate::model::testing::random_model;
    use crate::spec::{Family, ModelSpec};

    /// An ONNX node: op type and input names.
    struct OnnxNode {
        op: String,
        inputs: Vec<String>,
    }

    /// Reads the length-delimited and varint fields of a protobuf message.
    fn fields(mut bytes: &[u8]) -> Vec<(u64, &[u8])> {
        fn varint(bytes: &mut &[u8]) -> u64 {
            let mut v = 0;
            for shift in (0..).step_by(7) {
                let b = bytes[0];
                *bytes = &bytes[1..];
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    break;
                }
            }
            v
        }
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let tag = varint(&mut bytes);
            match tag & 7 {
                0 => {
                    varint(&mut bytes);
                }
                2 => {
                    let len = varint(&mut bytes) as usize;
                    out.push((tag >> 3, &bytes[..len]));
                    bytes = &bytes[len..];
                }
                5 => bytes = &bytes[4..],
                1 => bytes = &bytes[8..],
                w => panic!("wire type {w}"),
            }
        }
        out
    }

    /// The nodes of an exported ONNX model (ModelProto.graph = 7, GraphProto.node = 1,
    /// NodeProto.input = 1, NodeProto.op_type = 4).
    fn onnx_nodes(model: &[u8]) -> Vec<OnnxNode> {
        let graph = fields(model).into_iter().find(|(f, _)| *f == 7).expect("graph").1;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        fields(graph)
            .into_iter()
            .filter(|(f, _)| *f == 1)
            .map(|(_, node)| {
                let node = fields(node);
                let op = node.iter().find(|(f, _)| *f == 4).map(|(_, b)| text(b)).unwrap();
                let inputs = node.iter().filter(|(f, _)| *f == 1).map(|(_, b)| text(b)).collect();
                OnnxNode { op, inputs }
            })
            .collect()
    }

    fn count(net: &Network, pred: impl Fn(&Layer) -> bool) -> usize {
        net.layers.iter().filter(|l| pred(l)).count()
    }

    /// The weight keys (state-dict names, not generated `tN` names) each node of kind `op`
    /// reads, in order.
    fn onnx_keys(nodes: &[OnnxNode], op: &str) -> Vec<Vec<String>> {
        let is_key = |s: &&String| s.contains('.');
        nodes.iter().filter(|n| n.op == op).map(|n| n.inputs.iter().filter(is_key).cloned().collect()).collect()
    }

    fn spec(family: Family) -> ModelSpec {
        ModelSpec { family, width: 4, enc_blocks: vec![1, 2], middle_blocks: 1, dec_blocks: vec![2, 1] }
    }

    #[test]
    fn layers_match_the_onnx_export_of_the_same_model() {
        for family in [Family::MaskDcpt, Family::Nafnet] {
            let model = random_model(&spec(family), 3);
            for (precision, fp16) in [(TrtPrecision::F32, false), (TrtPrecision::F16, true)] {
                let net = Network::lower(&model.graph("a test").unwrap(), precision);
                let onnx = export(
                    &model,
                    &OnnxOptions { fp16, shape: OnnxShape::Dynamic, attention_pool: Default::default() },
                )
                .unwrap();
                // The ONNX padding prologue (index arithmetic, then a Pad or the two Gathers of
                // reflect padding) is the host's work here: compare what follows it.
                let mut nodes = onnx_nodes(&onnx);
                let prologue = nodes.iter().rposition(|n| n.op == "Pad" || n.op == "Gather").expect("padding") + 1;
                let nodes = nodes.split_off(prologue);
                let onnx_count = |op: &str| nodes.iter().filter(|n| n.op == op).count();
                let ctx = format!("{family:?} {precision:?}");

                // Convolutions, in order, with the keys each reads and its grouping.
                let convs: Vec<Vec<String>> = net
                    .layers
                    .iter()
                    .filter_map(|l| match l {
                        Layer::Conv { weight, bias, .. } => {
                            Some([Some(weight.clone()), bias.clone()].into_iter().flatten().collect())
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(convs, onnx_keys(&nodes, "Conv"), "{ctx}");
                let depthwise =
                    count(&net, |l| matches!(l, Layer::Conv { groups, cout, .. } if groups == cout && *groups > 1));
                let grouped_onnx = onnx_keys(&nodes, "Conv").iter().filter(|k| k[0].contains("conv2")).count();
                assert_eq!(depthwise, grouped_onnx, "{ctx}");

                // Normalizations: same keys in the same order, FP32 inputs.
                let norms: Vec<Vec<String>> = net
                    .layers
                    .iter()
                    .filter_map(|l| match l {
                        Layer::Normalize { weight, bias, .. } => Some(vec![weight.clone(), bias.clone()]),
                        _ => None,
                    })
                    .collect();
                assert_eq!(norms, onnx_keys(&nodes, "LayerNormalization"), "{ctx}");

                // Per-kind counts.
                let sums = count(&net, |l| matches!(l, Layer::ElementWise { op: ElementWiseOp::Sum, .. }));
                let prods = count(&net, |l| matches!(l, Layer::ElementWise { op: ElementWiseOp::Prod, .. }));
                let means = count(&net, |l| matches!(l, Layer::Mean { .. }));
                let casts = count(&net, |l| matches!(l, Layer::Cast { .. }));
                assert_eq!(sums, onnx_count("Add"), "{ctx}");
                assert_eq!(prods, onnx_count("Mul"), "{ctx}");
                assert_eq!(means, onnx_count("GlobalAveragePool"), "{ctx}");
                assert_eq!(count(&net, |l| matches!(l, Layer::SliceChannels { .. })), 2 * onnx_count("Split"), "{ctx}");
                assert_eq!(
                    count(&net, |l| matches!(l, Layer::PixelShuffle { .. })),
                    onnx_count("DepthToSpace"),
                    "{ctx}"
                );
                let scales: Vec<Vec<String>> = net
                    .layers
                    .iter()
                    .filter_map(|l| match l {
                        Layer::Constant { key, .. } => Some(vec![key.clone()]),
                        _ => None,
                    })
                    .collect();
                let onnx_scales: Vec<Vec<String>> =
                    onnx_keys(&nodes, "Mul").into_iter().filter(|k| !k.is_empty()).collect();
                assert_eq!(scales, onnx_scales, "{ctx}");
                // The ONNX export keeps the means in FP16; this network casts around them.
                assert_eq!(casts, onnx_count("Cast") + if fp16 { 2 * means } else { 0 }, "{ctx}");

                // Every key the network reads, and nothing else, is an ONNX weight.
                let mut ours: Vec<&str> = net.weight_keys();
                let mut theirs: Vec<String> =
                    nodes.iter().flat_map(|n| n.inputs.iter().filter(|s| s.contains('.')).cloned()).collect();
                ours.sort_unstable();
                theirs.sort_unstable();
                assert_eq!(ours, theirs, "{ctx}");
            }
        }
    }

    /// A planar `[c][h][w]` tensor of the reference interpreter below.
    #[derive(Clone)]
    struct Planar {
        c: usize,
        h: usize,
        w: usize,
        v: Vec<f32>,
    }

    fn f16_round(v: f32) -> f32 {
        half::f16::from_f32(v).to_f32()
    }

    /// Runs the layer records with the semantics the shim gives them in TensorRT (FP16
    /// tensors emulated by rounding every FP16 layer output), on a padded planar image.
    fn interpret(net: &Network, weights: &[LayerWeights], input: Planar) -> Planar {
        let values = |h: &HostWeights| -> Vec<f32> {
            match h.dtype {
                DataType::F32 => h.bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                DataType::F16 => {
                    h.bytes.chunks(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect()
                }
            }
        };
        let types = types(net);
        let mut out: Vec<Planar> = Vec::with_capacity(net.layers.len());
        for (i, layer) in net.layers.iter().enumerate() {
            let w = &weights[i];
            let mut t = match layer {
                Layer::Input => input.clone(),
                Layer::Cast { input, .. } => out[input.0].clone(),
                Layer::Conv { input, cout, kernel, stride, pad, groups, .. } => {
                    let x = &out[input.0];
                    let (k, s, p) = (*kernel, *stride, *pad);
                    let (oh, ow) = ((x.h + 2 * p - k) / s + 1, (x.w + 2 * p - k) / s + 1);
                    let (cin_g, cout_g) = (x.c / groups, cout / groups);
                    let kw = values(w.weight.as_ref().unwrap());
                    let bias = w.bias.as_ref().map(values);
                    let mut v = vec![0.0; cout * oh * ow];
                    for co in 0..*cout {
                        let g = co / cout_g;
                        for y in 0..oh {
                            for xx in 0..ow {
                                let mut acc = bias.as_ref().map_or(0.0, |b| b[co]);
                                for ci in 0..cin_g {
                                    for ky in 0..k {
                                        for kx in 0..k {
                                            let (iy, ix) = (
                                                (y * s + ky) as isize - p as isize,
                                                (xx * s + kx) as isize - p as isize,
                                            );
                                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                                continue;
                                            }
                                            let xi = ((g * cin_g + ci) * x.h + iy as usize) * x.w + ix as usize;
                                            acc += kw[((co * cin_g + ci) * k + ky) * k + kx] * x.v[xi];
                                        }
                                    }
                                }
                                v[(co * oh + y) * ow + xx] = acc;
                            }
                        }
                    }
                    Planar { c: *cout, h: oh, w: ow, v }
                }
                Layer::Normalize { input, eps, .. } => {
                    let x = &out[input.0];
                    let (scale, shift) = (values(w.weight.as_ref().unwrap()), values(w.bias.as_ref().unwrap()));
                    let n = x.h * x.w;
                    let mut v = x.v.clone();
                    for px in 0..n {
                        let mean = (0..x.c).map(|c| x.v[c * n + px]).sum::<f32>() / x.c as f32;
                        let var = (0..x.c).map(|c| (x.v[c * n + px] - mean).powi(2)).sum::<f32>() / x.c as f32;
                        for c in 0..x.c {
                            v[c * n + px] = (x.v[c * n + px] - mean) / (var + eps).sqrt() * scale[c] + shift[c];
                        }
                    }
                    Planar { v, ..x.clone() }
                }
                Layer::Mean { input } => {
                    let x = &out[input.0];
                    let n = x.h * x.w;
                    let v = (0..x.c).map(|c| x.v[c * n..(c + 1) * n].iter().sum::<f32>() / n as f32).collect();
                    Planar { c: x.c, h: 1, w: 1, v }
                }
                Layer::SliceChannels { input, start, channels } => {
                    let x = &out[input.0];
                    let n = x.h * x.w;
                    Planar { c: *channels, h: x.h, w: x.w, v: x.v[start * n..(start + channels) * n].to_vec() }
                }
                Layer::Constant { channels, .. } => {
                    Planar { c: *channels, h: 1, w: 1, v: values(w.weight.as_ref().unwrap()) }
                }
                Layer::ElementWise { a, b, op } => {
                    let (a, b) = (&out[a.0], &out[b.0]);
                    assert_eq!(a.c, b.c);
                    let n = a.h * a.w;
                    let v = (0..a.c * n)
                        .map(|i| {
                            let bv = if b.h * b.w == 1 { b.v[i / n] } else { b.v[i] };
                            match op {
                                ElementWiseOp::Sum => a.v[i] + bv,
                                ElementWiseOp::Prod => a.v[i] * bv,
                            }
                        })
                        .collect();
                    Planar { v, ..a.clone() }
                }
                Layer::PixelShuffle { input, channels } => {
                    // As the shim: [4C, H, W] viewed as [C, 2, 2, H, W], transposed by
                    // (0, 3, 1, 4, 2) to [C, H, 2, W, 2], viewed as [C, 2H, 2W].
                    let x = &out[input.0];
                    let (c, h, w) = (*channels, x.h, x.w);
                    let dims = [c, 2, 2, h, w];
                    let perm = [0, 3, 1, 4, 2];
                    let odims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
                    let mut v = vec![0.0; x.v.len()];
                    for (o, slot) in v.iter_mut().enumerate() {
                        let mut rest = o;
                        let mut idx = [0; 5];
                        for k in (0..5).rev() {
                            idx[perm[k]] = rest % odims[k];
                            rest /= odims[k];
                        }
                        let flat = idx.iter().zip(&dims).fold(0, |acc, (i, d)| acc * d + i);
                        *slot = x.v[flat];
                    }
                    Planar { c, h: 2 * h, w: 2 * w, v }
                }
            };
            if types[i] == DataType::F16 {
                t.v.iter_mut().for_each(|v| *v = f16_round(*v));
            }
            out.push(t);
        }
        out.swap_remove(net.output.0)
    }

    /// The layer records, run by the interpreter above, restore like the CPU engine (measured:
    /// 2.4e-7 in FP32, 1.3e-3 in emulated FP16); the size is not a multiple of the family's, so
    /// the host padding is exercised too.
    #[test]
    fn interpreted_layers_restore_like_the_cpu_engine() {
        use crate::backend::{EngineOptions, build_engine};
        use crate::image::{Image, from_planar_cropped, to_padded_planar};
        for family in [Family::MaskDcpt, Family::Nafnet] {
            let model = random_model(&spec(family), 11);
            let (width, height) = (21, 19);
            let data: Vec<f32> = (0..width * height * 3).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
            let image = Image::new(width, height, data).unwrap();
            let expected = build_engine(&model, &EngineOptions::default()).unwrap().restore(&image).unwrap();
            let (planar, ph, pw) = to_padded_planar(&image, model.architecture().size_multiple(), family.pad_mode());
            for (precision, tolerance) in [(TrtPrecision::F32, 1e-5), (TrtPrecision::F16, 1e-2)] {
                let net = Network::lower(&model.graph("a test").unwrap(), precision);
                let weights = net.layer_weights(&model).unwrap();
                let out = interpret(&net, &weights, Planar { c: 3, h: ph, w: pw, v: planar.clone() });
                assert_eq!((out.c, out.h, out.w), (3, ph, pw));
                let got = from_planar_cropped(&out.v, ph, pw, width, height);
                let diff = got.data().iter().zip(expected.data()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(diff <= tolerance, "{family:?} {precision:?}: max |Δ| {diff}");
            }
        }
    }

    /// Type of each layer's output, propagated through the records.
    fn types(net: &Network) -> Vec<DataType> {
        let mut out: Vec<DataType> = Vec::new();
        for layer in &net.layers {
            let t = match layer {
                Layer::Input | Layer::Normalize { .. } => DataType::F32,
                Layer::Cast { to, .. } => *to,
                Layer::Constant { .. } => match net.precision {
                    TrtPrecision::F32 => DataType::F32,
                    TrtPrecision::F16 => DataType::F16,
                },
                Layer::Conv { input, .. }
                | Layer::Mean { input }
                | Layer::SliceChannels { input, .. }
                | Layer::PixelShuffle { input, .. } => out[input.0],
                Layer::ElementWise { a, b, .. } => {
                    assert_eq!(out[a.0], out[b.0], "element-wise operands of one type");
                    out[a.0]
                }
            };
            out.push(t);
        }
        out
    }

    #[test]
    fn layer_weights_follow_the_precision_rules() {
        let model = random_model(&spec(Family::Nafnet), 9);
        for precision in [TrtPrecision::F32, TrtPrecision::F16] {
            let net = Network::lower(&model.graph("a test").unwrap(), precision);
            let weights = net.layer_weights(&model).unwrap();
            assert_eq!(weights.len(), net.layers.len());
            let wide = if precision == TrtPrecision::F16 { DataType::F16 } else { DataType::F32 };
            for (layer, w) in net.layers.iter().zip(&weights) {
                let check = |key: &str, h: &HostWeights, dtype: DataType| {
                    let tensor = model.weights().get(key).unwrap();
                    assert_eq!((h.count, h.dtype), (tensor.numel(), dtype), "{key}");
                    let size = if dtype == DataType::F16 { 2 } else { 4 };
                    assert_eq!(h.bytes.len(), size * h.count);
                };
                match layer {
                    Layer::Conv { weight, bias, cout, kernel, groups, .. } => {
                        let h = w.weight.as_ref().unwrap();
                        check(weight, h, wide);
                        assert_eq!(h.count % (cout * kernel * kernel), 0);
                        assert!(*groups == 1 || h.count == cout * kernel * kernel);
                        assert_eq!(bias.is_some(), w.bias.is_some());
                        if let (Some(b), Some(h)) = (bias, &w.bias) {
                            check(b, h, wide);
                        }
                    }
                    Layer::Normalize { weight, bias, .. } => {
                        check(weight, w.weight.as_ref().unwrap(), DataType::F32);
                        check(bias, w.bias.as_ref().unwrap(), DataType::F32);
                    }
                    Layer::Constant { key, channels } => {
                        let h = w.weight.as_ref().unwrap();
                        check(key, h, wide);
                        assert_eq!(h.count, *channels);
                    }
                    _ => assert_eq!(w, &LayerWeights::default()),
                }
            }
        }
    }

    #[test]
    fn fp16_refuses_weights_beyond_its_range_but_not_in_normalizations() {
        use crate::weights::{Format, Tensor, WeightStore};
        let model = random_model(&spec(Family::MaskDcpt), 7);
        let with = |key: &str, value: f32| {
            let mut tensors: std::collections::BTreeMap<String, Tensor> =
                model.weights().iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
            let n = tensors[key].numel();
            let mut values = vec![0.5; n];
            values[n - 1] = value;
            tensors.insert(key.into(), Tensor::from_f32(tensors[key].shape().to_vec(), &values).unwrap());
            Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None)).unwrap()
        };
        let big = with("intro.bias", 1e6);
        let f16 = Network::lower(&big.graph("a test").unwrap(), TrtPrecision::F16);
        let err = f16.layer_weights(&big).unwrap_err().to_string();
        assert!(err.contains("intro.bias") && err.contains("flat index 3"), "{err}");
        assert!(Network::lower(&big.graph("a test").unwrap(), TrtPrecision::F32).layer_weights(&big).is_ok());
        let norm = with("encoders.0.blocks.0.norm1.bias", 1e6);
        assert!(f16.layer_weights(&norm).is_ok());
    }

    #[test]
    fn fp16_networks_reduce_in_fp32_and_compute_the_rest_in_fp16() {
        let model = random_model(&spec(Family::MaskDcpt), 5);
        for precision in [TrtPrecision::F32, TrtPrecision::F16] {
            let net = Network::lower(&model.graph("a test").unwrap(), precision);
            let t = types(&net);
            let wide = if precision == TrtPrecision::F16 { DataType::F16 } else { DataType::F32 };
            assert_eq!(t[net.output.0], DataType::F32);
            for (layer, ty) in net.layers.iter().zip(&t) {
                match layer {
                    Layer::Normalize { input, .. } | Layer::Mean { input } => assert_eq!(t[input.0], DataType::F32),
                    Layer::Conv { input, .. } => assert_eq!((t[input.0], *ty), (wide, wide)),
                    _ => {}
                }
            }
            // Every input to an earlier layer precedes it.
            let refs_ok = net.layers.iter().enumerate().all(|(i, l)| match l {
                Layer::Cast { input, .. }
                | Layer::Conv { input, .. }
                | Layer::Normalize { input, .. }
                | Layer::Mean { input }
                | Layer::SliceChannels { input, .. }
                | Layer::PixelShuffle { input, .. } => input.0 < i,
                Layer::ElementWise { a, b, .. } => a.0 < i && b.0 < i,
                Layer::Input | Layer::Constant { .. } => true,
            });
            assert!(refs_ok);
        }
    }
}
