//! `maskdcpt restore`: one file to one file, or every file of a folder into another folder.
//!
//! Folder mode takes every regular, non-hidden file of the input folder (not recursing), in
//! name order. A file that cannot be restored (unsupported type, undecodable, bad values) is
//! reported on stderr as it fails and the rest go on; the command then exits non-zero,
//! listing the failures. Outputs keep their input's file name, hence its format.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use maskdcpt_core::backend::{Engine, build_engine};

use crate::args::RestoreArgs;
use crate::atomic::same_file;
use crate::error::{CliError, Result, error_line, warning_line};
use crate::image_io::{self, FileKind, Loaded};

/// Runs `restore` in file or folder mode depending on what `args.input` is.
pub fn run(args: &RestoreArgs) -> Result<()> {
    if args.input.is_dir() { run_folder(args) } else { run_file(args) }
}

fn run_file(args: &RestoreArgs) -> Result<()> {
    if args.output.is_dir() {
        return Err(CliError::file(&args.output, "is a folder: give an output file name, since INPUT is a file"));
    }
    FileKind::from_path(&args.output)?; // an unknown extension fails before the work
    if same_file(&args.input, &args.output) {
        return Err(CliError::file(&args.output, "refusing to overwrite the input"));
    }
    // Read the input before the (slower) model load, so a bad input fails fast.
    let warn = |msg: String| eprintln!("{}", warning_line(&msg));
    let loaded = read_input(&args.input, warn)?;
    let engine = engine(args)?;
    restore_to(engine.as_ref(), &args.input, &loaded, &args.output, warn)
}

fn run_folder(args: &RestoreArgs) -> Result<()> {
    if args.output.exists() && !args.output.is_dir() {
        return Err(CliError::file(&args.output, "is not a folder, but INPUT is a folder"));
    }
    if same_file(&args.input, &args.output) {
        return Err(CliError::file(&args.output, "is the input folder: outputs would overwrite the inputs"));
    }
    let inputs = list_inputs(&args.input)?;
    if inputs.is_empty() {
        return Err(CliError::file(&args.input, "the folder holds no file to restore"));
    }
    std::fs::create_dir_all(&args.output).map_err(|e| CliError::file(&args.output, e))?;
    let engine = engine(args)?;

    let bar = ProgressBar::new(inputs.len() as u64).with_style(
        ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut failed = Vec::new();
    for input in &inputs {
        let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        bar.set_message(name.clone());
        let warn = |msg: String| bar.suspend(|| eprintln!("{}", warning_line(&msg)));
        let output = args.output.join(&name);
        let result =
            read_input(input, warn).and_then(|loaded| restore_to(engine.as_ref(), input, &loaded, &output, warn));
        if let Err(e) = result {
            bar.suspend(|| eprintln!("{}", error_line(&e)));
            failed.push(name);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failed.is_empty() { Ok(()) } else { Err(CliError::Batch { failed, total: inputs.len() }) }
}

/// Regular, non-hidden files of `dir`, sorted by name; sub-folders are reported and skipped.
fn list_inputs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::file(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| CliError::file(dir, e))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            eprintln!(
                "{}",
                warning_line(&format!("{}: sub-folder skipped (folders are not recursed)", path.display()))
            );
        } else {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `path`, passing a warning to `warn` if its alpha channel was dropped.
fn read_input(path: &Path, warn: impl Fn(String)) -> Result<Loaded> {
    let loaded = image_io::read(path)?;
    if loaded.dropped_alpha {
        warn(format!("{}: alpha channel dropped (the network restores RGB only)", path.display()));
    }
    Ok(loaded)
}

/// Restores `loaded` (read from `input`) into `output` (format from its extension), passing
/// `warn` a line for each block of the input's metadata that the output's format cannot hold.
fn restore_to(engine: &dyn Engine, input: &Path, loaded: &Loaded, output: &Path, warn: impl Fn(String)) -> Result<()> {
    let restored = engine.restore(&loaded.image).map_err(|e| CliError::file(input, e))?;
    for what in image_io::write(output, &restored, loaded.depth, &loaded.metadata)? {
        let msg = "is not written: the output format has no place for it (.png keeps it)";
        warn(format!("{}: the input's {what} {msg}", output.display()));
    }
    Ok(())
}

/// Loads the model and builds the engine for `args`.
fn engine(args: &RestoreArgs) -> Result<Box<dyn Engine>> {
    let model = crate::model::load_or_default(args.model.as_deref(), args.param_key.as_deref())?;
    Ok(build_engine(&model, &args.engine.to_options()?)?)
}
