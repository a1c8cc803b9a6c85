//! Random patch masks for masked pre-training (spec §2.6): a grid of (H/p)×(W/p) patches per
//! image, `round_half_even(N·(1−ratio))` of them visible, chosen by a uniform permutation.
//! Drawn with our own seeded RNG so runs and resumes are reproducible.

use anyhow::{Result, bail};
use rand::Rng;
use rand::seq::SliceRandom;
use tch::{Device, Tensor};

/// A batch of patch masks: `grid` is `[N, 1, H/p, W/p]` float, 1 = visible, 0 = masked.
pub struct PatchMask {
    grid: Tensor,
    patch: i64,
}

impl PatchMask {
    /// Draws one mask per image for a batch of `n` images of `height`×`width`.
    pub fn sample(
        rng: &mut impl Rng,
        n: i64,
        (height, width): (i64, i64),
        patch: i64,
        ratio: f64,
        device: Device,
    ) -> Result<Self> {
        if patch <= 0 || height % patch != 0 || width % patch != 0 {
            bail!("crop {height}×{width} is not a multiple of the mask patch size {patch}: choose a crop that is");
        }
        if !(0.0..1.0).contains(&ratio) {
            bail!("mask ratio {ratio} must be in [0, 1)");
        }
        let (rows, cols) = (height / patch, width / patch);
        let cells = (rows * cols) as usize;
        let keep = visible_count(cells, ratio);
        let mut values = vec![0f32; n as usize * cells];
        let mut order: Vec<usize> = (0..cells).collect();
        for image in values.chunks_exact_mut(cells) {
            order.shuffle(rng);
            for &cell in &order[..keep] {
                image[cell] = 1.0;
            }
        }
        let grid = Tensor::from_slice(&values).view([n, 1, rows, cols]).to_device(device);
        Ok(Self { grid, patch })
    }

    /// A mask from an explicit grid `[N, 1, H/p, W/p]` (1 = visible), e.g. a reference's.
    pub fn from_grid(grid: Tensor, patch: i64) -> Self {
        Self { grid, patch }
    }

    /// The mask nearest-upsampled to a feature map at pyramid `level` (resolution H/2^level).
    pub fn at_level(&self, level: u32) -> Result<Tensor> {
        let scale = 1i64 << level;
        if self.patch % scale != 0 {
            bail!("mask patch {} is not divisible by 2^{level}: use a patch that is a multiple of {scale}", self.patch);
        }
        let factor = self.patch / scale;
        Ok(self.grid.repeat_interleave_self_int(factor, 2, None).repeat_interleave_self_int(factor, 3, None))
    }

    /// The patch grid itself (`[N, 1, H/p, W/p]`).
    pub fn grid(&self) -> &Tensor {
        &self.grid
    }
}

/// Python's `round(cells · (1 − ratio))` (round half to even).
fn visible_count(cells: usize, ratio: f64) -> usize {
    let exact = cells as f64 * (1.0 - ratio);
    let floor = exact.floor();
    let rounded = if exact - floor == 0.5 {
        if (floor as u64).is_multiple_of(2) { floor } else { floor + 1.0 }
    } else {
        exact.round()
    };
    rounded as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tch::Kind;

    #[test]
    fn half_of_the_patches_are_visible_and_patches_are_whole() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mask = PatchMask::sample(&mut rng, 4, (64, 96), 16, 0.5, Device::Cpu).unwrap();
        assert_eq!(mask.grid().size(), [4, 1, 4, 6]);
        let per_image = mask.grid().sum_dim_intlist([1, 2, 3].as_slice(), false, Kind::Float);
        assert_eq!(Vec::<f32>::try_from(&per_image).unwrap(), vec![12.0; 4]);
        let full = mask.at_level(0).unwrap();
        assert_eq!(full.size(), [4, 1, 64, 96]);
        // Every 16×16 patch is constant and equals its grid cell.
        let pooled = full.avg_pool2d([16, 16], [16, 16], [0, 0], false, true, None::<i64>);
        assert_eq!(
            Vec::<f32>::try_from(pooled.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(mask.grid().flatten(0, -1)).unwrap()
        );
        let level2 = mask.at_level(2).unwrap();
        assert_eq!(level2.size(), [4, 1, 16, 24]);
        assert!(mask.at_level(5).is_err());
        // Masks differ between images of a batch.
        assert!(!mask.grid().get(0).equal(&mask.grid().get(1)));
    }

    #[test]
    fn visible_count_rounds_half_to_even_like_python() {
        assert_eq!(visible_count(5, 0.5), 2);
        assert_eq!(visible_count(7, 0.5), 4);
        assert_eq!(visible_count(16, 0.5), 8);
        assert_eq!(visible_count(10, 0.75), 2);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let err = PatchMask::sample(&mut rng, 1, (40, 32), 16, 0.5, Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("not a multiple"), "{err}");
        assert!(PatchMask::sample(&mut rng, 1, (32, 32), 16, 1.0, Device::Cpu).is_err());
    }
}
