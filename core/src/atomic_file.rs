//! All-or-nothing file output: the data goes to a hidden temporary file beside the target,
//! is synced, and is renamed over the target only when complete, so readers see the old file
//! or the whole new one. A failure removes the temporary file. Shared by the CLI, the trainer
//! and the CUDA kernel cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates (or replaces) `path` with what `write` puts into a fresh file. The file gets
/// ordinary permissions (0666 less the umask).
pub fn write_with(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{serial}.tmp", std::process::id()));
    let written = OpenOptions::new().write(true).create_new(true).open(&tmp).and_then(|mut file| {
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates (or replaces) `path` with `bytes`, all or nothing.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |file| file.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_nothing_behind_on_failure() {
        let dir = std::env::temp_dir().join(format!("maskdcpt-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.bin");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let failed = write_with(&path, |file| {
            file.write_all(b"partial")?;
            Err(io::Error::other("encoder failed"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "encoder failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
        assert!(write(&dir.join("missing/out.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
