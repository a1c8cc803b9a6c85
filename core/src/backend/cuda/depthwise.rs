//! The depthwise kernels' launch shapes: the five variants the engine times against each
//! other (kernels.cu: `dw_gate_pool`, `dw_gate_pool_rows1` to `_rows4`), how each
//! splits an image among its threads, and the per-block channel sums they leave for
//! `pool_sum`.

use cudarc::driver::{CudaFunction, LaunchConfig};

use super::kernels::Kernels;
use crate::error::{Error, Result};

/// Pixels per thread of `dw_gate_pool` (`DW_PIXELS` in kernels.cu).
const DW_PIXELS: usize = 8;

/// The most blocks a CUDA grid has along y or z.
const MAX_GRID_Z: u32 = 65535;

/// The largest map (pixels of an image) on which runs of 1 are timed: beyond it the other
/// variants fill the GPU and runs of 1 only add per-block channel sums (4 pixels per block
/// at 256 channels and more).
const RUNS1_MAX_PIXELS: usize = 128 * 128;

/// Threads per block of `pool_sum` (its shared array holds one sum per warp: 8).
const POOL_SUM_THREADS: u32 = 256;

/// A depthwise + SimpleGate + channel-sum kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depthwise {
    /// `dw_gate_pool`: `DW_PIXELS` consecutive pixels (raster order) per thread, 256 threads
    /// per block.
    Strips,
    /// `dw_gate_pool_rows1`: one pixel per thread, 128 threads per block (at most 64
    /// registers: 8 blocks per SM): the most threads, for small maps whose other launches
    /// leave SMs idle.
    Runs1,
    /// `dw_gate_pool_rows2`: a run of 2 pixels of one row per thread, 256 threads per block
    /// (at most 128 registers: 2 blocks per SM).
    Runs2,
    /// `dw_gate_pool_rows3`: a run of 3 pixels of one row per thread, 128 threads per block
    /// (at most 128 registers: 4 blocks per SM, a third more warps than runs of 4).
    Runs3,
    /// `dw_gate_pool_rows4`: a run of 4 pixels of one row per thread, 128 threads per block
    /// (at most 168 registers: 3 blocks per SM).
    Runs4,
}

impl Depthwise {
    /// Every variant, in the order the engine times them.
    pub const ALL: [Depthwise; 5] =
        [Depthwise::Strips, Depthwise::Runs1, Depthwise::Runs2, Depthwise::Runs3, Depthwise::Runs4];

    /// The variants worth timing on an `h × w` map: all of them up to
    /// `RUNS1_MAX_PIXELS` pixels, all but runs of 1 beyond.
    pub fn candidates((h, w): (usize, usize)) -> impl Iterator<Item = Depthwise> {
        Depthwise::ALL.into_iter().filter(move |&d| d != Depthwise::Runs1 || h * w <= RUNS1_MAX_PIXELS)
    }

    /// The kernel's name in kernels.cu.
    pub fn name(self) -> &'static str {
        match self {
            Depthwise::Strips => "dw_gate_pool",
            Depthwise::Runs1 => "dw_gate_pool_rows1",
            Depthwise::Runs2 => "dw_gate_pool_rows2",
            Depthwise::Runs3 => "dw_gate_pool_rows3",
            Depthwise::Runs4 => "dw_gate_pool_rows4",
        }
    }

    /// The loaded kernel.
    pub fn function(self, kernels: &Kernels) -> &CudaFunction {
        let index = Depthwise::ALL.iter().position(|&d| d == self).expect("ALL lists every variant");
        &kernels.depthwise[index]
    }

    /// Work items of an `h × w` image (pixels or row runs), items per thread, threads per block.
    fn work(self, (h, w): (usize, usize)) -> (usize, usize, usize) {
        match self {
            Depthwise::Strips => (h * w, DW_PIXELS, 256),
            Depthwise::Runs1 => (h * w, 1, 128),
            Depthwise::Runs2 => (h * w.div_ceil(2), 1, 256),
            Depthwise::Runs3 => (h * w.div_ceil(3), 1, 128),
            Depthwise::Runs4 => (h * w.div_ceil(4), 1, 128),
        }
    }

    /// Channel groups (8 channels each) across a block and rows of threads, for `c` gated
    /// channels: blocks of up to 32 groups.
    fn block(self, c: usize, size: (usize, usize)) -> (usize, usize) {
        let across = (c / 8).min(32);
        (across, self.work(size).2 / across)
    }

    /// Blocks along the image for `c` gated channels: the per-block channel sums the kernel
    /// leaves per image and channel (`pool_sum`'s `blocks`).
    pub fn partials(self, c: usize, size: (usize, usize)) -> usize {
        let (items, per_thread, _) = self.work(size);
        items.div_ceil(self.block(c, size).1 * per_thread)
    }

    /// The launch grid for `n` images of `size` (h, w) and `c` gated channels: (item blocks,
    /// channel-group blocks, images).
    pub fn grid(self, c: usize, size: (usize, usize), n: usize) -> Result<LaunchConfig> {
        let (across, rows) = self.block(c, size);
        let blocks =
            u32::try_from(self.partials(c, size)).map_err(|_| Error::InvalidImage("image too large".into()))?;
        Ok(LaunchConfig {
            grid_dim: (blocks, (c / 8).div_ceil(across) as u32, images_dim(n)?),
            block_dim: (across as u32, rows as u32, 1),
            shared_mem_bytes: 0,
        })
    }
}

