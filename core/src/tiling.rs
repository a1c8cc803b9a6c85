//! Local tiling: the image is cut into tiles, each restored on its own with `overlap` pixels of
//! context on every side (clipped at the image border), and the tiles' centres are pasted
//! together (like BasicSR's tile mode) or, blended, feathered across their overlaps.
//! Channel-attention means are then per tile.

use crate::error::{Error, Result};
use crate::image::Image;

/// How an image is cut into local tiles and joined again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTiles {
    /// Tile edge in pixels.
    pub tile: usize,
    /// Context pixels restored with each tile on every side (clipped at the image border).
    pub overlap: usize,
    /// Whether neighbouring tiles are feathered across the 2 · `overlap` pixels their runs
    /// share (weights ramping linearly, so no seam is a step) instead of each pasting its
    /// centre.
    pub blend: bool,
}

/// The largest run local tiling makes over a `width × height` image: a tile with its context.
fn largest_tile_run(width: usize, height: usize, tile: usize, overlap: usize) -> (usize, usize) {
    let side = |n: usize| n.min(tile + 2 * overlap);
    (side(width), side(height))
}

/// The largest run a `width × height` restore makes in `tiles` (`None`: the whole image).
pub fn largest_run(tiles: Option<LocalTiles>, width: usize, height: usize) -> (usize, usize) {
    match tiles {
        Some(tiles) => largest_tile_run(width, height, tiles.tile, tiles.overlap),
        None => (width, height),
    }
}

/// The tile edge a `width × height` restore with `overlap` pixels of context runs in when its
/// memory must stay within `budget` bytes: `None` when the whole image fits, else the largest
/// tile whose run fits, the runs of whole tiles being multiples of `step` pixels a side
/// (the network's size multiple, so that they need no padding). `needed` gives the bytes of
/// one run of (width, height) pixels and must not shrink as the run grows.
pub fn fit_local_tiles(
    (width, height): (usize, usize),
    overlap: usize,
    step: usize,
    budget: u64,
    needed: impl Fn((usize, usize)) -> u64,
) -> Result<Option<usize>> {
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
    Ok(Some(tile_of(fits)))
}

/// Restores `img` tile by tile with `run`, which restores one (context-extended) tile.
pub fn restore_local_tiles(img: &Image, tiles: LocalTiles, run: impl Fn(&Image) -> Result<Image>) -> Result<Image> {
    let LocalTiles { tile, overlap, blend } = tiles;
    if tile == 0 {
        return Err(Error::InvalidArgument("tile size must be at least 1 pixel".into()));
    }
    let (w, h) = (img.width(), img.height());
    let columns = spans(w, tile, overlap);
    let rows = spans(h, tile, overlap);
    let run_tile = |row: &Span, column: &Span| run(&img.crop(column.run.0, row.run.0, column.run_len(), row.run_len()));
    if !blend || overlap == 0 {
        let mut out = Image::new(w, h, vec![0.0; w * h * 3])?;
        for row in &rows {
            for column in &columns {
                let restored = run_tile(row, column)?;
                let centre = restored.crop(
                    column.tile.0 - column.run.0,
                    row.tile.0 - row.run.0,
                    column.tile_len(),
                    row.tile_len(),
                );
                out.paste(&centre, column.tile.0, row.tile.0);
            }
        }
        return Ok(out);
    }
    // Each tile's weight is the product of its column's and its row's, so the weights over a
    // pixel sum to the product of the column weights over its x and the row weights over its y.
    let column_weights: Vec<Vec<f32>> = columns.iter().map(|s| s.weights(w, overlap)).collect();
    let row_weights: Vec<Vec<f32>> = rows.iter().map(|s| s.weights(h, overlap)).collect();
    let x_sums = axis_sums(w, &columns, &column_weights);
    let y_sums = axis_sums(h, &rows, &row_weights);
    let mut sums = vec![0.0f32; w * h * 3];
    for (row, wy) in rows.iter().zip(&row_weights) {
        for (column, wx) in columns.iter().zip(&column_weights) {
            let restored = run_tile(row, column)?;
            let rw = column.run_len();
            for (dy, &weight_y) in wy.iter().enumerate() {
                let src = &restored.data()[dy * rw * 3..(dy + 1) * rw * 3];
                let dst = &mut sums[((row.run.0 + dy) * w + column.run.0) * 3..][..rw * 3];
                for ((d, s), &weight_x) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)).zip(wx) {
                    let weight = weight_x * weight_y;
                    d.iter_mut().zip(s).for_each(|(d, s)| *d += weight * s);
                }
            }
        }
    }
    for (y, row) in sums.chunks_exact_mut(w * 3).enumerate() {
        for (pixel, x_sum) in row.chunks_exact_mut(3).zip(&x_sums) {
            let total = x_sum * y_sums[y];
            pixel.iter_mut().for_each(|v| *v /= total);
        }
    }
    Image::new(w, h, sums)
}

