//! Blur kernels: the type, and one generator per family.

pub(crate) mod bessel;
pub(crate) mod disk;
pub(crate) mod esrgan;
pub(crate) mod motion;
pub(crate) mod streak;

/// A 2-D kernel, row-major, odd sides, anchored at its centre.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Kernel {
    /// Columns (odd).
    pub width: usize,
    /// Rows (odd).
    pub height: usize,
    /// `width * height` weights.
    pub weights: Vec<f32>,
}

impl Kernel {
    /// A square kernel of odd side `size` with `f(dx, dy)` at offset `(dx, dy)` from the centre.
    pub(crate) fn from_fn(size: usize, f: impl Fn(f64, f64) -> f64) -> Self {
        let c = (size / 2) as f64;
        let weights = (0..size * size).map(|i| f((i % size) as f64 - c, (i / size) as f64 - c) as f32).collect();
        Self { width: size, height: size, weights }
    }

    /// A one-row kernel.
    pub(crate) fn row(weights: Vec<f32>) -> Self {
        Self { width: weights.len(), height: 1, weights }
    }

    /// A one-column kernel.
    pub(crate) fn column(weights: Vec<f32>) -> Self {
        Self { width: 1, height: weights.len(), weights }
    }

    /// Scaled to sum to 1; a kernel with no positive mass becomes the identity.
    pub(crate) fn normalized(mut self) -> Self {
        let sum: f64 = self.weights.iter().map(|&w| f64::from(w)).sum();
        if sum > 0.0 && sum.is_finite() {
            self.weights.iter_mut().for_each(|w| *w = (f64::from(*w) / sum) as f32);
        } else {
            let centre = self.weights.len() / 2;
            self.weights = (0..self.weights.len()).map(|i| if i == centre { 1.0 } else { 0.0 }).collect();
        }
        self
    }
}

/// Normalised 1-D Gaussian taps of standard deviation `sigma`, radius `max(1, ceil(3σ))`.
pub(crate) fn gaussian_taps(sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    Kernel::row(
        (0..=2 * radius)
            .map(|i| {
                let d = i as f64 - radius as f64;
                (-0.5 * d * d / (sigma * sigma)).exp() as f32
            })
            .collect(),
    )
    .normalized()
    .weights
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Asserts that `k` has odd sides, sums to 1 and (when asked) has no negative weight.
    pub(crate) fn assert_normalised(k: &Kernel, non_negative: bool) {
        assert!(k.width % 2 == 1 && k.height % 2 == 1, "{}x{}", k.width, k.height);
        assert_eq!(k.weights.len(), k.width * k.height);
        let sum: f64 = k.weights.iter().map(|&w| f64::from(w)).sum();
        assert!((sum - 1.0).abs() < 1e-5, "sum {sum}");
        if non_negative {
            assert!(k.weights.iter().all(|&w| w >= 0.0), "negative weight");
        }
    }

    #[test]
    fn gaussian_taps_are_normalised_and_symmetric() {
        for sigma in [0.1, 0.5, 1.0, 3.3] {
            let taps = gaussian_taps(sigma);
            assert_normalised(&Kernel::row(taps.clone()), true);
            assert!(taps.iter().zip(taps.iter().rev()).all(|(a, b)| a == b));
        }
    }

    #[test]
    fn a_kernel_without_mass_becomes_the_identity() {
        let k = Kernel::from_fn(3, |_, _| 0.0).normalized();
        assert_eq!(k.weights, [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
