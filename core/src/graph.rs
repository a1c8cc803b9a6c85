//! Graph: the network as a small typed op list that references weights by state-dict key.
//!
//! Every backend and exporter lowers from this one description; none re-derives the network
//! from keys. Values are feature maps identified by [`ValueId`]; each has a channel count and a
//! resolution level (0 = the padded input size, `l` = that size divided by 2^l). Padding and
//! cropping are not part of the graph: they belong to the family's image rule.

use crate::spec::{BlockSite, IMAGE_CHANNELS, ModelSpec};

/// Index of a value (the output of one node) in [`Graph::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(pub usize);

/// Which per-level features of the network a classification head reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeatureSource {
    /// Each decoder stage's output (DCPT's hooks; the default).
    #[default]
    Decoder,
    /// Each encoder stage's output (the skip connections): features of the degraded input
    /// before the network restores it.
    Encoder,
}

impl FeatureSource {
    /// The name files and configs use (`decoder`, `encoder`).
    pub fn name(self) -> &'static str {
        match self {
            FeatureSource::Decoder => "decoder",
            FeatureSource::Encoder => "encoder",
        }
    }

    /// The source called `name`, if it is one of [`FeatureSource::name`]'s.
    pub fn from_name(name: &str) -> Option<Self> {
        [FeatureSource::Decoder, FeatureSource::Encoder].into_iter().find(|s| s.name() == name)
    }
}

/// Kernel shape of a dense convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// 3×3, stride 1, zero padding 1.
    K3x3,
    /// 1×1 (a per-pixel matrix product).
    K1x1,
    /// 2×2, stride 2, no padding (halves the resolution).
    K2x2Stride2,
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The (padded) network input image.
    Input,
    /// Dense convolution `cin → cout`; weight `[cout, cin, k, k]`, optional bias `[cout]`.
    Conv {
        /// Input value.
        input: ValueId,
        /// Kernel shape.
        kind: ConvKind,
        /// Weight key.
        weight: String,
        /// Bias key, if any.
        bias: Option<String>,
    },
    /// Depthwise 3×3 convolution, zero padding 1; weight `[c, 1, 3, 3]`, bias `[c]`.
    DepthwiseConv3x3 {
        /// Input value.
        input: ValueId,
        /// Weight key.
        weight: String,
        /// Bias key.
        bias: String,
    },
    /// LayerNorm over the channels of each pixel (biased variance), affine.
    LayerNorm {
        /// Input value.
        input: ValueId,
        /// Scale key `[c]`.
        weight: String,
        /// Shift key `[c]`.
        bias: String,
        /// Epsilon added to the variance.
        eps: f32,
    },
    /// Splits the channels into halves and multiplies them: `2c → c`.
    SimpleGate {
        /// Input value.
        input: ValueId,
    },
    /// Simplified channel attention: `x · (W · mean_hw(x) + b)` with a 1×1 conv `[c, c, 1, 1]`.
    /// The mean runs over the whole (padded) feature map.
    ChannelAttention {
        /// Input value.
        input: ValueId,
        /// 1×1 conv weight key.
        weight: String,
        /// 1×1 conv bias key.
        bias: String,
    },
    /// PixelShuffle by 2: channel `4c + 2i + j` → channel `c` at `(2h + i, 2w + j)`.
    PixelShuffle {
        /// Input value.
        input: ValueId,
    },
    /// Element-wise sum.
    Add {
        /// First operand.
        a: ValueId,
        /// Second operand.
        b: ValueId,
    },
    /// Multiplies each channel by a learned scalar (`[1, c, 1, 1]`).
    Scale {
        /// Input value.
        input: ValueId,
        /// Scale key.
        scale: String,
    },
}

/// A node: the op and the shape of the value it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Channels of the output.
    pub channels: usize,
    /// Resolution level of the output (spatial size = padded input size / 2^level).
    pub level: usize,
}

/// The whole network, in topological order; node `i` produces `ValueId(i)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Nodes in execution order; `nodes[0]` is the input.
    pub nodes: Vec<Node>,
    /// The value the network returns.
    pub output: ValueId,
    /// The decoder's output at each level, highest resolution first (the features a
    /// classification head reads by default).
    pub decoder_outputs: Vec<ValueId>,
    /// The encoder's output at each level (its skip connection), highest resolution first.
    pub encoder_outputs: Vec<ValueId>,
}

