//! Local tiling: the image is cut into tiles, each restored on its own with `overlap` pixels of
//! context on every side (clipped at the image border), and the tiles' centres are pasted
//! together (no blending, like BasicSR's tile mode). Channel-attention means are then per tile.

use crate::error::{Error, Result};
use crate::image::Image;

/// Tile edge and context, in pixels, of one local tiling.
pub type LocalTiles = (usize, usize);

/// The largest run local tiling makes over a `width × height` image: a tile with its context.
pub fn largest_tile_run(width: usize, height: usize, tile: usize, overlap: usize) -> (usize, usize) {
    let side = |n: usize| n.min(tile + 2 * overlap);
    (side(width), side(height))
}

/// The local tiles a `width × height` restore with `overlap` pixels of context runs in when
/// its memory must stay within `budget` bytes: `None` when the whole image fits, else the
/// largest tile whose run fits, the runs of whole tiles being multiples of `step` pixels a side
/// (the network's size multiple, so that they need no padding). `needed` gives the bytes of
/// one run of (width, height) pixels and must not shrink as the run grows.
pub fn fit_local_tiles(
    (width, height): (usize, usize),
    overlap: usize,
    step: usize,
    budget: u64,
    needed: impl Fn((usize, usize)) -> u64,
) -> Result<Option<LocalTiles>> {
    if needed((width, height)) <= budget {
        return Ok(None);
    }
    let step = step.max(1);
    // Runs of `k · step` pixels a side: tiles of `k · step − 2 · overlap` pixels.
    let tile_of = |k: usize| k * step - 2 * overlap;
    let needed_by = |k: usize| needed(largest_tile_run(width, height, tile_of(k), overlap));
    let smallest = (2 * overlap / step) + 1;
    let largest = (width.max(height) + 2 * overlap).div_ceil(step);
    if needed_by(smallest) > budget {
        return Err(Error::OutOfMemory {
            needed_mb: needed_by(smallest).div_ceil(1 << 20),
            available_mb: budget >> 20,
            hint: format!(
                "even the smallest automatic tile ({} pixels with {overlap} pixels of context) does not fit: raise \
                 the memory limit, free memory, or use less tile overlap",
                tile_of(smallest)
            ),
        });
    }
    // The largest k in [smallest, largest) whose run fits (the whole image, at `largest`, does not).
    let (mut fits, mut too_big) = (smallest, largest.max(smallest + 1));
    while too_big - fits > 1 {
        let mid = fits + (too_big - fits) / 2;
        if needed_by(mid) <= budget { fits = mid } else { too_big = mid }
    }
    Ok(Some((tile_of(fits), overlap)))
}

/// Restores `img` tile by tile with `run`, which restores one (context-extended) tile.
pub fn restore_local_tiles(
    img: &Image,
    tile: usize,
    overlap: usize,
    run: impl Fn(&Image) -> Result<Image>,
) -> Result<Image> {
    if tile == 0 {
        return Err(Error::InvalidArgument("tile size must be at least 1 pixel".into()));
    }
    let (w, h) = (img.width(), img.height());
    let mut out = Image::new(w, h, vec![0.0; w * h * 3])?;
    for y0 in (0..h).step_by(tile) {
        for x0 in (0..w).step_by(tile) {
            let (tw, th) = (tile.min(w - x0), tile.min(h - y0));
            let (cx0, cy0) = (x0.saturating_sub(overlap), y0.saturating_sub(overlap));
            let (cx1, cy1) = ((x0 + tw + overlap).min(w), (y0 + th + overlap).min(h));
            let restored = run(&img.crop(cx0, cy0, cx1 - cx0, cy1 - cy0))?;
            out.paste(&restored.crop(x0 - cx0, y0 - cy0, tw, th), x0, y0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tiles_reassemble_the_image_and_see_their_context() {
        let (w, h) = (13, 7);
        let img = Image::new(w, h, (0..w * h * 3).map(|v| v as f32).collect()).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let out = restore_local_tiles(&img, 5, 2, |t| {
            seen.borrow_mut().push((t.width(), t.height()));
            Ok(t.clone())
        })
        .unwrap();
        assert_eq!(out, img);
        assert_eq!(seen.borrow()[0], (7, 7));
        assert_eq!(seen.borrow().len(), 3 * 2);
    }

    /// Bytes of a run: its pixels.
    fn pixels((w, h): (usize, usize)) -> u64 {
        (w * h) as u64
    }

    #[test]
    fn whole_images_that_fit_are_not_tiled() {
        assert_eq!(fit_local_tiles((100, 60), 8, 16, 6000, pixels).unwrap(), None);
    }

    #[test]
    fn the_largest_fitting_tile_is_taken_and_its_runs_are_whole_steps() {
        let (w, h, overlap, step) = (1000, 700, 32, 16);
        for budget in [80 * 80, 100_000, 300_000, 699_999] {
            let (tile, o) = fit_local_tiles((w, h), overlap, step, budget, pixels).unwrap().unwrap();
            assert_eq!(o, overlap);
            let run = tile + 2 * overlap;
            assert_eq!(run % step, 0, "budget {budget}: run {run}");
            assert!(pixels(largest_tile_run(w, h, tile, overlap)) <= budget, "budget {budget}: tile {tile}");
            let next = largest_tile_run(w, h, tile + step, overlap);
            assert!(pixels(next) > budget, "budget {budget}: tile {} would fit too", tile + step);
        }
    }

    #[test]
    fn budgets_below_the_smallest_tile_are_refused_with_what_it_needs() {
        let err = fit_local_tiles((1000, 700), 32, 16, 80 * 80 - 1, pixels).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{message}");
        assert!(message.contains("16 pixels with 32 pixels of context"), "{message}");
    }
}