/// One tile along an axis: its own pixels and those of its run (with context), `[start, end)`.
struct Span {
    tile: (usize, usize),
    run: (usize, usize),
}

impl Span {
    fn tile_len(&self) -> usize {
        self.tile.1 - self.tile.0
    }

    fn run_len(&self) -> usize {
        self.run.1 - self.run.0
    }

    /// Blending weights of the run's pixels: 1, ramping linearly down to ~0 over the
    /// 2 · `overlap` pixels at an end that meets a neighbouring tile's run (not at the
    /// image's border, `side`).
    fn weights(&self, side: usize, overlap: usize) -> Vec<f32> {
        let ramp = (2 * overlap) as f32;
        (self.run.0..self.run.1)
            .map(|p| {
                let mut weight = 1.0f32;
                if self.run.0 > 0 {
                    weight = weight.min(((p - self.run.0) as f32 + 0.5) / ramp);
                }
                if self.run.1 < side {
                    weight = weight.min(((self.run.1 - p) as f32 - 0.5) / ramp);
                }
                weight
            })
            .collect()
    }
}

/// The tiles along an axis of `side` pixels.
fn spans(side: usize, tile: usize, overlap: usize) -> Vec<Span> {
    (0..side)
        .step_by(tile)
        .map(|start| {
            let end = (start + tile).min(side);
            Span { tile: (start, end), run: (start.saturating_sub(overlap), (end + overlap).min(side)) }
        })
        .collect()
}

