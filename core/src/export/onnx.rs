//! ONNX export (opset 17), lowered from the op graph like every backend.
//!
//! The exported model is self-contained and follows the family's image rule: input
//! `input` float32 `[N, 3, H, W]` RGB in [0, 1] of any size, padded inside the model to the
//! family's size multiple (reflect for MaskDCPT, zeros for upstream NAFNet), run, and cropped
//! back, so its output `output` equals `maskdcpt restore`'s raw output for images of any size
//! (reflect padding gathers mirrored rows and columns, so pads longer than a side mirror on).
//!
//! With TLC channel attention ([`crate::tlc`]) the input size must be fixed: each block's
//! windows are then known, and its attention is `AveragePool` (the windows, stride 1) → `Pad`
//! (mode edge, centred) → the 1×1 `Conv` → `Mul`, the pooling in float32.
//!
//! LayerNorm is exported as `Transpose → LayerNormalization (axis −1) → Transpose`, which
//! TensorRT ≥ 8.6 runs in FP32 even in FP16 engines. With `fp16`, weights and activations are
//! float16 and each LayerNorm is wrapped in explicit casts so it runs in float32.

use super::protobuf::Message;
use crate::error::{Error, Result};
use crate::graph::{ConvKind, Op};
use crate::image::round_up;
use crate::model::Model;
use crate::spec::{IMAGE_CHANNELS, ModelSpec, PadMode};
use crate::tlc::{AttentionPool, MapPool};

/// ONNX opset the exporter targets.
pub const OPSET: i64 = 17;
/// IR version matching [`OPSET`].
const IR_VERSION: i64 = 8;

/// TensorProto data types used.
const FLOAT: i64 = 1;
const INT64: i64 = 7;
const FLOAT16: i64 = 10;

/// Spatial shape of the exported input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxShape {
    /// Batch, height and width are symbolic (`batch`, `height`, `width`).
    Dynamic,
    /// Batch 1 and a fixed `height × width`.
    Fixed {
        /// Input height in pixels.
        height: usize,
        /// Input width in pixels.
        width: usize,
    },
}

/// Export settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Float16 weights and activations (LayerNorm still in float32).
    pub fp16: bool,
    /// Input shape.
    pub shape: OnnxShape,
    /// How channel attention averages its map (TLC needs a fixed shape).
    pub attention_pool: AttentionPool,
}

/// Serialises `model` as an ONNX model.
pub fn export(model: &Model, options: &OnnxOptions) -> Result<Vec<u8>> {
    if let OnnxShape::Fixed { height: 0, .. } | OnnxShape::Fixed { width: 0, .. } = options.shape {
        return Err(Error::InvalidArgument("a fixed ONNX input shape needs a height and width of at least 1".into()));
    }
    let spec = model.nafnet("the ONNX export")?;
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
    let mut b = Builder::new(model, spec, options.fp16);
    let (input_dims, padded, size) = b.pad_input(options.shape);
    let graph = model.graph("the ONNX export")?;
    let mut names: Vec<String> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let pool = padded_size.map_or(MapPool::Global, |(h, w)| {
            options.attention_pool.map_pool(node.level, multiple, (h >> node.level, w >> node.level))
        });
        let name = match &node.op {
            Op::Input => padded.clone(),
            op => b.lower(op, &names, node.channels, pool)?,
        };
        names.push(name);
    }
    let result = b.cast_to_f32(&names[graph.output.0]);
    b.crop(&result, &size, "output");
    Ok(b.finish(input_dims))
}

/// Accumulates nodes and initializers of the ONNX graph.
struct Builder<'a> {
    model: &'a Model,
    spec: &'a ModelSpec,
    fp16: bool,
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    next: usize,
}

fn attr_int(name: &str, v: i64) -> Message {
    Message::new().string(1, name).int(3, v).int(20, 2)
}

fn attr_ints(name: &str, v: &[i64]) -> Message {
    Message::new().string(1, name).packed_ints(8, v).int(20, 7)
}

fn attr_float(name: &str, v: f32) -> Message {
    Message::new().string(1, name).float(2, v).int(20, 1)
}

