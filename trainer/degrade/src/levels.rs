//! The fixed level lists of every class. A level is a chain of [`Op`]s with fixed parameters;
//! single classes have one step per level, mixed classes several. Lists are mildest first
//! along each parameter; products list the first parameter outermost.

use std::fmt;
use std::sync::LazyLock;

use crate::Class;
use crate::ops::{Demosaic, Op};

/// One level of a class: a fixed chain of degradation steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    ops: Vec<Op>,
}

impl Level {
    /// The steps, applied in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

impl fmt::Display for Level {
    /// The steps joined by `" + "`, e.g. `gaussian_blur sigma=2 + jpeg quality=50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{op}")?;
        }
        Ok(())
    }
}

/// The levels of one class and which one is "medium".
struct ClassLevels {
    levels: Vec<Level>,
    medium: usize,
}

static TABLE: LazyLock<Vec<ClassLevels>> = LazyLock::new(|| Class::ALL.map(build).into());

/// The levels of `class`.
pub(crate) fn of(class: Class) -> &'static [Level] {
    &TABLE[class.index()].levels
}

/// The medium level of `class`.
pub(crate) fn medium(class: Class) -> usize {
    TABLE[class.index()].medium
}

/// Light, medium and heavy rain streaks (vertical on average), used by the mixed classes.
const RAIN: [Op; 3] = [
    Op::RainStreak { density: 0.002, length: 10.0, angle: 0.0 },
    Op::RainStreak { density: 0.004, length: 20.0, angle: 0.0 },
    Op::RainStreak { density: 0.008, length: 30.0, angle: 0.0 },
];
/// Light, medium and heavy blur, used by the mixed classes.
const BLUR: [Op; 3] =
    [Op::GaussianBlur { sigma: 1.0 }, Op::GaussianBlur { sigma: 2.0 }, Op::GaussianBlur { sigma: 3.0 }];
/// Mild, medium and strong darkening, used by the mixed classes.
const DARK: [Op; 3] = [
    Op::LowLight { gamma: 1.5, scale: 0.6 },
    Op::LowLight { gamma: 2.0, scale: 0.4 },
    Op::LowLight { gamma: 2.5, scale: 0.25 },
];

