//! The 19 degradation classes (14 single, 5 mixed), in the fixed order of their indices.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::levels::{self, Level};

/// A degradation class. The index order is fixed: it is the class label used in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// 0: synthetic noise (Gaussian, Poisson or salt-and-pepper, by level).
    Noise,
    /// 1: camera-like raw noise through an unprocess/reprocess pipeline.
    RealNoise,
    /// 2: camera-shake blur from random trajectories.
    MotionBlur,
    /// 3: out-of-focus blur with disk kernels.
    DefocusBlur,
    /// 4: Real-ESRGAN blur kernels (Gaussian family and sinc).
    GaussianBlur,
    /// 5: JPEG compression.
    Jpeg,
    /// 6: haze by atmospheric scattering.
    Haze,
    /// 7: rain streaks.
    RainStreak,
    /// 8: raindrops on the lens.
    Raindrop,
    /// 9: rain streaks and raindrops.
    RainStreakRaindrop,
    /// 10: snow.
    Snow,
    /// 11: Bayer mosaic and demosaicing.
    Mosaic,
    /// 12: low light.
    LowLight,
    /// 13: screen moiré.
    Moire,
    /// 14: mixed: blur, then JPEG.
    BlurJpeg,
    /// 15: mixed: blur, then rain streaks.
    BlurRain,
    /// 16: mixed: blur, low light, noise.
    LowLightBlurNoise,
    /// 17: mixed: haze, rain streaks, snow, low light.
    LowLightHazeRainSnow,
    /// 18: mixed: Real-ESRGAN-like chain blur → downscale → noise → JPEG → upscale.
    DownsampleNoiseBlurJpeg,
}

impl Class {
    /// Number of classes.
    pub const COUNT: usize = 19;

    /// Every class, in index order.
    pub const ALL: [Class; Class::COUNT] = [
        Class::Noise,
        Class::RealNoise,
        Class::MotionBlur,
        Class::DefocusBlur,
        Class::GaussianBlur,
        Class::Jpeg,
        Class::Haze,
        Class::RainStreak,
        Class::Raindrop,
        Class::RainStreakRaindrop,
        Class::Snow,
        Class::Mosaic,
        Class::LowLight,
        Class::Moire,
        Class::BlurJpeg,
        Class::BlurRain,
        Class::LowLightBlurNoise,
        Class::LowLightHazeRainSnow,
        Class::DownsampleNoiseBlurJpeg,
    ];

    /// The class label, 0..19.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class with label `index`, if there is one.
    pub fn from_index(index: usize) -> Option<Class> {
        Self::ALL.get(index).copied()
    }

    /// The snake_case id, e.g. `"rain_streak"`.
    pub fn id(self) -> &'static str {
        match self {
            Class::Noise => "noise",
            Class::RealNoise => "real_noise",
            Class::MotionBlur => "motion_blur",
            Class::DefocusBlur => "defocus_blur",
            Class::GaussianBlur => "gaussian_blur",
            Class::Jpeg => "jpeg",
            Class::Haze => "haze",
            Class::RainStreak => "rain_streak",
            Class::Raindrop => "raindrop",
            Class::RainStreakRaindrop => "rain_streak_raindrop",
            Class::Snow => "snow",
            Class::Mosaic => "mosaic",
            Class::LowLight => "low_light",
            Class::Moire => "moire",
            Class::BlurJpeg => "blur_jpeg",
            Class::BlurRain => "blur_rain",
            Class::LowLightBlurNoise => "low_light_blur_noise",
            Class::LowLightHazeRainSnow => "low_light_haze_rain_snow",
            Class::DownsampleNoiseBlurJpeg => "downsample_noise_blur_jpeg",
        }
    }

    /// The class with id `id`.
    pub fn from_id(id: &str) -> Result<Class, Error> {
        Self::ALL
            .into_iter()
            .find(|c| c.id() == id)
            .ok_or_else(|| Error::UnknownClass { id: id.to_string(), known: Self::ALL.map(Class::id).join(", ") })
    }

    /// Whether the class is one of the 5 mixed ones (indices 14..19).
    pub fn is_mixed(self) -> bool {
        self.index() >= Class::BlurJpeg.index()
    }

    /// The class's levels, mildest first within each parameter.
    pub fn levels(self) -> &'static [Level] {
        levels::of(self)
    }

    /// How many levels the class has.
    pub fn level_count(self) -> usize {
        self.levels().len()
    }

    /// The level used as "medium" by the evaluation protocol.
    pub fn medium_level(self) -> usize {
        levels::medium(self)
    }

    /// The index of the level whose description is `description` (as printed in LEVELS.md).
    pub fn level_index(self, description: &str) -> Result<usize, Error> {
        self.levels()
            .iter()
            .position(|l| l.to_string() == description)
            .ok_or_else(|| Error::UnknownLevel { class: self.id(), description: description.to_string() })
    }
}

impl fmt::Display for Class {
    /// The id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Class {
    type Err = Error;

    /// Parses an id, see [`Class::from_id`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Class::from_id(s)
    }
}

#[cfg(test)]
mod tests {
    use super::Class;

    #[test]
    fn ids_and_indices_round_trip() {
        for (i, class) in Class::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), i);
            assert_eq!(Class::from_index(i), Some(class));
            assert_eq!(Class::from_id(class.id()).ok(), Some(class));
        }
        assert_eq!(Class::from_index(19), None);
        assert_eq!(Class::ALL.iter().filter(|c| c.is_mixed()).count(), 5);
        let err = Class::from_id("fog").unwrap_err().to_string();
        assert!(err.contains("'fog'") && err.contains("low_light_haze_rain_snow"), "{err}");
    }
}
