//! Training samples: clean folders degraded on the fly (a random class from the configured
//! set, a random level, rounded to `[data] lq_bits` as a stored image is) and paired
//! `lq/`+`gt/` folders; random crops and the eight flips and rotations; batches built in
//! worker threads ahead of the loop. Batch `k` depends only on (seed, k), so a resumed run
//! sees exactly the batches an uninterrupted one would.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use anyhow::{Context, Result, bail};
use maskdcpt_degrade::{Class, Rgb, image_files};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::config::DataConfig;

/// One batch on the host: `lq`, `gt` `[N, 3, crop, crop]` float, `labels` `[N]` (class index,
/// −1 where unknown).
pub struct Batch {
    /// Degraded inputs.
    pub lq: Tensor,
    /// Clean targets.
    pub gt: Tensor,
    /// Class indices.
    pub labels: Tensor,
}

/// A paired example.
struct Pair {
    lq: Arc<Rgb>,
    gt: Arc<Rgb>,
    label: Option<i64>,
}

/// Everything samples are drawn from, decoded once.
pub struct TrainData {
    clean: Vec<Arc<Rgb>>,
    classes: Vec<Class>,
    pairs: Vec<Pair>,
    crop: usize,
    batch: usize,
    seed: u64,
    lq_bits: u32,
}

fn load_image(path: &Path) -> Result<Rgb> {
    Rgb::load(path).with_context(|| format!("cannot read image {}", path.display()))
}

fn check_crop(image: &Rgb, crop: usize, path: &Path) -> Result<()> {
    if image.width < crop || image.height < crop {
        bail!(
            "image {} is {}×{}, smaller than the {crop}×{crop} crop: remove it or lower [data] crop",
            path.display(),
            image.width,
            image.height
        );
    }
    Ok(())
}

/// Class index of every pair of `dir` by its lq file name, from the `manifest.json` written
/// by `trainer degrade`; `None` when the folder has no manifest.
pub fn manifest_labels(dir: &Path) -> Result<Option<HashMap<String, i64>>> {
    let path = dir.join("manifest.json");
    if !path.exists() {
        return Ok(None);
    }
    let entries = maskdcpt_degrade::read_manifest(&path)?;
    Ok(Some(
        entries
            .into_iter()
            .map(|e| {
                let name = Path::new(&e.lq).file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                (name, e.record.class_index as i64)
            })
            .collect(),
    ))
}

fn class_from_id(id: &str) -> Result<Class> {
    Ok(Class::from_id(id)?)
}

impl TrainData {
    /// Reads every image the config names and checks them (sizes, pairs, labels).
    pub fn load(config: &DataConfig, seed: u64) -> Result<Self> {
        let crop = config.crop as usize;
        let mut clean = Vec::new();
        for dir in &config.clean {
            for path in image_files(dir)? {
                let image = load_image(&path)?;
                check_crop(&image, crop, &path)?;
                clean.push(Arc::new(image));
            }
        }
        let classes = if config.classes.is_empty() {
            Class::ALL.to_vec()
        } else {
            config.classes.iter().map(|id| class_from_id(id)).collect::<Result<_>>()?
        };
        let mut pairs = Vec::new();
        for source in &config.paired {
            let labels = manifest_labels(&source.dir)?;
            let fixed = source.class.as_deref().map(class_from_id).transpose()?;
            for lq_path in image_files(&source.dir.join("lq"))? {
                let name = lq_path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let gt_path = source.dir.join("gt").join(&name);
                if !gt_path.exists() {
                    bail!(
                        "{} has no ground truth {}: lq/ and gt/ must hold the same names",
                        lq_path.display(),
                        gt_path.display()
                    );
                }
                let (lq, gt) = (load_image(&lq_path)?, load_image(&gt_path)?);
                if (lq.width, lq.height) != (gt.width, gt.height) {
                    bail!(
                        "pair {name} in {}: lq is {}×{} but gt is {}×{}",
                        source.dir.display(),
                        lq.width,
                        lq.height,
                        gt.width,
                        gt.height
                    );
                }
                check_crop(&lq, crop, &lq_path)?;
                let label = match (&labels, fixed) {
                    (_, Some(class)) => Some(class.index() as i64),
                    (Some(labels), None) => Some(*labels.get(&name).with_context(|| {
                        format!("{} is not listed in {}/manifest.json", lq_path.display(), source.dir.display())
                    })?),
                    (None, None) => None,
                };
                pairs.push(Pair { lq: Arc::new(lq), gt: Arc::new(gt), label });
            }
        }
        Ok(Self { clean, classes, pairs, crop, batch: config.batch as usize, seed, lq_bits: config.lq_bits })
    }

