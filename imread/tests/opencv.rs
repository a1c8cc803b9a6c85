//! Decoding against OpenCV's `imread` (tests/images/, written by
//! scripts/gen_image_fixtures.py). Mutated files of every format, these among them, are fuzzed
//! through the command's reader (`cli/src/image_io.rs`, `mutated_files_never_panic`).

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use maskdcpt_imread::decode;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images")
}

/// The lossy files of the decoding fixtures (`jpeg_*`, `webp_*`) and their bytes, by name.
fn lossy_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("jpeg_") || n.to_string_lossy().starts_with("webp_"))
        })
        .filter(|path| path.extension().is_some_and(|e| e == "jpg" || e == "webp"))
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    files.sort();
    files
}

fn rgb8(pixels: DynamicImage) -> Vec<u8> {
    pixels.into_rgb8().into_raw()
}

#[test]
fn lossy_files_decode_to_the_pixels_of_opencv_imread() {
    let files = lossy_files();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".jpg")).count(), 5, "{names:?}");
    assert_eq!(names.len(), 7, "{names:?}");
    for (name, bytes) in &files {
        let stem = name.rsplit_once('.').unwrap().0;
        let expected = decode(&std::fs::read(fixtures().join(format!("{stem}_decoded.png"))).unwrap(), None).unwrap();
        let decoded = decode(bytes, None).unwrap();
        assert_eq!(decoded.pixels.color().has_alpha(), stem.ends_with("alpha"), "{name}");
        assert_eq!(rgb8(decoded.pixels), rgb8(expected.pixels), "{name}");
    }
}

#[test]
fn unknown_content_takes_the_hint_and_fails_as_that_format() {
    let garbage = b"not an image at all";
    assert!(decode(garbage, None).is_err());
    let err = decode(garbage, Some(ImageFormat::Jpeg)).unwrap_err().to_string();
    assert!(err.contains("Jpeg") || err.contains("JPEG") || err.contains("jpeg"), "{err}");
}
