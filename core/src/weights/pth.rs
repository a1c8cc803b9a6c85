//! PyTorch `torch.save` zip archives (`.pth`, `.pt`).
//!
//! The archive holds one top-level folder (its name varies: `archive/`, `net_g_latest/`, ...)
//! with `data.pkl` (read by the restricted [`pickle`] reader), `byteorder`, and one raw blob per
//! storage under `data/<key>`. Tensors are gathered from their storage into owned contiguous
//! bytes, every index checked against the blob.
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

use zip::ZipArchive;
use zip::result::ZipError;

use super::pickle::{self, Object, Pickle, TensorRef, Value};
use super::{DType, Format, LoadOptions, Tensor, WeightStore, checked_numel, strip_module_prefix};
use crate::error::{Error, Result};

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// The key/value pairs of a pickled dict.
type Pairs = [(Value, Value)];

/// Largest `data.pkl` accepted; a state dict's pickle takes about 200 bytes per tensor.
const MAX_PICKLE_BYTES: usize = 256 << 20;

/// Top-level entries holding the state dict, in order of preference when no `param_key` is given.
const WRAPPER_KEYS: [&str; 5] = ["params_ema", "params", "state_dict", "model", "net"];

/// How many top-level keys an error message lists.
const LISTED_KEYS: usize = 20;

/// Reads a `torch.save` zip archive held in `bytes`.
pub(super) fn read(bytes: &[u8], options: &LoadOptions) -> Result<WeightStore> {
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
    let tensors = Storages::new(&mut archive, &prefix, &refs).resolve(refs)?;
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

/// The bytes of entry `name` (`None` when absent), refusing entries of more than `max` bytes.
/// Reads to the end of the entry so that the zip reader checks its CRC.
fn read_entry(archive: &mut Archive<'_>, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
    let file = match archive.by_name(name) {
        Ok(file) => file,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(corrupt(format!("cannot open `{name}`: {e}"))),
    };
    let size = usize::try_from(file.size()).ok().filter(|&s| s <= max);
    let size = size.ok_or_else(|| corrupt(format!("`{name}` holds {} bytes, at most {max} expected", file.size())))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(size).map_err(|_| corrupt(format!("cannot allocate {size} bytes for `{name}`")))?;
    let limit = u64::try_from(size).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut bytes).map_err(|e| corrupt(format!("cannot read `{name}`: {e}")))?;
    if bytes.len() != size {
        return Err(corrupt(format!("`{name}` holds {} bytes, its header says {size}", bytes.len())));
    }
    Ok(Some(bytes))
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

/// Storage blobs of the archive, loaded on first use and freed after their last.
struct Storages<'b, 'a> {
    archive: &'b mut Archive<'a>,
    prefix: &'b str,
    loaded: HashMap<String, Vec<u8>>,
    uses: HashMap<String, usize>,
}

impl<'b, 'a> Storages<'b, 'a> {
    /// Prepares to resolve `refs`, counting how many tensors view each storage.
    fn new(archive: &'b mut Archive<'a>, prefix: &'b str, refs: &BTreeMap<String, (DType, &TensorRef)>) -> Self {
        let mut uses = HashMap::new();
        for (_, tensor) in refs.values() {
            *uses.entry(tensor.storage.key.to_string()).or_insert(0) += 1;
        }
        Storages { archive, prefix, loaded: HashMap::new(), uses }
    }

    /// Builds every tensor.
    fn resolve(mut self, refs: BTreeMap<String, (DType, &TensorRef)>) -> Result<BTreeMap<String, Tensor>> {
        refs.into_iter()
            .map(|(key, (dtype, tensor))| {
                let bytes = self.view(&key, dtype, tensor)?;
                Ok((key, Tensor::from_bytes(dtype, tensor.size.clone(), bytes)?))
            })
            .collect()
    }

    /// The contiguous bytes of `tensor` (named `key`), moving the blob out when this tensor is
    /// its last user and covers it exactly.
    fn view(&mut self, key: &str, dtype: DType, tensor: &TensorRef) -> Result<Vec<u8>> {
        let storage_key = &*tensor.storage.key;
        let last = self.release(storage_key);
        let whole = tensor.offset == 0
            && is_contiguous(&tensor.size, &tensor.stride)
            && checked_numel(&tensor.size) == Some(tensor.storage.numel);
        let blob = self.blob(storage_key, dtype, tensor.storage.numel)?;
        let gathered = if whole && last {
            None
        } else {
            Some(gather(blob, dtype.size(), tensor).ok_or_else(|| outside(key, tensor))?)
        };
        let freed = if last { self.loaded.remove(storage_key) } else { None };
        gathered.or(freed).ok_or_else(|| corrupt("storage cache out of sync"))
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

    /// The blob of a storage, loaded if needed; its length must be `numel` elements of `dtype`.
    fn blob(&mut self, storage_key: &str, dtype: DType, numel: usize) -> Result<&[u8]> {
        let expected = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| corrupt(format!("storage `{storage_key}` size overflows")))?;
        if !self.loaded.contains_key(storage_key) {
            let name = format!("{}data/{storage_key}", self.prefix);
            let bytes =
                read_entry(self.archive, &name, expected)?.ok_or_else(|| corrupt(format!("`{name}` is missing")))?;
            self.loaded.insert(storage_key.to_owned(), bytes);
        }
        let blob = self.loaded.get(storage_key).map_or(&[][..], Vec::as_slice);
        if blob.len() != expected {
            return Err(corrupt(format!(
                "storage `{storage_key}` holds {} bytes, expected {numel} {} elements",
                blob.len(),
                dtype.name()
            )));
        }
        Ok(blob)
    }
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
        let start = tensor.offset * elem;
        return storage.get(start..start + len).map(<[u8]>::to_vec);
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
