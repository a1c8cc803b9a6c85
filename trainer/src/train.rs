//! The training loop shared by pre-training and fine-tuning.
//!
//! Pre-training: masked LQ in, `ending(features)` compared with the clean image by L1 (no
//! input residual), decoder features into the classification head, focal loss on the class.
//! Fine-tuning: the plain restoration forward (`+ input`), L1, and the head's loss when the
//! config keeps one. One backward over the weighted sum; each network has its own AdamW,
//! gradient clip and EMA. Everything random derives from (seed, step), and checkpoints hold
//! every tensor and counter, so `--resume` continues bit-for-bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{self, CheckpointData};
use crate::config::{Amp, Config};
use crate::data::{Batch, Loader, TrainData};
use crate::log::MetricsLog;
use crate::loss;
use crate::model::mask::PatchMask;
use crate::net::{CLASSIFIER_PREFIX, HeadLoad, MaskDcptNet};
use crate::optim::{self, AdamW, LossScaler};
use crate::params::ParamSet;

/// Serialises use of torch's global random generator (seeding plus weight initialisation).
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Which objective a run optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Masked degradation classification + reconstruction.
    Pretrain,
    /// Supervised all-in-one restoration.
    Finetune,
}

impl Phase {
    /// Name stored in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Finetune => "finetune",
        }
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`, checking CUDA is usable.
pub fn parse_device(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(index) => Device::Cuda(index),
            None => bail!("unknown device `{other}`: use cpu, cuda or cuda:N"),
        },
    };
    if device.is_cuda() && !tch::Cuda::is_available() {
        bail!(
            "device `{name}` requested but CUDA is not available to libtorch: build the trainer with \
             `--features cuda` against a CUDA libtorch and run it on a host with an NVIDIA driver"
        );
    }
    Ok(device)
}

/// Per-network optimiser state.
struct Optimised {
    ema: Tensor,
    adamw: AdamW,
}

/// Batches whose inputs set a fresh spectral branch's standardisation.
const SPECTRUM_CALIBRATION_BATCHES: u64 = 8;

/// A run in progress.
pub struct Trainer {
    config: Config,
    phase: Phase,
    device: Device,
    net: MaskDcptNet,
    state: Vec<Optimised>,
    scaler: LossScaler,
    step: u64,
    /// The head's spectral branch is fresh (not from `init`): calibrate it before step 1.
    calibrate_spectrum: bool,
}

/// What `trainer bench` measured: [`Trainer::train_step`] on one random batch kept on the
/// device (no data loading), after warm-up steps.
#[derive(Debug, serde::Serialize)]
pub struct BenchResult {
    /// `pretrain` or `finetune`.
    pub phase: &'static str,
    /// Device name from the config.
    pub device: String,
    /// Whether FP16 autocast was on.
    pub amp_fp16: bool,
    /// Images per batch and crop side.
    pub batch: i64,
    /// Crop side in pixels.
    pub crop: i64,
    /// Timed steps.
    pub steps: u64,
    /// Mean wall time per step (ms).
    pub ms_per_step: f64,
    /// Steps per second.
    pub steps_per_s: f64,
}

/// Sums over the steps since the last log row, kept on the device so the loop never waits
/// for the GPU except when it writes a row.
#[derive(Default)]
struct Running {
    steps: u64,
    sums: Option<Tensor>,
    images: u64,
}

/// What one step measured, as a device tensor `[loss, l1, focal, psnr, correct, labelled]`
/// (weighted total loss, L1 term, focal term, mean batch PSNR in dB of the clamped output,
/// correct classifications and labelled samples).
pub struct StepStats(pub Tensor);

impl Trainer {
    /// A fresh run: weights from the seed, or from `init` (a trainer checkpoint's EMA weights,
    /// or an exported `.safetensors` / `.pth`).
    pub fn new(config: Config, phase: Phase, init: Option<&Path>) -> Result<Self> {
        let device = parse_device(&config.train.device)?;
        if config.train.threads > 0 {
            tch::set_num_threads(config.train.threads);
        }
        if config.train.amp == Amp::Fp16 && !device.is_cuda() {
            bail!("[train] amp = \"fp16\" needs a CUDA device (device is {})", config.train.device);
        }
        let mut net = {
            // Initial weights come from torch's process-wide generator: hold it from seeding to
            // the last draw so runs started on other threads cannot interleave their draws.
            let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(config.train.seed as i64);
            MaskDcptNet::new(&config.model, config.classifier.as_ref(), device)?
        };
        let mut calibrate_spectrum = net.classifier.as_ref().is_some_and(|c| c.module.has_spectrum());
        if let Some(init) = init {
            let model = crate::export::read_model_tensors(init, device)?;
            let head = net.load_model_tensors(&model, &init.display().to_string())?;
            calibrate_spectrum &= head != HeadLoad::WithBranch;
            if net.classifier.is_some() && !head.head() && phase == Phase::Finetune {
                eprintln!(
                    "note: {} has no classification head: the head starts from its initialisation",
                    init.display()
                );
            }
        }
        if config.train.freeze_backbone {
            net.backbone.params.freeze();
        }
        let state = net
            .param_sets()
            .iter()
            .enumerate()
            .map(|(i, (_, params))| {
                let optim = if i == 0 { &config.optim } else { config.classifier_optim() };
                Optimised { ema: params.values().copy(), adamw: AdamW::new(optim.clone(), params.values()) }
            })
            .collect();
        Ok(Self { config, phase, device, net, state, scaler: LossScaler::default(), step: 0, calibrate_spectrum })
    }

    /// Sets a fresh spectral branch's standardisation from the inputs of the first
    /// [`SPECTRUM_CALIBRATION_BATCHES`] batches, live weights and EMA alike.
    fn calibrate_spectrum_on(&mut self, data: &TrainData) -> Result<()> {
        let Some(head) = &self.net.classifier else { return Ok(()) };
        let batches = (1..=SPECTRUM_CALIBRATION_BATCHES)
            .map(|step| Ok(data.batch(step)?.into_tensors().lq))
            .collect::<Result<Vec<_>>>()?;
        head.module.calibrate_spectrum(&head.params, &Tensor::cat(&batches, 0));
        let ema = &mut self.state.last_mut().expect("the head has an optimiser state").ema;
        tch::no_grad(|| ema.copy_(head.params.values()));
        self.calibrate_spectrum = false;
        Ok(())
    }

    /// Continues from a checkpoint written by [`Trainer::run`] with the same model shape.
    pub fn resume(config: Config, phase: Phase, path: &Path) -> Result<Self> {
        let mut trainer = Self::new(config, phase, None)?;
        let data = checkpoint::load(path, trainer.device)?;
        let stored_phase = data.meta("phase", path)?;
        if stored_phase != phase.name() {
            bail!("{} is a {stored_phase} checkpoint; resume it with `trainer {stored_phase}`", path.display());
        }
        trainer.step = data.meta("step", path)?.parse().with_context(|| format!("{}: bad step", path.display()))?;
        trainer.scaler = serde_json::from_str(data.meta("scaler", path)?)?;
        let what = path.display().to_string();
        for (prefix, params, flat) in trainer.saved_buffers() {
            let mut named = data.with_prefix(&prefix);
            if !prefix.ends_with(CLASSIFIER_PREFIX) {
                // The backbone's names: the head's tensors share the buffer prefix.
                named.retain(|(n, _)| !n.starts_with(CLASSIFIER_PREFIX));
            }
            params.load_flat(flat, &named, &what)?;
        }
        Ok(trainer)
    }

    /// The newest checkpoint of the run folder, if any.
    pub fn latest_checkpoint(config: &Config) -> Result<Option<PathBuf>> {
        Ok(checkpoint::list(&config.output.dir)?.pop().map(|(_, path)| path))
    }

    /// Steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The network (live weights).
    pub fn net(&self) -> &MaskDcptNet {
        &self.net
    }

    /// Trains until `config.train.steps` (or `stop_after` more steps), logging and checkpointing.
    pub fn run(&mut self, stop_after: Option<u64>, show_progress: bool) -> Result<()> {
        let total = self.config.train.steps;
        let last = stop_after.map_or(total, |n| (self.step + n).min(total));
        if self.step >= last {
            return Ok(());
        }
        let data = Arc::new(TrainData::load(&self.config.data, self.config.train.seed)?);
        if self.config.classifier.is_some() && self.config.train.classify_weight > 0.0 && !data.labelled() {
            bail!(
                "the classification loss needs a class for every pair: add manifest.json or `class` to [data] paired"
            );
        }
        if self.calibrate_spectrum && self.step == 0 {
            self.calibrate_spectrum_on(&data)?;
        }
        let dir = self.config.output.dir.clone();
        let mut log = MetricsLog::open(&dir, self.step)?;
        let mut loader =
            Loader::spawn(Arc::clone(&data), self.step + 1, last, self.config.data.workers, self.config.data.prefetch);
        let progress = crate::log::progress_bar(show_progress, self.step, total);
        let mut running = Running::default();
        let mut clock = Instant::now();
        while self.step < last {
            let batch = loader.next_batch()?;
            self.step += 1;
            let stats = self.train_step(&batch)?;
            running.add(&stats, self.config.data.batch as u64);
            progress.set_position(self.step);
            let output = &self.config.output;
            if self.step.is_multiple_of(output.log_every) || self.step == last {
                let elapsed = clock.elapsed().as_secs_f64();
                let row = running.row(self.step, self.current_lr(), running.images as f64 / elapsed);
                progress
                    .set_message(format!("loss {:.4} psnr {:.2} dB {:.1} img/s", row.loss, row.psnr, row.images_per_s));
                log.append(&row)?;
                running = Running::default();
                clock = Instant::now();
            }
            if self.step.is_multiple_of(output.checkpoint_every) || self.step == last {
                checkpoint::save(&dir, self.step, &self.checkpoint_data(), output.keep_last)?;
                log.plot(&dir)?;
            }
        }
        progress.finish();
        Ok(())
    }

    /// Times `steps` training steps after `warmup` untimed ones, on random data.
    pub fn bench(&mut self, warmup: u64, steps: u64) -> Result<BenchResult> {
        let (n, crop) = (self.config.data.batch, self.config.data.crop);
        let classes = self.config.classifier.as_ref().map_or(1, |c| c.classes);
        let options = (Kind::Float, self.device);
        let batch = Batch {
            lq: Tensor::rand([n, 3, crop, crop], options),
            gt: Tensor::rand([n, 3, crop, crop], options),
            labels: Tensor::randint(classes, [n], (Kind::Int64, self.device)),
        };
        let sync = |device: Device| {
            if let Device::Cuda(index) = device {
                tch::Cuda::synchronize(index as i64);
            }
        };
        let mut start = Instant::now();
        for i in 0..warmup + steps {
            if i == warmup {
                sync(self.device);
                start = Instant::now();
            }
            self.step += 1;
            self.train_step(&batch)?;
        }
        sync(self.device);
        let seconds = start.elapsed().as_secs_f64();
        Ok(BenchResult {
            phase: self.phase.name(),
            device: self.config.train.device.clone(),
            amp_fp16: self.config.train.amp == Amp::Fp16,
            batch: n,
            crop,
            steps,
            ms_per_step: seconds * 1e3 / steps as f64,
            steps_per_s: steps as f64 / seconds,
        })
    }

    fn current_lr(&self) -> f64 {
        self.config.schedule.lr_at(self.config.optim.lr, self.step.max(1), self.config.train.steps)
    }

    /// One optimiser step on a batch (the step counter must already be advanced).
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepStats> {
        let t = self.config.train.clone();
        let lq = batch.lq.to_device(self.device);
        let gt = batch.gt.to_device(self.device);
        let labels = batch.labels.to_device(self.device);
        let mask = match self.phase {
            Phase::Pretrain => {
                let mut rng = ChaCha8Rng::seed_from_u64(t.seed.rotate_left(17) ^ self.step ^ 0x6D61_736B);
                let size = lq.size();
                Some(PatchMask::sample(&mut rng, size[0], (size[2], size[3]), t.mask_patch, t.mask_ratio, self.device)?)
            }
            Phase::Finetune => None,
        };
        let out = tch::autocast(t.amp == Amp::Fp16, || match &mask {
            Some(mask) => self.net.forward_masked(&lq, mask),
            None => Ok(self.net.forward(&lq)),
        })?;
        let image = out.image.to_kind(Kind::Float);
        let l1 = loss::l1(&image, &gt);
        let mut total = &l1 * t.l1_weight;
        let zero = Tensor::zeros([], (Kind::Float, self.device));
        let (mut focal_value, mut correct, mut labelled) = (zero.shallow_clone(), zero.shallow_clone(), zero);
        if let (Some(logits), true) = (&out.logits, t.classify_weight > 0.0) {
            let focal = loss::focal(logits, &labels, t.focal_gamma);
            focal_value = focal.detach();
            total += focal * t.classify_weight;
            correct = logits.argmax(1, false).eq_tensor(&labels).to_kind(Kind::Float).sum(Kind::Float);
            labelled = correct.full_like(labels.size()[0] as f64);
        }
        let scale = if t.amp == Amp::Fp16 { self.scaler.scale } else { 1.0 };
        for set in self.param_sets_mut() {
            set.zero_grads();
        }
        (&total * scale).backward();
        let mut finite = true;
        for set in self.param_sets_mut() {
            set.bind_grads();
        }
        if t.amp == Amp::Fp16 {
            let sets = self.net.param_sets();
            let grads: Vec<&Tensor> = sets.iter().map(|(_, p)| p.grads()).collect();
            finite = self.scaler.unscale(&grads);
        }
        if finite {
            self.apply_update();
        }
        let psnr = batch_psnr(&image, &gt);
        let values = [total.detach(), l1.detach(), focal_value, psnr, correct, labelled];
        Ok(StepStats(Tensor::stack(&values, 0)))
    }

    /// The parameter sets that train (a frozen backbone is left out).
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        let mut sets = vec![&mut self.net.backbone.params];
        if let Some(c) = &mut self.net.classifier {
            sets.push(&mut c.params);
        }
        sets.retain(|set| set.trainable());
        sets
    }

    fn apply_update(&mut self) {
        let t = &self.config.train;
        let lr_scale = self.current_lr() / self.config.optim.lr;
        for ((_, params), state) in self.net.param_sets().into_iter().zip(&mut self.state) {
            if !params.trainable() {
                continue;
            }
            if t.grad_clip > 0.0 {
                _ = optim::clip_grad_norm(params.grads(), t.grad_clip);
            }
            let lr = state.adamw.peak_lr() * lr_scale;
            state.adamw.step(params.values(), params.grads(), self.step, lr);
            optim::ema_update(&state.ema, params.values(), t.ema_decay);
        }
    }

    /// Every buffer a checkpoint holds: (name prefix, its parameter set, the flat buffer), for
    /// each network its values, EMA and AdamW moments.
    fn saved_buffers(&self) -> Vec<(String, &ParamSet, &Tensor)> {
        let mut buffers = Vec::new();
        for ((prefix, params), state) in self.net.param_sets().into_iter().zip(&self.state) {
            let flats = [params.values(), &state.ema, &state.adamw.exp_avg, &state.adamw.exp_avg_sq];
            for (buffer, flat) in checkpoint::BUFFERS.iter().zip(flats) {
                buffers.push((format!("{buffer}{prefix}"), params, flat));
            }
        }
        buffers
    }

    /// Every tensor and counter of the run, for a checkpoint.
    pub fn checkpoint_data(&self) -> CheckpointData {
        let mut tensors = Vec::new();
        for (prefix, params, flat) in self.saved_buffers() {
            tensors.extend(params.named_views(flat).into_iter().map(|(name, view)| (format!("{prefix}{name}"), view)));
        }
        let metadata = BTreeMap::from([
            ("format".to_string(), checkpoint::FORMAT.to_string()),
            ("phase".into(), self.phase.name().into()),
            ("step".into(), self.step.to_string()),
            ("scaler".into(), serde_json::to_string(&self.scaler).expect("scaler serialises")),
            ("config".into(), self.config.to_toml()),
        ]);
        CheckpointData { tensors, metadata }
    }
}

/// Mean per-image PSNR (dB) of `[N,3,H,W]` outputs clamped to [0, 1] against targets, as a
/// scalar tensor.
fn batch_psnr(output: &Tensor, target: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let mse = (output.clamp(0.0, 1.0) - target).square().mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
        (mse.clamp_min(1e-12).log10() * -10.0).mean(Kind::Float)
    })
}

impl Running {
    fn add(&mut self, stats: &StepStats, images: u64) {
        self.steps += 1;
        self.images += images;
        self.sums = Some(match self.sums.take() {
            Some(sums) => sums + &stats.0,
            None => stats.0.shallow_clone(),
        });
    }

    fn row(&self, step: u64, lr: f64, images_per_s: f64) -> crate::log::Row {
        let n = self.steps.max(1) as f64;
        let sums = self
            .sums
            .as_ref()
            .map_or_else(|| vec![0.0; 6], |t| Vec::<f64>::try_from(t.to_kind(Kind::Double)).expect("6 sums"));
        crate::log::Row {
            step,
            lr,
            loss: sums[0] / n,
            l1: sums[1] / n,
            focal: sums[2] / n,
            psnr: sums[3] / n,
            accuracy: if sums[5] > 0.0 { sums[4] / sums[5] } else { f64::NAN },
            images_per_s,
        }
    }
}
