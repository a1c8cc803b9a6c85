//! PyTorch `torch.save` zip archives (`.pth`, `.pt`).
//!
//! The archive holds one top-level folder (its name varies: `archive/`, `net_g_latest/`, ...)
//! with `data.pkl` (read by the restricted [`pickle`] reader), `byteorder`, and one raw blob per
//! storage under `data/<key>`. A contiguous tensor of a stored (uncompressed) blob, which is
//! how `torch.save` writes them, is a view of the file's memory map; other tensors are gathered
//! from their storage into owned contiguous bytes. Every index is checked against the blob, and
//! every blob read or viewed against its CRC-32.
//!
//! Choosing the state dict inside the pickled object:
//! - `options.param_key` given: that top-level entry, which must be a dict (no fallback);
//! - otherwise the first dict entry among `params_ema`, `params` (BasicSR), then `state_dict`,
//!   `model`, `net` (other common wrappers);
//! - otherwise the top-level dict itself (a bare state dict).
//!
//! Every value of the chosen dict must be a tensor of a float dtype.

use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, Object, Pickle, TensorRef, Value};
use super::{DType, Format, LoadOptions, Tensor, WeightStore, checked_numel, strip_module_prefix};
use crate::error::{Error, Result};

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// An open entry of an [`Archive`] over `&'a [u8]`, borrowing it for `'z`.
type Entry<'z, 'a> = zip::read::ZipFile<'z, Cursor<&'a [u8]>>;

/// The key/value pairs of a pickled dict.
type Pairs = [(Value, Value)];

/// Largest `data.pkl` accepted; a state dict's pickle takes about 200 bytes per tensor.
const MAX_PICKLE_BYTES: usize = 256 << 20;

/// Top-level entries holding the state dict, in order of preference when no `param_key` is given.
const WRAPPER_KEYS: [&str; 5] = ["params_ema", "params", "state_dict", "model", "net"];

/// How many top-level keys an error message lists.
const LISTED_KEYS: usize = 20;

/// Reads the `torch.save` zip archive held in `map[..len]`.
pub(super) fn read(map: &Arc<memmap2::Mmap>, len: usize, options: &LoadOptions) -> Result<WeightStore> {
    let bytes = map.get(..len).ok_or_else(|| corrupt("length exceeds the mapping"))?;
    let mut archive =
        ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(format!("not a readable zip archive: {e}")))?;
    let prefix = archive_prefix(&archive)?;
    check_byteorder(&mut archive, &prefix)?;
    let name = format!("{prefix}data.pkl");
    let pkl =
        read_entry(&mut archive, &name, MAX_PICKLE_BYTES)?.ok_or_else(|| corrupt(format!("`{name}` is missing")))?;
    let pickle = pickle::unpickle(&pkl)?;
    let (param_key, dict) = choose_state_dict(&pickle, options)?;
    let refs = tensor_refs(&pickle, dict, param_key.as_deref())?;
    let tensors = Storages::new(&mut archive, (map, len), &prefix, &refs).resolve(refs)?;
    Ok(WeightStore::new(strip_module_prefix(tensors)?, Format::TorchZip, param_key))
}

/// A corrupt-`.pth` error.
fn corrupt(detail: impl Into<String>) -> Error {
    Error::corrupt("pth", detail)
}

/// The archive's folder holding `data.pkl`, with its trailing `/`.
fn archive_prefix(archive: &Archive<'_>) -> Result<String> {
    let mut found = archive.file_names_raw().filter_map(|name| {
        let dir = name.strip_suffix(b"data.pkl")?;
        let folder = dir.strip_suffix(b"/")?;
        (!folder.is_empty() && !folder.contains(&b'/')).then_some(dir)
    });
    match (found.next(), found.next()) {
        (Some(dir), None) => {
            String::from_utf8(dir.to_vec()).map_err(|_| corrupt("the archive folder name is not UTF-8"))
        }
        (None, _) => Err(corrupt("no `<folder>/data.pkl` in the archive: not a torch.save file")),
        (Some(_), Some(_)) => Err(corrupt("several `<folder>/data.pkl` entries in the archive")),
    }
}

