//! The CLI's error type: every failure renders as one line that names the file involved.

use std::path::{Path, PathBuf};

/// Convenience alias for CLI results.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// What went wrong while running a sub-command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An error reported by the core library (its message already names what failed).
    #[error(transparent)]
    Core(#[from] maskdcpt_core::Error),

    /// A problem with a specific file: unreadable, undecodable, wrong layout, not writable.
    #[error("{}: {message}", path.display())]
    File {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// Arguments that are valid on their own but not together, or not for these files.
    #[error("{0}")]
    Invalid(String),

    /// Some files of a folder could not be restored (each was reported as it failed).
    #[error("{} of {total} files failed: {}", failed.len(), failed.join(", "))]
    Batch {
        /// Names of the files that failed.
        failed: Vec<String>,
        /// Number of files attempted.
        total: usize,
    },
}

impl CliError {
    /// A [`CliError::File`] for `path` with any displayable cause.
    pub fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        CliError::File { path: path.to_path_buf(), message: message.to_string() }
    }
}

/// The stderr line for `err`: `maskdcpt: error: <message>`, forced onto one line.
pub fn error_line(err: &CliError) -> String {
    format!("maskdcpt: error: {}", one_line(&err.to_string()))
}

/// The stderr line for a warning: `maskdcpt: warning: <message>`, forced onto one line.
pub fn warning_line(message: &str) -> String {
    format!("maskdcpt: warning: {}", one_line(message))
}

/// Joins the non-blank lines of `text` with `; `.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
