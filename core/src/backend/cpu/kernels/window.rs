//! Windowed channel attention (TLC, see [`crate::tlc`]): the mean of every window of each
//! channel, and each pixel scaled by the attention of its window.

use rayon::prelude::*;

use crate::tlc::Samples;

/// `means[ch][y][x]` = mean of `src[ch]` over the window `y` of `rows` (along the columns) and
/// `x` of `cols` (along the rows), for every window of a planar `c × h × w` map: `means` is
/// `c × rows.means() × cols.means()`. The sums run in f64 (adding the entering sample row or
/// column, subtracting the leaving one), so their rounding stays far below f32's on maps of
/// any size.
pub fn window_means(
    means: &mut [f32],
    src: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (rows, cols): (Samples, Samples),
) {
    let (mh, mw) = (rows.means(), cols.means());
    let area = (rows.taps * cols.taps) as f64;
    let sample_row = |plane, j| sample_row(plane, w, (rows, cols), j);
    means[..c * mh * mw].par_chunks_mut(mh * mw).zip(src.par_chunks(h * w)).for_each(|(out, plane)| {
        // Column sums over the current `rows.taps` sample rows, slid down one per output row.
        let mut column = vec![0.0f64; cols.count];
        for j in 0..rows.taps {
            column.iter_mut().zip(sample_row(plane, j)).for_each(|(s, v)| *s += v);
        }
        for (y, out_row) in out.chunks_exact_mut(mw).enumerate() {
            if y > 0 {
                let (gone, new) = (sample_row(plane, y - 1), sample_row(plane, y + rows.taps - 1));
                column.iter_mut().zip(gone.zip(new)).for_each(|(s, (g, n))| *s += n - g);
            }
            let mut sum: f64 = column[..cols.taps].iter().sum();
            out_row[0] = (sum / area) as f32;
            for x in 1..mw {
                sum += column[x + cols.taps - 1] - column[x - 1];
                out_row[x] = (sum / area) as f32;
            }
        }
    });
}

/// The samples of sample row `j` of the planar `plane` of width `w`, in f64.
fn sample_row(plane: &[f32], w: usize, (rows, cols): (Samples, Samples), j: usize) -> impl Iterator<Item = f64> {
    let row = &plane[(rows.first + j * rows.step) * w..][..w];
    (0..cols.count).map(move |i| f64::from(row[cols.first + i * cols.step]))
}

/// `g[ch][i][j] *= attention[ch][rows.mean_of(i)][cols.mean_of(j)]` for a planar `c × h × w`
/// map `g` and the `c × rows.means() × cols.means()` attention of its windows.
pub fn scale_by_window(
    g: &mut [f32],
    attention: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (rows, cols): (Samples, Samples),
) {
    let mw = cols.means();
    let col_mean: Vec<usize> = (0..w).map(|j| cols.mean_of(j, w)).collect();
    g[..c * h * w].par_chunks_mut(h * w).zip(attention.par_chunks(rows.means() * mw)).for_each(|(plane, att)| {
        for (i, row) in plane.chunks_exact_mut(w).enumerate() {
            let att_row = &att[rows.mean_of(i, h) * mw..][..mw];
            row.iter_mut().zip(&col_mean).for_each(|(v, &x)| *v *= att_row[x]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct sums of every window, in f64.
    fn naive_means(src: &[f32], c: usize, (h, w): (usize, usize), (rows, cols): (usize, usize)) -> Vec<f32> {
        let mut out = Vec::new();
        for ch in 0..c {
            for y in 0..=h - rows {
                for x in 0..=w - cols {
                    let mut s = 0.0f64;
                    for dy in 0..rows {
                        for dx in 0..cols {
                            s += f64::from(src[ch * h * w + (y + dy) * w + x + dx]);
                        }
                    }
                    out.push((s / (rows * cols) as f64) as f32);
                }
            }
        }
        out
    }

    #[test]
    fn running_means_equal_direct_sums() {
        let (c, h, w) = (3, 9, 13);
        let src: Vec<f32> = (0..c * h * w).map(|v| ((v * 37 % 101) as f32 - 50.0) * 0.37).collect();
        for window in [(1, 1), (4, 5), (9, 3), (2, 13), (9, 13)] {
            let want = naive_means(&src, c, (h, w), window);
            let mut got = vec![f32::NAN; want.len()];
            let sides = (Samples::dense(window.0, h), Samples::dense(window.1, w));
            window_means(&mut got, &src, c, (h, w), sides);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst <= 2e-6, "window {window:?}: {worst}");
        }
    }

    #[test]
    fn pixels_take_the_attention_of_their_centred_window() {
        let (c, h, w, rows, cols) = (2, 5, 6, 3, 4);
        let (mh, mw) = (h - rows + 1, w - cols + 1);
        let attention: Vec<f32> = (0..c * mh * mw).map(|v| v as f32 + 1.0).collect();
        let mut g = vec![1.0; c * h * w];
        scale_by_window(&mut g, &attention, c, (h, w), (Samples::dense(rows, h), Samples::dense(cols, w)));
        // Rows: start clamp(i − 1, 0, 2); columns: clamp(j − 1, 0, 2).
        let expect = |ch: usize, i: usize, j: usize| {
            attention[ch * mh * mw + i.saturating_sub(1).min(2) * mw + j.saturating_sub(1).min(2)]
        };
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    assert_eq!(g[ch * h * w + i * w + j], expect(ch, i, j), "({ch}, {i}, {j})");
                }
            }
        }
        assert_eq!(g[4 * w + 5], attention[2 * mw + 2]);
    }
}
