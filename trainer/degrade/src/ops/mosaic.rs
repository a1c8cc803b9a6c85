//! RGGB Bayer sampling and demosaicing.
//!
//! The colour filter array has R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1) (x, y), and
//! repeats every 2 pixels. Borders reflect-101, which keeps the pattern's parity, so a
//! constant-colour image comes back unchanged with either method (for sides ≥ 2).

use super::Demosaic;
use crate::Rgb;
use crate::filter::reflect101;

/// A 5×5 stencil in eighths: `(dy, dx, weight·8)`, offsets relative to the centre.
type Stencil = &'static [(isize, isize, f32)];

/// Stencils for one method: G at R/B; R/B at G with that colour left and right ("row");
/// R/B at G with that colour above and below ("column"); R at B and B at R.
struct Stencils {
    g_at_rb: Stencil,
    at_g_row: Stencil,
    at_g_column: Stencil,
    at_diagonal: Stencil,
}

const BILINEAR: Stencils = Stencils {
    g_at_rb: &[(-1, 0, 2.0), (1, 0, 2.0), (0, -1, 2.0), (0, 1, 2.0)],
    at_g_row: &[(0, -1, 4.0), (0, 1, 4.0)],
    at_g_column: &[(-1, 0, 4.0), (1, 0, 4.0)],
    at_diagonal: &[(-1, -1, 2.0), (-1, 1, 2.0), (1, -1, 2.0), (1, 1, 2.0)],
};

/// Malvar, He & Cutler, "High-quality linear interpolation for demosaicing of Bayer-patterned
/// color images", ICASSP 2004, figure 2.
const MALVAR: Stencils = Stencils {
    g_at_rb: &[
        (-2, 0, -1.0),
        (-1, 0, 2.0),
        (0, -2, -1.0),
        (0, -1, 2.0),
        (0, 0, 4.0),
        (0, 1, 2.0),
        (0, 2, -1.0),
        (1, 0, 2.0),
        (2, 0, -1.0),
    ],
    at_g_row: &[
        (-2, 0, 0.5),
        (-1, -1, -1.0),
        (-1, 1, -1.0),
        (0, -2, -1.0),
        (0, -1, 4.0),
        (0, 0, 5.0),
        (0, 1, 4.0),
        (0, 2, -1.0),
        (1, -1, -1.0),
        (1, 1, -1.0),
        (2, 0, 0.5),
    ],
    at_g_column: &[
        (0, -2, 0.5),
        (-1, -1, -1.0),
        (1, -1, -1.0),
        (-2, 0, -1.0),
        (-1, 0, 4.0),
        (0, 0, 5.0),
        (1, 0, 4.0),
        (2, 0, -1.0),
        (-1, 1, -1.0),
        (1, 1, -1.0),
        (0, 2, 0.5),
    ],
    at_diagonal: &[
        (-2, 0, -1.5),
        (-1, -1, 2.0),
        (-1, 1, 2.0),
        (0, -2, -1.5),
        (0, 0, 6.0),
        (0, 2, -1.5),
        (1, -1, 2.0),
        (1, 1, 2.0),
        (2, 0, -1.5),
    ],
};

/// The channel the RGGB filter passes at `(x, y)`: 0 = R, 1 = G, 2 = B.
fn cfa(x: usize, y: usize) -> usize {
    (x % 2) + (y % 2)
}

/// One sample per pixel: the value of the channel the filter passes there.
pub(crate) fn bayer(img: &Rgb) -> Vec<f32> {
    (0..img.width * img.height).map(|i| img.data[i * 3 + cfa(i % img.width, i / img.width)]).collect()
}

/// Reconstructs RGB from a `width × height` RGGB mosaic.
pub(crate) fn demosaic(raw: &[f32], width: usize, height: usize, method: Demosaic) -> Rgb {
    let stencils = match method {
        Demosaic::Bilinear => &BILINEAR,
        Demosaic::Malvar => &MALVAR,
    };
    let at = |x: usize, y: usize, s: Stencil| -> f32 {
        s.iter()
            .map(|&(dy, dx, w)| {
                w * raw[reflect101(y as isize + dy, height) * width + reflect101(x as isize + dx, width)]
            })
            .sum::<f32>()
            / 8.0
    };
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let own = raw[y * width + x];
            let pixel = match (x % 2, y % 2) {
                (0, 0) => [own, at(x, y, stencils.g_at_rb), at(x, y, stencils.at_diagonal)],
                (1, 1) => [at(x, y, stencils.at_diagonal), at(x, y, stencils.g_at_rb), own],
                // G on a red row: red left/right, blue above/below.
                (1, 0) => [at(x, y, stencils.at_g_row), own, at(x, y, stencils.at_g_column)],
                _ => [at(x, y, stencils.at_g_column), own, at(x, y, stencils.at_g_row)],
            };
            data.extend(pixel);
        }
    }
    Rgb { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stencil_weighs_eight_eighths() {
        for s in [&BILINEAR, &MALVAR] {
            for stencil in [s.g_at_rb, s.at_g_row, s.at_g_column, s.at_diagonal] {
                assert_eq!(stencil.iter().map(|t| t.2).sum::<f32>(), 8.0);
            }
        }
    }

    #[test]
    fn bayer_picks_rggb() {
        let img = Rgb { width: 2, height: 2, data: (0..12).map(|v| v as f32).collect() };
        // Pixels: (0,0) R=0, (1,0) G=4, (0,1) G=7, (1,1) B=11.
        assert_eq!(bayer(&img), [0.0, 4.0, 7.0, 11.0]);
    }
}
