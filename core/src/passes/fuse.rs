//! Fusion: rewrites the primitive op graph into a short list of fused steps that backends
//! implement directly (a whole NAFBlock, conv + residual, up-conv + shuffle + skip add).
//!
//! Pure function of the graph: matches the patterns by following data edges, so any graph the
//! builder emits (any width, any block counts) lowers, and anything else is reported.

use crate::error::{Error, Result};
use crate::graph::{ConvKind, Graph, Op, ValueId};

/// Weight keys of one NAFBlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockKeys {
    /// LayerNorm 1 scale / shift.
    pub norm1: (String, String),
    /// Expanding 1×1 conv (c → 2c) weight / bias.
    pub conv1: (String, String),
    /// Depthwise 3×3 on 2c channels weight / bias.
    pub conv2: (String, String),
    /// Channel-attention 1×1 conv weight / bias.
    pub sca: (String, String),
    /// 1×1 conv (c → c) weight / bias.
    pub conv3: (String, String),
    /// Per-channel scale of the first residual branch.
    pub beta: String,
    /// LayerNorm 2 scale / shift.
    pub norm2: (String, String),
    /// Expanding 1×1 conv (c → 2c) weight / bias.
    pub conv4: (String, String),
    /// 1×1 conv (c → c) weight / bias.
    pub conv5: (String, String),
    /// Per-channel scale of the second residual branch.
    pub gamma: String,
}

/// One fused step. `output` values are produced by the step; all others are read.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// 3×3 conv with bias, optionally plus a residual value of the output's shape.
    Conv3x3 {
        /// Input value.
        input: ValueId,
        /// Residual added to the result, if any.
        residual: Option<ValueId>,
        /// Output value.
        output: ValueId,
        /// Weight key `[cout, cin, 3, 3]`.
        weight: String,
        /// Bias key.
        bias: String,
    },
    /// 2×2 stride-2 conv with bias (`c → 2c`, half resolution).
    Down {
        /// Input value.
        input: ValueId,
        /// Output value.
        output: ValueId,
        /// Weight key `[2c, c, 2, 2]`.
        weight: String,
        /// Bias key.
        bias: String,
    },
    /// 1×1 conv without bias (`2c → 4c`), PixelShuffle(2), plus the skip value.
    UpShuffleAdd {
        /// Low-resolution input value.
        input: ValueId,
        /// Skip value at the output resolution.
        skip: ValueId,
        /// Output value.
        output: ValueId,
        /// Weight key `[4c, 2c, 1, 1]`.
        weight: String,
    },
    /// A whole NAFBlock.
    NafBlock {
        /// Input value.
        input: ValueId,
        /// Output value.
        output: ValueId,
        /// Weight keys.
        keys: Box<BlockKeys>,
        /// LayerNorm epsilon.
        eps: f32,
    },
}

impl Step {
    /// The value the step produces.
    pub fn output(&self) -> ValueId {
        match self {
            Step::Conv3x3 { output, .. }
            | Step::Down { output, .. }
            | Step::UpShuffleAdd { output, .. }
            | Step::NafBlock { output, .. } => *output,
        }
    }

    /// The values the step reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        match self {
            Step::Conv3x3 { input, residual, .. } => std::iter::once(*input).chain(*residual).collect(),
            Step::Down { input, .. } | Step::NafBlock { input, .. } => vec![*input],
            Step::UpShuffleAdd { input, skip, .. } => vec![*input, *skip],
        }
    }

    /// The input whose storage the output may reuse when that input is read for the last time
    /// (the step reads each element of it before overwriting it).
    pub fn in_place_input(&self) -> Option<ValueId> {
        match self {
            Step::NafBlock { input, .. } => Some(*input),
            Step::UpShuffleAdd { skip, .. } => Some(*skip),
            Step::Conv3x3 { .. } | Step::Down { .. } => None,
        }
    }
}

/// A fused program: steps in order over the graph's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// Steps in execution order.
    pub steps: Vec<Step>,
    /// The graph input value.
    pub input: ValueId,
    /// The value the network returns.
    pub output: ValueId,
}

