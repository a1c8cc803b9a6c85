//! Training checkpoints: one safetensors file per save holding, for every parameter, its live
//! value, EMA and AdamW moments (`params.`, `ema.`, `exp_avg.`, `exp_avg_sq.` + the tensor
//! name), and in the header metadata the step, loss scaler, phase and the config (TOML).
//! Written atomically (temporary file in the same folder, then rename); the oldest beyond
//! `keep_last` are deleted. Readable by any safetensors tool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use tch::{Device, Tensor};

use crate::host::safetensors_bytes;

/// Value of the `format` metadata entry.
pub const FORMAT: &str = "maskdcpt-trainer-checkpoint-v1";

/// The four buffers saved per parameter, by name prefix.
pub const BUFFERS: [&str; 4] = ["params.", "ema.", "exp_avg.", "exp_avg_sq."];

/// Named float tensors plus string metadata, as read from or written to a checkpoint.
pub struct CheckpointData {
    /// Tensors by full name (`params.intro.weight`, ...).
    pub tensors: Vec<(String, Tensor)>,
    /// Header metadata.
    pub metadata: BTreeMap<String, String>,
}

impl CheckpointData {
    /// Tensors whose names start with `prefix`, with the prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|rest| (rest.to_string(), t.shallow_clone())))
            .collect()
    }

    /// A metadata entry, or an error naming the file.
    pub fn meta(&self, key: &str, path: &Path) -> Result<&str> {
        self.metadata.get(key).map(String::as_str).with_context(|| {
            format!("checkpoint {} has no `{key}` metadata: not a trainer checkpoint?", path.display())
        })
    }
}

/// File name of the checkpoint at `step`.
pub fn file_name(step: u64) -> String {
    format!("ckpt-{step:08}.safetensors")
}

/// Writes `data` to `dir/ckpt-STEP.safetensors` atomically and prunes to `keep_last` files.
pub fn save(dir: &Path, step: u64, data: &CheckpointData, keep_last: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = safetensors_bytes(&data.tensors, Dtype::F32, &data.metadata)?;
    let path = dir.join(file_name(step));
    write_atomically(&path, &bytes)?;
    prune(dir, keep_last)?;
    Ok(path)
}

/// Writes `bytes` to `path` all or nothing (core's `atomic_file`), naming the file on error.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    maskdcpt_core::atomic_file::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(Ok(step)) = name.strip_prefix("ckpt-").and_then(|s| s.strip_suffix(".safetensors")).map(str::parse)
        {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

fn prune(dir: &Path, keep_last: usize) -> Result<()> {
    let all = list(dir)?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep_last)) {
        std::fs::remove_file(path).with_context(|| format!("cannot delete old checkpoint {}", path.display()))?;
    }
    Ok(())
}

/// Whether `bytes` are a trainer checkpoint (a safetensors file with this module's format).
pub fn is_checkpoint(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, header)| header.metadata().as_ref().and_then(|m| m.get("format").cloned()))
        .is_some_and(|format| format == FORMAT)
}

/// Reads a checkpoint (every tensor as float32 on `device`).
pub fn load(path: &Path, device: Device) -> Result<CheckpointData> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    from_bytes(&bytes, path, device)
}

/// Parses a checkpoint read from `path` (named in errors).
pub fn from_bytes(bytes: &[u8], path: &Path, device: Device) -> Result<CheckpointData> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .with_context(|| format!("{} is not a safetensors file (truncated or corrupt?)", path.display()))?;
    let metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("{} is not a trainer checkpoint (no `format = {FORMAT}` metadata)", path.display());
    }
    let file = SafeTensors::deserialize(bytes).with_context(|| format!("checkpoint {} is corrupt", path.display()))?;
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("checkpoint {}: tensor {name} is {:?}, expected F32", path.display(), view.dtype());
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.push((name, Tensor::from_slice(&values).view(shape.as_slice()).to_device(device)));
    }
    // The safetensors reader lists tensors in hash order; sorted, exports are reproducible.
    tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(CheckpointData { tensors, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::serialize;
    use safetensors::tensor::TensorView;

    #[test]
    fn round_trip_prune_and_reject_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = BTreeMap::from([("format".to_string(), FORMAT.to_string()), ("step".into(), "3".into())]);
        let tensor = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([2, 3]);
        let data = CheckpointData { tensors: vec![("params.a".into(), tensor.shallow_clone())], metadata };
        for step in [1, 2, 3] {
            save(dir.path(), step, &data, 2).unwrap();
        }
        let kept: Vec<u64> = list(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, [2, 3]);
        let back = load(&dir.path().join(file_name(3)), Device::Cpu).unwrap();
        assert!(back.with_prefix("params.")[0].1.equal(&tensor));
        assert_eq!(back.meta("step", dir.path()).unwrap(), "3");
        let foreign = dir.path().join("x.safetensors");
        std::fs::write(&foreign, serialize(Vec::<(&str, TensorView)>::new(), None).unwrap()).unwrap();
        assert!(load(&foreign, Device::Cpu).err().unwrap().to_string().contains("not a trainer checkpoint"));
        std::fs::write(&foreign, b"garbage").unwrap();
        assert!(load(&foreign, Device::Cpu).err().unwrap().to_string().contains("not a safetensors file"));
    }
}