/// Sum of the spans' weights over each pixel of an axis of `side` pixels.
fn axis_sums(side: usize, spans: &[Span], weights: &[Vec<f32>]) -> Vec<f32> {
    let mut sums = vec![0.0f32; side];
    for (span, weights) in spans.iter().zip(weights) {
        sums[span.run.0..span.run.1].iter_mut().zip(weights).for_each(|(s, w)| *s += w);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tiles_reassemble_the_image_and_see_their_context() {
        let (w, h) = (13, 7);
        let img = Image::new(w, h, (0..w * h * 3).map(|v| v as f32).collect()).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let out = restore_local_tiles(&img, LocalTiles { tile: 5, overlap: 2, blend: false }, |t| {
            seen.borrow_mut().push((t.width(), t.height()));
            Ok(t.clone())
        })
        .unwrap();
        assert_eq!(out, img);
        assert_eq!(seen.borrow()[0], (7, 7));
        assert_eq!(seen.borrow().len(), 3 * 2);
    }

    /// A run that restores every pixel of a tile to one value: where its run starts (x + 10 y).
    fn tile_value(t: &Image) -> Result<Image> {
        let value = (t.data()[0] * 0.01).round();
        Image::new(t.width(), t.height(), vec![value; t.width() * t.height() * 3])
    }

    /// `w × h` pixels whose value is 100 × the pixel's x + 1000 × its y (so `tile_value` tells
    /// where a run starts).
    fn ramp_image(w: usize, h: usize) -> Image {
        Image::new(w, h, (0..w * h * 3).map(|i| (100 * (i / 3 % w) + 1000 * (i / 3 / w)) as f32).collect()).unwrap()
    }

    #[test]
    fn blended_identity_tiles_give_the_image_back() {
        let (w, h) = (29, 17);
        let img = ramp_image(w, h);
        for (tile, overlap) in [(5, 2), (8, 3), (3, 4), (29, 6)] {
            let out = restore_local_tiles(&img, LocalTiles { tile, overlap, blend: true }, |t| Ok(t.clone())).unwrap();
            for (a, b) in out.data().iter().zip(img.data()) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "tile {tile}, overlap {overlap}: {a} vs {b}");
            }
        }
    }

    /// Blending moves only the pixels within `overlap` of a tile border, and there no step
    /// between neighbours is larger than the ramp's slope: tiles that disagree by a constant
    /// join without a seam. Without overlap it is pasting.
    #[test]
    fn blending_feathers_tile_borders_and_leaves_the_rest_pasted() {
        let (w, h, tile, overlap) = (40, 24, 16, 4);
        let img = ramp_image(w, h);
        let pasted = restore_local_tiles(&img, LocalTiles { tile, overlap, blend: false }, tile_value).unwrap();
        let blended = restore_local_tiles(&img, LocalTiles { tile, overlap, blend: true }, tile_value).unwrap();
        let at = |image: &Image, x: usize, y: usize| image.data()[(y * w + x) * 3];
        let near_border = |p: usize, side: usize| (1..side.div_ceil(tile)).any(|k| p.abs_diff(k * tile) <= overlap);
        for y in 0..h {
            for x in 0..w {
                if !near_border(x, w) && !near_border(y, h) {
                    assert_eq!(at(&blended, x, y), at(&pasted, x, y), "({x}, {y})");
                }
                if x + 1 < w {
                    // Runs start at x = 0, 12 and 28: neighbouring tiles' values differ by at
                    // most 16 (pasted, that is the step), spread over a ramp of 2 · overlap.
                    let step = (at(&blended, x + 1, y) - at(&blended, x, y)).abs();
                    assert!(step <= 16.0 / (2 * overlap) as f32 + 1e-3, "step {step} at ({x}, {y})");
                }
            }
        }
        assert_ne!(blended, pasted);
        let unblended = restore_local_tiles(&img, LocalTiles { tile, overlap: 0, blend: true }, tile_value).unwrap();
        assert_eq!(
            unblended,
            restore_local_tiles(&img, LocalTiles { tile, overlap: 0, blend: false }, tile_value).unwrap()
        );
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
            let tile = fit_local_tiles((w, h), overlap, step, budget, pixels).unwrap().unwrap();
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

    proptest::proptest! {
        /// Over random sizes, contexts, steps and budgets: the whole image when it fits, else
        /// the largest tile (in steps) whose run fits, else an out-of-memory error.
        #[test]
        fn fitted_tiles_are_the_largest_that_fit(
            w in 1usize..3000, h in 1usize..3000, overlap in 0usize..64,
            step in proptest::sample::select(vec![1usize, 8, 16, 32]), budget in 1u64..4_000_000,
        ) {
            let run_of = |tile: usize| pixels(largest_tile_run(w, h, tile, overlap));
            match fit_local_tiles((w, h), overlap, step, budget, pixels) {
                Ok(None) => proptest::prop_assert!(pixels((w, h)) <= budget),
                Ok(Some(tile)) => {
                    proptest::prop_assert!(pixels((w, h)) > budget);
                    proptest::prop_assert_eq!((tile + 2 * overlap) % step, 0);
                    proptest::prop_assert!(run_of(tile) <= budget);
                    proptest::prop_assert!(run_of(tile + step) > budget);
                }
                Err(e) => {
                    let out_of_memory = matches!(e, Error::OutOfMemory { .. });
                    proptest::prop_assert!(out_of_memory, "{}", e);
                    let smallest = (2 * overlap / step + 1) * step - 2 * overlap;
                    proptest::prop_assert!(run_of(smallest) > budget);
                }
            }
        }

        /// Identity tiles give the image back, pasted exactly and blended to rounding (f32 sums
        /// of up to (1 + 2 · overlap / tile)² weighted runs over a pixel).
        #[test]
        fn identity_tiles_give_any_image_back(
            w in 1usize..60, h in 1usize..40, tile in 1usize..30, overlap in 0usize..12,
        ) {
            let img = ramp_image(w, h);
            let runs_per_side = (1 + 2 * overlap / tile) as f32;
            for blend in [false, true] {
                let out = restore_local_tiles(&img, LocalTiles { tile, overlap, blend }, |t| Ok(t.clone())).unwrap();
                let tolerance = if blend { 1e-6 * runs_per_side } else { 0.0 };
                for (a, b) in out.data().iter().zip(img.data()) {
                    let close = (a - b).abs() <= tolerance * b.abs().max(1.0);
                    proptest::prop_assert!(close, "blend {}: {} vs {}", blend, a, b);
                }
            }
        }
    }
}
