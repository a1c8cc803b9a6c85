//! The degradation steps. A class level is a fixed chain of [`Op`]s; each step reads its
//! level parameters from the op and draws everything else (kernels, positions, gains…)
//! from the caller's RNG, recording both into the [`Params`].

mod camera;
mod haze;
mod jpeg;
mod low_light;
mod moire;
pub(crate) mod mosaic;
mod noise;
mod rain;
mod raindrop;
mod snow;

use std::fmt;

use rand::{Rng, RngExt};

use crate::filter::correlate_rgb;
use crate::kernel::{disk, esrgan, motion};
use crate::params::{Params, Recorder};
use crate::resize::{Filter, resize};
use crate::{Error, Rgb};

/// One degradation step with its level parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Additive white Gaussian noise, per channel, clipped but not quantised.
    GaussianNoise {
        /// Standard deviation on the 0–255 scale.
        sigma: f64,
    },
    /// Shot noise `Poisson(x · peak) / peak`.
    PoissonNoise {
        /// Expected photon count at white.
        peak: f64,
    },
    /// Impulse noise: pixels set to black or white (all three channels).
    SaltPepper {
        /// Probability that a pixel is replaced.
        amount: f64,
    },
    /// Camera raw noise: sRGB → linear, inverse white balance and gain, RGGB mosaic,
    /// heteroscedastic noise `σ² = shot·x + read`, bilinear demosaic, gains, sRGB.
    CameraNoise {
        /// Signal-dependent variance factor.
        shot: f64,
        /// Signal-independent variance.
        read: f64,
    },
    /// Camera shake along a random trajectory.
    MotionBlur {
        /// Kernel side in pixels (odd).
        size: usize,
    },
    /// Out-of-focus blur with an anti-aliased disk.
    DefocusBlur {
        /// Disk radius in pixels.
        radius: f64,
    },
    /// A kernel of the Real-ESRGAN family (Gaussian, generalized, plateau, or sinc).
    GaussianBlur {
        /// Principal standard deviation in pixels.
        sigma: f64,
    },
    /// JPEG round trip of the 8-bit image, encoded and decoded as OpenCV does (4:2:0).
    Jpeg {
        /// Quality 1–100.
        quality: u8,
    },
    /// Atmospheric scattering `I = J·t + A·(1 − t)`, `t = exp(−β·d)`, synthetic depth `d`.
    Haze {
        /// Extinction coefficient β (depth is in [0, 1]).
        beta: f64,
        /// Airlight A.
        airlight: f64,
    },
    /// Bright slanted streaks, screen-blended.
    RainStreak {
        /// Streak seeds per pixel.
        density: f64,
        /// Streak length in pixels.
        length: f64,
        /// Mean angle from vertical in degrees (jittered by ±5°).
        angle: f64,
    },
    /// Water drops on the lens showing a refracted, blurred patch of the scene.
    Raindrop {
        /// Drops per 128×128 pixels.
        density: f64,
        /// Mean drop radius in pixels.
        radius: f64,
    },
    /// Three layers of snow flakes (far, middle, near) and a whitening veil.
    Snow {
        /// Flakes per pixel, all layers together.
        density: f64,
        /// Radius of the middle layer's flakes in pixels.
        size: f64,
        /// Opacity of the white veil.
        veil: f64,
    },
    /// RGGB Bayer sampling followed by demosaicing.
    Mosaic {
        /// The demosaicing method.
        demosaic: Demosaic,
    },
    /// Darkening `scale · x^gamma`, then photon and read noise.
    LowLight {
        /// Gamma exponent (> 1 darkens the mid-tones).
        gamma: f64,
        /// Exposure scale.
        scale: f64,
    },
    /// Colour moiré of a screen photographed through the pixel grid.
    Moire {
        /// Peak relative amplitude of the fringes.
        strength: f64,
        /// Period of the aliased fringes in pixels.
        period: f64,
    },
    /// Downscaling (bilinear, bicubic or area, drawn).
    Downscale {
        /// Integer shrink factor.
        factor: usize,
    },
    /// Resizing back to the size the chain started with (bilinear or bicubic, drawn).
    Upscale,
}

/// Demosaicing methods for [`Op::Mosaic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demosaic {
    /// Averages of the nearest same-colour samples.
    Bilinear,
    /// Malvar, He & Cutler (2004): bilinear plus gradient correction, 5×5 kernels.
    Malvar,
}

impl Demosaic {
    fn name(self) -> &'static str {
        match self {
            Self::Bilinear => "bilinear",
            Self::Malvar => "malvar",
        }
    }
}

/// A level parameter: a number or a categorical name.
enum Field {
    Num(f64),
    Text(&'static str),
}

impl Op {
    /// The step's name, also the prefix of its keys in [`Params`].
    pub fn name(&self) -> &'static str {
        match self {
            Self::GaussianNoise { .. } => "gaussian_noise",
            Self::PoissonNoise { .. } => "poisson_noise",
            Self::SaltPepper { .. } => "salt_pepper",
            Self::CameraNoise { .. } => "camera_noise",
            Self::MotionBlur { .. } => "motion_blur",
            Self::DefocusBlur { .. } => "defocus_blur",
            Self::GaussianBlur { .. } => "gaussian_blur",
            Self::Jpeg { .. } => "jpeg",
            Self::Haze { .. } => "haze",
            Self::RainStreak { .. } => "rain_streak",
            Self::Raindrop { .. } => "raindrop",
            Self::Snow { .. } => "snow",
            Self::Mosaic { .. } => "mosaic",
            Self::LowLight { .. } => "low_light",
            Self::Moire { .. } => "moire",
            Self::Downscale { .. } => "downscale",
            Self::Upscale => "upscale",
        }
    }

