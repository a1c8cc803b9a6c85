//! Buffers of one CPU run: the planned value slots plus the scratch of the steps, sized up
//! front for a padded input size and allocated fallibly (an error, not an abort).

use std::sync::Mutex;

use super::block::scratch_len;
use super::prepared::StepWeights;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::passes::{MemoryPlan, Program, Step, plan};
use crate::tlc::MapPool;

/// Sizes (in f32 elements) of everything a run on one padded size needs.
pub struct Layout {
    /// Value slots.
    pub plan: MemoryPlan,
    /// Full-map gate buffer of the widest block.
    pub g_len: usize,
    /// Band matrix `u`.
    pub u_len: usize,
    /// Space-to-depth / up-conv product buffer.
    pub tmp_len: usize,
    /// Windowed attention's means and products (TLC only).
    pub window_len: usize,
}

impl Layout {
    /// Plans a padded `h × w` run; `band_rows(level, row_elements)` gives the rows per band
    /// at a resolution level when one band row needs `row_elements` of scratch, and
    /// `pool(level, (h, w))` the attention pool of a block.
    pub fn new(
        program: &Program,
        graph: &Graph,
        weights: &[StepWeights],
        (h, w): (usize, usize),
        band_rows: impl Fn(usize, usize) -> usize,
        pool: impl Fn(usize, (usize, usize)) -> MapPool,
    ) -> Self {
        let mut layout = Layout { plan: plan(program, graph, h, w), g_len: 0, u_len: 0, tmp_len: 0, window_len: 0 };
        for (step, sw) in program.steps.iter().zip(weights) {
            let level = graph.node(step.output()).level;
            let (hl, wl) = (h >> level, w >> level);
            match (step, sw) {
                (Step::NafBlock { .. }, StepWeights::Block(b)) => {
                    let map = (hl, wl);
                    let (g, u, window) = scratch_len(b.c, map, band_rows(level, 2 * b.c * wl), pool(level, map));
                    layout.g_len = layout.g_len.max(g);
                    layout.u_len = layout.u_len.max(u);
                    layout.window_len = layout.window_len.max(window);
                }
                (Step::Down { .. }, StepWeights::Down { cin, .. }) => {
                    layout.tmp_len = layout.tmp_len.max(4 * cin * hl * wl)
                }
                (Step::UpShuffleAdd { .. }, StepWeights::Up { weight, .. }) => {
                    layout.tmp_len = layout.tmp_len.max(weight.rows() * (hl / 2) * (wl / 2));
                }
                _ => {}
            }
        }
        layout
    }

    /// Total elements.
    pub fn total_len(&self) -> usize {
        self.plan.total_len() + self.g_len + self.u_len + self.tmp_len + self.window_len
    }
}

/// The buffers themselves.
pub struct Workspace {
    /// One buffer per plan slot.
    pub slots: Vec<Vec<f32>>,
    /// See [`Layout::g_len`].
    pub g: Vec<f32>,
    /// See [`Layout::u_len`].
    pub u: Vec<f32>,
    /// See [`Layout::tmp_len`].
    pub tmp: Vec<f32>,
    /// See [`Layout::window_len`].
    pub window: Vec<f32>,
}

/// Workspaces of finished runs, kept for later runs that fit one; shared by the threads that
/// restore on one engine.
pub(super) struct Spare<W>(Mutex<Vec<W>>);

impl<W> Spare<W> {
    pub(super) fn new() -> Self {
        Spare(Mutex::new(Vec::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<W>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept workspace that `fits`, or else (dropping the kept ones, sized for other inputs)
    /// a new one from `allocate`.
    pub(super) fn take(&self, fits: impl Fn(&W) -> bool, allocate: impl FnOnce() -> Result<W>) -> Result<W> {
        let reuse = {
            let mut spare = self.lock();
            spare.iter().position(fits).map(|i| spare.swap_remove(i))
        };
        match reuse {
            Some(ws) => Ok(ws),
            None => {
                self.lock().clear();
                allocate()
            }
        }
    }

    /// Keeps `ws` for a later run.
    pub(super) fn keep(&self, ws: W) {
        self.lock().push(ws);
    }
}

pub(super) fn zeroed(len: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        needed_mb: (len as u64 * 4) >> 20,
        available_mb: 0,
        hint: format!("the allocation failed; {}", crate::backend::TILING_HINT),
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

impl Workspace {
    /// Allocates every buffer of `layout`.
    pub fn allocate(layout: &Layout) -> Result<Self> {
        Ok(Workspace {
            slots: layout.plan.slot_len.iter().map(|&n| zeroed(n)).collect::<Result<_>>()?,
            g: zeroed(layout.g_len)?,
            u: zeroed(layout.u_len)?,
            tmp: zeroed(layout.tmp_len)?,
            window: zeroed(layout.window_len)?,
        })
    }

    /// Whether these buffers can serve a run planned as `layout`.
    pub fn fits(&self, layout: &Layout) -> bool {
        self.slots.len() == layout.plan.slot_len.len()
            && self.slots.iter().zip(&layout.plan.slot_len).all(|(s, &n)| s.len() >= n)
            && self.g.len() >= layout.g_len
            && self.u.len() >= layout.u_len
            && self.tmp.len() >= layout.tmp_len
            && self.window.len() >= layout.window_len
    }
}
