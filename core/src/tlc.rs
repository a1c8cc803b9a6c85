//! How each NAFBlock's channel attention (SCA) averages its feature map: over the whole map
//! (`NAFNet`, MaskDCPT's `NAFNetBaseline`), or over a window around each pixel, as upstream
//! NAFNet's test-time local converter (TLC, `NAFNetLocal`, with which its GoPro and REDS
//! deblurring checkpoints are evaluated) does.
//!
//! TLC fixes each block's window when it converts the network, from a forward pass at the
//! training crop size: 1.5× the crop, scaled to the block's level. At inference a block whose
//! (padded) map is no larger than its window in both directions takes the global mean; any
//! other block averages every `rows × cols` window (each side clipped to the map), giving a map
//! of `(h − rows + 1) × (w − cols + 1)` means that is extended to `h × w` by repeating its edges,
//! centred: pixel `i` takes the window starting at `clamp(i − (rows − 1) / 2, 0, h − rows)`.
//! The attention's 1×1 convolution then runs on each pixel's mean.
//!
//! MaskDCPT's own `NAFNet` class (its fork's TLC, `fast_imp=True` by default, crop 384) keeps
//! those windows and the global rule but averages a sample of each window: every `r`-th row
//! and column (`r` the largest of 5, 4, 3, 2, 1 dividing the side, at most `5 × level map /
//! crop`), starting one sample in, `⌊k / r⌋` samples a side (at most all but one); its means
//! are repeated `r` times each and the result extended to the map by repeating its edges,
//! centred ([`Samples`]).

use crate::error::{Error, Result};
use crate::image::round_up;

/// How each block's channel attention averages its feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPool {
    /// The mean of the whole (padded) map: `NAFNet`, MaskDCPT's `NAFNetBaseline` (default).
    #[default]
    Global,
    /// Upstream NAFNet's test-time local converter (`NAFNetLocal`, its `fast_imp=False`
    /// default) for a network trained on crops of `train_height × train_width` pixels
    /// (`NAFNetLocal`'s default and its released GoPro/REDS models: 256 × 256).
    Tlc {
        /// Training crop height in pixels.
        train_height: usize,
        /// Training crop width in pixels.
        train_width: usize,
    },
    /// MaskDCPT's `NAFNet` class: TLC with its `fast_imp=True` default, averaging a sample of
    /// each window (its default crop: 384 × 384).
    TlcSampled {
        /// Training crop height in pixels.
        train_height: usize,
        /// Training crop width in pixels.
        train_width: usize,
    },
}

/// The averaging of one block on one map size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapPool {
    /// The mean of the whole map.
    Global,
    /// Means of every `rows × cols` window (both at most the map's sides, one smaller).
    Window {
        /// Window rows.
        rows: usize,
        /// Window columns.
        cols: usize,
    },
    /// Means of samples of windows (MaskDCPT's `NAFNet`, [`AttentionPool::TlcSampled`]).
    Sampled {
        /// Along the columns (over rows).
        rows: Samples,
        /// Along the rows (over columns).
        cols: Samples,
    },
}

/// The windows along one side of `n` pixels: `count` samples `step` apart from pixel
/// `first`, each window `taps` consecutive samples (`count − taps + 1` windows); pixel `i`
/// takes window `clamp(i − pad, 0, span − 1) / step`, where the windows' means, each repeated
/// `step` times, span `span = (count − taps + 1) · step` pixels, centred (`pad = (n − span) / 2`).
/// With `first` 0 and `step` 1 these are TLC's windows ([`window_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Samples {
    /// Pixel of the first sample.
    pub first: usize,
    /// Pixels between samples.
    pub step: usize,
    /// Samples along the side.
    pub count: usize,
    /// Samples per window (at least 1, at most `count`).
    pub taps: usize,
}

impl Samples {
    /// TLC's windows of `k` pixels along a side of `n ≥ k`.
    pub fn dense(k: usize, n: usize) -> Self {
        Samples { first: 0, step: 1, count: n, taps: k }
    }

    /// Windows (means) along the side.
    pub fn means(&self) -> usize {
        self.count - self.taps + 1
    }

    /// The window pixel `i` of a side of `n` takes.
    pub fn mean_of(&self, i: usize, n: usize) -> usize {
        let span = self.means() * self.step;
        i.saturating_sub((n - span) / 2).min(span - 1) / self.step
    }
}

