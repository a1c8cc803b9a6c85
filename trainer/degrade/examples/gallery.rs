//! Writes a 5×4 contact sheet: the clean centre crop of an image, then all 19 classes at their
//! medium level, in index order.
//!
//! `cargo run --release -p maskdcpt-degrade --example gallery -- INPUT.png OUT.png [SIDE]`

use std::path::PathBuf;

use maskdcpt_degrade::{Class, Crop, Rgb, degrade};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, rest @ ..] = &args[..] else {
        return Err("usage: gallery INPUT OUTPUT.png [SIDE]".into());
    };
    let img = Rgb::load(&PathBuf::from(input))?;
    let side = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(192).min(img.width).min(img.height);
    let clean = Crop::Center(side).apply(&img, &mut ChaCha8Rng::seed_from_u64(0))?;
    let mut tiles = vec![clean.clone()];
    for class in Class::ALL {
        tiles.push(
            degrade(&clean, class, class.medium_level(), &mut ChaCha8Rng::seed_from_u64(class.index() as u64))?.0,
        );
    }
    let (columns, rows) = (5, tiles.len().div_ceil(5));
    let mut sheet = Rgb::filled(columns * side, rows * side, [1.0; 3]);
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = ((i % columns) * side, (i / columns) * side);
        for y in 0..side {
            let dst = ((y0 + y) * sheet.width + x0) * 3;
            sheet.data[dst..dst + side * 3].copy_from_slice(&tile.data[y * side * 3..(y + 1) * side * 3]);
        }
    }
    sheet.save_png(&PathBuf::from(output))?;
    Ok(())
}
