//! Writes PyTorch's zip checkpoint format (`torch.save`, protocol 2 pickle) for a dict of
//! state dicts of float32 tensors, e.g. BasicSR's `{"params": ..., "params_ema": ...}`: what
//! `torch.load(..., weights_only=True)` and `maskdcpt-core`'s restricted reader accept.
//! Only the opcodes that format needs; every tensor gets its own contiguous storage.

use std::io::{Cursor, Write};

use anyhow::Result;
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use crate::host::HostTensor;

/// Pickle opcodes used here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const MARK: u8 = b'(';
    pub const SETITEMS: u8 = b'u';
    pub const TUPLE: u8 = b't';
    pub const REDUCE: u8 = b'R';
    pub const GLOBAL: u8 = b'c';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const STOP: u8 = b'.';
}

struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn string(&mut self, s: &str) {
        self.out.push(op::BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        self.out.push(op::BININT);
        self.out.extend_from_slice(&(i32::try_from(v).expect("sizes fit in i32")).to_le_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(op::GLOBAL);
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn int_tuple(&mut self, values: &[usize]) {
        self.out.push(op::MARK);
        values.iter().for_each(|&v| self.int(v));
        self.out.push(op::TUPLE);
    }

    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
    }

    /// `_rebuild_tensor_v2(persistent storage, 0, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, storage_key: &str, shape: &[usize]) {
        let numel: usize = shape.iter().product();
        let mut strides = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(op::MARK);
        self.out.push(op::MARK);
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(storage_key);
        self.string("cpu");
        self.int(numel);
        self.out.extend_from_slice(&[op::TUPLE, op::BINPERSID]);
        self.int(0);
        self.int_tuple(shape);
        self.int_tuple(&strides);
        self.out.push(op::NEWFALSE);
        self.ordered_dict();
        self.out.extend_from_slice(&[op::TUPLE, op::REDUCE]);
    }
}

/// Serialises `{outer_key: OrderedDict(name → tensor)}` as a `torch.save` zip archive.
pub fn write_state_dicts(dicts: &[(&str, Vec<(String, HostTensor)>)]) -> Result<Vec<u8>> {
    let mut pickler = Pickler { out: vec![op::PROTO, 2, op::EMPTY_DICT, op::MARK] };
    let mut storages: Vec<&[f32]> = Vec::new();
    for (outer, tensors) in dicts {
        pickler.string(outer);
        pickler.ordered_dict();
        pickler.out.push(op::MARK);
        for (name, tensor) in tensors {
            pickler.string(name);
            pickler.tensor(&storages.len().to_string(), &tensor.shape);
            storages.push(&tensor.values);
        }
        pickler.out.push(op::SETITEMS);
    }
    pickler.out.extend_from_slice(&[op::SETITEMS, op::STOP]);

    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    // Storages are 64-byte aligned like torch.save's, so readers may memory-map them.
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
    zip.start_file("archive/data.pkl", stored)?;
    zip.write_all(&pickler.out)?;
    zip.start_file("archive/byteorder", stored)?;
    zip.write_all(b"little")?;
    for (key, values) in storages.iter().enumerate() {
        zip.start_file(format!("archive/data/{key}"), stored)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes)?;
    }
    zip.start_file("archive/version", stored)?;
    zip.write_all(b"3\n")?;
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use maskdcpt_core::weights::{LoadOptions, WeightStore};

    #[test]
    fn core_reads_back_both_state_dicts() {
        let tensor = |shape: Vec<usize>, base: f32| {
            let n = shape.iter().product::<usize>();
            HostTensor { shape, values: (0..n).map(|i| base + i as f32 * 0.5).collect() }
        };
        let live = vec![("a.weight".to_string(), tensor(vec![2, 3, 1, 1], 1.0)), ("b".into(), tensor(vec![4], -2.0))];
        let ema = vec![("a.weight".to_string(), tensor(vec![2, 3, 1, 1], 9.0)), ("b".into(), tensor(vec![4], 7.0))];
        let bytes = write_state_dicts(&[("params", live), ("params_ema", ema)]).unwrap();
        for (key, first) in [("params", 1.0f32), ("params_ema", 9.0)] {
            let options = LoadOptions { param_key: Some(key.into()) };
            let store = WeightStore::from_bytes(&bytes, &options).unwrap();
            assert_eq!(store.len(), 2);
            let a = store.get("a.weight").unwrap();
            assert_eq!(a.shape(), [2, 3, 1, 1]);
            assert_eq!(a.to_f32()[0], first);
            assert_eq!(a.to_f32()[5], first + 2.5);
        }
    }
}