/// Refuses archives whose `byteorder` entry, when present, is not `little`.
fn check_byteorder(archive: &mut Archive<'_>, prefix: &str) -> Result<()> {
    match read_entry(archive, &format!("{prefix}byteorder"), 16)?.as_deref() {
        None | Some(b"little") => Ok(()),
        Some(b"big") => Err(Error::Unsupported("big-endian torch.save archives".into())),
        Some(other) => Err(corrupt(format!("unknown byteorder {:?}", String::from_utf8_lossy(other)))),
    }
}

/// Entry `name` of the archive (`None` when absent).
fn open_entry<'z, 'a>(archive: &'z mut Archive<'a>, name: &str) -> Result<Option<Entry<'z, 'a>>> {
    match archive.by_name(name) {
        Ok(file) => Ok(Some(file)),
        Err(ZipError::FileNotFound) => Ok(None),
        Err(e) => Err(corrupt(format!("cannot open `{name}`: {e}"))),
    }
}

/// The bytes of entry `name` (`None` when absent), refusing entries of more than `max` bytes.
fn read_entry(archive: &mut Archive<'_>, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
    open_entry(archive, name)?.map(|file| read_file(file, name, max)).transpose()
}

/// The bytes of `file` (entry `name`), refusing more than `max` bytes. Reads to the end of the
/// entry so that the zip reader checks its CRC.
fn read_file(file: Entry<'_, '_>, name: &str, max: usize) -> Result<Vec<u8>> {
    let size = usize::try_from(file.size()).ok().filter(|&s| s <= max);
    let size = size.ok_or_else(|| corrupt(format!("`{name}` holds {} bytes, at most {max} expected", file.size())))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(size).map_err(|_| corrupt(format!("cannot allocate {size} bytes for `{name}`")))?;
    let limit = u64::try_from(size).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes).map_err(|e| corrupt(format!("cannot read `{name}`: {e}")))?;
    if bytes.len() != size {
        return Err(corrupt(format!("`{name}` holds {} bytes, its header says {size}", bytes.len())));
    }
    Ok(bytes)
}

/// The state dict to use and the top-level key it came from.
fn choose_state_dict<'p>(pickle: &'p Pickle, options: &LoadOptions) -> Result<(Option<String>, &'p Pairs)> {
    let root = pickle.root();
    let top = pickle.dict(root).ok_or_else(|| {
        Error::NoStateDict(format!("the checkpoint holds {}, not a dict of tensors", pickle.describe(root)))
    })?;
    if let Some(key) = &options.param_key {
        let value = lookup(top, key).ok_or_else(|| missing_key(pickle, top, key))?;
        let dict = pickle.dict(value).ok_or_else(|| {
            Error::NoStateDict(format!("checkpoint entry `{key}` is {}, not a state dict", pickle.describe(value)))
        })?;
        return Ok((Some(key.clone()), dict));
    }
    let wrapped = WRAPPER_KEYS.iter().find_map(|&key| Some((key, pickle.dict(lookup(top, key)?)?)));
    Ok(match wrapped {
        Some((key, dict)) => (Some(key.to_owned()), dict),
        None => (None, top),
    })
}

/// The value stored under the string `key` (the last one, as Python's dict would keep).
fn lookup<'p>(pairs: &'p Pairs, key: &str) -> Option<&'p Value> {
    pairs.iter().rev().find_map(|(k, v)| matches!(k, Value::Str(s) if &**s == key).then_some(v))
}

