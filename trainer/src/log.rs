//! Run logging: `metrics.csv` (one row per `log_every` steps, appended, so a resumed run
//! continues the file), loss and PSNR curves as PNG (plotters, feature `plots`), and the
//! progress bar.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// CSV header of `metrics.csv`.
const HEADER: &str = "step,lr,loss,l1,focal,train_psnr_db,train_accuracy,images_per_s";

/// One row of `metrics.csv` (averages since the previous row).
#[derive(Debug, Clone)]
pub struct Row {
    /// Step of the row.
    pub step: u64,
    /// Learning rate at that step.
    pub lr: f64,
    /// Weighted total loss.
    pub loss: f64,
    /// L1 term.
    pub l1: f64,
    /// Focal term.
    pub focal: f64,
    /// Mean PSNR of training outputs (dB).
    pub psnr: f64,
    /// Classifier top-1 accuracy on training batches (NaN without labels).
    pub accuracy: f64,
    /// Throughput.
    pub images_per_s: f64,
}

/// The metrics file of a run.
pub struct MetricsLog {
    path: PathBuf,
    rows: Vec<Row>,
}

impl MetricsLog {
    /// Opens `dir/metrics.csv`, keeping rows up to `step` (a resumed run drops rows written
    /// after its checkpoint) and creating the file with its header when new.
    pub fn open(dir: &Path, step: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create run folder {}", dir.display()))?;
        let path = dir.join("metrics.csv");
        let rows = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().skip(1).filter_map(parse_row).filter(|r| r.step <= step).collect(),
            Err(_) => Vec::new(),
        };
        let log = Self { path, rows };
        log.rewrite()?;
        Ok(log)
    }

    fn rewrite(&self) -> Result<()> {
        let mut text = format!("{HEADER}\n");
        for row in &self.rows {
            text.push_str(&format_row(row));
        }
        crate::checkpoint::write_atomically(&self.path, text.as_bytes())
    }

    /// Appends a row to the file.
    pub fn append(&mut self, row: &Row) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        file.write_all(format_row(row).as_bytes()).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.rows.push(row.clone());
        Ok(())
    }

    /// Draws `loss.png` and `psnr.png` in `dir` (nothing without the `plots` feature).
    pub fn plot(&self, dir: &Path) -> Result<()> {
        let series = |f: fn(&Row) -> f64| -> Vec<(f64, f64)> {
            self.rows.iter().map(|r| (r.step as f64, f(r))).filter(|(_, v)| v.is_finite()).collect()
        };
        plot_curve(&dir.join("loss.png"), "training loss", &series(|r| r.loss))?;
        plot_curve(&dir.join("psnr.png"), "training PSNR (dB)", &series(|r| r.psnr))
    }
}

fn format_row(r: &Row) -> String {
    format!(
        "{},{:e},{:.6},{:.6},{:.6},{:.4},{:.4},{:.2}\n",
        r.step, r.lr, r.loss, r.l1, r.focal, r.psnr, r.accuracy, r.images_per_s
    )
}

fn parse_row(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.split(',').collect();
    let num = |i: usize| f.get(i)?.parse::<f64>().ok();
    Some(Row {
        step: f.first()?.parse().ok()?,
        lr: num(1)?,
        loss: num(2)?,
        l1: num(3)?,
        focal: num(4)?,
        psnr: num(5)?,
        accuracy: num(6)?,
        images_per_s: num(7)?,
    })
}

#[cfg(not(feature = "plots"))]
fn plot_curve(_path: &Path, _title: &str, _points: &[(f64, f64)]) -> Result<()> {
    Ok(())
}

#[cfg(feature = "plots")]
fn plot_curve(path: &Path, title: &str, points: &[(f64, f64)]) -> Result<()> {
    use plotters::prelude::*;
    if points.is_empty() {
        return Ok(());
    }
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x_max, y_min, y_max) = points
            .iter()
            .fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), &(px, py)| (x.max(px), lo.min(py), hi.max(py)));
        let pad = ((y_max - y_min) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))?;
        chart.configure_mesh().x_desc("step").draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// A progress bar over steps (hidden when `show` is false, e.g. in tests or without a terminal).
pub fn progress_bar(show: bool, position: u64, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_position(position);
    bar.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, loss: f64) -> Row {
        Row {
            step,
            lr: 1e-3,
            loss,
            l1: loss,
            focal: 0.0,
            psnr: 20.0 + step as f64,
            accuracy: f64::NAN,
            images_per_s: 3.0,
        }
    }

    #[test]
    fn rows_round_trip_and_resume_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), 0).unwrap();
        for step in [10, 20, 30] {
            log.append(&row(step, 1.0 / step as f64)).unwrap();
        }
        log.plot(dir.path()).unwrap();
        if cfg!(feature = "plots") {
            assert!(dir.path().join("loss.png").metadata().unwrap().len() > 1000);
        }
        let resumed = MetricsLog::open(dir.path(), 20).unwrap();
        assert_eq!(resumed.rows.iter().map(|r| r.step).collect::<Vec<_>>(), [10, 20]);
        let text = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert!(text.starts_with(HEADER));
        assert_eq!(text.lines().count(), 3);
    }
}
