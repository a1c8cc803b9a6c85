//! Weights: untrusted checkpoint bytes parsed into named tensors.
//!
//! Two readers sit behind one type, [`WeightStore`]: safetensors (memory-mapped) and PyTorch
//! `.pth` zip archives (a restricted pickle reader that executes nothing). This module knows
//! nothing about networks: which keys make a model is the business of [`crate::spec`].

mod pickle;
mod pth;
mod safetensors_file;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

pub use safetensors_file::serialize_sorted;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE binary64 (accepted from `.pth`, converted on use).
    F64,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
        }
    }

    /// Lower-case name, as used in file formats and messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
        }
    }
}

/// Where the bytes of a tensor live: a shared memory map or a shared owned buffer.
#[derive(Clone)]
enum Backing {
    Mapped(Arc<memmap2::Mmap>),
    Owned(Arc<Vec<u8>>),
}

impl Backing {
    fn as_slice(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One named tensor: dtype, shape and little-endian contiguous bytes (borrowed from a map or
/// owned).
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    backing: Backing,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor").field("dtype", &self.dtype).field("shape", &self.shape).finish()
    }
}

impl Tensor {
    /// A tensor over `bytes[start..start+len]` of a memory map. The caller has checked that the
    /// range is inside the map and that `len == numel * dtype.size()`.
    fn mapped(dtype: DType, shape: Vec<usize>, map: Arc<memmap2::Mmap>, start: usize, len: usize) -> Self {
        Tensor { dtype, shape, backing: Backing::Mapped(map), start, len }
    }

    /// A tensor owning `bytes` (which must hold exactly `numel * dtype.size()` bytes).
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        let numel =
            checked_numel(&shape).ok_or_else(|| Error::corrupt("tensor", format!("shape {shape:?} overflows")))?;
        if numel.checked_mul(dtype.size()) != Some(bytes.len()) {
            return Err(Error::corrupt(
                "tensor",
                format!(
                    "shape {shape:?} of {} needs {} bytes, got {}",
                    dtype.name(),
                    numel * dtype.size(),
                    bytes.len()
                ),
            ));
        }
        let len = bytes.len();
        Ok(Tensor { dtype, shape, backing: Backing::Owned(Arc::new(bytes)), start: 0, len })
    }

    /// A tensor owning a copy of `values` as f32.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        Self::from_bytes(DType::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Element type as stored.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape (PyTorch order).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.backing.as_slice()[self.start..self.start + self.len]
    }

    /// The values converted to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut values = vec![0.0; self.numel()];
        self.decode_into(0, &mut values);
        values
    }

    /// The values as f32: borrowed where the bytes are already aligned little-endian f32 (a
    /// safetensors or `.pth` file of f32 tensors), converted otherwise.
    pub fn f32_values(&self) -> Cow<'_, [f32]> {
        #[cfg(target_endian = "little")]
        if self.dtype == DType::F32
            && let Ok(values) = bytemuck::try_cast_slice(self.bytes())
        {
            return Cow::Borrowed(values);
        }
        Cow::Owned(self.to_f32())
    }

    /// The index and value of the first NaN or infinity, if any, found without a copy of the
    /// whole tensor.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        const CHUNK: usize = 4096;
        let mut chunk = [0.0f32; CHUNK];
        let numel = self.numel();
        (0..numel).step_by(CHUNK).find_map(|start| {
            let values = &mut chunk[..(numel - start).min(CHUNK)];
            self.decode_into(start, values);
            values.iter().position(|v| !v.is_finite()).map(|i| (start + i, values[i]))
        })
    }

    /// Elements `[start, start + out.len())` converted to f32 into `out`.
    fn decode_into(&self, start: usize, out: &mut [f32]) {
        let size = self.dtype.size();
        let bytes = &self.bytes()[start * size..][..out.len() * size];
        // Chunks of a constant size, so that each loop compiles to vector code.
        fn convert<const N: usize>(out: &mut [f32], bytes: &[u8], value: impl Fn([u8; N]) -> f32) {
            let (chunks, _) = bytes.as_chunks::<N>();
            out.iter_mut().zip(chunks).for_each(|(v, c)| *v = value(*c));
        }
        match self.dtype {
            DType::F32 => convert(out, bytes, f32::from_le_bytes),
            DType::F16 => convert(out, bytes, |c| half::f16::from_le_bytes(c).to_f32()),
            DType::BF16 => convert(out, bytes, |c| half::bf16::from_le_bytes(c).to_f32()),
            DType::F64 => convert(out, bytes, |c| f64::from_le_bytes(c) as f32),
        }
    }
}

/// Product of the dimensions, or `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// On-disk format a store was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `.safetensors` file.
    Safetensors,
    /// A `torch.save` zip archive (`.pth`, `.pt`).
    TorchZip,
}

/// Options for reading a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Which entry of a BasicSR dict to use. `None`: `params_ema`, falling back to `params`
    /// (`Model::load` then reads a SwinIR's `params` where the file has it).
    pub param_key: Option<String>,
}

