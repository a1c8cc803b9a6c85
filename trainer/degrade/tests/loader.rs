//! Image loading and saving: formats, bit depths, and no panics on bad bytes.

use std::path::PathBuf;

use image::{ImageBuffer, Rgb as Px};
use maskdcpt_degrade::{Error, Rgb};
use proptest::prelude::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maskdcpt-degrade-loader-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn png_8_and_16_bit_load_scaled_and_save_round_trips() {
    let dir = temp_dir("depth");
    let eight = ImageBuffer::<Px<u8>, _>::from_fn(5, 3, |x, y| Px([x as u8 * 50, y as u8 * 100, 255]));
    eight.save(dir.join("a.png")).unwrap();
    let sixteen = ImageBuffer::<Px<u16>, _>::from_fn(5, 3, |x, _| Px([x as u16 * 16000, 65535, 0]));
    sixteen.save(dir.join("b.png")).unwrap();

    let a = Rgb::load(&dir.join("a.png")).unwrap();
    assert_eq!((a.width, a.height), (5, 3));
    assert_eq!(a.data[3 * 3..3 * 3 + 3], [150.0 / 255.0, 0.0, 1.0]);
    let b = Rgb::load(&dir.join("b.png")).unwrap();
    assert_eq!(b.data[6..9], [32000.0 / 65535.0, 1.0, 0.0]);

    a.save_png(&dir.join("c.png")).unwrap();
    assert_eq!(Rgb::load(&dir.join("c.png")).unwrap(), a);
    assert_eq!(a.to_rgb8(), eight.into_raw());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn webp_loads_as_the_same_pixels_as_png() {
    let dir = temp_dir("webp");
    let stored = ImageBuffer::<Px<u8>, _>::from_fn(6, 4, |x, y| Px([x as u8 * 40, y as u8 * 60, 200]));
    stored.save(dir.join("a.png")).unwrap();
    stored.save(dir.join("a.webp")).unwrap();
    assert_eq!(Rgb::load(&dir.join("a.webp")).unwrap(), Rgb::load(&dir.join("a.png")).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_exif_orientation_turns_the_image_upright() {
    let stored = ImageBuffer::<Px<u8>, _>::from_fn(3, 2, |x, y| Px([x as u8 * 80, y as u8 * 200, 9]));
    // Exif: a big-endian TIFF header and one IFD entry, Orientation (0x0112) = 6 (a quarter
    // turn clockwise to view).
    let exif = b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0".to_vec();
    let mut png = vec![];
    let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
    image::ImageEncoder::set_exif_metadata(&mut encoder, exif).unwrap();
    image::ImageEncoder::write_image(encoder, stored.as_raw(), 3, 2, image::ExtendedColorType::Rgb8).unwrap();
    let upright = image::imageops::rotate90(&stored);
    let loaded = Rgb::decode(&png).unwrap();
    assert_eq!((loaded.width, loaded.height), (2, 3));
    assert_eq!(loaded.to_rgb8(), upright.into_raw());
}

#[test]
fn unreadable_files_name_the_file() {
    let dir = temp_dir("bad");
    let path = dir.join("broken.png");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let err = Rgb::load(&path).unwrap_err();
    assert!(matches!(err, Error::ReadImage { .. }));
    assert!(err.to_string().contains("broken.png"), "{err}");
    let missing = Rgb::load(&dir.join("missing.png")).unwrap_err();
    assert!(missing.to_string().contains("missing.png"), "{missing}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn quantize_refuses_depths_outside_1_to_16_bits() {
    let mut img = Rgb::filled(2, 2, [0.3; 3]);
    for bits in [0, 17, 32] {
        let err = img.quantize(bits).unwrap_err();
        assert!(err.to_string().contains(&format!("{bits} bits")), "{err}");
    }
    img.quantize(16).unwrap();
    assert_eq!(img.data[0], (0.3f32 * 65535.0).round() / 65535.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn quantizing_to_8_bits_equals_a_png_round_trip(
        values in proptest::collection::vec(-0.5f32..1.5, 12),
    ) {
        let img = Rgb::new(2, 2, values).unwrap();
        let mut rounded = img.clone();
        rounded.quantize(8).unwrap();
        prop_assert_eq!(&Rgb::decode(&img.encode_png().unwrap()).unwrap(), &rounded);
        let mut again = rounded.clone();
        again.quantize(8).unwrap();
        prop_assert_eq!(again, rounded);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Rgb::decode(&bytes);
    }

    #[test]
    fn decoding_corrupted_images_never_panics(
        format in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let img = ImageBuffer::<Px<u8>, _>::from_fn(9, 7, |x, y| Px([x as u8 * 20, y as u8 * 30, 7]));
        let mut bytes = Vec::new();
        let fmt = [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Pnm][format];
        img.write_to(&mut std::io::Cursor::new(&mut bytes), fmt).unwrap();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] ^= value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(decoded) = Rgb::decode(&bytes) {
            prop_assert!(decoded.validate().is_ok());
        }
    }
}
