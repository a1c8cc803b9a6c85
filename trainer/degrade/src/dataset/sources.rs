//! Finding the clean images: supported extensions, sorted by name, unique stems.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// File extensions read as clean images (compared case-insensitively).
const EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "tif", "tiff", "ppm", "webp"];

/// The image files (PNG, JPEG, TIFF, PPM, WebP) directly inside `dir`, sorted by file name; an
/// error when the folder cannot be listed or holds none.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let list_error = |source| Error::ListFolder { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if path.is_file() && EXTENSIONS.contains(&ext.as_str()) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::EmptyFolder { path: dir.to_path_buf() });
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The clean images of `dir` ([`image_files`]), refusing two with the same stem (their
/// samples would share output names).
pub(super) fn list(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let files = image_files(dir)?;
    let mut seen: HashMap<String, &PathBuf> = HashMap::new();
    for path in &files {
        if let Some(first) = seen.insert(stem(path), path) {
            return Err(Error::DuplicateStem { first: first.clone(), second: path.clone() });
        }
    }
    Ok(files)
}

/// The file stem used in output names.
pub(super) fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
