//! Static memory plan: assigns every value of a fused program to a reusable buffer slot for a
//! given input size, so a run allocates once and its peak is known before it starts.

use crate::graph::{Graph, ValueId};
use crate::passes::fuse::Program;

/// Buffer slots for one input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Slot holding each value (`None` for values that fused steps never materialise).
    pub slot_of: Vec<Option<usize>>,
    /// Size of each slot in elements.
    pub slot_len: Vec<usize>,
}

impl MemoryPlan {
    /// Total elements over all slots.
    pub fn total_len(&self) -> usize {
        self.slot_len.iter().sum()
    }
}

/// Elements of value `v` for a padded `height × width` input.
pub fn value_len(graph: &Graph, v: ValueId, height: usize, width: usize) -> usize {
    let node = graph.node(v);
    node.channels * (height >> node.level) * (width >> node.level)
}

/// Plans buffers for `program` on a padded `height × width` input: a value's slot is freed
/// after its last reader, steps that may work in place reuse their input's slot, and other
/// values take the smallest free slot that fits or a new one.
pub fn plan(program: &Program, graph: &Graph, height: usize, width: usize) -> MemoryPlan {
    let n = graph.nodes.len();
    let mut last_use = vec![0usize; n];
    for (s, step) in program.steps.iter().enumerate() {
        for v in step.inputs() {
            last_use[v.0] = s;
        }
    }
    last_use[program.output.0] = usize::MAX;
    let mut plan = MemoryPlan { slot_of: vec![None; n], slot_len: Vec::new() };
    let mut free: Vec<usize> = Vec::new();
    let input_len = value_len(graph, program.input, height, width);
    plan.slot_of[program.input.0] = Some(new_slot(&mut plan, input_len));
    for (s, step) in program.steps.iter().enumerate() {
        let out = step.output();
        let need = value_len(graph, out, height, width);
        let reuse = step.in_place_input().filter(|v| last_use[v.0] == s && value_len(graph, *v, height, width) == need);
        let slot = match reuse {
            Some(v) => plan.slot_of[v.0].expect("inputs are planned before their readers"),
            None => take_free(&mut free, &plan.slot_len, need).unwrap_or_else(|| new_slot(&mut plan, need)),
        };
        plan.slot_of[out.0] = Some(slot);
        for v in step.inputs() {
            if last_use[v.0] == s && reuse != Some(v) {
                free.push(plan.slot_of[v.0].expect("read values are planned"));
            }
        }
    }
    plan
}

fn new_slot(plan: &mut MemoryPlan, len: usize) -> usize {
    plan.slot_len.push(len);
    plan.slot_len.len() - 1
}

/// Removes and returns the smallest free slot holding at least `need` elements.
fn take_free(free: &mut Vec<usize>, slot_len: &[usize], need: usize) -> Option<usize> {
    let (pos, _) = free.iter().enumerate().filter(|(_, s)| slot_len[**s] >= need).min_by_key(|(_, s)| slot_len[**s])?;
    Some(free.swap_remove(pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::fuse::fuse;
    use crate::spec::{Family, ModelSpec};

    #[test]
    fn live_values_never_share_a_slot() {
        let spec = ModelSpec {
            family: Family::MaskDcpt,
            width: 8,
            enc_blocks: vec![1, 2, 1],
            middle_blocks: 2,
            dec_blocks: vec![1, 1, 1],
        };
        let graph = Graph::from_spec(&spec);
        let program = fuse(&graph).unwrap();
        let p = plan(&program, &graph, 64, 48);
        // Simulate: at every step, the slots of values still needed later must be distinct.
        let mut live: Vec<ValueId> = vec![program.input];
        for (s, step) in program.steps.iter().enumerate() {
            live.push(step.output());
            let needed_later =
                |v: &ValueId| *v == program.output || program.steps[s + 1..].iter().any(|t| t.inputs().contains(v));
            live.retain(needed_later);
            let mut slots: Vec<usize> = live.iter().map(|v| p.slot_of[v.0].unwrap()).collect();
            slots.sort();
            slots.dedup();
            assert_eq!(slots.len(), live.len(), "step {s}");
        }
        // Blocks run in place: far fewer slots than values.
        assert!(p.slot_len.len() <= 6, "{:?}", p.slot_len);
    }
}
