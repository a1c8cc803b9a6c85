//! All-or-nothing file output: data goes to a temporary file next to the target, which is
//! renamed over the target only once it is complete. A failure leaves no partial file behind
//! (the temporary file is removed when dropped).

use std::io::Write;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::error::{CliError, Result};

/// Creates `path` by running `write` on a fresh temporary file in the same folder, then
/// renaming it to `path` (replacing any existing file).
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut NamedTempFile) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::file(path, format!("folder {} does not exist", dir.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        // Ordinary file permissions (subject to the umask) instead of tempfile's private 0600.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| CliError::file(path, format!("cannot create a file in {}: {}", dir.display(), e.kind())))?;
    write(&mut tmp)?;
    tmp.flush().and_then(|()| tmp.as_file().sync_all()).map_err(|e| CliError::file(path, e))?;
    tmp.persist(path).map_err(|e| CliError::file(path, e.error))?;
    Ok(())
}

/// Whether `a` and `b` name the same existing file (or folder).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