fn build(class: Class) -> ClassLevels {
    match class {
        Class::Noise => single(
            [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0]
                .map(|sigma| Op::GaussianNoise { sigma })
                .into_iter()
                .chain([500.0, 250.0, 120.0, 60.0, 30.0, 15.0].map(|peak| Op::PoissonNoise { peak }))
                .chain([0.005, 0.01, 0.02, 0.05, 0.1, 0.2].map(|amount| Op::SaltPepper { amount })),
            Op::GaussianNoise { sigma: 25.0 },
        ),
        Class::RealNoise => single(
            [1e-4, 2e-4, 4e-4, 7e-4, 1e-3, 2e-3, 4e-3, 7e-3, 1e-2, 1.2e-2]
                .map(|shot| Op::CameraNoise { shot, read: read_for_shot(shot) }),
            Op::CameraNoise { shot: 2e-3, read: read_for_shot(2e-3) },
        ),
        Class::MotionBlur => {
            single((9..=31).step_by(2).map(|size| Op::MotionBlur { size }), Op::MotionBlur { size: 19 })
        }
        Class::DefocusBlur => {
            single((2..=16).map(|i| Op::DefocusBlur { radius: f64::from(i) / 2.0 }), Op::DefocusBlur { radius: 4.0 })
        }
        Class::GaussianBlur => {
            single((2..=20).map(|i| Op::GaussianBlur { sigma: f64::from(i) / 5.0 }), Op::GaussianBlur { sigma: 2.0 })
        }
        Class::Jpeg => single((10..=95).rev().step_by(5).map(|quality| Op::Jpeg { quality }), Op::Jpeg { quality: 50 }),
        Class::Haze => single(
            [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0]
                .into_iter()
                .flat_map(|beta| [0.8, 0.9, 1.0].map(|airlight| Op::Haze { beta, airlight })),
            Op::Haze { beta: 1.0, airlight: 0.9 },
        ),
        Class::RainStreak => single(
            [0.002, 0.004, 0.008].into_iter().flat_map(|density| {
                [10.0, 20.0, 30.0]
                    .into_iter()
                    .flat_map(move |length| [-20.0, 0.0, 20.0].map(|angle| Op::RainStreak { density, length, angle }))
            }),
            RAIN[1],
        ),
        Class::Raindrop => single(
            [4.0, 8.0, 16.0, 32.0]
                .into_iter()
                .flat_map(|density| [4.0, 8.0, 12.0].map(|radius| Op::Raindrop { density, radius })),
            Op::Raindrop { density: 8.0, radius: 8.0 },
        ),
        Class::RainStreakRaindrop => chains(
            &[
                &RAIN,
                &[
                    Op::Raindrop { density: 4.0, radius: 4.0 },
                    Op::Raindrop { density: 8.0, radius: 8.0 },
                    Op::Raindrop { density: 16.0, radius: 12.0 },
                ],
            ],
            &[1, 1],
        ),
        Class::Snow => single(
            [(0.002, 0.03), (0.004, 0.06), (0.008, 0.1), (0.016, 0.15)]
                .into_iter()
                .flat_map(|(density, veil)| [1.0, 2.0].map(|size| Op::Snow { density, size, veil })),
            Op::Snow { density: 0.004, size: 2.0, veil: 0.06 },
        ),
        Class::Mosaic => single(
            [Demosaic::Bilinear, Demosaic::Malvar].map(|demosaic| Op::Mosaic { demosaic }),
            Op::Mosaic { demosaic: Demosaic::Malvar },
        ),
        Class::LowLight => single(
            [1.5, 2.0, 2.5, 3.0]
                .into_iter()
                .flat_map(|gamma| [0.6, 0.4, 0.25].map(|scale| Op::LowLight { gamma, scale })),
            DARK[1],
        ),
        Class::Moire => single(
            [0.1, 0.2, 0.3, 0.4]
                .into_iter()
                .flat_map(|strength| [32.0, 16.0, 8.0].map(|period| Op::Moire { strength, period })),
            Op::Moire { strength: 0.2, period: 16.0 },
        ),
        Class::BlurJpeg => chains(&[&BLUR, &[20, 40, 60].map(|quality| Op::Jpeg { quality })], &[1, 1]),
        Class::BlurRain => chains(&[&BLUR, &RAIN], &[1, 1]),
        Class::LowLightBlurNoise => {
            chains(&[&BLUR, &DARK, &[10.0, 25.0].map(|sigma| Op::GaussianNoise { sigma })], &[1, 1, 0])
        }
        Class::LowLightHazeRainSnow => chains(
            &[
                &[Op::Haze { beta: 0.5, airlight: 0.9 }, Op::Haze { beta: 1.0, airlight: 0.9 }],
                &RAIN[..2],
                &[
                    Op::Snow { density: 0.002, size: 1.0, veil: 0.03 },
                    Op::Snow { density: 0.004, size: 2.0, veil: 0.06 },
                ],
                &DARK[..2],
            ],
            &[1, 1, 1, 1],
        ),
        Class::DownsampleNoiseBlurJpeg => {
            // Light, medium, heavy: (blur σ, noise σ, JPEG quality); factor outermost.
            let strengths = [(1.0, 5.0, 80), (2.0, 15.0, 50), (3.0, 25.0, 30)];
            let levels: Vec<Vec<Op>> = [2, 3, 4]
                .into_iter()
                .flat_map(|factor| {
                    strengths.map(|(sigma, noise, quality)| {
                        vec![
                            Op::GaussianBlur { sigma },
                            Op::Downscale { factor },
                            Op::GaussianNoise { sigma: noise },
                            Op::Jpeg { quality },
                            Op::Upscale,
                        ]
                    })
                })
                .collect();
            with_medium(levels, 4)
        }
    }
}

/// Read-noise variance for a shot-noise factor, from the log-linear fit of Brooks et al.
/// (2019): `ln read = 2.18 · ln shot + 1.20`, rounded to two significant digits.
fn read_for_shot(shot: f64) -> f64 {
    let read = (2.18 * shot.ln() + 1.20).exp();
    format!("{read:.1e}").parse().unwrap_or(read)
}

