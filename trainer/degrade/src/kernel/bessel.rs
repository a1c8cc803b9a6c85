//! The Bessel function of the first kind of order one, for the circular low-pass (sinc) kernel.

use std::f64::consts::{FRAC_2_PI, FRAC_PI_4};

/// `J1(x)`: rational approximations from Numerical Recipes (`bessj1`), absolute error < 1e-7.
pub(crate) fn j1(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 8.0 {
        let y = x * x;
        let num = x
            * (72362614232.0
                + y * (-7895059235.0 + y * (242396853.1 + y * (-2972611.439 + y * (15704.48260 + y * -30.16036606)))));
        let den = 144725228442.0 + y * (2300535178.0 + y * (18583304.74 + y * (99447.43394 + y * (376.9991397 + y))));
        num / den
    } else {
        let z = 8.0 / ax;
        let y = z * z;
        let xx = ax - 3.0 * FRAC_PI_4;
        let p = 1.0 + y * (0.183105e-2 + y * (-0.3516396496e-4 + y * (0.2457520174e-5 + y * -0.240337019e-6)));
        let q =
            0.04687499995 + y * (-0.2002690873e-3 + y * (0.8449199096e-5 + y * (-0.88228987e-6 + y * 0.105787412e-6)));
        let ans = (FRAC_2_PI / ax).sqrt() * (xx.cos() * p - z * xx.sin() * q);
        if x < 0.0 { -ans } else { ans }
    }
}

#[cfg(test)]
mod tests {
    use super::j1;

    #[test]
    fn matches_tabulated_values() {
        // Abramowitz & Stegun table 9.1 and the first zero j_{1,1}.
        for (x, want) in
            [(0.0, 0.0), (1.0, 0.4400505857), (2.5, 0.4970941025), (10.0, 0.0434727462), (-1.0, -0.4400505857)]
        {
            assert!((j1(x) - want).abs() < 1e-7, "J1({x}) = {} want {want}", j1(x));
        }
        assert!(j1(3.8317059702).abs() < 1e-7);
    }
}