/// The error for a `param_key` that the checkpoint lacks, saying what it has instead.
fn missing_key(pickle: &Pickle, top: &Pairs, key: &str) -> Error {
    let is_tensor = |v: &Value| matches!(pickle.object(v), Some(Object::Tensor(_)));
    if !top.is_empty() && top.iter().all(|(_, v)| is_tensor(v)) {
        return Error::NoStateDict(format!(
            "param_key `{key}` is not in the checkpoint: it is a bare state dict of {} tensors, \
             load it without a param key",
            top.len()
        ));
    }
    let mut keys: Vec<String> = top
        .iter()
        .take(LISTED_KEYS)
        .map(|(k, _)| match k {
            Value::Str(s) => format!("`{s}`"),
            other => pickle.describe(other),
        })
        .collect();
    if top.len() > LISTED_KEYS {
        keys.push(format!("... ({} more)", top.len() - LISTED_KEYS));
    }
    Error::NoStateDict(format!(
        "param_key `{key}` is not in the checkpoint; its top-level keys are: {}",
        keys.join(", ")
    ))
}

/// The tensors of the chosen dict by key, each with its float dtype.
fn tensor_refs<'p>(
    pickle: &'p Pickle,
    dict: &'p Pairs,
    param_key: Option<&str>,
) -> Result<BTreeMap<String, (DType, &'p TensorRef)>> {
    let place = param_key.map_or_else(|| "the checkpoint".to_owned(), |k| format!("`{k}`"));
    let mut out = BTreeMap::new();
    for (key, value) in dict {
        let Value::Str(key) = key else {
            return Err(Error::NoStateDict(format!("a key of {place} is {}, not a string", pickle.describe(key))));
        };
        let Some(Object::Tensor(tensor)) = pickle.object(value) else {
            return Err(Error::NoStateDict(format!(
                "entry `{key}` of {place} is {}, not a tensor",
                pickle.describe(value)
            )));
        };
        let ty = tensor.storage.ty;
        let dtype = ty.dtype.ok_or_else(|| Error::UnsupportedDtype { key: key.to_string(), dtype: ty.name.into() })?;
        out.insert(key.to_string(), (dtype, tensor));
    }
    Ok(out)
}

/// Where a storage's bytes are.
enum Blob {
    /// Stored uncompressed: this range of the memory map.
    Mapped(Range<usize>),
    /// Decompressed into memory.
    Loaded(Vec<u8>),
}

/// A stored blob's range of the map and the CRC-32 its zip entry gives.
struct Checksum {
    name: String,
    range: Range<usize>,
    crc32: u32,
}

/// Storage blobs of the archive, mapped or loaded on first use and freed after their last.
struct Storages<'b, 'a> {
    archive: &'b mut Archive<'a>,
    /// The map whose first `archive_len` bytes are the archive.
    map: &'b Arc<memmap2::Mmap>,
    archive_len: usize,
    prefix: &'b str,
    blobs: HashMap<String, Blob>,
    uses: HashMap<String, usize>,
    checksums: Vec<Checksum>,
}

