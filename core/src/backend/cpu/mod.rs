//! The f32 CPU engine: executes the fused program with rayon-parallel kernels over a static
//! buffer plan. Always available; the reference every other backend is checked against.

mod block;
mod dense_conv;
pub(crate) mod head;
pub mod kernels;
mod prepared;
mod restormer;
mod sizing;
mod swinir;
mod whole;
mod workspace;

use rayon::prelude::*;

use crate::backend::{Engine, EngineOptions, LocalTiles, MemoryEstimate, Precision, ScaMode, TileSize, Tiling};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::graph::{FeatureSource, Graph};
use crate::head::Feature;
use crate::image::{Image, check_size, from_planar_cropped, pad_planar_into};
use crate::model::Model;
use crate::passes::{Program, Step, fuse};
use crate::spec::{IMAGE_CHANNELS, PadMode};
use crate::tiling::restore_local_tiles;
use crate::tlc::{AttentionPool, MapPool};
use block::{BlockScratch, run_block};
use kernels::conv::conv3x3;
use kernels::elementwise::{add_pixel_shuffle, space_to_depth};
use kernels::matmul::{Epilogue, MatMut, MatRef, MatmulPrecision, matmul};
use prepared::{StepWeights, prepare};
use sizing::{RunEstimate, RunSizing};
use workspace::{Layout, Spare, Workspace};

pub use restormer::{RestormerEngine, RestormerNetwork};
pub use swinir::{SwinirEngine, SwinirNetwork};
pub use whole::{WholeEngine, WholeNetwork};

/// Elements of the band matrices a block streams through when no tile size is given.
const AUTO_BAND_ELEMENTS: usize = 1 << 20;

/// The CPU engine.
pub struct CpuEngine {
    graph: Graph,
    program: Program,
    weights: Vec<StepWeights>,
    sizing: RunSizing,
    pad_mode: PadMode,
    attention_pool: AttentionPool,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Workspaces of finished runs, reused by later runs of the same size.
    spare: Spare<Workspace>,
}

