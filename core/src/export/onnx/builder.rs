//! The ONNX graph under construction: nodes, initializers, and the layers every network's
//! lowering shares (input padding and cropping, convs, LayerNorm, GELU, axis shifts).

use std::collections::HashMap;

use super::super::protobuf::Message;
use super::{IR_VERSION, OPSET, OnnxShape};
use crate::error::{Error, Result};
use crate::spec::{IMAGE_CHANNELS, PadMode};
use crate::weights::WeightStore;

/// TensorProto data type float32.
pub const FLOAT: i64 = 1;
/// TensorProto data type int64.
const INT64: i64 = 7;
/// TensorProto data type float16.
pub const FLOAT16: i64 = 10;

/// An int attribute.
pub fn attr_int(name: &str, v: i64) -> Message {
    Message::new().string(1, name).int(3, v).int(20, 2)
}

/// An ints attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> Message {
    Message::new().string(1, name).packed_ints(8, v).int(20, 7)
}

/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> Message {
    Message::new().string(1, name).float(2, v).int(20, 1)
}

/// A string attribute.
pub fn attr_string(name: &str, v: &str) -> Message {
    Message::new().string(1, name).string(4, v).int(20, 3)
}

/// A tensor type with the given dimensions (`Ok` = fixed, `Err` = symbolic name).
fn value_info(name: &str, elem: i64, dims: &[Result<i64, &str>]) -> Message {
    let shape = dims.iter().fold(Message::new(), |s, d| {
        let dim = match d {
            Ok(v) => Message::new().int(1, *v),
            Err(p) => Message::new().string(2, p),
        };
        s.message(1, &dim)
    });
    let tensor = Message::new().int(1, elem).message(2, &shape);
    Message::new().string(1, name).message(2, &Message::new().message(1, &tensor))
}

/// Symbolic or fixed `[N, C, H, W]` dimensions of the model's input and output.
pub type Dims = Vec<Result<i64, &'static str>>;

/// The padded network input and what cropping back needs.
pub struct PaddedInput {
    /// Dimensions of the model's input (and output).
    pub dims: Dims,
    /// The padded input, float16 in fp16 exports.
    pub padded: String,
    /// The input's `[H, W]` as an int64 tensor.
    pub size: String,
}

/// Accumulates nodes and initializers of the ONNX graph.
pub struct Builder<'a> {
    weights: &'a WeightStore,
    /// Whether weights and activations are float16.
    fp16: bool,
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    next: usize,
    /// Scalar constants already written: (bits, kept in float32) → name.
    scalars: HashMap<(u32, bool), String>,
}

impl<'a> Builder<'a> {
    /// An empty graph over `weights`, in float16 when `fp16`.
    pub fn new(weights: &'a WeightStore, fp16: bool) -> Self {
        Builder { weights, fp16, nodes: Vec::new(), initializers: Vec::new(), next: 0, scalars: HashMap::new() }
    }

