//! Local tiling: the image is cut into tiles, each restored on its own with `overlap` pixels of
//! context on every side (clipped at the image border), and the tiles' centres are pasted
//! together (no blending, like BasicSR's tile mode). Channel-attention means are then per tile.

use crate::error::{Error, Result};
use crate::image::Image;

/// The largest run local tiling makes over a `width × height` image: a tile with its context.
pub fn largest_tile_run(width: usize, height: usize, tile: usize, overlap: usize) -> (usize, usize) {
    let side = |n: usize| n.min(tile + 2 * overlap);
    (side(width), side(height))
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
}
