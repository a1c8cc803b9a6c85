//! The dynamic-shape optimization profile: the range of padded input sizes an engine accepts.

use crate::error::{Error, Result};
use crate::image::round_up;

/// Height and width of an image in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size {
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// The input sizes an engine is built for, as requested (before padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeRange {
    /// Smallest image.
    pub min: Size,
    /// Size TensorRT tunes its kernels for.
    pub opt: Size,
    /// Largest image.
    pub max: Size,
}

/// An optimization profile in padded sizes: every dimension a multiple of the family's size
/// multiple, `min ≤ opt ≤ max` per dimension. Batch is always 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Smallest padded input.
    pub min: Size,
    /// Padded size the kernels are tuned for.
    pub opt: Size,
    /// Largest padded input.
    pub max: Size,
}

impl Profile {
    /// The profile covering every image in `range` once padded to a multiple of `multiple`
    /// (the family's size multiple, as the host pads). Errors on zero sizes and on ranges
    /// where `min ≤ opt ≤ max` does not hold per dimension.
    pub fn new(range: &ShapeRange, multiple: usize) -> Result<Self> {
        let sizes = [range.min, range.opt, range.max];
        if multiple == 0 || sizes.iter().any(|s| s.height == 0 || s.width == 0) {
            return Err(Error::InvalidArgument("TensorRT profile sizes must be at least 1×1".into()));
        }
        let ordered = |f: fn(&Size) -> usize| f(&range.min) <= f(&range.opt) && f(&range.opt) <= f(&range.max);
        if !ordered(|s| s.height) || !ordered(|s| s.width) {
            return Err(Error::InvalidArgument(format!(
                "TensorRT profile needs min ≤ opt ≤ max in each dimension, got min {}×{}, opt {}×{}, max {}×{} (H×W)",
                range.min.height, range.min.width, range.opt.height, range.opt.width, range.max.height, range.max.width
            )));
        }
        let pad = |s: Size| Size { height: round_up(s.height, multiple), width: round_up(s.width, multiple) };
        Ok(Profile { min: pad(range.min), opt: pad(range.opt), max: pad(range.max) })
    }

    /// Whether an image of `size` (before padding to `multiple`) runs on this profile.
    pub fn accepts(&self, size: Size, multiple: usize) -> bool {
        let (h, w) = (round_up(size.height, multiple), round_up(size.width, multiple));
        (self.min.height..=self.max.height).contains(&h) && (self.min.width..=self.max.width).contains(&w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn size(height: usize, width: usize) -> Size {
        Size { height, width }
    }

    #[test]
    fn sizes_are_padded_to_the_multiple() {
        let range = ShapeRange { min: size(1, 17), opt: size(720, 1280), max: size(1080, 1920) };
        let p = Profile::new(&range, 16).unwrap();
        assert_eq!((p.min, p.opt, p.max), (size(16, 32), size(720, 1280), size(1088, 1920)));
        assert!(p.accepts(size(1080, 1920), 16) && p.accepts(size(1, 17), 16) && p.accepts(size(2, 20), 16));
        assert!(!p.accepts(size(1089, 1920), 16) && !p.accepts(size(16, 16), 16));
    }

    #[test]
    fn bad_ranges_are_refused() {
        let s = size(64, 64);
        for range in [
            ShapeRange { min: size(0, 64), opt: s, max: s },
            ShapeRange { min: s, opt: size(32, 64), max: s },
            ShapeRange { min: s, opt: s, max: size(64, 32) },
        ] {
            assert!(Profile::new(&range, 16).is_err(), "{range:?}");
        }
        assert!(Profile::new(&ShapeRange { min: s, opt: s, max: s }, 0).is_err());
    }

    proptest! {
        #[test]
        fn every_image_in_the_range_is_accepted(
            dims in proptest::collection::vec(1usize..3000, 6), h in 0usize..1000, w in 0usize..1000,
            multiple in prop::sample::select(vec![1usize, 4, 8, 16, 32]),
        ) {
            let mut hs = [dims[0], dims[1], dims[2]];
            let mut ws = [dims[3], dims[4], dims[5]];
            hs.sort_unstable();
            ws.sort_unstable();
            let range = ShapeRange { min: size(hs[0], ws[0]), opt: size(hs[1], ws[1]), max: size(hs[2], ws[2]) };
            let p = Profile::new(&range, multiple).unwrap();
            for s in [p.min, p.opt, p.max] {
                prop_assert!(s.height % multiple == 0 && s.width % multiple == 0);
            }
            prop_assert!(p.min.height <= p.opt.height && p.opt.height <= p.max.height);
            prop_assert!(p.min.width <= p.opt.width && p.opt.width <= p.max.width);
            let inside = size(hs[0] + h % (hs[2] - hs[0] + 1), ws[0] + w % (ws[2] - ws[0] + 1));
            prop_assert!(p.accepts(inside, multiple));
        }
    }
}
