//! CUDA engine files: what an engine built once can reuse in later processes — its compiled
//! kernels (PTX, so NVRTC is not needed where an engine file exists) and the cuBLASLt
//! algorithm chosen by timing for every product of every shape built so far — bound by an
//! [`EngineKey`] (library version, weights, GPU, cuBLASLt version, precision) in the shared
//! [`engine_file`] container.
//!
//! Payload: `ptx length u64 · PTX (UTF-8) · product count u64 · products`, each product
//! [`GemmShape`] (9 × 8 bytes), type, bias and accumulate flags (1 byte each) and the
//! algorithm (8 × u64), little-endian. A file for another key, or damaged, is rebuilt; an
//! algorithm read from an intact file is still used only if cuBLASLt proposes it for that
//! product ([`GemmPlan::adopt`](super::gemm::GemmPlan::adopt)).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::gemm::{GemmShape, GemmType};
use crate::engine_file::{self, Kind, Reject};
use crate::error::{Error, Result};

/// Version of the payload layout and of everything the saved algorithms depend on in this
/// backend (product shapes, descriptors): bump it when either changes.
const FORMAT: u32 = 1;
/// CUDA engine files.
const KIND: Kind = Kind { magic: *b"MDCPTCUD", format: FORMAT };

/// A product an algorithm was tuned for: shape, element type, bias epilogue, accumulation.
pub type ProductKey = (GemmShape, GemmType, bool, bool);

/// A cuBLASLt algorithm as its 64 opaque bytes.
pub type Algo = [u64; 8];

/// Everything an engine file depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineKey {
    /// maskdcpt version that wrote the file.
    pub library: String,
    /// SHA-256 of the kernel source ([`source_hash`](super::kernels::source_hash)): a build
    /// with changed kernels never loads another build's PTX, even at the same version.
    pub kernels: [u8; 32],
    /// SHA-256 of the model's weights ([`weights_hash`](crate::engine_file::weights_hash)).
    pub weights: [u8; 32],
    /// GPU name, e.g. "NVIDIA H200".
    pub device: String,
    /// Compute capability (major, minor).
    pub arch: (i32, i32),
    /// `cublasLtGetVersion()`.
    pub cublaslt: usize,
    /// FP16 engine (else f32).
    pub fp16: bool,
}

impl EngineKey {
    /// SHA-256 of every field, strings length-prefixed.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FORMAT.to_le_bytes());
        for text in [&self.library, &self.device] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        h.update(self.kernels);
        h.update(self.weights);
        h.update(self.arch.0.to_le_bytes());
        h.update(self.arch.1.to_le_bytes());
        h.update((self.cublaslt as u64).to_le_bytes());
        h.update([u8::from(self.fp16)]);
        h.finalize().into()
    }

    /// File name of this key's engine in a cache folder.
    pub fn file_name(&self) -> String {
        format!("{}.cuda-engine", engine_file::short_hex(&self.digest()))
    }
}

/// What an engine file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedEngine {
    /// The compiled kernels.
    pub ptx: String,
    /// The algorithm of every tuned product.
    pub algos: BTreeMap<ProductKey, Algo>,
}

fn type_tag(t: GemmType) -> u8 {
    match t {
        GemmType::F16 => 0,
        GemmType::F32 => 1,
    }
}

impl SavedEngine {
    /// The payload bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.ptx.len() as u64).to_le_bytes());
        out.extend_from_slice(self.ptx.as_bytes());
        out.extend_from_slice(&(self.algos.len() as u64).to_le_bytes());
        for ((shape, dtype, bias, accumulate), algo) in &self.algos {
            for v in [shape.rows, shape.cols, shape.depth] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [shape.ldb, shape.ldd, shape.batch as i64, shape.stride_a, shape.stride_b, shape.stride_d] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&[type_tag(*dtype), u8::from(*bias), u8::from(*accumulate)]);
            for word in algo {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    /// Parses a payload; any inconsistency is an error naming it (never a panic).
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader(bytes);
        let ptx_len = r.len("PTX")?;
        let ptx = String::from_utf8(r.take(ptx_len, "PTX")?.to_vec()).map_err(|_| "PTX is not UTF-8".to_owned())?;
        let count = r.len("product count")?;
        let mut algos = BTreeMap::new();
        for i in 0..count {
            let [rows, cols, depth] = [r.u64()?, r.u64()?, r.u64()?];
            let [ldb, ldd, batch, stride_a, stride_b, stride_d] =
                [r.i64()?, r.i64()?, r.i64()?, r.i64()?, r.i64()?, r.i64()?];
            let batch = i32::try_from(batch).map_err(|_| format!("product {i}: batch {batch} out of range"))?;
            let flags = r.take(3, "product flags")?;
            let dtype = match flags[0] {
                0 => GemmType::F16,
                1 => GemmType::F32,
                t => return Err(format!("product {i}: unknown element type {t}")),
            };
            let flag = |v: u8, what: &str| match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(format!("product {i}: {what} flag is {v}")),
            };
            let (bias, accumulate) = (flag(flags[1], "bias")?, flag(flags[2], "accumulate")?);
            let mut algo = [0u64; 8];
            for word in &mut algo {
                *word = r.u64()?;
            }
            let shape = GemmShape { rows, cols, depth, ldb, ldd, batch, stride_a, stride_b, stride_d };
            if algos.insert((shape, dtype, bias, accumulate), algo).is_some() {
                return Err(format!("product {i} is listed twice"));
            }
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the last product", r.0.len()));
        }
        Ok(SavedEngine { ptx, algos })
    }
}

