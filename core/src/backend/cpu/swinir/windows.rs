//! Moving a planar `c × h × w` map to and from window-major order: the windows of side `side`
//! over the map rolled by `shift` up and left (`torch.roll(x, (−shift, −shift))`, wrapping
//! around), each window's `c × side²` values contiguous, windows in row-major order.

use rayon::prelude::*;

/// The windows of one map.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Channels.
    pub channels: usize,
    /// Map height and width, multiples of `side`.
    pub size: (usize, usize),
    /// Window side.
    pub side: usize,
    /// Roll before windowing, less than `side`.
    pub shift: usize,
}

impl Windows {
    /// Values of one window.
    pub fn window_len(&self) -> usize {
        self.channels * self.side * self.side
    }

    /// The two runs of map columns of window column `b` (the second empty unless it wraps).
    fn columns(&self, b: usize) -> [(usize, usize); 2] {
        let w = self.size.1;
        let start = b * self.side + self.shift;
        let first = (w - start).min(self.side);
        [(start, first), (0, self.side - first)]
    }

    /// Map row of row `r` of window row `a`.
    fn row(&self, a: usize, r: usize) -> usize {
        (a * self.side + r + self.shift) % self.size.0
    }

    /// `windows` (window-major) from the planar `map`.
    pub fn gather(&self, windows: &mut [f32], map: &[f32]) {
        let (h, w) = self.size;
        let across = w / self.side;
        windows.par_chunks_mut(self.window_len()).take(h / self.side * across).enumerate().for_each(|(i, win)| {
            let (a, b) = (i / across, i % across);
            for (ch, plane) in win.chunks_exact_mut(self.side * self.side).enumerate() {
                for (r, out) in plane.chunks_exact_mut(self.side).enumerate() {
                    let row = &map[ch * h * w + self.row(a, r) * w..][..w];
                    let mut at = 0;
                    for (start, len) in self.columns(b) {
                        out[at..at + len].copy_from_slice(&row[start..start + len]);
                        at += len;
                    }
                }
            }
        });
    }

    /// The planar `map` from `windows` (window-major).
    pub fn scatter(&self, map: &mut [f32], windows: &[f32]) {
        let (h, w) = self.size;
        let (across, n) = (w / self.side, self.side * self.side);
        map.par_chunks_mut(h * w).take(self.channels).enumerate().for_each(|(ch, plane)| {
            for (i, win) in windows.chunks_exact(self.window_len()).take(h / self.side * across).enumerate() {
                let (a, b) = (i / across, i % across);
                for (r, src) in win[ch * n..(ch + 1) * n].chunks_exact(self.side).enumerate() {
                    let row = &mut plane[self.row(a, r) * w..][..w];
                    let mut at = 0;
                    for (start, len) in self.columns(b) {
                        row[start..start + len].copy_from_slice(&src[at..at + len]);
                        at += len;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathering follows `torch.roll` then window partition; scattering undoes it.
    #[test]
    fn windows_of_a_rolled_map_round_trip() {
        let (c, h, w, side) = (2, 6, 9, 3);
        let map: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        for shift in 0..side {
            let win = Windows { channels: c, size: (h, w), side, shift };
            let mut windows = vec![0.0; c * h * w];
            win.gather(&mut windows, &map);
            for (i, window) in windows.chunks_exact(win.window_len()).enumerate() {
                let (a, b) = (i / (w / side), i % (w / side));
                for ch in 0..c {
                    for r in 0..side {
                        for col in 0..side {
                            let (y, x) = ((a * side + r + shift) % h, (b * side + col + shift) % w);
                            assert_eq!(window[ch * side * side + r * side + col], map[ch * h * w + y * w + x]);
                        }
                    }
                }
            }
            let mut back = vec![-1.0; c * h * w];
            win.scatter(&mut back, &windows);
            assert_eq!(back, map, "shift {shift}");
        }
    }
}