impl CpuEngine {
    /// Builds the engine: fuses the graph and converts the weights once.
    pub fn new(model: &Model, options: &EngineOptions) -> Result<Self> {
        let (precision, threads, pool) = workers(options)?;
        let graph = model.graph("the NAFNet CPU engine")?;
        let program = fuse(&graph)?;
        let windowed = options.attention_pool != AttentionPool::Global;
        // On the engine's workers: converting and packing the weights is most of the build.
        let weights = pool.install(|| {
            program
                .steps
                .par_iter()
                .map(|s| prepare(s, model.weights(), precision, windowed))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(CpuEngine {
            graph,
            program,
            weights,
            sizing: RunSizing::new(model.architecture().size_multiple(), options),
            pad_mode: model.architecture().pad_mode(),
            attention_pool: options.attention_pool,
            pool,
            threads,
            spare: Spare::new(),
        })
    }

    /// Rows per band at resolution `level` when one band row needs `row_elements` of scratch:
    /// the tile (scaled to the level) in global tiled mode, else what fits the default budget.
    fn band_rows(&self, level: usize, row_elements: usize) -> usize {
        match self.sizing.tiling {
            Some(Tiling { tile: TileSize::Pixels(tile), sca: ScaMode::Global, .. }) => (tile >> level).max(1),
            _ => (AUTO_BAND_ELEMENTS / row_elements.max(1)).max(1),
        }
    }

    /// The channel attention's averaging of a block at `level` on an `h × w` map.
    fn map_pool(&self, level: usize, map: (usize, usize)) -> MapPool {
        self.attention_pool.map_pool(level, self.sizing.size_multiple, map)
    }

    /// Buffer layout for a padded `h × w` input.
    fn layout(&self, h: usize, w: usize) -> Layout {
        let band_rows = |level, row_elements| self.band_rows(level, row_elements);
        Layout::new(&self.program, &self.graph, &self.weights, (h, w), band_rows, |level, map| {
            self.map_pool(level, map)
        })
    }

    fn weights_bytes(&self) -> u64 {
        self.weights.iter().map(|w| w.len() as u64 * 4).sum()
    }

    /// [`CpuEngine::estimate_runs`] of a `width × height` image, for [`RunSizing`].
    fn runs_of(&self, width: usize, height: usize) -> impl RunEstimate + '_ {
        move |run| self.estimate_runs(width, height, run)
    }

    /// Memory of restoring a `width × height` image in runs of `run` (width, height) pixels.
    fn estimate_runs(&self, width: usize, height: usize, (rw, rh): (usize, usize)) -> MemoryEstimate {
        let (h, w) = self.sizing.padded(rw, rh);
        // The cropped result of one run, plus the whole output (the padded input is written
        // straight into the workspace).
        let io = IMAGE_CHANNELS as u64 * ((rw * rh) as u64 + (width * height) as u64);
        let activations = (self.layout(h, w).total_len() as u64 + io) * 4;
        MemoryEstimate { weights: self.weights_bytes(), activations }
    }

    /// Runs the network once on the whole `img` (no local tiling); `on_output` sees every
    /// step's output value as it is produced.
    fn restore_whole(&self, img: &Image, on_output: &mut (dyn FnMut(ValueId, &[f32]) + Send)) -> Result<Image> {
        let (h, w) = self.sizing.padded(img.width(), img.height());
        let levels = self.graph.nodes.iter().map(|node| node.level).max().unwrap_or(0);
        self.attention_pool.check_maps(levels, self.sizing.size_multiple, (h, w))?;
        let layout = self.layout(h, w);
        let mut ws = self.take_workspace(&layout)?;
        let in_slot = layout.plan.slot_of[self.program.input.0].expect("input is planned");
        let out_slot = layout.plan.slot_of[self.program.output.0].expect("output is planned");
        let out = self.pool.install(|| {
            pad_planar_into(img, h, w, self.pad_mode, &mut ws.slots[in_slot][..IMAGE_CHANNELS * h * w]);
            self.execute(&layout, &mut ws, h, w, on_output);
            from_planar_cropped(&ws.slots[out_slot], h, w, img.width(), img.height())
        });
        self.spare.keep(ws);
        Ok(out)
    }

    fn take_workspace(&self, layout: &Layout) -> Result<Workspace> {
        self.spare.take(|ws| ws.fits(layout), || Workspace::allocate(layout))
    }

    fn execute(
        &self,
        layout: &Layout,
        ws: &mut Workspace,
        h: usize,
        w: usize,
        on_output: &mut (dyn FnMut(ValueId, &[f32]) + Send),
    ) {
        for (step, sw) in self.program.steps.iter().zip(&self.weights) {
            let out_slot = layout.plan.slot_of[step.output().0].expect("outputs are planned");
            let slot = |v: crate::graph::ValueId| layout.plan.slot_of[v.0].expect("inputs are planned");
            let level = self.graph.node(step.output()).level;
            let (hl, wl) = (h >> level, w >> level);
            let mut out = std::mem::take(&mut ws.slots[out_slot]);
            match (step, sw) {
                (Step::Conv3x3 { input, residual, .. }, StepWeights::Conv3x3 { weight, bias, cin, cout }) => {
                    let res = residual.map(|r| &ws.slots[slot(r)][..]);
                    conv3x3(&mut out, &ws.slots[slot(*input)], res, weight, bias, (*cin, *cout), (hl, wl));
                }
                (Step::Down { input, .. }, StepWeights::Down { weight: (weight, bias), cin }) => {
                    let e = Epilogue { bias: Some(bias), ..Default::default() };
                    for (r0, r1) in row_bands(hl, self.band_rows(level, 4 * cin * wl)) {
                        let n = (r1 - r0) * wl;
                        space_to_depth(&mut ws.tmp, &ws.slots[slot(*input)], *cin, (hl * 2, wl * 2), (r0, r1));
                        let dst = MatMut { data: &mut out[r0 * wl..], row_stride: hl * wl };
                        matmul(dst, weight, MatRef { data: &ws.tmp, row_stride: n }, n, e, self.threads);
                    }
                }
                (Step::UpShuffleAdd { input, skip, .. }, StepWeights::Up { weight, .. }) => {
                    let (hi, wi, cout) = (hl / 2, wl / 2, weight.rows());
                    if slot(*skip) != out_slot {
                        let len = cout / 4 * hl * wl;
                        out[..len].copy_from_slice(&ws.slots[slot(*skip)][..len]);
                    }
                    let src = &ws.slots[slot(*input)];
                    for (r0, r1) in row_bands(hi, self.band_rows(level + 1, cout * wi)) {
                        let n = (r1 - r0) * wi;
                        let dst = MatMut { data: &mut ws.tmp, row_stride: n };
                        let rhs = MatRef { data: &src[r0 * wi..], row_stride: hi * wi };
                        matmul(dst, weight, rhs, n, Epilogue::default(), self.threads);
                        add_pixel_shuffle(&mut out, &ws.tmp, cout / 4, (hl, wl), (r0, r1));
                    }
                }
                (Step::NafBlock { input, .. }, StepWeights::Block(bw)) => {
                    if slot(*input) != out_slot {
                        let len = bw.c * hl * wl;
                        out[..len].copy_from_slice(&ws.slots[slot(*input)][..len]);
                    }
                    let band = self.band_rows(level, 2 * bw.c * wl);
                    let scratch = BlockScratch { g: &mut ws.g, u: &mut ws.u, window: &mut ws.window };
                    let pool = self.map_pool(level, (hl, wl));
                    run_block(bw, &mut out, (hl, wl), band, pool, scratch, self.threads);
                }
                _ => unreachable!("weights are prepared from the same steps"),
            }
            let node = self.graph.node(step.output());
            on_output(step.output(), &out[..node.channels * hl * wl]);
            ws.slots[out_slot] = out;
        }
    }
}

impl Engine for CpuEngine {
    fn restore(&self, input: &Image) -> Result<Image> {
        input.check_finite()?;
        let (width, height) = (input.width(), input.height());
        match self.sizing.fitting_run(width, height, self.runs_of(width, height))?.0 {
            Some(tiles) => restore_local_tiles(input, tiles, |t| self.restore_whole(t, &mut |_, _| {})),
            None => self.restore_whole(input, &mut |_, _| {}),
        }
    }