/// Reads little-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("{what}: needs {n} bytes, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, "a field")?.try_into().expect("8 bytes")))
    }

    fn i64(&mut self) -> std::result::Result<i64, String> {
        Ok(self.u64()? as i64)
    }

    /// A length or count, which cannot exceed the bytes left.
    fn len(&mut self, what: &str) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or_else(|| format!("{what} {n} exceeds the {} bytes left", self.0.len()))
    }
}

/// How an engine file was used when the engine was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileUse {
    /// No file was there: it is written once the first shape is built.
    Missing,
    /// An intact file for this key: its kernels and algorithms are reused.
    Reused,
    /// A file was there but not used (why); it is rewritten.
    Rejected(String),
}

/// Reads the engine file at `path` for `key`.
pub fn load(path: &Path, key: &EngineKey) -> Result<(Option<SavedEngine>, FileUse)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, FileUse::Missing)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let rejected = |why: String| Ok((None, FileUse::Rejected(why)));
    match engine_file::decode(&KIND, &key.digest(), &bytes) {
        Err(Reject::Key) => rejected(Reject::Key.to_string()),
        Err(reject) => rejected(reject.to_string()),
        Ok(payload) => match SavedEngine::from_bytes(payload) {
            Ok(saved) => Ok((Some(saved), FileUse::Reused)),
            Err(why) => rejected(format!("damaged payload: {why}")),
        },
    }
}

/// Writes `saved` for `key` to `path` (all or nothing), creating its folder.
pub fn save(path: &Path, key: &EngineKey, saved: &SavedEngine) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file = engine_file::encode(&KIND, &key.digest(), &saved.to_bytes());
    crate::atomic_file::write(path, &file).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> EngineKey {
        EngineKey {
            library: "0.1.0".into(),
            kernels: [5; 32],
            weights: [3; 32],
            device: "NVIDIA H200".into(),
            arch: (9, 0),
            cublaslt: 130_100,
            fp16: true,
        }
    }

    fn saved(products: usize) -> SavedEngine {
        let algos = (0..products)
            .map(|i| {
                let shape = GemmShape::conv1x1(8 * (i + 1), 16, 4096);
                let key = (shape, if i % 2 == 0 { GemmType::F16 } else { GemmType::F32 }, i % 3 == 0, i % 5 == 0);
                (key, [i as u64, u64::MAX, 0, 1, 2, 3, 4, 5 + i as u64])
            })
            .collect();
        SavedEngine { ptx: ".version 9.0\n.entry conv_in(".into(), algos }
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = key();
        let variants = [
            EngineKey { library: "0.1.1".into(), ..base.clone() },
            EngineKey { kernels: [6; 32], ..base.clone() },
            EngineKey { weights: [4; 32], ..base.clone() },
            EngineKey { device: "NVIDIA H100".into(), ..base.clone() },
            EngineKey { arch: (9, 1), ..base.clone() },
            EngineKey { arch: (8, 0), ..base.clone() },
            EngineKey { cublaslt: 130_101, ..base.clone() },
            EngineKey { fp16: false, ..base.clone() },
            // Moving bytes between the two strings must not collide.
            EngineKey { library: "0.1.0N".into(), device: "VIDIA H200".into(), ..base.clone() },
        ];
        let mut digests: Vec<[u8; 32]> = variants.iter().map(EngineKey::digest).collect();
        digests.push(base.digest());
        crate::engine_file::assert_distinct(digests);
        assert!(base.file_name().ends_with(".cuda-engine"));
    }

    #[test]
    fn files_round_trip_and_stale_or_damaged_ones_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("model.cuda-engine");
        assert_eq!(load(&path, &key()).unwrap(), (None, FileUse::Missing));
        save(&path, &key(), &saved(3)).unwrap();
        assert_eq!(load(&path, &key()).unwrap(), (Some(saved(3)), FileUse::Reused));
        let (none, other) = load(&path, &EngineKey { device: "NVIDIA H100".into(), ..key() }).unwrap();
        assert!(none.is_none() && matches!(other, FileUse::Rejected(why) if why.contains("another")));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (none, damaged) = load(&path, &key()).unwrap();
        assert!(none.is_none() && matches!(damaged, FileUse::Rejected(why) if why.contains("checksum")));
    }

    proptest! {
        #[test]
        fn payloads_round_trip(products in 0usize..12) {
            let s = saved(products);
            prop_assert_eq!(SavedEngine::from_bytes(&s.to_bytes()), Ok(s));
        }

        /// Parsing never panics, and whatever parses re-encodes to the same bytes.
        #[test]
        fn arbitrary_payloads_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(parsed) = SavedEngine::from_bytes(&bytes) {
                prop_assert_eq!(parsed.to_bytes(), bytes);
            }
        }

        /// Every truncation of a valid payload is an error.
        #[test]
        fn truncated_payloads_fail(products in 0usize..6, cut in any::<prop::sample::Index>()) {
            let bytes = saved(products).to_bytes();
            let cut = cut.index(bytes.len());
            prop_assert!(SavedEngine::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
