//! How both CPU engines size a restore: padding to the family's multiple, local tiles (given, or
//! automatic within a memory budget) and the memory check before anything is allocated. What a
//! run of a given size costs is each engine's own, passed in as `estimate`.

use crate::backend::{EngineOptions, LocalTiles, MemoryEstimate, TILING_HINT, TileSize, Tiling};
use crate::error::{Error, Result};
use crate::image::{check_size, round_up};
use crate::tiling::largest_run;

/// Memory of restoring an image in runs of `(width, height)` pixels.
pub trait RunEstimate: Fn((usize, usize)) -> MemoryEstimate {}
impl<F: Fn((usize, usize)) -> MemoryEstimate> RunEstimate for F {}

/// The sizing options of an engine and its network's size multiple.
pub struct RunSizing {
    /// Height and width of the network input must be multiples of this.
    pub size_multiple: usize,
    /// The tiling asked for, if any.
    pub tiling: Option<Tiling>,
    /// The caller's memory limit, if any.
    memory_limit: Option<u64>,
    /// Bytes an automatic tile's run may take: the memory limit, else the memory available
    /// when the engine was built (`None`: unknown, or no automatic tiles).
    tile_budget: Option<u64>,
}

impl RunSizing {
    /// The sizing `options` ask for, for a network whose input sides are multiples of
    /// `size_multiple`.
    pub fn new(size_multiple: usize, options: &EngineOptions) -> Self {
        let tile_budget = match options.tiling {
            Some(Tiling { tile: TileSize::Auto, .. }) => options.memory_limit.or_else(available_memory),
            _ => None,
        };
        RunSizing { size_multiple, tiling: options.tiling, memory_limit: options.memory_limit, tile_budget }
    }

    /// Padded (height, width) of one run over `width × height` pixels.
    pub fn padded(&self, width: usize, height: usize) -> (usize, usize) {
        (round_up(height, self.size_multiple), round_up(width, self.size_multiple))
    }

    /// The local tiles of a `width × height` restore (`None`: one run, or exact global tiles).
    pub fn local_tiles(&self, width: usize, height: usize, estimate: impl RunEstimate) -> Result<Option<LocalTiles>> {
        check_size(width, height)?;
        let Some(tiling) = self.tiling else { return Ok(None) };
        tiling.local_tiles((width, height), self.size_multiple, self.tile_budget, |run| estimate(run).total())
    }

    /// The memory a `width × height` restore takes at its largest run.
    pub fn memory_estimate(&self, width: usize, height: usize, estimate: impl RunEstimate) -> Result<MemoryEstimate> {
        let tiles = self.local_tiles(width, height, &estimate)?;
        Ok(estimate(largest_run(tiles, width, height)))
    }

    /// The local tiles of a `width × height` restore and its largest run (a tile with its
    /// context, or the image), once its size and memory are checked.
    pub fn fitting_run(
        &self,
        width: usize,
        height: usize,
        estimate: impl RunEstimate,
    ) -> Result<(Option<LocalTiles>, (usize, usize))> {
        let tiles = self.local_tiles(width, height, &estimate)?;
        let run = largest_run(tiles, width, height);
        self.check_memory(&estimate(run), TILING_HINT)?;
        Ok((tiles, run))
    }

    /// Refuses a run of `estimate` over the memory limit, or without one over the memory
    /// available now, with `hint` on what to do instead.
    pub fn check_memory(&self, estimate: &MemoryEstimate, hint: &str) -> Result<()> {
        let Some(available) = self.memory_limit.or_else(available_memory) else { return Ok(()) };
        if estimate.total() <= available {
            return Ok(());
        }
        Err(Error::OutOfMemory { needed_mb: estimate.total() >> 20, available_mb: available >> 20, hint: hint.into() })
    }
}

/// Memory the operating system reports as available (Linux `MemAvailable`), in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
