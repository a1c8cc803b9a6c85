//! `trainer`: MaskDCPT pre-training, all-in-one fine-tuning, evaluation, export and
//! degradation synthesis. Argument parsing and printing only; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use maskdcpt_trainer::checkpoint;
use maskdcpt_trainer::config::Config;
use maskdcpt_trainer::eval;
use maskdcpt_trainer::export::{self, ExportDtype, ExportOptions, Format};
use maskdcpt_trainer::spectrum_fit::{self, FitOptions};
use maskdcpt_trainer::train::{Phase, Trainer, parse_device};

#[derive(Parser)]
#[command(name = "trainer", version, about = "MaskDCPT pre-training and fine-tuning on libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Masked degradation-classification pre-training.
    Pretrain(RunArgs),
    /// All-in-one fine-tuning (from `--init`, e.g. a pre-training checkpoint).
    Finetune(RunArgs),
    /// PSNR/SSIM (and classifier top-1) of a model on paired folders.
    Eval {
        /// Trainer checkpoint, or an exported / official `.safetensors` / `.pth`.
        #[arg(long)]
        model: PathBuf,
        /// Paired folders (`lq/`, `gt/`, optional `manifest.json`).
        #[arg(long, required = true, num_args = 1..)]
        data: Vec<PathBuf>,
        /// `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Writes a checkpoint's model as safetensors or BasicSR `.pth`.
    Export {
        /// Trainer checkpoint (`ckpt-*.safetensors`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: Format,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Include the classification head under `classifier.` (safetensors only).
        #[arg(long)]
        with_classifier: bool,
        /// Precision of safetensors output.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: ExportDtype,
    },
    /// Times training steps on random batches (no data loading); prints one JSON line.
    Bench {
        /// TOML config (model, batch, crop, device, amp).
        #[arg(long)]
        config: PathBuf,
        /// Which step to time.
        #[arg(long, value_enum, default_value = "finetune")]
        phase: PhaseArg,
        /// Timed steps.
        #[arg(long, default_value_t = 100)]
        steps: u64,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
    },
    /// Writes a paired data set (lq/, gt/, manifest.json) from a folder of clean images.
    Degrade(DegradeArgs),
    /// Prints a config as runs read it: its `extends` chain merged, relative paths resolved,
    /// defaults filled in.
    ShowConfig {
        /// TOML config.
        config: PathBuf,
    },
    /// Fits the spectral branch of a model's classification head alone (network and head
    /// frozen, their outputs cached once) and writes the model with it as safetensors.
    FitSpectrum(FitArgs),
}

#[derive(Args)]
struct FitArgs {
    /// TOML config: [model] and [classifier] (spectrum = true) of the model, [data] to sample,
    /// [train] seed/device/threads/focal_gamma, [optim_classifier] and [schedule].
    #[arg(long)]
    config: PathBuf,
    /// Model with a classification head (its own spectral branch, if any, is replaced).
    #[arg(long)]
    model: PathBuf,
    /// Output safetensors file.
    #[arg(short, long)]
    output: PathBuf,
    /// Batches of [data] to cache.
    #[arg(long, default_value_t = 200)]
    batches: u64,
    /// Passes over the cached samples.
    #[arg(long, default_value_t = 40)]
    epochs: usize,
    /// Samples per optimiser step.
    #[arg(long, default_value_t = 256)]
    minibatch: i64,
    /// Fraction of the cached samples held out for the reported accuracy.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Start from a fresh branch (standardised on the sample) even when the model has one.
    #[arg(long)]
    fresh: bool,
    /// Comma-separated class ids whose logits the branch moves (e.g.
    /// motion_blur,defocus_blur,gaussian_blur); the other rows of its output are zero.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Keep the model's branch and train a specialist of 64 units beside it, written with it as
    /// one wider branch (use with --classes).
    #[arg(long)]
    add: bool,
    /// Keep the cached sample in this file: read when it exists, written otherwise.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Precision of the output.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: ExportDtype,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `--phase` of `trainer bench`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PhaseArg {
    Pretrain,
    Finetune,
}