fn attr_string(name: &str, v: &str) -> Message {
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
type Dims = Vec<Result<i64, &'static str>>;

impl<'a> Builder<'a> {
    fn new(model: &'a Model, spec: &'a ModelSpec, fp16: bool) -> Self {
        Builder { model, spec, fp16, nodes: Vec::new(), initializers: Vec::new(), next: 0 }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    /// Appends a node with one output and returns the output's name.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Message]) -> String {
        let out = self.fresh();
        self.node_to(op, inputs, &[&out], attrs);
        out
    }

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
    fn int64_scalar(&mut self, value: i64) -> String {
        let name = self.fresh();
        self.initializer(&name, &[], INT64, value.to_le_bytes().to_vec())
    }

    fn int64s(&mut self, values: &[i64]) -> String {
        let name = self.fresh();
        self.initializer(&name, &[values.len()], INT64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A float initializer, float16 in fp16 exports unless `keep_f32`; errors if a value
    /// does not fit in float16.
    fn floats(&mut self, name: &str, dims: &[usize], values: &[f32], keep_f32: bool) -> Result<String> {
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

    /// The state-dict tensor `key` as an initializer of the same name.
    fn weight(&mut self, key: &str, keep_f32: bool) -> Result<String> {
        let t = self.model.weights().require(key)?;
        let (shape, values) = (t.shape().to_vec(), t.to_f32());
        self.floats(key, &shape, &values, keep_f32)
    }

    fn cast(&mut self, x: &str, to: i64) -> String {
        self.node("Cast", &[x], &[attr_int("to", to)])
    }

    fn cast_to_f32(&mut self, x: &str) -> String {
        if self.fp16 { self.cast(x, FLOAT) } else { x.to_owned() }
    }

    /// Pads `input` bottom/right to the size multiple; returns the input dims, the padded
    /// network input (float16 in fp16 exports) and the `[H, W]` int64 tensor to crop back to.
    /// Zeros are a `Pad`; reflect gathers the rows, then the columns, at their mirrored indices
    /// ([`Self::mirrored_indices`]), so pads of any length mirror as `maskdcpt restore` does
    /// (a `Pad(mode=reflect)` is refused by ONNX Runtime and TensorRT where a pad reaches the
    /// image side).
    fn pad_input(&mut self, shape: OnnxShape) -> (Dims, String, String) {
        let m = self.spec.size_multiple() as i64;
        let channels = IMAGE_CHANNELS as i64;
        let (dims, size, tail): (Dims, String, String) = match shape {
            OnnxShape::Fixed { height, width } => {
                let (h, w) = (height as i64, width as i64);
                let tail = self.int64s(&[(m - h % m) % m, (m - w % m) % m]);
                (vec![Ok(1), Ok(channels), Ok(h), Ok(w)], self.int64s(&[h, w]), tail)
            }
            OnnxShape::Dynamic => {
                let shape = self.node("Shape", &["input"], &[]);
                let (two, four, zero) = (self.int64s(&[2]), self.int64s(&[4]), self.int64s(&[0]));
                let hw = self.node("Slice", &[&shape, &two, &four, &zero], &[]);
                let multiple = self.int64s(&[m]);
                let rem = self.node("Mod", &[&hw, &multiple], &[]);
                let short = self.node("Sub", &[&multiple, &rem], &[]);
                let tail = self.node("Mod", &[&short, &multiple], &[]);
                (vec![Err("batch"), Ok(channels), Err("height"), Err("width")], hw, tail)
            }
        };
        let padded = match self.spec.family.pad_mode() {
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
        let padded = if self.fp16 { self.cast(&padded, FLOAT16) } else { padded };
        (dims, padded, size)
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

    /// The mean of the `rows × cols` window each pixel of `x` takes (see [`crate::tlc`]): the
    /// valid windows' means, extended by repeating their edges, centred; summed in float32.
    fn window_means(&mut self, x: &str, rows: usize, cols: usize) -> String {
        let x = self.cast_to_f32(x);
        let attrs = [attr_ints("kernel_shape", &[rows as i64, cols as i64]), attr_ints("strides", &[1, 1])];
        let means = self.node("AveragePool", &[&x], &attrs);
        let (top, left, bottom, right) = ((rows - 1) / 2, (cols - 1) / 2, rows / 2, cols / 2);
        let pads = self.int64s(&[0, 0, top as i64, left as i64, 0, 0, bottom as i64, right as i64]);
        let extended = self.node("Pad", &[&means, &pads], &[attr_string("mode", "edge")]);
        if self.fp16 { self.cast(&extended, FLOAT16) } else { extended }
    }

    /// `Slice(x)[..., :H, :W]` named `out`.
    fn crop(&mut self, x: &str, size: &str, out: &str) {
        let (zeros, axes) = (self.int64s(&[0, 0]), self.int64s(&[2, 3]));
        self.node_to("Slice", &[x, &zeros, size, &axes], &[out], &[]);
    }

    /// Lowers one graph op whose inputs are named in `names` (`pool`: how a channel attention
    /// averages its map); returns its output's name.
    fn lower(&mut self, op: &Op, names: &[String], channels: usize, pool: MapPool) -> Result<String> {
        let name = |v: &crate::graph::ValueId| names[v.0].clone();
        Ok(match op {
            Op::Input => unreachable!("the input is lowered by `pad_input`"),
            Op::Conv { input, kind, weight, bias } => {
                let (k, stride, pad) = match kind {
                    ConvKind::K3x3 => (3, 1, 1),
                    ConvKind::K1x1 => (1, 1, 0),
                    ConvKind::K2x2Stride2 => (2, 2, 0),
                };
                let mut inputs = vec![name(input), self.weight(weight, false)?];
                if let Some(b) = bias {
                    inputs.push(self.weight(b, false)?);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let attrs = [
                    attr_ints("kernel_shape", &[k, k]),
                    attr_ints("strides", &[stride, stride]),
                    attr_ints("pads", &[pad; 4]),
                ];
                self.node("Conv", &refs, &attrs)
            }
            Op::DepthwiseConv3x3 { input, weight, bias } => {
                let (x, w, b) = (name(input), self.weight(weight, false)?, self.weight(bias, false)?);
                let attrs = [
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1; 4]),
                    attr_int("group", channels as i64),
                ];
                self.node("Conv", &[&x, &w, &b], &attrs)
            }
            Op::LayerNorm { input, weight, bias, eps } => {
                let x = name(input);
                let x = self.cast_to_f32(&x);
                let nhwc = self.node("Transpose", &[&x], &[attr_ints("perm", &[0, 2, 3, 1])]);
                let (w, b) = (self.weight(weight, true)?, self.weight(bias, true)?);
                let attrs = [attr_int("axis", -1), attr_float("epsilon", *eps)];
                let normed = self.node("LayerNormalization", &[&nhwc, &w, &b], &attrs);
                let nchw = self.node("Transpose", &[&normed], &[attr_ints("perm", &[0, 3, 1, 2])]);
                if self.fp16 { self.cast(&nchw, FLOAT16) } else { nchw }
            }
            Op::SimpleGate { input } => {
                let (x, halves) = (name(input), self.int64s(&[channels as i64; 2]));
                let (a, b) = (self.fresh(), self.fresh());
                self.node_to("Split", &[&x, &halves], &[&a, &b], &[attr_int("axis", 1)]);
                self.node("Mul", &[&a, &b], &[])
            }
            Op::ChannelAttention { input, weight, bias } => {
                let x = name(input);
                let pooled = match pool {
                    MapPool::Global => self.node("GlobalAveragePool", &[&x], &[]),
                    MapPool::Window { rows, cols } => self.window_means(&x, rows, cols),
                    MapPool::Sampled { .. } => {
                        return Err(Error::Unsupported("sampled TLC attention has no ONNX export".into()));
                    }
                };
                let (w, b) = (self.weight(weight, false)?, self.weight(bias, false)?);
                let attention = self.node("Conv", &[&pooled, &w, &b], &[attr_ints("kernel_shape", &[1, 1])]);
                self.node("Mul", &[&x, &attention], &[])
            }
            Op::PixelShuffle { input } => {
                let x = name(input);
                self.node("DepthToSpace", &[&x], &[attr_int("blocksize", 2), attr_string("mode", "CRD")])
            }
            Op::Add { a, b } => self.node("Add", &[&name(a), &name(b)], &[]),
            Op::Scale { input, scale } => {
                let (x, s) = (name(input), self.weight(scale, false)?);
                self.node("Mul", &[&x, &s], &[])
            }
        })
    }

    fn finish(self, dims: Dims) -> Vec<u8> {
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
        let doc = format!(
            "{} NAFNet (width {}): RGB float32 in [0,1], padded inside to a multiple of {} and cropped back",
            self.spec.family.name(),
            self.spec.width,
            self.spec.size_multiple()
        );
        Message::new()
            .int(1, IR_VERSION)
            .string(2, "maskdcpt")
            .string(3, env!("CARGO_PKG_VERSION"))
            .string(6, &doc)
            .message(7, &graph)
            .message(8, &opset)
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::random_model;
    use crate::spec::{Family, ModelSpec};
    use crate::weights::{Format, Tensor, WeightStore};

    fn spec() -> ModelSpec {
        ModelSpec {
            family: Family::MaskDcpt,
            width: 4,
            enc_blocks: vec![1, 2],
            middle_blocks: 1,
            dec_blocks: vec![1, 1],
        }
    }

    /// Options with whole-map channel attention.
    fn global(fp16: bool, shape: OnnxShape) -> OnnxOptions {
        OnnxOptions { fp16, shape, attention_pool: AttentionPool::Global }
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn every_layer_norm_is_exported_as_layer_normalization() {
        let model = random_model(&spec(), 7);
        let blocks = 1 + 2 + 1 + 1 + 1;
        for fp16 in [false, true] {
            let bytes = export(&model, &global(fp16, OnnxShape::Dynamic)).unwrap();
            assert_eq!(count(&bytes, b"\x12LayerNormalization"), 2 * blocks, "fp16 {fp16}");
            assert_eq!(count(&bytes, b"DepthToSpace"), 2 * 2, "op type and node name per up step");
            assert_eq!(count(&bytes, b"reflect"), 0, "reflect is gathered, not a Pad mode");
            assert_eq!(count(&bytes, b"\x06Gather"), 2, "rows, then columns");
        }
    }

    #[test]
    fn tlc_attention_pools_windows_where_they_are_smaller_than_the_maps() {
        let model = random_model(&spec(), 7);
        let tlc = AttentionPool::Tlc { train_height: 16, train_width: 16 };
        let fixed =
            |height, width| OnnxOptions { attention_pool: tlc, ..global(false, OnnxShape::Fixed { height, width }) };
        // Windows of 24, 12 and 6 pixels at levels 0-2: smaller than every map of 40x60 (padded
        // 48x64), none of 8x8 (padded 16x16).
        let windowed = export(&model, &fixed(40, 60)).unwrap();
        assert_eq!((count(&windowed, b"\x0bAveragePool"), count(&windowed, b"\x04edge")), (6, 6));
        assert_eq!(count(&windowed, b"\x11GlobalAveragePool"), 0);
        let small = export(&model, &fixed(8, 8)).unwrap();
        assert_eq!((count(&small, b"\x0bAveragePool"), count(&small, b"\x11GlobalAveragePool")), (0, 6));
        let dynamic = OnnxOptions { shape: OnnxShape::Dynamic, ..fixed(8, 8) };
        assert!(export(&model, &dynamic).unwrap_err().to_string().contains("fixed input size"));
        let tiny =
            OnnxOptions { attention_pool: AttentionPool::Tlc { train_height: 8, train_width: 8 }, ..fixed(8, 8) };
        assert!(export(&model, &tiny).unwrap_err().to_string().contains("size multiple 16"));
    }

    #[test]
    fn weights_beyond_float16_are_refused_for_fp16_only() {
        let model = random_model(&spec(), 7);
        let mut tensors: std::collections::BTreeMap<String, Tensor> =
            model.weights().iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
        tensors.insert("intro.bias".into(), Tensor::from_f32(vec![4], &[0.0, 1e6, 0.0, 0.0]).unwrap());
        let model = Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None)).unwrap();
        let fixed = OnnxShape::Fixed { height: 8, width: 8 };
        assert!(export(&model, &global(false, fixed)).is_ok());
        let err = export(&model, &global(true, fixed)).unwrap_err().to_string();
        assert!(err.contains("intro.bias") && err.contains("flat index 1"), "{err}");
        let zero = OnnxShape::Fixed { height: 0, width: 8 };
        assert!(export(&model, &global(false, zero)).is_err());
    }
}
