//! One training pair from a clean image and a seed: crop, then degrade.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Class, Error, Record, Rgb, degrade, degrade_random};

/// How a square patch is cut out of each clean image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crop {
    /// The centred patch of this side.
    Center(usize),
    /// A patch of this side at a position drawn from the sample's RNG.
    Random(usize),
}

impl Crop {
    /// The side of the patch.
    pub fn size(self) -> usize {
        match self {
            Crop::Center(s) | Crop::Random(s) => s,
        }
    }

    /// Cuts the patch out of `img`.
    pub fn apply<R: Rng + ?Sized>(self, img: &Rgb, rng: &mut R) -> Result<Rgb, Error> {
        let size = self.size();
        if size == 0 || img.width < size || img.height < size {
            return Err(Error::CropTooLarge { width: img.width, height: img.height, crop: size });
        }
        let (x, y) = match self {
            Crop::Center(_) => ((img.width - size) / 2, (img.height - size) / 2),
            Crop::Random(_) => (
                rng.random_range(0..=(img.width - size) as u64) as usize,
                rng.random_range(0..=(img.height - size) as u64) as usize,
            ),
        };
        Ok(img.window(x, y, size, size))
    }
}

/// The seed of sample `k` of `class` for the image at `image_index` (in name order) under the
/// global `seed`: SplitMix64 mixing, so samples are independent of each other and of threads.
pub fn sample_seed(seed: u64, image_index: usize, class: Class, k: usize) -> u64 {
    [image_index as u64, class.index() as u64, k as u64].into_iter().fold(splitmix64(seed), |h, v| splitmix64(h ^ v))
}

/// One round of SplitMix64 (Steele, Lea & Flood 2014).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A `(clean, degraded, record)` pair: a `ChaCha8Rng` seeded with `seed` draws the crop
/// position (if any), then the level (unless `level` fixes it), then the degradation. Same
/// inputs, same pair.
pub fn make_pair(
    clean: &Rgb,
    class: Class,
    crop: Option<Crop>,
    level: Option<usize>,
    seed: u64,
) -> Result<(Rgb, Rgb, Record), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gt = match crop {
        Some(crop) => crop.apply(clean, &mut rng)?,
        None => clean.clone(),
    };
    let (lq, record) = match level {
        Some(level) => degrade(&gt, class, level, &mut rng)?,
        None => degrade_random(&gt, class, &mut rng)?,
    };
    Ok((gt, lq, record))
}
