//! `trainer eval`: restores every `lq/` image of paired folders with a model (full image,
//! reflect-padded on the bottom/right to a multiple of 16, or 2^levels when larger, and
//! cropped back, spec §6.2),
//! and reports PSNR/SSIM of the input and the output (spec §6.3) per folder, per class when
//! the folder has a `manifest.json`, and averaged; plus the classifier's top-1 accuracy when
//! the model has a head and the pairs have labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use maskdcpt_core::head::SPECTRUM_HIDDEN_LAYER;
use maskdcpt_degrade::{Class, Rgb, image_files};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::data::manifest_labels;
use crate::export::{ModelTensors, read_model_tensors};
use crate::metrics::{ImageRef, psnr, ssim};
use crate::model::classifier::{ClassifierShape, DEFAULT_SPECTRUM_HIDDEN};
use crate::model::nafnet::NafnetShape;
use crate::net::{CLASSIFIER_PREFIX, MaskDcptNet};

/// Builds the network a model file describes and loads its (EMA) weights: a trainer
/// checkpoint (shape from its stored config) or an exported / official file (shape from keys).
pub fn load_model(path: &Path, device: Device) -> Result<MaskDcptNet> {
    let mut model = read_model_tensors(path, device)?;
    let (shape, head) = match model.config.take() {
        Some(config) => (config.model, config.classifier),
        None => {
            let names: Vec<&str> = model.named.iter().map(|(n, _)| n.as_str()).collect();
            let shape = infer_shape(&names, &model.named).with_context(|| format!("model {}", path.display()))?;
            (shape, infer_head(&names, &model))
        }
    };
    let net = MaskDcptNet::new(&shape, head.as_ref(), device)?;
    net.load_model_tensors(&model, &path.display().to_string())?;
    Ok(net)
}

/// Distinct `{prefix}{j}.` block indices among the names.
fn count_blocks(names: &[&str], prefix: &str) -> usize {
    let mut blocks: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix(prefix)?.split('.').next()).collect();
    blocks.sort_unstable();
    blocks.dedup();
    blocks.len()
}

fn infer_shape(names: &[&str], named: &[(String, Tensor)]) -> Result<NafnetShape> {
    let Some((_, intro)) = named.iter().find(|(n, _)| n == "intro.weight") else {
        bail!("no `intro.weight`: not a NAFNet in the MaskDCPT layout");
    };
    if names.iter().any(|n| n.starts_with("encoders.0.0.")) {
        bail!("upstream NAFNet key layout (`encoders.0.0.`): the trainer reads the MaskDCPT layout; convert it first");
    }
    let levels = count_blocks(names, "downs.");
    let shape = NafnetShape {
        width: intro.size()[0],
        enc_blocks: (0..levels).map(|l| count_blocks(names, &format!("encoders.{l}.blocks."))).collect(),
        middle_blocks: count_blocks(names, "middle_blks.blocks."),
        dec_blocks: (0..levels).map(|l| count_blocks(names, &format!("decoder{l}.blocks."))).collect(),
    };
    shape.validate()?;
    Ok(shape)
}

fn infer_head(names: &[&str], model: &ModelTensors) -> Option<ClassifierShape> {
    let fc = model.named.iter().find(|(n, _)| n == &format!("{CLASSIFIER_PREFIX}fc.bias"))?;
    let blocks = count_blocks(names, &format!("{CLASSIFIER_PREFIX}bottleneck_layers.0."));
    let has = |key: &str| names.contains(&format!("{CLASSIFIER_PREFIX}{key}").as_str());
    let spectrum = format!("{CLASSIFIER_PREFIX}{SPECTRUM_HIDDEN_LAYER}.weight");
    let spectrum_hidden = model.named.iter().find(|(n, _)| n == &spectrum).map(|(_, t)| t.size()[0]);
    Some(ClassifierShape {
        classes: fc.1.size()[0],
        blocks_per_scale: blocks,
        embed_image: has("conv_embed.0.weight"),
        features: model.head_features,
        spectrum: spectrum_hidden.is_some(),
        spectrum_hidden: spectrum_hidden.unwrap_or(DEFAULT_SPECTRUM_HIDDEN),
    })
}

/// Sums of one group of images.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Scores {
    /// Images.
    pub images: usize,
    /// Mean PSNR of the degraded input (dB).
    pub input_psnr: f64,
    /// Mean SSIM of the input.
    pub input_ssim: f64,
    /// Mean PSNR of the output (dB).
    pub psnr: f64,
    /// Mean SSIM of the output.
    pub ssim: f64,
    /// Classifier top-1 accuracy (None without head or labels).
    pub accuracy: Option<f64>,
    #[serde(skip)]
    correct: usize,
    #[serde(skip)]
    labelled: usize,
}

impl Scores {
    fn add(&mut self, m: &ImageScores) {
        self.images += 1;
        self.input_psnr += m.input_psnr;
        self.input_ssim += m.input_ssim;
        self.psnr += m.psnr;
        self.ssim += m.ssim;
        if let Some(hit) = m.correct {
            self.labelled += 1;
            self.correct += usize::from(hit);
        }
    }

    fn finish(mut self) -> Self {
        let n = self.images.max(1) as f64;
        self.input_psnr /= n;
        self.input_ssim /= n;
        self.psnr /= n;
        self.ssim /= n;
        self.accuracy = (self.labelled > 0).then(|| self.correct as f64 / self.labelled as f64);
        self
    }
}

struct ImageScores {
    input_psnr: f64,
    input_ssim: f64,
    psnr: f64,
    ssim: f64,
    correct: Option<bool>,
}

