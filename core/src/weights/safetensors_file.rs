//! `.safetensors` files: the header parsed by the `safetensors` crate, tensors kept as
//! zero-copy views of the memory map; and files written byte for byte the same each time.
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

/// A safetensors file of `tensors` with `metadata`, the same bytes for the same input.
///
/// `safetensors::serialize` orders tensors by dtype and name but writes its metadata map in
/// the per-process random order of a `HashMap`, so two exports of one model would differ in
/// their header. Here the tensors are serialised without metadata and the metadata entry, its
/// keys sorted, is put first in the header as the crate would put it; the header is padded
/// with spaces to a multiple of 8 bytes as the crate pads it.
pub fn serialize_sorted<'a, V: safetensors::View>(
    tensors: impl IntoIterator<Item = (&'a str, V)>,
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, safetensors::SafeTensorError> {
    let bytes = safetensors::serialize(tensors, None)?;
    if metadata.is_empty() {
        return Ok(bytes);
    }
    // The crate's own output: its length prefix, then its header as one JSON object.
    let header_len = bytes
        .first_chunk::<LEN_PREFIX>()
        .map(|prefix| u64::from_le_bytes(*prefix) as usize)
        .filter(|&len| LEN_PREFIX + len <= bytes.len())
        .ok_or(safetensors::SafeTensorError::InvalidHeaderLength)?;
    let header = std::str::from_utf8(&bytes[LEN_PREFIX..LEN_PREFIX + header_len])
        .map_err(safetensors::SafeTensorError::InvalidHeader)?
        .trim_end_matches(' ');
    let entries = header
        .strip_prefix('{')
        .and_then(|h| h.strip_suffix('}'))
        .ok_or(safetensors::SafeTensorError::InvalidHeaderLength)?;
    let separator = if entries.is_empty() { "" } else { "," };
    let metadata = serde_json::to_string(metadata)?;
    let mut header = format!("{{\"__metadata__\":{metadata}{separator}{entries}}}").into_bytes();
    header.resize(header.len().next_multiple_of(LEN_PREFIX), b' ');
    let mut file = Vec::with_capacity(LEN_PREFIX + header.len() + bytes.len() - LEN_PREFIX - header_len);
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(&header);
    file.extend_from_slice(&bytes[LEN_PREFIX + header_len..]);
    Ok(file)
}

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
    // A safetensors header is a JSON object right after its length.
    if bytes.get(LEN_PREFIX) != Some(&b'{') {
        return Error::corrupt(
            "checkpoint",
            "not a checkpoint: expected a PyTorch `.pth` (the zip archive torch.save writes) or a `.safetensors` file",
        );
    }
    Error::corrupt("safetensors", format!("cannot parse the header: {error}"))
}

#[cfg(test)]
mod tests {
    use safetensors::tensor::TensorView;

    use super::*;

    /// Serialises two small tensors (F16 and F32) with `metadata`.
    fn file(metadata: &BTreeMap<String, String>) -> Vec<u8> {
        let wide = [1.5f32, -2.0, 0.25].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        let narrow = [7u8, 0, 9, 1];
        let views = [
            ("b.weight", TensorView::new(Dtype::F32, vec![3], &wide).unwrap()),
            ("a.bias", TensorView::new(Dtype::F16, vec![2], &narrow).unwrap()),
        ];
        serialize_sorted(views, metadata).unwrap()
    }

    #[test]
    fn sorted_serialisation_is_byte_stable_and_reads_back() {
        let metadata: BTreeMap<String, String> =
            (0..12).map(|i| (format!("key{}", (i * 7) % 12), format!("value \"{i}\""))).collect();
        let first = file(&metadata);
        // A `HashMap` draws new random keys for every instance, so twelve entries written
        // through one would come out in another order almost every time.
        for _ in 0..8 {
            assert_eq!(file(&metadata), first);
        }
        let (header_len, header) = SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(header_len % LEN_PREFIX, 0);
        let read_back: BTreeMap<String, String> = header.metadata().clone().unwrap().into_iter().collect();
        assert_eq!(read_back, metadata);
        let text = std::str::from_utf8(&first[LEN_PREFIX..LEN_PREFIX + header_len]).unwrap();
        let positions: Vec<usize> = metadata.keys().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
        assert!(positions.is_sorted(), "metadata keys out of order in {text}");
        let tensors = SafeTensors::deserialize(&first).unwrap();
        assert_eq!(tensors.tensor("a.bias").unwrap().data(), &[7, 0, 9, 1]);
        assert_eq!(tensors.tensor("b.weight").unwrap().shape(), &[3]);
        // Without metadata the file is the crate's own.
        let plain = file(&BTreeMap::new());
        assert!(SafeTensors::read_metadata(&plain).unwrap().1.metadata().is_none());
        assert_eq!(&first[first.len() - 16..], &plain[plain.len() - 16..]);
    }

    #[test]
    fn a_file_without_tensors_keeps_its_metadata() {
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let bytes = serialize_sorted(std::iter::empty::<(&str, TensorView)>(), &metadata).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["format"], "pt");
        assert!(header.tensors().is_empty());
    }
}
