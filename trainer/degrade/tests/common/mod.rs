//! Shared test images.

use maskdcpt_degrade::Rgb;

/// A deterministic textured image (sinusoids, a checkerboard and a ramp) in [0.05, 0.95].
pub fn textured(width: usize, height: usize) -> Rgb {
    let data = (0..width * height * 3)
        .map(|i| {
            let (p, c) = (i / 3, (i % 3) as f32);
            let (x, y) = ((p % width) as f32, (p / width) as f32);
            let checker = if ((x / 4.0) as usize + (y / 4.0) as usize).is_multiple_of(2) { 0.1 } else { -0.1 };
            let wave = 0.2 * (0.7 * x + c).sin() * (0.45 * y - c).cos();
            (0.5 + wave + checker + 0.1 * (x / width as f32 - 0.5)).clamp(0.05, 0.95)
        })
        .collect();
    Rgb { width, height, data }
}
