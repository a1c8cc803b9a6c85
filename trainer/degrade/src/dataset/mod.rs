//! The paired-dataset writer: clean folder in, BasicSR-style `lq/` + `gt/` + manifest out.

mod manifest;
mod sample;
mod sources;

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use manifest::{ManifestEntry, read_manifest};
pub use sample::{Crop, make_pair, sample_seed};
pub use sources::image_files;

use crate::{Class, Error, Rgb, atomic};

/// What [`write_dataset`] produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Classes to synthesise (each at most once).
    pub classes: Vec<Class>,
    /// Samples per image and class.
    pub per_image: usize,
    /// Patch cut from each clean image before degrading; `None` keeps whole images.
    pub crop: Option<Crop>,
    /// Global seed; with the same inputs the output is identical.
    pub seed: u64,
    /// Which level each sample uses.
    pub levels: LevelChoice,
}

/// How [`write_dataset`] picks a sample's level.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LevelChoice {
    /// A uniformly random level per sample (training sets).
    #[default]
    Random,
    /// Each class's medium level ([`Class::medium_level`]), except the listed
    /// (class, level index) pairs (evaluation sets, e.g. JPEG quality 20).
    Medium(Vec<(Class, usize)>),
}

impl LevelChoice {
    /// The fixed level of `class`, or `None` for a random one.
    pub fn level_of(&self, class: Class) -> Option<usize> {
        match self {
            LevelChoice::Random => None,
            LevelChoice::Medium(overrides) => {
                Some(overrides.iter().find(|(c, _)| *c == class).map_or(class.medium_level(), |&(_, level)| level))
            }
        }
    }
}

impl Default for DatasetOptions {
    /// All 19 classes, one sample each, whole images, seed 0, random levels.
    fn default() -> Self {
        Self { classes: Class::ALL.to_vec(), per_image: 1, crop: None, seed: 0, levels: LevelChoice::Random }
    }
}

/// What [`write_dataset`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Clean images read.
    pub images: usize,
    /// Pairs written.
    pub samples: usize,
    /// The manifest file.
    pub manifest: PathBuf,
}

/// Reads every PNG/JPEG/TIFF/PPM directly in `clean_dir` (sorted by name) and writes, for each
/// image, selected class and `k < per_image`, the pair `out_dir/lq/{stem}_{class}_{k}.png` and
/// `out_dir/gt/{stem}_{class}_{k}.png`, then `out_dir/manifest.json` (a list of
/// [`ManifestEntry`]). Samples run in parallel; each draws only from its own seed
/// ([`sample_seed`]), so the output does not depend on scheduling. Every file is written
/// atomically. Files of earlier runs with other names are left alone. On error the first
/// failing image (in name order) is reported; pairs already finished stay on disk.
pub fn write_dataset(clean_dir: &Path, out_dir: &Path, opts: &DatasetOptions) -> Result<Summary, Error> {
    validate(opts)?;
    let sources = sources::list(clean_dir)?;
    for sub in ["lq", "gt"] {
        let dir = out_dir.join(sub);
        fs::create_dir_all(&dir).map_err(|source| Error::Write { path: dir, source })?;
    }
    let per_image: Vec<Result<Vec<ManifestEntry>, Error>> =
        sources.par_iter().enumerate().map(|(index, path)| write_image(index, path, out_dir, opts)).collect();
    let mut entries = Vec::new();
    for result in per_image {
        entries.extend(result?);
    }
    let manifest = out_dir.join("manifest.json");
    let json =
        serde_json::to_vec_pretty(&entries).map_err(|e| Error::Write { path: manifest.clone(), source: e.into() })?;
    atomic::write(&manifest, &json)?;
    Ok(Summary { images: sources.len(), samples: entries.len(), manifest })
}

fn validate(opts: &DatasetOptions) -> Result<(), Error> {
    if opts.classes.is_empty() {
        return Err(Error::Options("no classes selected; select at least one class".into()));
    }
    if opts.per_image == 0 {
        return Err(Error::Options("per_image is 0; ask for at least one sample per image".into()));
    }
    if opts.crop.is_some_and(|c| c.size() == 0) {
        return Err(Error::Options("the crop size is 0; use a positive crop size or no crop".into()));
    }
    for (i, class) in opts.classes.iter().enumerate() {
        if opts.classes[..i].contains(class) {
            return Err(Error::Options(format!("class {class} is selected twice; list each class once")));
        }
    }
    Ok(())
}

/// All samples of one clean image, in (class, k) order.
fn write_image(index: usize, path: &Path, out_dir: &Path, opts: &DatasetOptions) -> Result<Vec<ManifestEntry>, Error> {
    let clean = Rgb::load(path)?;
    if let Some(crop) = opts.crop
        && (clean.width < crop.size() || clean.height < crop.size())
    {
        return Err(Error::ImageTooSmall {
            path: path.to_path_buf(),
            width: clean.width,
            height: clean.height,
            crop: crop.size(),
        });
    }
    let stem = sources::stem(path);
    let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let jobs: Vec<(Class, usize)> =
        opts.classes.iter().flat_map(|&class| (0..opts.per_image).map(move |k| (class, k))).collect();
    let results: Vec<Result<ManifestEntry, Error>> = jobs
        .par_iter()
        .map(|&(class, k)| {
            let seed = sample_seed(opts.seed, index, class, k);
            let (gt, lq, record) = make_pair(&clean, class, opts.crop, opts.levels.level_of(class), seed)?;
            let name = format!("{stem}_{class}_{k}.png");
            lq.save_png(&out_dir.join("lq").join(&name))?;
            gt.save_png(&out_dir.join("gt").join(&name))?;
            Ok(ManifestEntry {
                lq: format!("lq/{name}"),
                gt: format!("gt/{name}"),
                source: source.clone(),
                seed,
                record,
            })
        })
        .collect();
    results.into_iter().collect()
}