#[derive(Args)]
struct RunArgs {
    /// TOML config (see trainer/configs/).
    #[arg(long)]
    config: PathBuf,
    /// Weights to start from (fine-tuning): a trainer checkpoint or a model file.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue from the newest checkpoint in the run folder.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps (a later `--resume` continues).
    #[arg(long)]
    max_steps: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct DegradeArgs {
    /// Folder of clean images.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output folder.
    #[arg(long = "out")]
    output: PathBuf,
    /// Class ids (default: all 19).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Samples per image and class.
    #[arg(long, default_value_t = 1)]
    per_image: usize,
    /// Centre crop of this size before degrading (default: whole image).
    #[arg(long)]
    crop: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `random` (a random level per sample) or `medium` (each class's medium level: evaluation sets).
    #[arg(long, default_value = "random")]
    level: String,
    /// With `--level medium`: use this level for a class instead, as `CLASS=DESCRIPTION` with the
    /// description from trainer/degrade/LEVELS.md, e.g. `--at "jpeg=jpeg quality=20"`.
    #[arg(long)]
    at: Vec<String>,
}

fn run(phase: Phase, args: &RunArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let mut trainer = match (args.resume, Trainer::latest_checkpoint(&config)?) {
        (true, Some(path)) => {
            eprintln!("resuming from {}", path.display());
            Trainer::resume(config, phase, &path)?
        }
        (true, None) => {
            eprintln!("no checkpoint in {}: starting a new run", config.output.dir.display());
            Trainer::new(config, phase, args.init.as_deref())?
        }
        (false, _) => Trainer::new(config, phase, args.init.as_deref())?,
    };
    trainer.run(args.max_steps, !args.quiet)?;
    eprintln!("{} stopped at step {}", phase.name(), trainer.step());
    Ok(())
}

fn degrade(args: &DegradeArgs) -> Result<()> {
    let classes = if args.classes.is_empty() {
        maskdcpt_degrade::Class::ALL.to_vec()
    } else {
        args.classes.iter().map(|id| maskdcpt_degrade::Class::from_id(id)).collect::<Result<Vec<_>, _>>()?
    };
    let overrides = args
        .at
        .iter()
        .map(|pick| {
            let (class, description) =
                pick.split_once('=').with_context(|| format!("--at {pick:?}: expected CLASS=DESCRIPTION"))?;
            let class = maskdcpt_degrade::Class::from_id(class)?;
            Ok((class, class.level_index(description)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let levels = match (args.level.as_str(), overrides.is_empty()) {
        ("random", true) => maskdcpt_degrade::LevelChoice::Random,
        ("medium", _) => maskdcpt_degrade::LevelChoice::Medium(overrides),
        ("random", false) => anyhow::bail!("--at needs --level medium"),
        (other, _) => anyhow::bail!("--level {other}: use random or medium"),
    };
    let options = maskdcpt_degrade::DatasetOptions {
        classes,
        per_image: args.per_image,
        crop: args.crop.map(maskdcpt_degrade::Crop::Center),
        seed: args.seed,
        levels,
    };
    let summary = maskdcpt_degrade::write_dataset(&args.input, &args.output, &options)?;
    eprintln!("{} pairs from {} images; manifest {}", summary.samples, summary.images, summary.manifest.display());
    Ok(())
}

fn fit_spectrum(args: &FitArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let options = FitOptions {
        batches: args.batches,
        epochs: args.epochs,
        minibatch: args.minibatch,
        validation: args.validation,
        fresh: args.fresh,
        classes: args
            .classes
            .iter()
            .map(|id| Ok(maskdcpt_degrade::Class::from_id(id)?.index() as i64))
            .collect::<Result<_>>()?,
        add: args.add,
        cache: args.cache.clone(),
    };
    let (named, report) = spectrum_fit::fit_spectrum(&config, &args.model, &options, !args.quiet)?;
    for row in &report.epochs {
        println!("epoch {:>3}  loss {:.4}  validation top-1 {:.1}%", row.epoch, row.loss, 100.0 * row.validation_top1);
    }
    let fitted = report.epochs.last().map_or(f64::NAN, |r| r.validation_top1);
    println!(
        "validation top-1 over {} samples ({} trained on): head alone {:.1}%, as loaded {:.1}%, fitted {:.1}%",
        report.validation_samples,
        report.train_samples,
        100.0 * report.head_alone_top1,
        100.0 * report.loaded_top1,
        100.0 * fitted
    );
    let bytes = export::model_safetensors(&named, Some(config.head_features()), args.dtype)?;
    checkpoint::write_atomically(&args.output, &bytes)?;
    args.json.as_deref().map_or(Ok(()), |path| write_json(path, &report))
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn main_result() -> Result<()> {
    match Cli::parse().command {
        Command::Pretrain(args) => run(Phase::Pretrain, &args),
        Command::Finetune(args) => run(Phase::Finetune, &args),
        Command::Eval { model, data, device, json } => {
            let device = parse_device(&device)?;
            let net = eval::load_model(&model, device)?;
            let report = eval::evaluate(&net, &data, device)?;
            print!("{}", report.table());
            json.as_deref().map_or(Ok(()), |path| write_json(path, &report))
        }
        Command::Export { checkpoint, format, output, with_classifier, dtype } => {
            export::export(&checkpoint, &output, &ExportOptions { format, with_classifier, dtype })
        }
        Command::Bench { config, phase, steps, warmup } => {
            let phase = match phase {
                PhaseArg::Pretrain => Phase::Pretrain,
                PhaseArg::Finetune => Phase::Finetune,
            };
            let mut trainer = Trainer::new(Config::load(&config)?, phase, None)?;
            println!("{}", serde_json::to_string(&trainer.bench(warmup, steps)?)?);
            Ok(())
        }
        Command::Degrade(args) => degrade(&args),
        Command::ShowConfig { config } => {
            print!("{}", Config::load(&config)?.to_toml());
            Ok(())
        }
        Command::FitSpectrum(args) => fit_spectrum(&args),
    }
}

fn main() -> ExitCode {
    match main_result() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
