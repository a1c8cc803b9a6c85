//! `maskdcpt`: restore images with MaskDCPT / NAFNet checkpoints, and inspect, convert,
//! export or benchmark the checkpoints.
//!
//! Exit codes: 0 on success, 1 on any error (one `maskdcpt: error: …` line on stderr),
//! 2 on a usage error (reported by clap).

mod args;
mod atomic;
mod bench;
mod build_engine;
mod classify;
mod convert;
mod error;
mod export_onnx;
mod image_io;
mod info;
mod model;
mod restore;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Restore(args) => restore::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        Command::ExportOnnx(args) => export_onnx::run(args),
        Command::BuildEngine(args) => build_engine::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