/// `n` images as a grid dimension (y or z, as the depthwise and attention kernels use it).
pub fn images_dim(n: usize) -> Result<u32> {
    u32::try_from(n).ok().filter(|&n| n <= MAX_GRID_Z).ok_or_else(|| {
        Error::InvalidArgument(format!("a batch of {n} images: a CUDA launch takes at most {MAX_GRID_Z}"))
    })
}

/// The most per-block channel sums any candidate leaves for `c` gated channels of an image of
/// `size`: the partial-sum scratch per image and channel.
pub fn most_partials(c: usize, size: (usize, usize)) -> usize {
    Depthwise::candidates(size).map(|d| d.partials(c, size)).max().unwrap_or(0)
}

/// `pool_sum`'s grid for `channels` sums (images × channels): a block per sum.
pub fn pool_sum_grid(channels: usize) -> Result<LaunchConfig> {
    let blocks = u32::try_from(channels).map_err(|_| Error::InvalidImage("too many channels".into()))?;
    Ok(LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (POOL_SUM_THREADS, 1, 1), shared_mem_bytes: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::kernels::SOURCE;

    /// Each grid covers every work item and channel group of every image, with blocks of
    /// 256 or 128 threads within the hardware's grid limits.
    #[test]
    fn grids_cover_the_image() {
        for (c, size, n) in
            [(8, (5, 7), 2), (64, (1088, 1920), 1), (264, (9, 3), 1), (512, (136, 240), 8), (1024, (1, 1), 3)]
        {
            for d in Depthwise::ALL {
                let g = d.grid(c, size, n).unwrap();
                let (items, per_thread, threads) = d.work(size);
                let (across, rows) = (g.block_dim.0 as usize, g.block_dim.1 as usize);
                assert_eq!(across * rows, threads, "{d:?} c={c}");
                assert!(g.grid_dim.0 as usize * rows * per_thread >= items, "{d:?} misses items");
                assert!((g.grid_dim.0 as usize - 1) * rows * per_thread < items, "{d:?} has an idle block");
                let groups = c / 8;
                assert!(g.grid_dim.1 as usize * across >= groups && (g.grid_dim.1 as usize - 1) * across < groups);
                assert_eq!(g.grid_dim.2 as usize, n);
                assert!(g.grid_dim.1 <= 65535 && g.grid_dim.2 <= 65535);
                if Depthwise::candidates(size).any(|candidate| candidate == d) {
                    assert!(d.partials(c, size) <= most_partials(c, size));
                }
            }
        }
        // Runs of 1 are timed on small maps only, so they never set the scratch of a large one.
        let candidates = |size| Depthwise::candidates(size).collect::<Vec<_>>();
        assert_eq!(candidates((128, 128)), Depthwise::ALL);
        assert!(!candidates((128, 129)).contains(&Depthwise::Runs1) && candidates((128, 129)).len() == 4);
        assert_eq!(most_partials(64, (1088, 1920)), Depthwise::Runs3.partials(64, (1088, 1920)));
        assert!(Depthwise::Strips.grid(8, (1, 1), 65536).unwrap_err().to_string().contains("at most 65535"));
    }

    /// The launch bounds kernels.cu gives each row-run kernel (`DW_ROWS_KERNEL(RUN, THREADS,
    /// BLOCKS_PER_SM)`) name the block size launched here: a block over its kernel's bound
    /// does not launch.
    #[test]
    fn row_run_launch_bounds_are_the_launched_blocks() {
        let runs = [(1, Depthwise::Runs1), (2, Depthwise::Runs2), (3, Depthwise::Runs3), (4, Depthwise::Runs4)];
        for (run, d) in runs {
            let prefix = format!("DW_ROWS_KERNEL({run}, ");
            let line = SOURCE.lines().find(|line| line.starts_with(&prefix)).expect("a DW_ROWS_KERNEL line");
            let threads: usize = line[prefix.len()..].split(',').next().unwrap().trim().parse().unwrap();
            assert_eq!(threads, d.work((8, 8)).2, "{}", d.name());
        }
    }
}
