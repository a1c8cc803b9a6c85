//! Atomic file writes: write a hidden temporary file in the same folder, then rename it.

use std::fs;
use std::path::Path;

use crate::Error;

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)).map_err(|source| {
        // Best effort: the temporary file may not exist if the write itself failed.
        let _ = fs::remove_file(&tmp);
        Error::Write { path: path.to_path_buf(), source }
    })
}
