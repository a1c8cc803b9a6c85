//! Passes: pure functions from the op graph to what engines execute — fused steps
//! ([`fuse`](mod@fuse)) with the weight rewrites they imply ([`fold`]), and a static buffer
//! plan ([`plan`](mod@plan)). Unit-testable without any hardware.

pub mod fold;
pub mod fuse;
pub mod plan;

pub use fold::fold_branch_scale;
pub use fuse::{BlockKeys, Program, Step, fuse};
pub use plan::{MemoryPlan, plan};
