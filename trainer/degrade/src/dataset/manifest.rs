//! The dataset manifest: one entry per (lq, gt) pair.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Class, Error, Record};

/// One sample of a written dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Degraded image, relative to the dataset folder (`lq/NAME.png`).
    pub lq: String,
    /// Clean image, relative to the dataset folder (`gt/NAME.png`).
    pub gt: String,
    /// The clean source file's name inside the clean-image folder.
    pub source: String,
    /// The sample seed ([`sample_seed`](crate::sample_seed)); [`make_pair`](crate::make_pair)
    /// with it on the source image reproduces the pair.
    pub seed: u64,
    /// Class, level and parameters.
    #[serde(flatten)]
    pub record: Record,
}

/// Reads a `manifest.json` written by [`write_dataset`](crate::write_dataset).
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, Error> {
    let fail = |reason: String| Error::Manifest { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
    for (i, entry) in entries.iter().enumerate() {
        let record = &entry.record;
        let class = Class::from_id(&record.class).map_err(|e| fail(format!("entry {i} ({}): {e}", entry.lq)))?;
        if class.index() != record.class_index {
            return Err(fail(format!(
                "entry {i} ({}): class `{}` has index {}, not {}",
                entry.lq,
                record.class,
                class.index(),
                record.class_index
            )));
        }
    }
    Ok(entries)
}
