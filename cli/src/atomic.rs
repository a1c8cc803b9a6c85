//! All-or-nothing file output for the commands (core's `atomic_file`), with errors that
//! name the file.

use std::fs::File;
use std::path::Path;

use crate::error::{CliError, Result};

/// Creates `path` from what `write` puts into a fresh file, replacing any existing file only
/// once the new one is complete.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::file(path, format!("folder {} does not exist", dir.display())));
    }
    maskdcpt_core::atomic_file::write_with(path, write).map_err(|e| CliError::file(path, e))
}

/// Whether `a` and `b` name the same existing file (or folder).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
