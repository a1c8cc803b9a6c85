//! Loading a checkpoint as a validated model, with errors that name the file.

use std::path::Path;

use maskdcpt_core::Error;
use maskdcpt_core::model::Model;
use maskdcpt_core::weights::LoadOptions;

use crate::error::{CliError, Result};

/// Loads the checkpoint at `path` (using `param_key` when given), or the embedded default
/// model when no path is given.
pub fn load_or_default(path: Option<&Path>, param_key: Option<&str>) -> Result<Model> {
    match path {
        Some(path) => load(path, param_key),
        None => Ok(Model::load_default()?),
    }
}

/// Loads and validates the checkpoint at `path`, using `param_key` when given.
pub fn load(path: &Path, param_key: Option<&str>) -> Result<Model> {
    let options = LoadOptions { param_key: param_key.map(str::to_owned) };
    Model::load(path, &options).map_err(|e| match e {
        // These already start with the path.
        Error::Io { .. } | Error::CorruptWeights { .. } => CliError::Core(e),
        other => CliError::file(path, other),
    })
}

/// How a model argument is shown in output: its path, or "(default model)".
pub fn describe(path: Option<&Path>) -> String {
    path.map_or_else(|| "(default model)".to_string(), |p| p.display().to_string())
}