impl Graph {
    /// Builds the NAFNet graph described by `spec`.
    pub fn from_spec(spec: &ModelSpec) -> Self {
        let mut b = Builder { nodes: Vec::new(), eps: spec.family.layer_norm_eps() };
        let input = b.push(Op::Input, IMAGE_CHANNELS, 0);
        let mut x = b.conv(input, ConvKind::K3x3, "intro", true, spec.width, 0);
        let mut skips = Vec::new();
        for level in 0..spec.levels() {
            for i in 0..spec.enc_blocks[level] {
                x = b.naf_block(x, &spec.encoder_block(level, i), level);
            }
            skips.push(x);
            x = b.conv(
                x,
                ConvKind::K2x2Stride2,
                &format!("downs.{level}"),
                true,
                spec.channels_at(level + 1),
                level + 1,
            );
        }
        for i in 0..spec.middle_blocks {
            x = b.naf_block(x, &spec.middle_block(i), spec.levels());
        }
        let mut decoder_outputs = Vec::new();
        let encoder_outputs = skips.clone();
        for stage in 0..spec.levels() {
            let level = spec.levels() - 1 - stage;
            let c = spec.channels_at(level);
            let up = b.conv(x, ConvKind::K1x1, &format!("ups.{stage}.0"), false, 4 * c, level + 1);
            let shuffled = b.push(Op::PixelShuffle { input: up }, c, level);
            let skip = skips.pop().expect("one skip per level");
            x = b.push(Op::Add { a: shuffled, b: skip }, c, level);
            for i in 0..spec.dec_blocks[stage] {
                x = b.naf_block(x, &spec.decoder_block(stage, i), level);
            }
            decoder_outputs.push(x);
        }
        let out = b.conv(x, ConvKind::K3x3, "ending", true, IMAGE_CHANNELS, 0);
        let output = b.push(Op::Add { a: out, b: input }, IMAGE_CHANNELS, 0);
        decoder_outputs.reverse();
        Graph { nodes: b.nodes, output, decoder_outputs, encoder_outputs }
    }

    /// The per-level features `source` names, highest resolution first.
    pub fn level_outputs(&self, source: FeatureSource) -> &[ValueId] {
        match source {
            FeatureSource::Decoder => &self.decoder_outputs,
            FeatureSource::Encoder => &self.encoder_outputs,
        }
    }

    /// The node producing `v`.
    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.0]
    }

    /// Values each op reads.
    pub fn inputs(op: &Op) -> Vec<ValueId> {
        match op {
            Op::Input => vec![],
            Op::Conv { input, .. }
            | Op::DepthwiseConv3x3 { input, .. }
            | Op::LayerNorm { input, .. }
            | Op::SimpleGate { input }
            | Op::ChannelAttention { input, .. }
            | Op::PixelShuffle { input }
            | Op::Scale { input, .. } => vec![*input],
            Op::Add { a, b } => vec![*a, *b],
        }
    }
}

struct Builder {
    nodes: Vec<Node>,
    eps: f32,
}

impl Builder {
    fn push(&mut self, op: Op, channels: usize, level: usize) -> ValueId {
        self.nodes.push(Node { op, channels, level });
        ValueId(self.nodes.len() - 1)
    }

    fn conv(&mut self, input: ValueId, kind: ConvKind, prefix: &str, bias: bool, cout: usize, level: usize) -> ValueId {
        let op =
            Op::Conv { input, kind, weight: format!("{prefix}.weight"), bias: bias.then(|| format!("{prefix}.bias")) };
        self.push(op, cout, level)
    }