/// Results of one folder.
#[derive(Debug, Serialize)]
pub struct FolderReport {
    /// The folder.
    pub dir: PathBuf,
    /// All its images.
    pub all: Scores,
    /// By class id (folders with a manifest).
    pub by_class: BTreeMap<String, Scores>,
}

/// Results of a whole evaluation.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Per folder.
    pub folders: Vec<FolderReport>,
    /// Mean of the folder means (the paper's "average").
    pub average: Scores,
}

/// Restores one image (padded to the size multiple, cropped back); returns the output and
/// the class logits when the head exists.
pub fn restore(net: &MaskDcptNet, image: &Rgb, device: Device) -> (Vec<f32>, Option<Tensor>) {
    // The MaskDCPT harness pads to its `window_size` 16 (deeper nets: 2^levels), like maskdcpt-core.
    let multiple = (1i64 << net.backbone.module.shape().levels()).max(16);
    let (h, w) = (image.height as i64, image.width as i64);
    let input = Tensor::from_slice(&image.data).view([1, h, w, 3]).permute([0, 3, 1, 2]).to_device(device);
    let (pad_h, pad_w) = ((multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple);
    let padded = if pad_h + pad_w > 0 { input.reflection_pad2d([0, pad_w, 0, pad_h]) } else { input };
    let out = tch::no_grad(|| net.forward(&padded));
    let image = out.image.narrow(2, 0, h).narrow(3, 0, w).permute([0, 2, 3, 1]).contiguous();
    let values =
        Vec::<f32>::try_from(image.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).expect("floats");
    (values, out.logits)
}

/// Evaluates `net` on each folder.
pub fn evaluate(net: &MaskDcptNet, dirs: &[PathBuf], device: Device) -> Result<Report> {
    let mut folders = Vec::new();
    for dir in dirs {
        let labels = manifest_labels(dir)?.unwrap_or_default();
        let mut all = Scores::default();
        let mut by_class: BTreeMap<String, Scores> = BTreeMap::new();
        for lq_path in image_files(&dir.join("lq"))? {
            let name = lq_path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let gt_path = dir.join("gt").join(&name);
            let lq = Rgb::load(&lq_path).with_context(|| format!("cannot read {}", lq_path.display()))?;
            let gt = Rgb::load(&gt_path).with_context(|| format!("cannot read ground truth {}", gt_path.display()))?;
            if (lq.width, lq.height) != (gt.width, gt.height) || lq.width < 11 || lq.height < 11 {
                bail!(
                    "pair {name} in {}: sizes {}×{} and {}×{} must match and be at least 11×11",
                    dir.display(),
                    lq.width,
                    lq.height,
                    gt.width,
                    gt.height
                );
            }
            let (restored, logits) = restore(net, &lq, device);
            let (width, height) = (gt.width, gt.height);
            let at = |data| ImageRef { width, height, data };
            let label = labels.get(&name);
            let correct = match (&logits, label) {
                (Some(logits), Some(&index)) => Some(logits.argmax(1, false).int64_value(&[0]) == index),
                _ => None,
            };
            let scores = ImageScores {
                input_psnr: psnr(at(&lq.data), at(&gt.data)),
                input_ssim: ssim(at(&lq.data), at(&gt.data)),
                psnr: psnr(at(&restored), at(&gt.data)),
                ssim: ssim(at(&restored), at(&gt.data)),
                correct,
            };
            all.add(&scores);
            if let Some(&index) = label {
                by_class.entry(Class::ALL[index as usize].id().to_string()).or_default().add(&scores);
            }
        }
        let by_class = by_class.into_iter().map(|(k, v)| (k, v.finish())).collect();
        folders.push(FolderReport { dir: dir.clone(), all: all.finish(), by_class });
    }
    let average = average_of(folders.iter().map(|f| &f.all));
    Ok(Report { folders, average })
}

fn average_of<'a>(scores: impl Iterator<Item = &'a Scores>) -> Scores {
    let scores: Vec<&Scores> = scores.collect();
    let n = scores.len().max(1) as f64;
    let accuracies: Vec<f64> = scores.iter().filter_map(|s| s.accuracy).collect();
    Scores {
        images: scores.iter().map(|s| s.images).sum(),
        input_psnr: scores.iter().map(|s| s.input_psnr).sum::<f64>() / n,
        input_ssim: scores.iter().map(|s| s.input_ssim).sum::<f64>() / n,
        psnr: scores.iter().map(|s| s.psnr).sum::<f64>() / n,
        ssim: scores.iter().map(|s| s.ssim).sum::<f64>() / n,
        accuracy: (!accuracies.is_empty()).then(|| accuracies.iter().sum::<f64>() / accuracies.len() as f64),
        correct: 0,
        labelled: 0,
    }
}

impl Report {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<40} {:>6} {:>10} {:>8} {:>10} {:>8} {:>8}\n",
            "set", "images", "in PSNR", "in SSIM", "PSNR", "SSIM", "top-1"
        );
        let mut line = |name: &str, s: &Scores| {
            let accuracy = s.accuracy.map_or("-".to_string(), |a| format!("{:.1}%", a * 100.0));
            out.push_str(&format!(
                "{name:<40} {:>6} {:>10.2} {:>8.4} {:>10.2} {:>8.4} {accuracy:>8}\n",
                s.images, s.input_psnr, s.input_ssim, s.psnr, s.ssim
            ));
        };
        for folder in &self.folders {
            line(&folder.dir.display().to_string(), &folder.all);
            for (class, scores) in &folder.by_class {
                line(&format!("  {class}"), scores);
            }
        }
        line("average", &self.average);
        out
    }
}