    /// A new value name.
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    /// Appends a node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Message]) -> String {
        let out = self.fresh();
        self.node_to(op, inputs, &[&out], attrs);
        out
    }

    /// Appends a node writing the named `outputs`.
    fn node_to(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Message]) {
        let mut m = Message::new();
        for i in inputs {
            m = m.string(1, i);
        }
        for o in outputs {
            m = m.string(2, o);
        }
        m = m.string(3, &format!("{op}_{}", self.nodes.len())).string(4, op);
        for a in attrs {
            m = m.message(5, a);
        }
        self.nodes.push(m);
    }

    fn initializer(&mut self, name: &str, dims: &[usize], elem: i64, raw: Vec<u8>) -> String {
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let t = Message::new().packed_ints(1, &dims).int(2, elem).string(8, name).bytes(9, &raw);
        self.initializers.push(t);
        name.to_owned()
    }

    /// A 0-d int64 initializer.
    pub fn int64_scalar(&mut self, value: i64) -> String {
        let name = self.fresh();
        self.initializer(&name, &[], INT64, value.to_le_bytes().to_vec())
    }

    /// A 1-d int64 initializer.
    pub fn int64s(&mut self, values: &[i64]) -> String {
        let name = self.fresh();
        self.initializer(&name, &[values.len()], INT64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A float initializer, float16 in fp16 exports unless `keep_f32`; errors if a value
    /// does not fit in float16.
    pub fn floats(&mut self, name: &str, dims: &[usize], values: &[f32], keep_f32: bool) -> Result<String> {
        if !self.fp16 || keep_f32 {
            return Ok(self.initializer(name, dims, FLOAT, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
        let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
        if let Some(index) = halves.iter().position(|h| h.is_infinite()) {
            return Err(Error::InvalidArgument(format!(
                "key `{name}` holds {} at flat index {index}, which does not fit in float16 (max 65504): export without --fp16",
                values[index]
            )));
        }
        Ok(self.initializer(name, dims, FLOAT16, halves.iter().flat_map(|h| h.to_le_bytes()).collect()))
    }

    /// A float constant of the given shape, in the activations' type unless `keep_f32`.
    pub fn constant(&mut self, dims: &[usize], values: &[f32], keep_f32: bool) -> Result<String> {
        let name = self.fresh();
        self.floats(&name, dims, values, keep_f32)
    }

    /// A 0-d float constant, in the activations' type unless `keep_f32`; written once per
    /// value and type.
    pub fn scalar(&mut self, value: f32, keep_f32: bool) -> Result<String> {
        let key = (value.to_bits(), keep_f32 || !self.fp16);
        if let Some(name) = self.scalars.get(&key) {
            return Ok(name.clone());
        }
        let name = self.constant(&[], &[value], keep_f32)?;
        self.scalars.insert(key, name.clone());
        Ok(name)
    }

    /// Whether the state dict has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.weights.get(key).is_some()
    }

    /// The state-dict tensor `key` as an initializer of the same name.
    pub fn weight(&mut self, key: &str, keep_f32: bool) -> Result<String> {
        let shape = self.weights.require(key)?.shape().to_vec();
        self.weight_as(key, &shape, keep_f32)
    }

    /// The state-dict tensor `key` as an initializer of the same name with its values
    /// reshaped to `dims` (as many values).
    pub fn weight_as(&mut self, key: &str, dims: &[usize], keep_f32: bool) -> Result<String> {
        let t = self.weights.require(key)?;
        if t.shape().iter().product::<usize>() != dims.iter().product::<usize>() {
            return Err(Error::ShapeMismatch { key: key.into(), expected: dims.to_vec(), found: t.shape().to_vec() });
        }
        let values = t.to_f32();
        self.floats(key, dims, &values, keep_f32)
    }

    /// The 2-d state-dict tensor `key` (`[rows, cols]`) transposed, as an initializer of the
    /// same name.
    pub fn weight_transposed(&mut self, key: &str) -> Result<String> {
        let t = self.weights.require(key)?;
        let &[rows, cols] = t.shape() else {
            return Err(Error::ShapeMismatch { key: key.into(), expected: vec![0, 0], found: t.shape().to_vec() });
        };
        let values = t.to_f32();
        let transposed: Vec<f32> = (0..cols * rows).map(|i| values[(i % rows) * cols + i / rows]).collect();
        self.floats(key, &[cols, rows], &transposed, false)
    }

    /// `Cast(x, to)`.
    fn cast(&mut self, x: &str, to: i64) -> String {
        self.node("Cast", &[x], &[attr_int("to", to)])
    }

    /// `x` as float32 (a cast in fp16 exports).
    pub fn cast_to_f32(&mut self, x: &str) -> String {
        if self.fp16 { self.cast(x, FLOAT) } else { x.to_owned() }
    }

    /// A float32 value back in the activations' type (a cast in fp16 exports).
    pub fn cast_to_activation(&mut self, x: &str) -> String {
        if self.fp16 { self.cast(x, FLOAT16) } else { x.to_owned() }
    }

    /// Pads `input` bottom/right to `multiple` with `mode`.
    /// Zeros are a `Pad`; reflect gathers the rows, then the columns, at their mirrored indices
    /// ([`Self::mirrored_indices`]), so pads of any length mirror as `maskdcpt restore` does
    /// (a `Pad(mode=reflect)` is refused by ONNX Runtime and TensorRT where a pad reaches the
    /// image side).
    pub fn pad_input(&mut self, shape: OnnxShape, multiple: usize, mode: PadMode) -> PaddedInput {
        let m = multiple as i64;
        let channels = IMAGE_CHANNELS as i64;
        let (dims, size, tail): (Dims, String, String) = match shape {
            OnnxShape::Fixed { height, width } => {
                let (h, w) = (height as i64, width as i64);
                let tail = self.int64s(&[(m - h % m) % m, (m - w % m) % m]);
                (vec![Ok(1), Ok(channels), Ok(h), Ok(w)], self.int64s(&[h, w]), tail)
            }
            OnnxShape::Dynamic => {
                let hw = self.spatial_dims("input");
                let multiple = self.int64s(&[m]);
                let rem = self.node("Mod", &[&hw, &multiple], &[]);
                let short = self.node("Sub", &[&multiple, &rem], &[]);
                let tail = self.node("Mod", &[&short, &multiple], &[]);
                (vec![Err("batch"), Ok(channels), Err("height"), Err("width")], hw, tail)
            }
        };
        let padded = match mode {
            PadMode::Zero => {
                let zeros = self.int64s(&[0; 6]);
                let pads = self.node("Concat", &[&zeros, &tail], &[attr_int("axis", 0)]);
                self.node("Pad", &["input", &pads], &[attr_string("mode", "constant")])
            }
            PadMode::Reflect => {
                let rows = self.mirrored_indices(&size, &tail, 0);
                let x = self.node("Gather", &["input", &rows], &[attr_int("axis", 2)]);
                let columns = self.mirrored_indices(&size, &tail, 1);
                self.node("Gather", &[&x, &columns], &[attr_int("axis", 3)])
            }
        };
        let padded = self.cast_to_activation(&padded);
        PaddedInput { dims, padded, size }
    }

    /// `Shape(x)[start..end]`: dimensions `start` to `end` (exclusive) of `x`.
    pub fn dims(&mut self, x: &str, start: i64, end: i64) -> String {
        let shape = self.node("Shape", &[x], &[]);
        let (start, end, zero) = (self.int64s(&[start]), self.int64s(&[end]), self.int64s(&[0]));
        self.node("Slice", &[&shape, &start, &end, &zero], &[])
    }

    /// `Shape(x)[2..4]`: the `[H, W]` of an NCHW value.
    pub fn spatial_dims(&mut self, x: &str) -> String {
        self.dims(x, 2, 4)
    }

    /// The source index of every row (`axis` 0) or column (1) of the reflect-padded input: the
    /// side `n` (from `size`) plus its pad (from `tail`) indices `i`, mirrored without
    /// repeating the edge and again past each end, with period `p = max(2 (n − 1), 1)`:
    /// `r = i mod p`, then `r` where `r < n`, else `p − r` (`image::pad_index`; a 1-pixel side
    /// repeats its pixel).
    fn mirrored_indices(&mut self, size: &str, tail: &str, axis: i64) -> String {
        let (at, next, first) = (self.int64s(&[axis]), self.int64s(&[axis + 1]), self.int64s(&[0]));
        let n = self.node("Slice", &[size, &at, &next, &first], &[]);
        let pad = self.node("Slice", &[tail, &at, &next, &first], &[]);
        let total = self.node("Add", &[&n, &pad], &[]);
        let end = self.node("Squeeze", &[&total, &first], &[]);
        let (start, step) = (self.int64_scalar(0), self.int64_scalar(1));
        let i = self.node("Range", &[&start, &end, &step], &[]);
        let (one, two) = (self.int64s(&[1]), self.int64s(&[2]));
        let edge = self.node("Sub", &[&n, &one], &[]);
        let twice = self.node("Mul", &[&edge, &two], &[]);
        let period = self.node("Max", &[&twice, &one], &[]);
        let r = self.node("Mod", &[&i, &period], &[]);
        let inside = self.node("Less", &[&r, &n], &[]);
        let mirrored = self.node("Sub", &[&period, &r], &[]);
        self.node("Where", &[&inside, &r, &mirrored], &[])
    }

    /// Crops the network's output `x` back to the input's `size`, in float32, as the model's
    /// output `output`.
    pub fn crop_output(&mut self, x: &str, size: &str) {
        let x = self.cast_to_f32(x);
        let (zeros, axes) = (self.int64s(&[0, 0]), self.int64s(&[2, 3]));
        self.node_to("Slice", &[&x, &zeros, size, &axes], &["output"], &[]);
    }

    /// A `kernel × kernel` conv of `x` (padding `kernel / 2`, `stride`, `group` groups) with
    /// the weight `weight` and the bias `bias`, if any.
    pub fn conv(
        &mut self,
        x: &str,
        weight: &str,
        bias: Option<&str>,
        kernel: i64,
        stride: i64,
        group: usize,
    ) -> Result<String> {
        let mut inputs = vec![x.to_owned(), self.weight(weight, false)?];
        if let Some(b) = bias {
            inputs.push(self.weight(b, false)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let pad = if stride == 1 { kernel / 2 } else { 0 };
        let attrs = [
            attr_ints("kernel_shape", &[kernel, kernel]),
            attr_ints("strides", &[stride, stride]),
            attr_ints("pads", &[pad; 4]),
            attr_int("group", group as i64),
        ];
        Ok(self.node("Conv", &refs, &attrs))
    }

    /// The conv `{prefix}.weight` (with `{prefix}.bias` where the state dict has it), stride 1.
    pub fn conv_layer(&mut self, x: &str, prefix: &str, kernel: i64, group: usize) -> Result<String> {
        let bias = format!("{prefix}.bias");
        let bias = self.has(&bias).then_some(bias);
        self.conv(x, &format!("{prefix}.weight"), bias.as_deref(), kernel, 1, group)
    }

    /// `LayerNormalization` over the last axis of `x` with the scale `weight` and shift
    /// `bias`, in float32.
    pub fn layer_norm(&mut self, x: &str, weight: &str, bias: &str, eps: f32) -> Result<String> {
        let x = self.cast_to_f32(x);
        let normed = self.layer_norm_f32(&x, weight, bias, eps)?;
        Ok(self.cast_to_activation(&normed))
    }

    /// LayerNorm over the channels of every pixel of the NCHW `x`:
    /// `Transpose → LayerNormalization (axis −1) → Transpose`, in float32.
    pub fn layer_norm_channels(&mut self, x: &str, weight: &str, bias: &str, eps: f32) -> Result<String> {
        let x = self.cast_to_f32(x);
        let nhwc = self.transpose(&x, &[0, 2, 3, 1]);
        let normed = self.layer_norm_f32(&nhwc, weight, bias, eps)?;
        let nchw = self.transpose(&normed, &[0, 3, 1, 2]);
        Ok(self.cast_to_activation(&nchw))
    }

    fn layer_norm_f32(&mut self, x: &str, weight: &str, bias: &str, eps: f32) -> Result<String> {
        let (w, b) = (self.weight(weight, true)?, self.weight(bias, true)?);
        let attrs = [attr_int("axis", -1), attr_float("epsilon", eps)];
        Ok(self.node("LayerNormalization", &[x, &w, &b], &attrs))
    }

    /// The exact GELU, `x · (1 + erf(x / √2)) / 2` (opset 17 has no `Gelu`).
    pub fn gelu(&mut self, x: &str) -> Result<String> {
        let root2 = self.scalar(std::f32::consts::SQRT_2, false)?;
        let (one, half) = (self.scalar(1.0, false)?, self.scalar(0.5, false)?);
        let scaled = self.node("Div", &[x, &root2], &[]);
        let erf = self.node("Erf", &[&scaled], &[]);
        let plus = self.node("Add", &[&erf, &one], &[]);
        let product = self.node("Mul", &[x, &plus], &[]);
        Ok(self.node("Mul", &[&product, &half], &[]))
    }

    /// `Split(x)` along `axis` into parts of the given sizes.
    pub fn split(&mut self, x: &str, axis: i64, sizes: &[usize]) -> Vec<String> {
        let sizes_name = self.int64s(&sizes.iter().map(|&s| s as i64).collect::<Vec<_>>());
        let outputs: Vec<String> = sizes.iter().map(|_| self.fresh()).collect();
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        self.node_to("Split", &[x, &sizes_name], &refs, &[attr_int("axis", axis)]);
        outputs
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[x], &[attr_ints("perm", perm)])
    }

    /// `Reshape(x, shape)` with a constant shape (0 copies the input's dimension, −1 is inferred).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.int64s(shape);
        self.node("Reshape", &[x, &shape], &[])
    }

    /// `torch.roll(x, shift, axis)` for one axis: the last `shift` entries (the first `−shift`
    /// when negative) moved to the front; `x`'s side along `axis` must exceed `|shift|`.
    pub fn roll(&mut self, x: &str, shift: i64, axis: i64) -> String {
        let (zero, split, end, axes) =
            (self.int64s(&[0]), self.int64s(&[-shift]), self.int64s(&[i64::MAX]), self.int64s(&[axis]));
        let tail = self.node("Slice", &[x, &split, &end, &axes], &[]);
        let head = self.node("Slice", &[x, &zero, &split, &axes], &[]);
        self.node("Concat", &[&tail, &head], &[attr_int("axis", axis)])
    }

    /// Serialises the graph with input and output of dimensions `dims` and the model
    /// description `doc`.
    pub fn finish(self, dims: Dims, doc: &str) -> Vec<u8> {
        let mut graph = Message::new();
        for n in &self.nodes {
            graph = graph.message(1, n);
        }
        graph = graph.string(2, "maskdcpt");
        for t in &self.initializers {
            graph = graph.message(5, t);
        }
        graph = graph.message(11, &value_info("input", FLOAT, &dims)).message(12, &value_info("output", FLOAT, &dims));
        let opset = Message::new().string(1, "").int(2, OPSET);
        Message::new()
            .int(1, IR_VERSION)
            .string(2, "maskdcpt")
            .string(3, env!("CARGO_PKG_VERSION"))
            .string(6, doc)
            .message(7, &graph)
            .message(8, &opset)
            .into_bytes()
    }
}
