//! The brush that turns a rain seed into a streak: an anti-aliased line segment.

use super::Kernel;

/// A line of `length` pixels at `angle` degrees from vertical (positive leans right going
/// down), about one pixel wide, peak weight 1, fading to half at both ends. Not normalised.
pub(crate) fn streak(length: f64, angle: f64) -> Kernel {
    let half = (length / 2.0).max(0.5);
    let (sin, cos) = angle.to_radians().sin_cos();
    let size = 2 * (half + 1.0).ceil() as usize + 1;
    Kernel::from_fn(size, |x, y| {
        let along = (x * sin + y * cos).clamp(-half, half);
        let dist = (x - along * sin).hypot(y - along * cos);
        (1.0 - dist).max(0.0) * (1.0 - 0.5 * (along / half).powi(2))
    })
}

#[cfg(test)]
mod tests {
    use super::streak;

    #[test]
    fn vertical_streak_is_a_column() {
        let k = streak(10.0, 0.0);
        let c = k.width / 2;
        let at = |x: usize, y: usize| k.weights[y * k.width + x];
        assert_eq!(at(c, c), 1.0);
        assert!(at(c, c + 4) > 0.5 && at(c, c - 4) > 0.5);
        assert_eq!(at(c + 1, c), 0.0);
        assert_eq!(at(c, c + 6), 0.0, "ends at half the length");
    }

    #[test]
    fn slanted_streak_leans_with_the_angle() {
        let k = streak(16.0, 30.0);
        let c = k.width / 2;
        // 6 px down, about 3.5 px right.
        assert!(k.weights[(c + 6) * k.width + c + 3] > 0.0);
        assert_eq!(k.weights[(c + 6) * k.width + c - 3], 0.0);
    }
}