/// Fuses `graph` into steps.
pub fn fuse(graph: &Graph) -> Result<Program> {
    let consumers = consumers(graph);
    let sole = |v: ValueId| match consumers[v.0].as_slice() {
        [only] => Some(*only),
        _ => None,
    };
    let input = ValueId(0);
    if graph.nodes.first().map(|n| &n.op) != Some(&Op::Input) {
        return Err(Error::Unsupported("graph does not start with its input".into()));
    }
    let mut steps = Vec::new();
    let mut covered = vec![false; graph.nodes.len()];
    covered[0] = true;
    for i in 1..graph.nodes.len() {
        if covered[i] {
            continue;
        }
        let v = ValueId(i);
        let (step, used) = match &graph.node(v).op {
            Op::Conv { input: src, kind: ConvKind::K3x3, weight, bias: Some(bias) } => {
                let add = sole(v).filter(|&a| matches!(graph.node(a).op, Op::Add { .. }));
                let (residual, output, used) = match add.map(|a| (a, &graph.node(a).op)) {
                    Some((a, Op::Add { a: x, b: y })) if *x == v || *y == v => {
                        let other = if *x == v { *y } else { *x };
                        (Some(other), a, vec![v, a])
                    }
                    _ => (None, v, vec![v]),
                };
                (Step::Conv3x3 { input: *src, residual, output, weight: weight.clone(), bias: bias.clone() }, used)
            }
            Op::Conv { input: src, kind: ConvKind::K2x2Stride2, weight, bias: Some(bias) } => {
                (Step::Down { input: *src, output: v, weight: weight.clone(), bias: bias.clone() }, vec![v])
            }
            Op::Conv { input: src, kind: ConvKind::K1x1, weight, bias: None } => {
                match_up(graph, &sole, v, *src, weight).ok_or_else(|| unlowerable(graph, v))?
            }
            Op::LayerNorm { .. } => match_block(graph, &sole, v).ok_or_else(|| unlowerable(graph, v))?,
            _ => return Err(unlowerable(graph, v)),
        };
        for u in used {
            covered[u.0] = true;
        }
        steps.push(step);
    }
    Ok(Program { steps, input, output: graph.output })
}

fn unlowerable(graph: &Graph, v: ValueId) -> Error {
    Error::Unsupported(format!("node {} ({:?}) matches no fused pattern", v.0, graph.node(v).op))
}

/// For each value, the nodes that read it.
fn consumers(graph: &Graph) -> Vec<Vec<ValueId>> {
    let mut out = vec![Vec::new(); graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        for src in Graph::inputs(&node.op) {
            out[src.0].push(ValueId(i));
        }
    }
    out
}

/// `conv1x1 → PixelShuffle → Add(skip)`.
fn match_up(
    graph: &Graph,
    sole: &dyn Fn(ValueId) -> Option<ValueId>,
    conv: ValueId,
    src: ValueId,
    weight: &str,
) -> Option<(Step, Vec<ValueId>)> {
    let shuffle = sole(conv).filter(|&s| graph.node(s).op == Op::PixelShuffle { input: conv })?;
    let add = sole(shuffle)?;
    let Op::Add { a, b } = graph.node(add).op else { return None };
    let skip = if a == shuffle {
        b
    } else if b == shuffle {
        a
    } else {
        return None;
    };
    let step = Step::UpShuffleAdd { input: src, skip, output: add, weight: weight.to_owned() };
    Some((step, vec![conv, shuffle, add]))
}