/// One-step levels; `medium` must be one of them.
fn single(ops: impl IntoIterator<Item = Op>, medium: Op) -> ClassLevels {
    let levels: Vec<Vec<Op>> = ops.into_iter().map(|op| vec![op]).collect();
    let index = levels.iter().position(|l| l[..] == [medium]).unwrap_or(0);
    with_medium(levels, index)
}

/// The cartesian product of the step alternatives, first step outermost; `medium` picks one
/// alternative per step.
fn chains(steps: &[&[Op]], medium: &[usize]) -> ClassLevels {
    let levels = steps.iter().fold(vec![vec![]], |prefixes: Vec<Vec<Op>>, alternatives| {
        prefixes.iter().flat_map(|p| alternatives.iter().map(move |&op| [p.clone(), vec![op]].concat())).collect()
    });
    let index = steps.iter().zip(medium).fold(0, |acc, (alternatives, &m)| acc * alternatives.len() + m);
    with_medium(levels, index)
}

fn with_medium(levels: Vec<Vec<Op>>, medium: usize) -> ClassLevels {
    ClassLevels { levels: levels.into_iter().map(|ops| Level { ops }).collect(), medium }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medium_levels_are_the_documented_ones() {
        let medium = |c: Class| c.levels()[c.medium_level()].to_string();
        assert_eq!(medium(Class::Noise), "gaussian_noise sigma=25");
        assert_eq!(medium(Class::RealNoise), "camera_noise shot=0.002 read=4.3e-6");
        assert_eq!(medium(Class::MotionBlur), "motion_blur size=19");
        assert_eq!(medium(Class::DefocusBlur), "defocus_blur radius=4");
        assert_eq!(medium(Class::GaussianBlur), "gaussian_blur sigma=2");
        assert_eq!(medium(Class::Jpeg), "jpeg quality=50");
        assert_eq!(medium(Class::Haze), "haze beta=1 airlight=0.9");
        assert_eq!(medium(Class::RainStreak), "rain_streak density=0.004 length=20 angle=0");
        assert_eq!(medium(Class::Raindrop), "raindrop density=8 radius=8");
        assert_eq!(medium(Class::Snow), "snow density=0.004 size=2 veil=0.06");
        assert_eq!(medium(Class::Mosaic), "mosaic demosaic=malvar");
        assert_eq!(medium(Class::LowLight), "low_light gamma=2 scale=0.4");
        assert_eq!(medium(Class::Moire), "moire strength=0.2 period=16");
        assert_eq!(medium(Class::BlurJpeg), "gaussian_blur sigma=2 + jpeg quality=40");
        assert_eq!(medium(Class::BlurRain), "gaussian_blur sigma=2 + rain_streak density=0.004 length=20 angle=0");
        assert_eq!(
            medium(Class::LowLightBlurNoise),
            "gaussian_blur sigma=2 + low_light gamma=2 scale=0.4 + gaussian_noise sigma=10"
        );
        assert_eq!(
            medium(Class::DownsampleNoiseBlurJpeg),
            "gaussian_blur sigma=2 + downscale factor=3 + gaussian_noise sigma=15 + jpeg quality=50 + upscale"
        );
        assert_eq!(Class::RainStreakRaindrop.medium_level(), 4);
        assert_eq!(Class::LowLightHazeRainSnow.medium_level(), 15);
    }

    #[test]
    fn every_level_is_unique_and_no_chain_repeats_a_step_kind() {
        for class in Class::ALL {
            let names: std::collections::BTreeSet<String> = class.levels().iter().map(Level::to_string).collect();
            assert_eq!(names.len(), class.level_count(), "{class}");
            for level in class.levels() {
                let kinds: std::collections::BTreeSet<&str> = level.ops().iter().map(Op::name).collect();
                assert_eq!(kinds.len(), level.ops().len(), "{level}: params keys would collide");
            }
        }
    }

    #[test]
    fn read_noise_follows_the_fit() {
        assert_eq!(read_for_shot(2e-3), 4.3e-6);
        assert_eq!(read_for_shot(1e-2), 1.4e-4);
    }
}