impl<'b, 'a> Storages<'b, 'a> {
    /// Prepares to resolve `refs` of the archive in `map[..archive_len]`, counting how many
    /// tensors view each storage.
    fn new(
        archive: &'b mut Archive<'a>,
        (map, archive_len): (&'b Arc<memmap2::Mmap>, usize),
        prefix: &'b str,
        refs: &BTreeMap<String, (DType, &TensorRef)>,
    ) -> Self {
        let mut uses = HashMap::new();
        for (_, tensor) in refs.values() {
            *uses.entry(tensor.storage.key.to_string()).or_insert(0) += 1;
        }
        Storages { archive, map, archive_len, prefix, blobs: HashMap::new(), uses, checksums: Vec::new() }
    }

    /// Builds every tensor, then checks the mapped blobs' CRC-32s (in parallel).
    fn resolve(mut self, refs: BTreeMap<String, (DType, &TensorRef)>) -> Result<BTreeMap<String, Tensor>> {
        let tensors = refs
            .into_iter()
            .map(|(key, (dtype, tensor))| Ok((key.clone(), self.tensor(&key, dtype, tensor)?)))
            .collect::<Result<_>>()?;
        let damaged = self.checksums.par_iter().find_first(|c| crc32fast::hash(&self.map[c.range.clone()]) != c.crc32);
        match damaged {
            Some(c) => Err(corrupt(format!("`{}` fails its CRC-32 check: the file is damaged", c.name))),
            None => Ok(tensors),
        }
    }

    /// The tensor `key`: a view of the map where its storage is mapped and it is contiguous,
    /// else its bytes gathered (the blob moved out when this tensor is its last user and
    /// covers it exactly).
    fn tensor(&mut self, key: &str, dtype: DType, tensor: &TensorRef) -> Result<Tensor> {
        let storage_key = &*tensor.storage.key;
        let last = self.release(storage_key);
        let contiguous = is_contiguous(&tensor.size, &tensor.stride);
        let whole = tensor.offset == 0 && contiguous && checked_numel(&tensor.size) == Some(tensor.storage.numel);
        let elem = dtype.size();
        self.fetch(storage_key, dtype, tensor.storage.numel)?;
        let gathered = match &self.blobs[storage_key] {
            Blob::Mapped(range) if contiguous => {
                let view = contiguous_range(tensor, elem, range.len()).ok_or_else(|| outside(key, tensor))?;
                let (start, len) = (range.start + view.start, view.len());
                return Ok(Tensor::mapped(dtype, tensor.size.clone(), self.map.clone(), start, len));
            }
            Blob::Loaded(_) if whole && last => None,
            Blob::Mapped(range) => {
                Some(gather(&self.map[range.clone()], elem, tensor).ok_or_else(|| outside(key, tensor))?)
            }
            Blob::Loaded(blob) => Some(gather(blob, elem, tensor).ok_or_else(|| outside(key, tensor))?),
        };
        let freed = if last { self.blobs.remove(storage_key) } else { None };
        let bytes = match (gathered, freed) {
            (Some(bytes), _) => bytes,
            (None, Some(Blob::Loaded(blob))) => blob,
            (None, _) => return Err(corrupt("storage cache out of sync")),
        };
        Tensor::from_bytes(dtype, tensor.size.clone(), bytes)
    }

    /// Counts one use of a storage; true when it was the last.
    fn release(&mut self, storage_key: &str) -> bool {
        match self.uses.get_mut(storage_key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => true,
        }
    }

    /// Maps or loads the blob of a storage unless done already; its length must be `numel`
    /// elements of `dtype`.
    fn fetch(&mut self, storage_key: &str, dtype: DType, numel: usize) -> Result<()> {
        let expected = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| corrupt(format!("storage `{storage_key}` size overflows")))?;
        if !self.blobs.contains_key(storage_key) {
            let name = format!("{}data/{storage_key}", self.prefix);
            let file = open_entry(self.archive, &name)?.ok_or_else(|| corrupt(format!("`{name}` is missing")))?;
            let blob = match stored_range(&file, self.archive_len, &name)? {
                Some(checksum) => {
                    let range = checksum.range.clone();
                    self.checksums.push(checksum);
                    Blob::Mapped(range)
                }
                None => Blob::Loaded(read_file(file, &name, expected)?),
            };
            self.blobs.insert(storage_key.to_owned(), blob);
        }
        let held = match &self.blobs[storage_key] {
            Blob::Mapped(range) => range.len(),
            Blob::Loaded(bytes) => bytes.len(),
        };
        if held != expected {
            return Err(corrupt(format!(
                "storage `{storage_key}` holds {held} bytes, expected {numel} {} elements",
                dtype.name()
            )));
        }
        Ok(())
    }
}