    /// The level parameters, in display order.
    fn fields(&self) -> Vec<(&'static str, Field)> {
        use Field::{Num, Text};
        match *self {
            Self::GaussianNoise { sigma } => vec![("sigma", Num(sigma))],
            Self::PoissonNoise { peak } => vec![("peak", Num(peak))],
            Self::SaltPepper { amount } => vec![("amount", Num(amount))],
            Self::CameraNoise { shot, read } => vec![("shot", Num(shot)), ("read", Num(read))],
            Self::MotionBlur { size } => vec![("size", Num(size as f64))],
            Self::DefocusBlur { radius } => vec![("radius", Num(radius))],
            Self::GaussianBlur { sigma } => vec![("sigma", Num(sigma))],
            Self::Jpeg { quality } => vec![("quality", Num(f64::from(quality)))],
            Self::Haze { beta, airlight } => vec![("beta", Num(beta)), ("airlight", Num(airlight))],
            Self::RainStreak { density, length, angle } => {
                vec![("density", Num(density)), ("length", Num(length)), ("angle", Num(angle))]
            }
            Self::Raindrop { density, radius } => vec![("density", Num(density)), ("radius", Num(radius))],
            Self::Snow { density, size, veil } => {
                vec![("density", Num(density)), ("size", Num(size)), ("veil", Num(veil))]
            }
            Self::Mosaic { demosaic } => vec![("demosaic", Text(demosaic.name()))],
            Self::LowLight { gamma, scale } => vec![("gamma", Num(gamma)), ("scale", Num(scale))],
            Self::Moire { strength, period } => vec![("strength", Num(strength)), ("period", Num(period))],
            Self::Downscale { factor } => vec![("factor", Num(factor as f64))],
            Self::Upscale => vec![],
        }
    }

    /// Applies the step. `original` is the size the chain started with (for [`Op::Upscale`]).
    /// The result is clamped to [0, 1].
    pub(crate) fn apply<R: Rng + ?Sized>(
        &self,
        img: &Rgb,
        original: (usize, usize),
        rng: &mut R,
        params: &mut Params,
    ) -> Result<Rgb, Error> {
        let mut rec = Recorder::new(params, self.name());
        for (key, field) in self.fields() {
            match field {
                Field::Num(v) => rec.num(key, v),
                Field::Text(t) => rec.text(key, t),
            }
        }
        let out = match *self {
            Self::GaussianNoise { sigma } => noise::gaussian(img, sigma / 255.0, rng),
            Self::PoissonNoise { peak } => noise::poisson(img, peak, rng),
            Self::SaltPepper { amount } => noise::salt_pepper(img, amount, rng),
            Self::CameraNoise { shot, read } => camera::noise(img, shot, read, rng, &mut rec),
            Self::MotionBlur { size } => correlate_rgb(img, &motion::random(size, rng, &mut rec)),
            Self::DefocusBlur { radius } => correlate_rgb(img, &disk::disk(radius)),
            Self::GaussianBlur { sigma } => correlate_rgb(img, &esrgan::random(sigma, rng, &mut rec)),
            Self::Jpeg { quality } => jpeg::round_trip(img, quality)?,
            Self::Haze { beta, airlight } => haze::haze(img, beta, airlight, rng, &mut rec),
            Self::RainStreak { density, length, angle } => rain::streaks(img, density, length, angle, rng, &mut rec),
            Self::Raindrop { density, radius } => raindrop::drops(img, density, radius, rng, &mut rec),
            Self::Snow { density, size, veil } => snow::snow(img, density, size, veil, rng, &mut rec),
            Self::Mosaic { demosaic } => mosaic::demosaic(&mosaic::bayer(img), img.width, img.height, demosaic),
            Self::LowLight { gamma, scale } => low_light::low_light(img, gamma, scale, rng, &mut rec),
            Self::Moire { strength, period } => moire::moire(img, strength, period, rng, &mut rec),
            Self::Downscale { factor } => {
                let filter = [Filter::Bilinear, Filter::Bicubic, Filter::Area][rng.random_range(0..3u32) as usize];
                rec.text("filter", filter.name());
                resize(img, img.width / factor.max(1), img.height / factor.max(1), filter)
            }
            Self::Upscale => {
                let filter = if rng.random_bool(0.5) { Filter::Bilinear } else { Filter::Bicubic };
                rec.text("filter", filter.name());
                resize(img, original.0, original.1, filter)
            }
        };
        Ok(out.clamped())
    }
}

impl fmt::Display for Op {
    /// `name key=value …`, e.g. `gaussian_noise sigma=25` or `mosaic demosaic=malvar`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        for (key, field) in self.fields() {
            match field {
                // Small variances read better in scientific notation (`read=4.3e-6`).
                Field::Num(v) if v != 0.0 && v.abs() < 1e-3 => write!(f, " {key}={v:e}")?,
                Field::Num(v) => write!(f, " {key}={v}")?,
                Field::Text(t) => write!(f, " {key}={t}")?,
            }
        }
        Ok(())
    }
}