/// The 14-node NAFBlock starting at its first LayerNorm.
fn match_block(graph: &Graph, sole: &dyn Fn(ValueId) -> Option<ValueId>, n1: ValueId) -> Option<(Step, Vec<ValueId>)> {
    let op = |v: ValueId| &graph.node(v).op;
    let Op::LayerNorm { input: x, weight: n1w, bias: n1b, eps } = op(n1) else { return None };
    let (c1, conv1) = next_conv1x1(graph, sole, n1)?;
    let c2 = sole(c1)?;
    let Op::DepthwiseConv3x3 { weight: c2w, bias: c2b, .. } = op(c2) else { return None };
    let g1 = sole(c2).filter(|&g| *op(g) == Op::SimpleGate { input: c2 })?;
    let ca = sole(g1)?;
    let Op::ChannelAttention { weight: sw, bias: sb, .. } = op(ca) else { return None };
    let (c3, conv3) = next_conv1x1(graph, sole, ca)?;
    let (s1, beta) = next_scale(graph, sole, c3)?;
    let y = sole(s1).filter(|&a| *op(a) == Op::Add { a: *x, b: s1 })?;
    let n2 = (y.0 + 1..graph.nodes.len())
        .map(ValueId)
        .find(|&v| matches!(op(v), Op::LayerNorm { input, .. } if *input == y))?;
    let Op::LayerNorm { weight: n2w, bias: n2b, eps: eps2, .. } = op(n2) else { return None };
    let (c4, conv4) = next_conv1x1(graph, sole, n2)?;
    let g2 = sole(c4).filter(|&g| *op(g) == Op::SimpleGate { input: c4 })?;
    let (c5, conv5) = next_conv1x1(graph, sole, g2)?;
    let (s2, gamma) = next_scale(graph, sole, c5)?;
    let out = sole(s2).filter(|&a| *op(a) == Op::Add { a: y, b: s2 })?;
    if eps != eps2 {
        return None;
    }
    let keys = BlockKeys {
        norm1: (n1w.clone(), n1b.clone()),
        conv1,
        conv2: (c2w.clone(), c2b.clone()),
        sca: (sw.clone(), sb.clone()),
        conv3,
        beta,
        norm2: (n2w.clone(), n2b.clone()),
        conv4,
        conv5,
        gamma,
    };
    let used = vec![n1, c1, c2, g1, ca, c3, s1, y, n2, c4, g2, c5, s2, out];
    Some((Step::NafBlock { input: *x, output: out, keys: Box::new(keys), eps: *eps }, used))
}

fn next_conv1x1(
    graph: &Graph,
    sole: &dyn Fn(ValueId) -> Option<ValueId>,
    v: ValueId,
) -> Option<(ValueId, (String, String))> {
    let c = sole(v)?;
    match &graph.node(c).op {
        Op::Conv { input, kind: ConvKind::K1x1, weight, bias: Some(bias) } if *input == v => {
            Some((c, (weight.clone(), bias.clone())))
        }
        _ => None,
    }
}

fn next_scale(graph: &Graph, sole: &dyn Fn(ValueId) -> Option<ValueId>, v: ValueId) -> Option<(ValueId, String)> {
    let s = sole(v)?;
    match &graph.node(s).op {
        Op::Scale { input, scale } if *input == v => Some((s, scale.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::tiny_spec;
    use crate::spec::{Family, ModelSpec};

    #[test]
    fn nafnet_fuses_into_blocks_and_three_kinds_of_conv() {
        let spec = ModelSpec {
            family: Family::Nafnet,
            width: 8,
            enc_blocks: vec![2, 0, 1],
            middle_blocks: 3,
            dec_blocks: vec![1, 0, 2],
        };
        let program = fuse(&Graph::from_spec(&spec)).unwrap();
        let count = |f: fn(&Step) -> bool| program.steps.iter().filter(|s| f(s)).count();
        assert_eq!(count(|s| matches!(s, Step::NafBlock { .. })), 2 + 1 + 3 + 1 + 2);
        assert_eq!(count(|s| matches!(s, Step::Down { .. })), 3);
        assert_eq!(count(|s| matches!(s, Step::UpShuffleAdd { .. })), 3);
        assert_eq!(count(|s| matches!(s, Step::Conv3x3 { residual: None, .. })), 1);
        assert_eq!(count(|s| matches!(s, Step::Conv3x3 { residual: Some(_), .. })), 1);
        assert_eq!(program.steps.last().unwrap().output(), program.output);
    }

    #[test]
    fn an_op_outside_every_pattern_is_reported() {
        let spec = tiny_spec();
        let mut graph = Graph::from_spec(&spec);
        graph.nodes[1].op = Op::SimpleGate { input: ValueId(0) };
        assert!(matches!(fuse(&graph), Err(Error::Unsupported(_))));
    }
}