    /// One whole-image run (local tiling does not apply: the head needs the whole image's
    /// features) capturing the outputs `source` names.
    fn level_features(&self, input: &Image, source: FeatureSource) -> Result<Vec<Feature>> {
        input.check_finite()?;
        let (width, height) = (input.width(), input.height());
        check_size(width, height)?;
        let estimate = self.estimate_runs(width, height, (width, height));
        self.sizing
            .check_memory(&estimate, "classify a downscaled copy of the image (the head needs one whole-image run)")?;
        let (h, w) = self.sizing.padded(width, height);
        let wanted = self.graph.level_outputs(source);
        let mut features: Vec<Option<Feature>> = wanted.iter().map(|_| None).collect();
        self.restore_whole(input, &mut |value, data| {
            if let Some(i) = wanted.iter().position(|&v| v == value) {
                let node = self.graph.node(value);
                let (c, h, w) = (node.channels, h >> node.level, w >> node.level);
                features[i] = Some(Feature { data: data.to_vec(), c, h, w });
            }
        })?;
        features.into_iter().collect::<Option<_>>().ok_or_else(|| {
            Error::Unsupported(format!("the fused program does not produce every {} output", source.name()))
        })
    }

    fn memory_estimate(&self, width: usize, height: usize) -> Result<MemoryEstimate> {
        self.sizing.memory_estimate(width, height, self.runs_of(width, height))
    }

    fn local_tiles(&self, width: usize, height: usize) -> Result<Option<LocalTiles>> {
        self.sizing.local_tiles(width, height, self.runs_of(width, height))
    }

    /// Checks the memory as a restore would and allocates the workspace of one run (a tile's
    /// with tiling), kept for the next restore.
    fn prepare(&self, width: usize, height: usize) -> Result<()> {
        let (_, (rw, rh)) = self.sizing.fitting_run(width, height, self.runs_of(width, height))?;
        let (h, w) = self.sizing.padded(rw, rh);
        let ws = self.take_workspace(&self.layout(h, w))?;
        self.spare.keep(ws);
        Ok(())
    }
}

/// The arithmetic of the matrix products at `precision`.
fn matmul_precision(precision: Precision) -> MatmulPrecision {
    match precision {
        Precision::F32 => MatmulPrecision::F32,
        Precision::Bf16 => MatmulPrecision::Bf16,
    }
}

/// The kernels the CPU engine's matrix products run on here at `precision`
/// ([`kernels::matmul::product_kernels`]), for reports; `None` where they cannot run.
pub fn product_kernels(precision: Precision) -> Option<&'static str> {
    kernels::matmul::product_kernels(matmul_precision(precision))
}

/// What both CPU engines take from `options`: the products' precision, the number of workers
/// and the engine's own pool of them.
fn workers(options: &EngineOptions) -> Result<(MatmulPrecision, usize, rayon::ThreadPool)> {
    let precision = matmul_precision(options.precision);
    let threads = match options.threads {
        Some(0) => return Err(Error::InvalidArgument("threads must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("maskdcpt-cpu-{i}"))
        .build()
        .map_err(|e| Error::Unsupported(format!("cannot start {threads} worker threads: {e}")))?;
    Ok((precision, threads, pool))
}

/// Row ranges `[r0, r1)` covering `0..h` in bands of `band_rows`.
fn row_bands(h: usize, band_rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = band_rows.max(1);
    (0..h).step_by(step).map(move |r0| (r0, (r0 + step).min(h)))
}
