//! Measured properties of individual degradations.

mod common;

use maskdcpt_degrade::{Class, Record, Rgb, degrade};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn run(img: &Rgb, class: Class, description: &str, seed: u64) -> (Rgb, Record) {
    let level = class.level_index(description).unwrap();
    degrade(img, class, level, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn mean(v: impl Iterator<Item = f64> + Clone) -> f64 {
    v.clone().sum::<f64>() / v.count() as f64
}

fn diff_stats(a: &Rgb, b: &Rgb) -> (f64, f64) {
    let d = a.data.iter().zip(&b.data).map(|(x, y)| f64::from(x - y));
    let m = mean(d.clone());
    (m, mean(d.map(|v| (v - m) * (v - m))))
}

fn psnr(a: &Rgb, b: &Rgb) -> f64 {
    let mse = mean(a.data.iter().zip(&b.data).map(|(x, y)| f64::from(x - y).powi(2)));
    10.0 * (1.0 / mse).log10()
}

#[test]
fn gaussian_noise_sigma_matches_on_mid_grey() {
    let grey = Rgb::filled(128, 128, [0.5; 3]);
    for sigma in [5.0, 15.0, 25.0, 50.0] {
        let (out, _) = run(&grey, Class::Noise, &format!("gaussian_noise sigma={sigma}"), 1);
        let (bias, var) = diff_stats(&out, &grey);
        let measured = var.sqrt() * 255.0;
        assert!((measured / sigma - 1.0).abs() < 0.05, "sigma {sigma}: measured {measured:.2}");
        assert!(bias.abs() < 0.005, "sigma {sigma}: bias {bias}");
        // Not quantised to 8 bits.
        assert!(out.data.iter().any(|v| (v * 255.0).fract().abs() > 1e-3));
    }
}

#[test]
fn poisson_noise_variance_grows_with_intensity() {
    let mut last = 0.0;
    for x in [0.1, 0.4, 0.8] {
        let flat = Rgb::filled(96, 96, [x; 3]);
        let (out, _) = run(&flat, Class::Noise, "poisson_noise peak=60", 2);
        let (bias, var) = diff_stats(&out, &flat);
        let expected = f64::from(x) / 60.0;
        assert!(var > last, "variance at {x}: {var} ≤ {last}");
        assert!((var / expected - 1.0).abs() < 0.15, "at {x}: {var} vs {expected}");
        assert!(bias.abs() < 0.01, "at {x}: bias {bias}");
        last = var;
    }
}

#[test]
fn salt_and_pepper_fraction_matches() {
    let grey = Rgb::filled(200, 200, [0.5; 3]);
    for amount in [0.01, 0.05, 0.2] {
        let (out, _) = run(&grey, Class::Noise, &format!("salt_pepper amount={amount}"), 3);
        let pixels: Vec<&[f32]> = out.data.chunks(3).collect();
        let white = pixels.iter().filter(|p| p.iter().all(|&v| v == 1.0)).count() as f64;
        let black = pixels.iter().filter(|p| p.iter().all(|&v| v == 0.0)).count() as f64;
        let untouched = pixels.iter().filter(|p| p.iter().all(|&v| v == 0.5)).count() as f64;
        let n = pixels.len() as f64;
        assert_eq!(white + black + untouched, n);
        assert!(((white + black) / n / amount - 1.0).abs() < 0.1, "amount {amount}: {}", (white + black) / n);
        assert!((white / (white + black) - 0.5).abs() < 0.1, "amount {amount}: salt share");
    }
}

#[test]
fn camera_noise_grows_with_the_level() {
    let grey = Rgb::filled(64, 64, [0.4; 3]);
    let stds: Vec<f64> = Class::RealNoise
        .levels()
        .iter()
        .enumerate()
        .map(|(level, _)| {
            let (out, _) = degrade(&grey, Class::RealNoise, level, &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
            diff_stats(&out, &grey).1.sqrt()
        })
        .collect();
    assert!(stds.windows(2).all(|p| p[1] > p[0]), "{stds:?}");
}

#[test]
fn jpeg_psnr_falls_strictly_as_quality_drops() {
    let img = common::textured(64, 64);
    let psnrs: Vec<f64> = Class::Jpeg
        .levels()
        .iter()
        .enumerate()
        .map(|(level, _)| psnr(&degrade(&img, Class::Jpeg, level, &mut ChaCha8Rng::seed_from_u64(0)).unwrap().0, &img))
        .collect();
    assert_eq!(Class::Jpeg.levels()[0].to_string(), "jpeg quality=95");
    assert!(psnrs.windows(2).all(|p| p[1] < p[0]), "{psnrs:?}");
}

#[test]
fn mosaic_of_a_constant_colour_is_that_colour() {
    let colour = [0.2, 0.6, 0.9];
    let img = Rgb::filled(16, 12, colour);
    for level in 0..Class::Mosaic.level_count() {
        let (out, _) = degrade(&img, Class::Mosaic, level, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert!(out.data.chunks(3).all(|p| p.iter().zip(colour).all(|(a, b)| (a - b).abs() < 1e-5)), "level {level}");
    }
}

#[test]
fn mosaic_loses_colour_detail_and_malvar_beats_bilinear() {
    let img = common::textured(64, 64);
    let bilinear = run(&img, Class::Mosaic, "mosaic demosaic=bilinear", 0).0;
    let malvar = run(&img, Class::Mosaic, "mosaic demosaic=malvar", 0).0;
    assert!(psnr(&bilinear, &img) < 60.0);
    assert!(psnr(&malvar, &img) > psnr(&bilinear, &img));
}

#[test]
fn haze_moves_pixels_towards_the_airlight_monotonically_in_beta() {
    let img = common::textured(48, 40);
    let mut previous: Option<Vec<f32>> = None;
    for beta in [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0] {
        let (out, record) = run(&img, Class::Haze, &format!("haze beta={beta} airlight=0.9"), 5);
        let airlight: Vec<f32> =
            ["r", "g", "b"].map(|c| record.params[&format!("haze.airlight_{c}")].as_f64().unwrap() as f32).into();
        let distance: Vec<f32> = out.data.iter().enumerate().map(|(i, v)| (v - airlight[i % 3]).abs()).collect();
        let before: Vec<f32> = img.data.iter().enumerate().map(|(i, v)| (v - airlight[i % 3]).abs()).collect();
        assert!(distance.iter().zip(&before).all(|(d, b)| *d <= *b + 1e-6), "beta {beta}: a pixel moved away");
        if let Some(prev) = &previous {
            assert!(distance.iter().zip(prev).all(|(d, p)| *d <= *p + 1e-6), "beta {beta}: not monotone");
            assert!(distance.iter().sum::<f32>() < prev.iter().sum::<f32>(), "beta {beta}: no progress");
        }
        previous = Some(distance);
    }
}

#[test]
fn low_light_reduces_mean_brightness() {
    let img = common::textured(48, 40);
    let brightness = |img: &Rgb| mean(img.data.iter().map(|&v| f64::from(v)));
    for (level, description) in Class::LowLight.levels().iter().enumerate() {
        let (out, _) = degrade(&img, Class::LowLight, level, &mut ChaCha8Rng::seed_from_u64(6)).unwrap();
        assert!(brightness(&out) < 0.7 * brightness(&img), "{description}");
    }
    let scale = |s: &str| brightness(&run(&img, Class::LowLight, &format!("low_light gamma=2 scale={s}"), 6).0);
    assert!(scale("0.25") < scale("0.4") && scale("0.4") < scale("0.6"));
}

#[test]
fn rain_and_snow_only_brighten_and_blur_keeps_the_mean() {
    let img = common::textured(64, 64);
    for class in [Class::RainStreak, Class::BlurRain] {
        let (out, _) = degrade(&img, class, class.level_count() - 1, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        if class == Class::RainStreak {
            assert!(out.data.iter().zip(&img.data).all(|(o, i)| o >= i), "streaks are screen-blended");
        }
        assert!(diff_stats(&out, &img).0 > 0.01, "{class} adds light");
    }
    let (snow, _) = run(&img, Class::Snow, "snow density=0.016 size=2 veil=0.15", 7);
    assert!(diff_stats(&snow, &img).0 > 0.05);
    for class in [Class::MotionBlur, Class::DefocusBlur, Class::GaussianBlur] {
        let (out, _) = degrade(&img, class, class.medium_level(), &mut ChaCha8Rng::seed_from_u64(8)).unwrap();
        assert!(diff_stats(&out, &img).0.abs() < 0.02, "{class} keeps the mean");
        assert!(psnr(&out, &img) < 30.0, "{class} blurs");
    }
}