/// The range of the archive's `archive_len` bytes holding `file` (entry `name`) and its CRC-32,
/// when it is stored uncompressed and unencrypted (`None` otherwise: read it instead).
fn stored_range(file: &Entry<'_, '_>, archive_len: usize, name: &str) -> Result<Option<Checksum>> {
    if file.compression() != CompressionMethod::Stored || file.encrypted() || file.size() != file.compressed_size() {
        return Ok(None);
    }
    let start = file.data_start().and_then(|s| usize::try_from(s).ok());
    let range = start.zip(usize::try_from(file.size()).ok()).and_then(|(s, n)| Some(s..s.checked_add(n)?));
    match range.filter(|r| r.end <= archive_len) {
        Some(range) => Ok(Some(Checksum { name: name.to_owned(), range, crc32: file.crc32() })),
        None => Err(corrupt(format!("`{name}` reaches past the end of the file"))),
    }
}

/// The byte range of a contiguous `tensor` inside its storage of `storage_len` bytes.
fn contiguous_range(tensor: &TensorRef, elem: usize, storage_len: usize) -> Option<Range<usize>> {
    let start = tensor.offset.checked_mul(elem)?;
    let end = start.checked_add(checked_numel(&tensor.size)?.checked_mul(elem)?)?;
    (end <= storage_len).then_some(start..end)
}

/// The error for a view that reaches outside its storage.
fn outside(key: &str, tensor: &TensorRef) -> Error {
    corrupt(format!(
        "tensor `{key}` (offset {}, size {:?}, stride {:?}) reaches outside its storage of {} elements",
        tensor.offset, tensor.size, tensor.stride, tensor.storage.numel
    ))
}

/// Whether `stride` is the row-major stride of `size` (dimensions of size 1 may have any stride).
fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&n, &s) in size.iter().zip(stride).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(n);
    }
    true
}

/// The elements of a strided view of `storage` (elements of `elem` bytes), copied into
/// row-major order; `None` when an index falls outside the storage or a size overflows.
fn gather(storage: &[u8], elem: usize, tensor: &TensorRef) -> Option<Vec<u8>> {
    let (size, stride) = (&tensor.size, &tensor.stride);
    let numel = checked_numel(size)?;
    if numel == 0 {
        return Some(Vec::new());
    }
    let last =
        size.iter().zip(stride).try_fold(tensor.offset, |acc, (&n, &s)| acc.checked_add((n - 1).checked_mul(s)?))?;
    if last >= storage.len() / elem {
        return None;
    }
    let len = numel.checked_mul(elem)?;
    if is_contiguous(size, stride) {
        return contiguous_range(tensor, elem, storage.len()).map(|range| storage[range].to_vec());
    }
    let mut out = Vec::new();
    out.try_reserve_exact(len).ok()?;
    let mut index = vec![0usize; size.len()];
    for _ in 0..numel {
        let at = tensor.offset + index.iter().zip(stride).map(|(&i, &s)| i * s).sum::<usize>();
        out.extend_from_slice(storage.get(at * elem..(at + 1) * elem)?);
        advance(&mut index, size);
    }
    Some(out)
}

/// Steps a row-major multi-index to the next element.
fn advance(index: &mut [usize], size: &[usize]) {
    for (i, &n) in index.iter_mut().zip(size).rev() {
        *i += 1;
        if *i < n {
            return;
        }
        *i = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Backing;
    use super::*;

    #[test]
    fn torch_save_tensors_are_views_of_the_file() {
        // torch.save stores its blobs uncompressed: its contiguous tensors need no copy; the
        // fixture's one strided view (`transposed`) is gathered.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/weights/basicsr_tiny.pth");
        let store = WeightStore::load(&path, &LoadOptions::default()).unwrap();
        assert!(store.len() > 1);
        for (key, tensor) in store.iter() {
            let mapped = matches!(tensor.backing, Backing::Mapped(_));
            assert_eq!(mapped, key != "transposed", "`{key}`");
        }
    }
}
