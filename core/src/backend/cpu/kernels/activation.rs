//! GELU (exact form, `x / 2 · (1 + erf(x / √2))`, PyTorch's default) for Restormer's gated
//! feed-forward and SwinIR's MLP, with an `erf` that vectorises.

use multiversion::multiversion;

/// `dst[i] = gelu(dst[i]) · gate[i]`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn gelu_gate(dst: &mut [f32], gate: &[f32]) {
    dst.iter_mut().zip(gate).for_each(|(d, g)| *d = gelu(*d) * g);
}

/// `x[i] = gelu(x[i])`.
#[multiversion(targets("x86_64+avx512f+avx512vl+fma", "x86_64+avx2+fma", "aarch64+neon"))]
pub fn gelu_in_place(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu(*v));
}

/// GELU with the error function: `x / 2 · (1 + erf(x / √2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The error function in single precision, without branches: the odd rational minimax
/// approximation `x · P(x²) / Q(x²)` used by XLA and TensorFlow (`ErfImpl32`, Apache-2.0),
/// within 5e-7 of the exact value (tested; PyTorch's vectorised f32 erf is of the same order),
/// and ±1 from |x| ≥ 3.92 on, where the exact value rounds to ±1 in f32.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] =
        [-2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906e-4, -2.954_6e-3, -1.609_603_3e-2];
    const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];
    let clamped = x.clamp(-4.0, 4.0);
    let x2 = clamped * clamped;
    let p = ALPHA.iter().fold(0.0f32, |acc, &a| acc.mul_add(x2, a));
    let q = BETA.iter().fold(0.0f32, |acc, &b| acc.mul_add(x2, b));
    if x.abs() >= 3.92 { 1.0f32.copysign(x) } else { clamped * p / q }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_5e7_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let exact = libm::erf(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "max |Δ| {worst}");
        assert_eq!((erf(0.0), erf(9.0), erf(-9.0)), (0.0, 1.0, -1.0));
    }

    #[test]
    fn gelu_gate_matches_the_definition() {
        let xs: Vec<f32> = (-40..40).map(|i| i as f32 * 0.17).collect();
        let gate: Vec<f32> = xs.iter().map(|x| 1.0 - x * 0.3).collect();
        let mut got = xs.clone();
        gelu_gate(&mut got, &gate);
        for ((x, g), y) in xs.iter().zip(&gate).zip(&got) {
            let want = 0.5 * *x as f64 * (1.0 + libm::erf(*x as f64 / 2f64.sqrt())) * *g as f64;
            // erf's error, scaled by x / 2 and the gate.
            let bound = 2.5e-7 * (x.abs() * g.abs()).max(1.0) as f64;
            assert!((*y as f64 - want).abs() < bound, "{x}: {y} vs {want}");
        }
    }
}