    /// NAFBlock: `y = x + β·conv3(SCA(gate(dw(conv1(LN1(x))))))`, `out = y + γ·conv5(gate(conv4(LN2(y))))`.
    fn naf_block(&mut self, x: ValueId, site: &BlockSite, level: usize) -> ValueId {
        let (p, c) = (&site.prefix, site.channels);
        let key = |s: &str| format!("{p}.{s}");
        let eps = self.eps;
        let n1 =
            self.push(Op::LayerNorm { input: x, weight: key("norm1.weight"), bias: key("norm1.bias"), eps }, c, level);
        let c1 = self.conv(n1, ConvKind::K1x1, &key("conv1"), true, 2 * c, level);
        let c2 = self.push(
            Op::DepthwiseConv3x3 { input: c1, weight: key("conv2.weight"), bias: key("conv2.bias") },
            2 * c,
            level,
        );
        let g1 = self.push(Op::SimpleGate { input: c2 }, c, level);
        let sca = self.push(
            Op::ChannelAttention { input: g1, weight: key("sca.1.weight"), bias: key("sca.1.bias") },
            c,
            level,
        );
        let c3 = self.conv(sca, ConvKind::K1x1, &key("conv3"), true, c, level);
        let s1 = self.push(Op::Scale { input: c3, scale: key("beta") }, c, level);
        let y = self.push(Op::Add { a: x, b: s1 }, c, level);
        let n2 =
            self.push(Op::LayerNorm { input: y, weight: key("norm2.weight"), bias: key("norm2.bias"), eps }, c, level);
        let c4 = self.conv(n2, ConvKind::K1x1, &key("conv4"), true, 2 * c, level);
        let g2 = self.push(Op::SimpleGate { input: c4 }, c, level);
        let c5 = self.conv(g2, ConvKind::K1x1, &key("conv5"), true, c, level);
        let s2 = self.push(Op::Scale { input: c5, scale: key("gamma") }, c, level);
        self.push(Op::Add { a: y, b: s2 }, c, level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Family;

    /// A two-level network with unequal block counts.
    fn two_level_spec() -> ModelSpec {
        ModelSpec {
            family: Family::MaskDcpt,
            width: 8,
            enc_blocks: vec![1, 2],
            middle_blocks: 1,
            dec_blocks: vec![2, 1],
        }
    }

    #[test]
    fn graph_references_exactly_the_spec_keys() {
        let spec = two_level_spec();
        let graph = Graph::from_spec(&spec);
        let mut used: Vec<String> = graph
            .nodes
            .iter()
            .flat_map(|n| match &n.op {
                Op::Conv { weight, bias, .. } => [Some(weight.clone()), bias.clone()].into_iter().flatten().collect(),
                Op::DepthwiseConv3x3 { weight, bias, .. }
                | Op::LayerNorm { weight, bias, .. }
                | Op::ChannelAttention { weight, bias, .. } => vec![weight.clone(), bias.clone()],
                Op::Scale { scale, .. } => vec![scale.clone()],
                _ => vec![],
            })
            .collect();
        let mut expected: Vec<String> = spec.expected_tensors().into_iter().map(|(k, _)| k).collect();
        used.sort();
        expected.sort();
        assert_eq!(used, expected);
        assert_eq!(graph.node(graph.output).channels, 3);
    }

    /// Both feature sources name one value per level, highest resolution first: the encoder's
    /// the input of each level's down conv, the decoder's the last block of each stage.
    #[test]
    fn level_outputs_are_the_stage_outputs() {
        let graph = Graph::from_spec(&two_level_spec());
        for source in [FeatureSource::Decoder, FeatureSource::Encoder] {
            let levels: Vec<_> = graph.level_outputs(source).iter().map(|&v| graph.node(v).level).collect();
            let channels: Vec<_> = graph.level_outputs(source).iter().map(|&v| graph.node(v).channels).collect();
            assert_eq!((levels, channels), (vec![0, 1], vec![8, 16]), "{source:?}");
            assert_eq!(FeatureSource::from_name(source.name()), Some(source));
        }
        let down_inputs: Vec<_> = graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv { input, kind: ConvKind::K2x2Stride2, .. } => Some(*input),
                _ => None,
            })
            .collect();
        assert_eq!(graph.encoder_outputs, down_inputs);
        assert!(graph.decoder_outputs.iter().all(|v| !graph.encoder_outputs.contains(v)));
        assert_eq!(FeatureSource::from_name("middle"), None);
    }
}
