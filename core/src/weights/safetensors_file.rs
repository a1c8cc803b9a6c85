//! `.safetensors` files: the header parsed by the `safetensors` crate, tensors kept as
//! zero-copy views of the memory map.
//!
//! A safetensors file is a flat state dict, so `LoadOptions::param_key` does not apply and the
//! store records no param key; `module.` prefixes are stripped as for `.pth` files.

use std::collections::BTreeMap;
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use super::{DType, Format, LoadOptions, Tensor, WeightStore, checked_numel, strip_module_prefix};
use crate::error::{Error, Result};

/// Size of the little-endian header-length prefix.
const LEN_PREFIX: usize = 8;

/// How a legacy (pre-1.6, not zipped) `torch.save` file begins: protocol 2, then the pickled
/// magic number `0x1950a86a20f9469cfc6c` as LONG1.
const LEGACY_TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// Reads the safetensors file held in `map[..len]`.
pub(super) fn read(map: Arc<memmap2::Mmap>, len: usize, _options: &LoadOptions) -> Result<WeightStore> {
    let bytes = map.get(..len).ok_or_else(|| Error::corrupt("safetensors", "length exceeds the mapping"))?;
    let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| parse_error(bytes, &e))?;
    let data_start = header_len + LEN_PREFIX;
    let infos: BTreeMap<String, _> = metadata.tensors().into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (key, info) in infos {
        let dtype = dtype(info.dtype).ok_or_else(|| Error::UnsupportedDtype {
            key: key.clone(),
            dtype: format!("{:?}", info.dtype).to_lowercase(),
        })?;
        let (start, end) = info.data_offsets;
        let byte_len = checked_numel(&info.shape).and_then(|n| n.checked_mul(dtype.size()));
        let range = data_start.checked_add(start).zip(data_start.checked_add(end));
        let Some((start, end)) = range.filter(|&(s, e)| s <= e && e <= len && byte_len == Some(e - s)) else {
            return Err(Error::corrupt("safetensors", format!("tensor `{key}` has inconsistent data offsets")));
        };
        tensors.insert(key, Tensor::mapped(dtype, info.shape.clone(), map.clone(), start, end - start));
    }
    let strings = metadata.metadata().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(WeightStore::new(strip_module_prefix(tensors)?, Format::Safetensors, None).with_metadata(strings))
}

/// The crate's dtype for a safetensors dtype, when supported.
fn dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        Dtype::F64 => Some(DType::F64),
        _ => None,
    }
}

/// The error for a file the safetensors parser rejects; points legacy torch files elsewhere.
fn parse_error(bytes: &[u8], error: &safetensors::SafeTensorError) -> Error {
    if bytes.starts_with(LEGACY_TORCH_MAGIC) {
        return Error::corrupt(
            "pth",
            "legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a current \
             PyTorch (torch.save(torch.load(f), f)) or convert it to safetensors",
        );
    }
    Error::corrupt("safetensors", format!("cannot parse the header: {error}"))
}
