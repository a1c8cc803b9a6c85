//! The CPU engine of the networks that run whole on a padded image (the transformers: each
//! attention spans the map or shifted windows of it, so a run is exact only whole). The engine
//! owns what is not the network: padding, local tiles, memory checks, workspace reuse and the
//! workers; a [`WholeNetwork`] owns its weights and forward pass.
//!
//! Global-mean tiling runs the image whole (as the CUDA engine does for NAFNet), local tiling
//! runs each tile with its context through the whole network (`tiling::restore_local_tiles`).

use super::kernels::matmul::MatmulPrecision;
use super::sizing::{RunEstimate, RunSizing};
use super::workers;
use super::workspace::Spare;
use crate::backend::{Engine, EngineOptions, LocalTiles, MemoryEstimate};
use crate::error::{Error, Result};
use crate::image::{Image, from_planar_cropped, pad_planar_into};
use crate::model::Model;
use crate::spec::{IMAGE_CHANNELS, PadMode};
use crate::tiling::restore_local_tiles;
use crate::tlc::AttentionPool;

/// A network run in one pass over a reflect-padded planar image.
pub trait WholeNetwork: Send + Sync {
    /// The buffers of one run on one padded size.
    type Workspace: Send;

    /// f32 values the converted weights hold.
    fn weights_len(&self) -> usize;

    /// f32 values of a workspace for a padded `h × w` run (besides the input and output).
    fn workspace_len(&self, size: (usize, usize)) -> usize;

    /// f32 values of the scratch each worker thread allocates during a run.
    fn worker_scratch_len(&self) -> usize {
        0
    }

    /// Allocates a workspace for a padded `h × w` run.
    fn allocate(&self, size: (usize, usize)) -> Result<Self::Workspace>;

    /// Runs the network on the `3 × h × w` padded `input` into `output` (same shape), with
    /// `threads` workers of the current rayon pool.
    fn forward(
        &self,
        ws: &mut Self::Workspace,
        input: &[f32],
        output: &mut [f32],
        size: (usize, usize),
        threads: usize,
    ) -> Result<()>;
}

/// A workspace with the padded size it serves and the image buffers around it.
struct Run<W> {
    size: (usize, usize),
    input: Vec<f32>,
    output: Vec<f32>,
    network: W,
}

/// The CPU engine of a [`WholeNetwork`].
pub struct WholeEngine<N: WholeNetwork> {
    network: N,
    sizing: RunSizing,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Workspaces of finished runs, reused by later runs of the same size.
    spare: Spare<Run<N::Workspace>>,
}

impl<N: WholeNetwork> WholeEngine<N> {
    /// Builds the engine of `model`'s network, which `build` makes for products in the
    /// options' precision (after the options are checked, so a refusal converts no weights).
    pub fn new(
        model: &Model,
        options: &EngineOptions,
        build: impl FnOnce(MatmulPrecision) -> Result<N> + Send,
    ) -> Result<Self> {
        let architecture = model.architecture();
        if options.attention_pool != AttentionPool::Global {
            return Err(Error::Unsupported(format!(
                "TLC windows belong to NAFNet's simplified channel attention, which this `{}` network (like every \
                 Restormer, PromptIR and SwinIR) has none of: restore it without them (CLI: no `--tlc` or \
                 `--tlc-sampled`; C: options.tlc_train_size and options.tlc_sampled_train_size = 0)",
                architecture.name()
            )));
        }
        let (precision, threads, pool) = workers(options)?;
        Ok(WholeEngine {
            // On the engine's workers, as every later run of it.
            network: pool.install(|| build(precision))?,
            sizing: RunSizing::new(architecture.size_multiple(), options),
            pool,
            threads,
            spare: Spare::new(),
        })
    }

    /// [`WholeEngine::estimate_runs`] of a `width × height` image, for [`RunSizing`].
    fn runs_of(&self, width: usize, height: usize) -> impl RunEstimate + '_ {
        move |run| self.estimate_runs(width, height, run)
    }

    /// Memory of restoring a `width × height` image in runs of `run` (width, height) pixels.
    fn estimate_runs(&self, width: usize, height: usize, (rw, rh): (usize, usize)) -> MemoryEstimate {
        let (h, w) = self.sizing.padded(rw, rh);
        let io = IMAGE_CHANNELS as u64 * ((rw * rh) as u64 + (width * height) as u64 + 2 * (h * w) as u64);
        let scratch = (self.threads * self.network.worker_scratch_len()) as u64;
        let activations = (self.network.workspace_len((h, w)) as u64 + scratch + io) * 4;
        MemoryEstimate { weights: self.network.weights_len() as u64 * 4, activations }
    }

    fn take_run(&self, size: (usize, usize)) -> Result<Run<N::Workspace>> {
        let image = IMAGE_CHANNELS * size.0 * size.1;
        self.spare.take(
            |run| run.size == size,
            || {
                Ok(Run {
                    size,
                    input: super::workspace::zeroed(image)?,
                    output: super::workspace::zeroed(image)?,
                    network: self.network.allocate(size)?,
                })
            },
        )
    }

    /// One run of the network on the whole of `img`.
    fn restore_whole(&self, img: &Image) -> Result<Image> {
        let (h, w) = self.sizing.padded(img.width(), img.height());
        let mut run = self.take_run((h, w))?;
        let result = self.pool.install(|| {
            let Run { input, output, network, .. } = &mut run;
            pad_planar_into(img, h, w, PadMode::Reflect, input);
            self.network.forward(network, input, output, (h, w), self.threads)?;
            Ok(from_planar_cropped(output, h, w, img.width(), img.height()))
        });
        self.spare.keep(run);
        result
    }
}

impl<N: WholeNetwork> Engine for WholeEngine<N> {
    fn restore(&self, input: &Image) -> Result<Image> {
        input.check_finite()?;
        let (width, height) = (input.width(), input.height());
        match self.sizing.fitting_run(width, height, self.runs_of(width, height))?.0 {
            Some(tiles) => restore_local_tiles(input, tiles, |t| self.restore_whole(t)),
            None => self.restore_whole(input),
        }
    }

    fn memory_estimate(&self, width: usize, height: usize) -> Result<MemoryEstimate> {
        self.sizing.memory_estimate(width, height, self.runs_of(width, height))
    }

    fn local_tiles(&self, width: usize, height: usize) -> Result<Option<LocalTiles>> {
        self.sizing.local_tiles(width, height, self.runs_of(width, height))
    }

    fn prepare(&self, width: usize, height: usize) -> Result<()> {
        let (_, (rw, rh)) = self.sizing.fitting_run(width, height, self.runs_of(width, height))?;
        let run = self.take_run(self.sizing.padded(rw, rh))?;
        self.spare.keep(run);
        Ok(())
    }
}
