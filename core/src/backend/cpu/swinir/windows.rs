//! Moving a planar `c × h × w` map to and from window-major order: the windows of side `side`
//! over the map rolled by `shift` up and left (`torch.roll(x, (−shift, −shift))`, wrapping
//! around), in row-major order, in groups of `group` windows (the last may hold fewer); a
//! group of `k` windows is a `c × (k · side²)` matrix, window after window along each row.

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
    /// Windows per group.
    pub group: usize,
}

impl Windows {
    /// Values of one window.
    pub fn window_len(&self) -> usize {
        self.channels * self.side * self.side
    }

    /// Values of a full group.
    pub fn group_len(&self) -> usize {
        self.group * self.window_len()
    }

    /// Windows of the map.
    fn count(&self) -> usize {
        (self.size.0 / self.side) * (self.size.1 / self.side)
    }

    /// Window `i`'s group offset and row stride in the window-major buffer, and its offset in
    /// a row of its group.
    fn place(&self, i: usize) -> (usize, usize, usize) {
        let (g, slot) = (i / self.group, i % self.group);
        let in_group = self.group.min(self.count() - g * self.group);
        let n = self.side * self.side;
        (g * self.group_len(), in_group * n, slot * n)
    }

    /// The two runs of window column `b` along a map row, as (map column, column in the
    /// window, length); the second is empty unless the window wraps around the right edge.
    fn columns(&self, b: usize) -> [(usize, usize, usize); 2] {
        let w = self.size.1;
        let start = b * self.side + self.shift;
        let first = (w - start).min(self.side);
        [(start, 0, first), (0, first, self.side - first)]
    }

    /// Map row of row `r` of window row `a`.
    fn row(&self, a: usize, r: usize) -> usize {
        (a * self.side + r + self.shift) % self.size.0
    }

    /// `windows` (window-major) from the planar `map`.
    pub fn gather(&self, windows: &mut [f32], map: &[f32]) {
        let (h, w) = self.size;
        let across = w / self.side;
        let groups = windows[..self.count() * self.window_len()].par_chunks_mut(self.group_len());
        groups.enumerate().for_each(|(g, group)| {
            for i in g * self.group..(g * self.group + self.group).min(self.count()) {
                let (a, b) = (i / across, i % across);
                let (_, stride, offset) = self.place(i);
                for ch in 0..self.channels {
                    for r in 0..self.side {
                        let row = &map[ch * h * w + self.row(a, r) * w..][..w];
                        let out = &mut group[ch * stride + offset + r * self.side..][..self.side];
                        for (start, at, len) in self.columns(b) {
                            out[at..at + len].copy_from_slice(&row[start..start + len]);
                        }
                    }
                }
            }
        });
    }

    /// The planar `map` from `windows` (window-major).
    pub fn scatter(&self, map: &mut [f32], windows: &[f32]) {
        let (h, w) = self.size;
        let across = w / self.side;
        map.par_chunks_mut(h * w).take(self.channels).enumerate().for_each(|(ch, plane)| {
            for i in 0..self.count() {
                let (a, b) = (i / across, i % across);
                let (group, stride, offset) = self.place(i);
                for r in 0..self.side {
                    let src = &windows[group + ch * stride + offset + r * self.side..][..self.side];
                    let row = &mut plane[self.row(a, r) * w..][..w];
                    for (start, at, len) in self.columns(b) {
                        row[start..start + len].copy_from_slice(&src[at..at + len]);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathering follows `torch.roll` then window partition, in groups of any size (the last
    /// one short or not); scattering undoes it.
    #[test]
    fn windows_of_a_rolled_map_round_trip() {
        let (c, h, w, side) = (2, 6, 9, 3);
        let map: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        for (shift, group) in (0..side).flat_map(|s| [1, 2, 4, 6, 9].map(|g| (s, g))) {
            let win = Windows { channels: c, size: (h, w), side, shift, group };
            let mut windows = vec![0.0; c * h * w];
            win.gather(&mut windows, &map);
            let n = side * side;
            for i in 0..win.count() {
                let (a, b) = (i / (w / side), i % (w / side));
                let (g, slot) = (i / group, i % group);
                let stride = group.min(win.count() - g * group) * n;
                for ch in 0..c {
                    for r in 0..side {
                        for col in 0..side {
                            let (y, x) = ((a * side + r + shift) % h, (b * side + col + shift) % w);
                            let at = g * group * c * n + ch * stride + slot * n + r * side + col;
                            assert_eq!(windows[at], map[ch * h * w + y * w + x], "window {i}");
                        }
                    }
                }
            }
            let mut back = vec![-1.0; c * h * w];
            win.scatter(&mut back, &windows);
            assert_eq!(back, map, "shift {shift}, groups of {group}");
        }
    }
}
