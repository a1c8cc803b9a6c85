//! Defocus: an anti-aliased disk (pillbox) kernel.

use super::Kernel;

/// Subsamples per pixel side used to estimate how much of each pixel the disk covers.
const SUBSAMPLES: usize = 8;

/// A disk of `radius` pixels, each weight the covered fraction of its pixel, normalised.
pub(crate) fn disk(radius: f64) -> Kernel {
    let size = 2 * radius.ceil() as usize + 1;
    let offsets: Vec<f64> = (0..SUBSAMPLES).map(|i| (i as f64 + 0.5) / SUBSAMPLES as f64 - 0.5).collect();
    Kernel::from_fn(size, |x, y| {
        let inside = offsets
            .iter()
            .flat_map(|&sy| offsets.iter().map(move |&sx| (x + sx).hypot(y + sy)))
            .filter(|&r| r <= radius)
            .count();
        inside as f64 / (SUBSAMPLES * SUBSAMPLES) as f64
    })
    .normalized()
}

#[cfg(test)]
mod tests {
    use super::disk;
    use crate::kernel::tests::assert_normalised;

    #[test]
    fn disks_are_normalised_round_and_anti_aliased() {
        for i in 2..=16 {
            let radius = f64::from(i) * 0.5;
            let k = disk(radius);
            assert_normalised(&k, true);
            let c = k.width / 2;
            let at = |x: usize, y: usize| k.weights[y * k.width + x];
            assert_eq!(at(c + 1, c), at(c, c + 1), "round");
            // A fully covered pixel weighs 1 / (disk area).
            let area = std::f64::consts::PI * radius * radius;
            assert!((f64::from(at(c, c)) * area - 1.0).abs() < 0.05, "radius {radius}");
            if radius >= 2.0 {
                assert_eq!(at(0, 0), 0.0, "corners are outside");
            }
            // Some pixel on the rim is partly covered.
            assert!(k.weights.iter().any(|&w| w > 0.0 && w < at(c, c)), "radius {radius}");
        }
    }
}