impl MapPool {
    /// The windows along the columns and the rows, for any pool but the global mean.
    pub fn sides(&self, (h, w): (usize, usize)) -> Option<(Samples, Samples)> {
        match *self {
            MapPool::Global => None,
            MapPool::Window { rows, cols } => Some((Samples::dense(rows, h), Samples::dense(cols, w))),
            MapPool::Sampled { rows, cols } => Some((rows, cols)),
        }
    }
}

impl AttentionPool {
    /// Checks the training crop against a network whose inputs are padded to `size_multiple`
    /// (every level's window must cover at least one pixel).
    pub fn validate(&self, size_multiple: usize) -> Result<()> {
        match *self {
            AttentionPool::Global => Ok(()),
            AttentionPool::Tlc { train_height, train_width }
            | AttentionPool::TlcSampled { train_height, train_width } => {
                if train_height.min(train_width) < size_multiple {
                    return Err(Error::InvalidArgument(format!(
                        "TLC training crop {train_height}x{train_width} is smaller than the network's size multiple \
                         {size_multiple}: give the crop the network was trained on (upstream NAFNet: 256)"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The averaging of a block at `level` (0 at full resolution) on an `h × w` map, in a
    /// network whose inputs are padded to `size_multiple`.
    pub fn map_pool(&self, level: usize, size_multiple: usize, (h, w): (usize, usize)) -> MapPool {
        let (train_height, train_width, sampled) = match *self {
            AttentionPool::Global => return MapPool::Global,
            AttentionPool::Tlc { train_height, train_width } => (train_height, train_width, false),
            AttentionPool::TlcSampled { train_height, train_width } => (train_height, train_width, true),
        };
        // The level's map size at the training crop (padded as the network pads it), as TLC
        // sees it in its conversion pass; the window is that times 1.5 (rounded down), over
        // the crop size.
        let at_crop = |train: usize| round_up(train, size_multiple) >> level;
        let side = |train: usize| at_crop(train) * (train * 3 / 2) / train;
        let (rows, cols) = (side(train_height), side(train_width));
        if rows >= h && cols >= w {
            return MapPool::Global;
        }
        if !sampled {
            return MapPool::Window { rows: rows.min(h), cols: cols.min(w) };
        }
        let samples = |k: usize, n: usize, train: usize| {
            let most = (5 * at_crop(train) / train).max(1);
            let step = [5, 4, 3, 2, 1].into_iter().find(|&r| n.is_multiple_of(r)).unwrap_or(1).min(most);
            let count = n.div_ceil(step) - 1;
            Samples { first: step, step, count, taps: (k / step).min(count) }
        };
        MapPool::Sampled { rows: samples(rows, h, train_height), cols: samples(cols, w, train_width) }
    }

    /// Checks that every level up to `levels` of a padded `h × w` input has windows: sampled
    /// windows of no sample (a side of one step, or a window shorter than a step) are
    /// undefined, and MaskDCPT's `NAFNet` fails on them too.
    pub fn check_maps(&self, levels: usize, size_multiple: usize, (h, w): (usize, usize)) -> Result<()> {
        for level in 0..=levels {
            let map = (h >> level, w >> level);
            if let MapPool::Sampled { rows, cols } = self.map_pool(level, size_multiple, map)
                && rows.taps.min(cols.taps) == 0
            {
                return Err(Error::InvalidImage(format!(
                    "sampled TLC attention has no samples in a window at level {level} ({}x{} map): MaskDCPT's \
                     NAFNet fails on this size too; use --tlc (exact windows) or a larger image",
                    map.0, map.1
                )));
            }
        }
        Ok(())
    }
}

/// First row (or column) of the window that pixel `i` of a side of `n` takes, for windows of
/// `k ≤ n`: the valid means, centred, extended by repeating their edges.
pub fn window_start(i: usize, k: usize, n: usize) -> usize {
    i.saturating_sub((k - 1) / 2).min(n - k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLC_256: AttentionPool = AttentionPool::Tlc { train_height: 256, train_width: 256 };

    #[test]
    fn windows_are_one_and_a_half_training_crops_per_level() {
        // NAFNetLocal's defaults: 384 at full resolution, halved per level.
        let big = (4096, 4096);
        for (level, side) in [(0, 384), (1, 192), (2, 96), (3, 48), (4, 24)] {
            assert_eq!(TLC_256.map_pool(level, 16, big), MapPool::Window { rows: side, cols: side });
        }
        // A crop that is not a multiple is padded first: 250 → 256 at level 0, 375 / 250.
        let odd = AttentionPool::Tlc { train_height: 250, train_width: 100 };
        assert_eq!(odd.map_pool(0, 16, big), MapPool::Window { rows: 256 * 375 / 250, cols: 112 * 150 / 100 });
    }

    #[test]
    fn maps_within_the_window_take_the_global_mean() {
        assert_eq!(TLC_256.map_pool(0, 16, (384, 384)), MapPool::Global);
        assert_eq!(TLC_256.map_pool(0, 16, (720, 384)), MapPool::Window { rows: 384, cols: 384 });
        assert_eq!(TLC_256.map_pool(0, 16, (100, 1280)), MapPool::Window { rows: 100, cols: 384 });
        assert_eq!(AttentionPool::Global.map_pool(0, 16, (4096, 4096)), MapPool::Global);
    }

    #[test]
    fn windows_are_centred_and_clamped() {
        // 10 pixels, windows of 4: 7 valid means; pixel i takes start i − 1, clamped to 0..=6.
        let starts: Vec<usize> = (0..10).map(|i| window_start(i, 4, 10)).collect();
        assert_eq!(starts, [0, 0, 1, 2, 3, 4, 5, 6, 6, 6]);
        // Odd windows: (k − 1) / 2 = 2 before the pixel.
        let starts: Vec<usize> = (0..6).map(|i| window_start(i, 5, 6)).collect();
        assert_eq!(starts, [0, 0, 0, 1, 1, 1]);
        assert_eq!(window_start(3, 6, 6), 0);
    }

    #[test]
    fn dense_samples_are_the_centred_windows() {
        for (n, k) in [(10, 4), (6, 5), (6, 6), (7, 1)] {
            let side = Samples::dense(k, n);
            assert_eq!(side.means(), n - k + 1);
            for i in 0..n {
                assert_eq!(side.mean_of(i, n), window_start(i, k, n), "n {n} k {k} pixel {i}");
            }
        }
    }

    #[test]
    fn sampled_windows_follow_maskdcpts_nafnet() {
        // The golden case's network (size multiple 16), crop 32: windows of 48 >> level, steps at
        // most 5, 2, 1, 1, 1 (5 × map at the crop / crop), on its 96 × 144 padded input.
        let pool = AttentionPool::TlcSampled { train_height: 32, train_width: 32 };
        let side = |step: usize, count: usize, taps: usize| Samples { first: step, step, count, taps };
        // Level 0: 96 and 144 take step 4 (5 divides neither): 23 and 35 samples from pixel 4.
        let MapPool::Sampled { rows, cols } = pool.map_pool(0, 16, (96, 144)) else { panic!("level 0") };
        assert_eq!((rows, cols), (side(4, 23, 12), side(4, 35, 12)));
        // Level 1: step 4 capped at 2; level 3: step 1, windows of 6 samples from pixel 1.
        assert_eq!(pool.map_pool(1, 16, (48, 72)), MapPool::Sampled { rows: side(2, 23, 12), cols: side(2, 35, 12) });
        assert_eq!(pool.map_pool(3, 16, (12, 18)), MapPool::Sampled { rows: side(1, 11, 6), cols: side(1, 17, 6) });
        // 12 windows of 23 samples span 12 × 4 = 48 of 96 rows: 24 rows of edge above; every
        // 4 rows after that take the next window.
        let rows = side(4, 23, 12);
        let taken: Vec<usize> = [0, 24, 27, 28, 71, 72, 95].iter().map(|&i| rows.mean_of(i, 96)).collect();
        assert_eq!(taken, [0, 0, 0, 1, 11, 11, 11]);
        // Maps within the window keep the global mean, as exact TLC.
        assert_eq!(pool.map_pool(0, 16, (48, 48)), MapPool::Global);
    }

    #[test]
    fn sampled_windows_without_samples_are_refused() {
        // Crop 16 on a 16 × 176 input of a 4-level network: at level 4 the map is 1 × 11, one
        // step tall, so its windows have no sample (MaskDCPT's NAFNet fails there too).
        let pool = AttentionPool::TlcSampled { train_height: 16, train_width: 16 };
        let err = pool.check_maps(4, 16, (16, 176)).unwrap_err().to_string();
        assert!(err.contains("level 4") && err.contains("1x11"), "{err}");
        assert!(pool.check_maps(4, 16, (64, 176)).is_ok());
        assert!(TLC_256.check_maps(4, 16, (16, 176)).is_ok());
    }

    #[test]
    fn training_crops_below_the_size_multiple_are_refused() {
        assert!(TLC_256.validate(16).is_ok());
        let tiny = AttentionPool::Tlc { train_height: 8, train_width: 256 };
        assert!(tiny.validate(16).unwrap_err().to_string().contains("256"));
    }
}