    /// Whether every sample has a class label (needed for the classification loss).
    pub fn labelled(&self) -> bool {
        self.pairs.iter().all(|p| p.label.is_some())
    }

    /// Number of source images (clean plus pairs).
    pub fn len(&self) -> usize {
        self.clean.len() + self.pairs.len()
    }

    /// Whether there is nothing to draw from.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch for `step`: a function of (seed, step) only.
    pub fn batch(&self, step: u64) -> Result<HostBatch> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let plane = self.crop * self.crop * 3;
        let mut out = HostBatch {
            lq: Vec::with_capacity(self.batch * plane),
            gt: Vec::with_capacity(self.batch * plane),
            labels: Vec::with_capacity(self.batch),
            crop: self.crop,
        };
        for _ in 0..self.batch {
            let index = rng.random_range(0..self.len());
            let transform = rng.random_range(0..8u8);
            let (lq, gt, label) = if index < self.clean.len() {
                let gt = augment(&crop_at(&self.clean[index], self.crop, &mut rng), transform);
                let class = self.classes[rng.random_range(0..self.classes.len())];
                let (mut lq, _) = maskdcpt_degrade::degrade_random(&gt, class, &mut rng)
                    .with_context(|| format!("degradation {}", class.id()))?;
                if self.lq_bits > 0 {
                    lq.quantize(self.lq_bits)?;
                }
                (lq, gt, class.index() as i64)
            } else {
                let pair = &self.pairs[index - self.clean.len()];
                let (x, y) = crop_origin(&pair.gt, self.crop, &mut rng);
                let lq = augment(&crop(&pair.lq, x, y, self.crop), transform);
                let gt = augment(&crop(&pair.gt, x, y, self.crop), transform);
                (lq, gt, pair.label.unwrap_or(-1))
            };
            push_chw(&mut out.lq, &lq);
            push_chw(&mut out.gt, &gt);
            out.labels.push(label);
        }
        Ok(out)
    }
}

/// A batch as plain vectors (built in worker threads).
pub struct HostBatch {
    lq: Vec<f32>,
    gt: Vec<f32>,
    labels: Vec<i64>,
    crop: usize,
}

impl HostBatch {
    /// Converts to tensors on the host.
    pub fn into_tensors(self) -> Batch {
        let n = self.labels.len() as i64;
        let c = self.crop as i64;
        Batch {
            lq: Tensor::from_slice(&self.lq).view([n, 3, c, c]),
            gt: Tensor::from_slice(&self.gt).view([n, 3, c, c]),
            labels: Tensor::from_slice(&self.labels),
        }
    }
}

fn crop_origin(image: &Rgb, size: usize, rng: &mut impl Rng) -> (usize, usize) {
    (rng.random_range(0..=image.width - size), rng.random_range(0..=image.height - size))
}

fn crop_at(image: &Rgb, size: usize, rng: &mut impl Rng) -> Rgb {
    let (x, y) = crop_origin(image, size, rng);
    crop(image, x, y, size)
}

fn crop(image: &Rgb, x: usize, y: usize, size: usize) -> Rgb {
    let mut data = Vec::with_capacity(size * size * 3);
    for row in y..y + size {
        let start = (row * image.width + x) * 3;
        data.extend_from_slice(&image.data[start..start + size * 3]);
    }
    Rgb { width: size, height: size, data }
}