/// Named tensors read from one checkpoint, keys sorted, `module.` prefixes stripped.
#[derive(Debug, Clone)]
pub struct WeightStore {
    tensors: BTreeMap<String, Tensor>,
    format: Format,
    param_key: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl WeightStore {
    /// Builds a store from tensors (used by the readers and by tests).
    pub fn new(tensors: BTreeMap<String, Tensor>, format: Format, param_key: Option<String>) -> Self {
        WeightStore { tensors, format, param_key, metadata: BTreeMap::new() }
    }

    /// The store with the file's string metadata (a safetensors header's `__metadata__`).
    pub fn with_metadata(self, metadata: BTreeMap<String, String>) -> Self {
        WeightStore { metadata, ..self }
    }

    /// The metadata value stored under `key`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// All of the file's string metadata.
    pub fn metadata_map(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Reads a checkpoint file, choosing the reader from the file's magic bytes.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped would
        // fault, which is the documented memmap2 caveat accepted by every mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::from_map(Arc::new(map), options).map_err(|e| match e {
            Error::CorruptWeights { format, detail } => Error::corrupt(format, format!("{}: {detail}", path.display())),
            other => other,
        })
    }

    /// Reads a checkpoint held in memory (a copy is kept).
    pub fn from_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Self> {
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(|e| Error::io("<memory buffer>", e))?;
        map[..bytes.len()].copy_from_slice(bytes);
        let map = map.make_read_only().map_err(|e| Error::io("<memory buffer>", e))?;
        Self::from_map_len(Arc::new(map), bytes.len(), options)
    }

    fn from_map(map: Arc<memmap2::Mmap>, options: &LoadOptions) -> Result<Self> {
        let len = map.len();
        Self::from_map_len(map, len, options)
    }

    fn from_map_len(map: Arc<memmap2::Mmap>, len: usize, options: &LoadOptions) -> Result<Self> {
        let head = &map[..len.min(4)];
        if head.starts_with(b"PK") {
            pth::read(&map, len, options)
        } else if len >= 8 {
            safetensors_file::read(map, len, options)
        } else {
            Err(Error::corrupt("checkpoint", format!("{len} bytes is too short to be a checkpoint")))
        }
    }

    /// The tensor stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }

    /// The tensor stored under `key`, or [`Error::MissingKey`] naming it.
    pub fn require(&self, key: &str) -> Result<&Tensor> {
        self.get(key).ok_or_else(|| Error::MissingKey { key: key.to_owned(), expected: vec![] })
    }

    /// All tensors, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The format the store was read from.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The BasicSR dict entry that was used (`params_ema`, `params`, ...), if any.
    pub fn param_key(&self) -> Option<&str> {
        self.param_key.as_deref()
    }

    /// The dtype shared by all tensors, or `None` when they are mixed.
    pub fn common_dtype(&self) -> Option<DType> {
        let mut it = self.tensors.values().map(Tensor::dtype);
        let first = it.next()?;
        it.all(|d| d == first).then_some(first)
    }
}

/// Strips one leading `module.` (DataParallel) from every key; errors if two keys collide.
pub(crate) fn strip_module_prefix(tensors: BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
    if !tensors.keys().any(|k| k.starts_with("module.")) {
        return Ok(tensors);
    }
    let mut out = BTreeMap::new();
    for (k, v) in tensors {
        let key = k.strip_prefix("module.").map(str::to_owned).unwrap_or(k);
        if out.contains_key(&key) {
            return Err(Error::corrupt("checkpoint", format!("key `{key}` appears with and without `module.` prefix")));
        }
        out.insert(key, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `values` stored as `dtype`, little-endian.
    fn stored(dtype: DType, values: &[f32]) -> Tensor {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            DType::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
            DType::F64 => values.iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect(),
        };
        Tensor::from_bytes(dtype, vec![values.len()], bytes).unwrap()
    }

    #[test]
    fn values_convert_and_the_first_non_finite_one_is_found_past_a_chunk() {
        let mut values: Vec<f32> = (0..10_000).map(|i| (i % 97) as f32 * 0.25 - 12.0).collect();
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let tensor = stored(dtype, &values);
            assert_eq!(tensor.to_f32(), values, "{dtype:?}");
            assert_eq!(tensor.first_non_finite(), None, "{dtype:?}");
        }
        values[9_000] = f32::INFINITY;
        values[5_000] = f32::NAN;
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let found = stored(dtype, &values).first_non_finite();
            assert!(matches!(found, Some((5_000, v)) if v.is_nan()), "{dtype:?}: {found:?}");
        }
        values[5_000] = 0.0;
        assert_eq!(stored(DType::F16, &values).first_non_finite(), Some((9_000, f32::INFINITY)));
        assert_eq!(stored(DType::F32, &[]).first_non_finite(), None);
    }

    #[test]
    fn f32_values_borrow_aligned_f32_bytes_and_convert_the_rest() {
        let values = [1.5f32, -2.0, 3.25];
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for shift in [0, 1] {
            let mut bytes = vec![0u8; le.len() + 4];
            let start = bytes.as_ptr().align_offset(4) + shift;
            bytes[start..start + le.len()].copy_from_slice(&le);
            let backing = Backing::Owned(Arc::new(bytes));
            let tensor = Tensor { dtype: DType::F32, shape: vec![3], backing, start, len: le.len() };
            let got = tensor.f32_values();
            assert_eq!(&*got, &values, "shift {shift}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), shift == 0, "shift {shift}");
        }
        let half = stored(DType::F16, &values);
        assert!(matches!(half.f32_values(), Cow::Owned(v) if v == values));
    }
}
