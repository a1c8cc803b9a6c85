//! The dataset writer on small temporary folders.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use maskdcpt_degrade::{
    Class, Crop, DatasetOptions, Error, LevelChoice, Rgb, make_pair, read_manifest, sample_seed, write_dataset,
};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maskdcpt-degrade-dataset-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A clean folder with two small PNGs and a file that is not an image.
fn clean_folder(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    common::textured(40, 36).save_png(&dir.join("b.png")).unwrap();
    let mut inverted = common::textured(36, 40);
    inverted.data.iter_mut().for_each(|v| *v = 1.0 - *v);
    inverted.save_png(&dir.join("a.png")).unwrap();
    fs::write(dir.join("notes.txt"), "not an image").unwrap();
    dir
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = ["lq", "gt"]
        .iter()
        .flat_map(|sub| names(&dir.join(sub)).into_iter().map(move |n| format!("{sub}/{n}")))
        .chain(["manifest.json".to_string()])
        .map(|rel| (rel.clone(), fs::read(dir.join(&rel)).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn writes_pairs_and_manifest_deterministically() {
    let clean = clean_folder("ok");
    let out_a = temp_dir("out-a");
    let out_b = temp_dir("out-b");
    let opts = DatasetOptions { per_image: 2, crop: Some(Crop::Random(32)), seed: 42, ..DatasetOptions::default() };
    let summary = write_dataset(&clean, &out_a, &opts).unwrap();
    assert_eq!((summary.images, summary.samples), (2, 2 * 19 * 2));

    let (lq, gt) = (names(&out_a.join("lq")), names(&out_a.join("gt")));
    assert_eq!(lq.len(), 76);
    assert_eq!(lq, gt, "lq and gt names match");
    assert!(lq.contains("a_noise_0.png") && lq.contains("b_downsample_noise_blur_jpeg_1.png"));

    let manifest = read_manifest(&summary.manifest).unwrap();
    assert_eq!(manifest.len(), 76);
    assert_eq!(manifest[0].source, "a.png");
    assert_eq!(manifest[0].lq, "lq/a_noise_0.png");
    assert_eq!(manifest[0].gt, "gt/a_noise_0.png");
    assert_eq!(manifest[0].seed, sample_seed(42, 0, Class::Noise, 0));
    for entry in &manifest {
        let class = Class::from_id(&entry.record.class).unwrap();
        assert_eq!(class.index(), entry.record.class_index);
        assert!(entry.record.level < class.level_count());
        let lq = Rgb::load(&out_a.join(&entry.lq)).unwrap();
        assert_eq!((lq.width, lq.height), (32, 32));
        assert!(!entry.record.params.is_empty());
    }

    // The manifest's seed reproduces the pair from the source image.
    let entry = &manifest[manifest.len() - 1];
    let source = Rgb::load(&clean.join(&entry.source)).unwrap();
    let (gt, lq, record) =
        make_pair(&source, Class::from_id(&entry.record.class).unwrap(), opts.crop, None, entry.seed).unwrap();
    assert_eq!(record, entry.record);
    assert_eq!(lq.encode_png().unwrap(), fs::read(out_a.join(&entry.lq)).unwrap());
    assert_eq!(gt.encode_png().unwrap(), fs::read(out_a.join(&entry.gt)).unwrap());

    write_dataset(&clean, &out_b, &opts).unwrap();
    assert!(contents(&out_a) == contents(&out_b), "two runs differ");
    let other = temp_dir("out-c");
    write_dataset(&clean, &other, &DatasetOptions { seed: 43, ..opts.clone() }).unwrap();
    assert!(contents(&out_a) != contents(&other), "the seed changes the output");

    for dir in [clean, out_a, out_b, other] {
        fs::remove_dir_all(dir).unwrap();
    }
}

/// A manifest whose labels do not name the built-in classes is refused when read (training and
/// evaluation index class tables with them), naming the entry.
#[test]
fn manifests_with_unknown_or_inconsistent_classes_are_refused() {
    let clean = clean_folder("labels");
    let out = temp_dir("labels-out");
    let opts = DatasetOptions { per_image: 1, crop: Some(Crop::Random(32)), seed: 7, ..DatasetOptions::default() };
    let summary = write_dataset(&clean, &out, &opts).unwrap();
    let text = fs::read_to_string(&summary.manifest).unwrap();
    let first_index = format!("\"class_index\": {}", Class::Noise.index());
    assert!(text.contains(&first_index), "{}", &text[..200]);
    for (from, to, expected) in [
        (first_index.as_str(), "\"class_index\": 99", "index 0, not 99"),
        ("\"class\": \"noise\"", "\"class\": \"sunburn\"", "sunburn"),
    ] {
        fs::write(&summary.manifest, text.replacen(from, to, 1)).unwrap();
        let err = read_manifest(&summary.manifest).unwrap_err().to_string();
        assert!(err.contains("entry 0") && err.contains(expected), "{err}");
    }
    for dir in [clean, out] {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn selected_classes_and_centre_crop() {
    let clean = clean_folder("subset");
    let out = temp_dir("subset-out");
    let opts = DatasetOptions {
        classes: vec![Class::Haze, Class::Jpeg],
        per_image: 1,
        crop: Some(Crop::Center(24)),
        seed: 1,
        ..DatasetOptions::default()
    };
    let summary = write_dataset(&clean, &out, &opts).unwrap();
    assert_eq!(summary.samples, 4);
    assert_eq!(
        names(&out.join("gt")),
        ["a_haze_0.png", "a_jpeg_0.png", "b_haze_0.png", "b_jpeg_0.png"].map(String::from).into()
    );
    let gt = Rgb::load(&out.join("gt/b_jpeg_0.png")).unwrap();
    let full = Rgb::load(&clean.join("b.png")).unwrap();
    assert_eq!(gt.data[..3], full.data[(6 * 40 + 8) * 3..(6 * 40 + 8) * 3 + 3], "centre crop starts at (8, 6)");
    fs::remove_dir_all(clean).unwrap();
    fs::remove_dir_all(out).unwrap();
}

#[test]
fn empty_missing_and_unreadable_inputs_are_named_errors() {
    let out = temp_dir("errors-out");
    let opts = DatasetOptions::default();

    let empty = temp_dir("empty");
    fs::write(empty.join("readme.txt"), "no images").unwrap();
    let err = write_dataset(&empty, &out, &opts).unwrap_err();
    assert!(matches!(err, Error::EmptyFolder { .. }), "{err}");
    assert!(err.to_string().contains(&empty.display().to_string()), "{err}");

    let missing = empty.join("nope");
    let err = write_dataset(&missing, &out, &opts).unwrap_err();
    assert!(matches!(err, Error::ListFolder { .. }) && err.to_string().contains("nope"), "{err}");

    let bad = clean_folder("bad");
    fs::write(bad.join("c.jpg"), b"\xff\xd8\xff garbage").unwrap();
    let err = write_dataset(&bad, &out, &opts).unwrap_err();
    assert!(matches!(err, Error::ReadImage { .. }) && err.to_string().contains("c.jpg"), "{err}");

    let small = clean_folder("small");
    let err =
        write_dataset(&small, &out, &DatasetOptions { crop: Some(Crop::Random(64)), ..opts.clone() }).unwrap_err();
    assert!(matches!(err, Error::ImageTooSmall { crop: 64, .. }) && err.to_string().contains("a.png"), "{err}");

    let twins = clean_folder("twins");
    fs::copy(twins.join("a.png"), twins.join("a.tiff")).unwrap();
    let err = write_dataset(&twins, &out, &opts).unwrap_err();
    assert!(matches!(err, Error::DuplicateStem { .. }), "{err}");

    for bad_opts in [
        DatasetOptions { classes: vec![], ..opts.clone() },
        DatasetOptions { per_image: 0, ..opts.clone() },
        DatasetOptions { classes: vec![Class::Snow, Class::Snow], ..opts.clone() },
        DatasetOptions { crop: Some(Crop::Center(0)), ..opts.clone() },
    ] {
        assert!(matches!(write_dataset(&small, &out, &bad_opts), Err(Error::Options(_))));
    }
    for dir in [out, empty, bad, small, twins] {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn evaluation_sets_use_the_medium_level_or_the_chosen_one() {
    let dir = temp_dir("levels");
    let clean = dir.join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    Rgb::filled(40, 40, [0.3, 0.5, 0.7]).save_png(&clean.join("flat.png")).unwrap();
    let q20 = Class::Jpeg.level_index("jpeg quality=20").unwrap();
    let opts = DatasetOptions {
        classes: vec![Class::Noise, Class::Jpeg],
        per_image: 3,
        levels: LevelChoice::Medium(vec![(Class::Jpeg, q20)]),
        ..DatasetOptions::default()
    };
    let out = dir.join("out");
    let summary = write_dataset(&clean, &out, &opts).unwrap();
    for entry in read_manifest(&summary.manifest).unwrap() {
        let class = Class::from_id(&entry.record.class).unwrap();
        let expected = if class == Class::Jpeg { q20 } else { class.medium_level() };
        assert_eq!(entry.record.level, expected, "{}", entry.lq);
    }
}