/// One of the 8 flips/rotations of a square image (bit 0: flip x, bit 1: flip y, bit 2: transpose).
fn augment(image: &Rgb, transform: u8) -> Rgb {
    let n = image.width;
    let mut data = vec![0f32; image.data.len()];
    for y in 0..n {
        for x in 0..n {
            let (mut sx, mut sy) = if transform & 4 != 0 { (y, x) } else { (x, y) };
            if transform & 1 != 0 {
                sx = n - 1 - sx;
            }
            if transform & 2 != 0 {
                sy = n - 1 - sy;
            }
            let (dst, src) = ((y * n + x) * 3, (sy * n + sx) * 3);
            data[dst..dst + 3].copy_from_slice(&image.data[src..src + 3]);
        }
    }
    Rgb { width: n, height: n, data }
}

/// Appends an interleaved RGB image as three planes.
fn push_chw(out: &mut Vec<f32>, image: &Rgb) {
    for channel in 0..3 {
        out.extend(image.data.iter().skip(channel).step_by(3));
    }
}

/// Batches for steps `start..=end`, prepared by `workers` threads, `prefetch` ahead each,
/// delivered in step order.
pub struct Loader {
    receivers: Vec<Receiver<Result<HostBatch>>>,
    next: u64,
    start: u64,
}

impl Loader {
    /// Starts the workers.
    pub fn spawn(data: Arc<TrainData>, start: u64, end: u64, workers: usize, prefetch: usize) -> Self {
        let receivers = (0..workers as u64)
            .map(|k| {
                let (sender, receiver) = sync_channel(prefetch.max(1));
                let data = Arc::clone(&data);
                std::thread::spawn(move || {
                    let mut step = start + k;
                    while step <= end {
                        if sender.send(data.batch(step)).is_err() {
                            return;
                        }
                        step += workers as u64;
                    }
                });
                receiver
            })
            .collect();
        Self { receivers, next: start, start }
    }

    /// The next batch (in step order).
    pub fn next_batch(&mut self) -> Result<Batch> {
        let worker = ((self.next - self.start) % self.receivers.len() as u64) as usize;
        self.next += 1;
        let batch = self.receivers[worker].recv().context("a data worker stopped")??;
        Ok(batch.into_tensors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Rgb {
        Rgb { width: n, height: n, data: (0..n * n * 3).map(|i| i as f32).collect() }
    }

    #[test]
    fn the_eight_transforms_are_distinct_permutations() {
        let image = ramp(4);
        let mut seen = Vec::new();
        for t in 0..8 {
            let out = augment(&image, t);
            let mut sorted = out.data.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, image.data);
            assert!(!seen.contains(&out.data));
            seen.push(out.data);
        }
        assert_eq!(augment(&image, 0).data, image.data);
    }

    #[test]
    fn synthesised_inputs_are_rounded_to_lq_bits() {
        let grey = Rgb::filled(32, 32, [0.5; 3]);
        let data = |lq_bits| TrainData {
            clean: vec![Arc::new(grey.clone())],
            classes: vec![Class::Noise],
            pairs: Vec::new(),
            crop: 16,
            batch: 4,
            seed: 3,
            lq_bits,
        };
        let off_grid = |lq_bits, steps: f32| {
            let lq = data(lq_bits).batch(0).unwrap().lq;
            lq.iter().filter(|v| ((*v * steps).round() - *v * steps).abs() > 1e-3).count()
        };
        assert_eq!(off_grid(8, 255.0), 0);
        assert_eq!(off_grid(4, 15.0), 0);
        assert!(off_grid(0, 255.0) > 100, "noise left unrounded lies between the 8-bit steps");
        let (rounded, raw) = (data(8).batch(0).unwrap(), data(0).batch(0).unwrap());
        assert_eq!(rounded.gt, raw.gt, "the clean targets are not touched");
        assert!(rounded.lq.iter().zip(&raw.lq).all(|(r, v)| (r - v.clamp(0.0, 1.0)).abs() <= 0.5 / 255.0 + 1e-6));
    }

    #[test]
    fn crops_take_the_right_window_and_planes_split_channels() {
        let image = ramp(5);
        let c = crop(&image, 1, 2, 2);
        assert_eq!(&c.data[..3], &image.data[(2 * 5 + 1) * 3..(2 * 5 + 1) * 3 + 3]);
        let mut planes = Vec::new();
        push_chw(&mut planes, &c);
        assert_eq!(planes[0], c.data[0]);
        assert_eq!(planes[4], c.data[1]);
        assert_eq!(planes[8], c.data[2]);
    }
}
