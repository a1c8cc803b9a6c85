//! The engine cache: what a serialized engine depends on ([`CacheKey`]) and the file format
//! that binds an engine to its key (a header checked before TensorRT sees a byte).
//!
//! A cached file is `magic "MDCPTTRT" · format u32 · key digest [32] · payload length u64 ·
//! payload SHA-256 [32] · payload` (little-endian). [`decode`] returns the payload only when
//! every field matches; anything else (another key, an older format, truncation, a flipped
//! bit) is a [`Reject`], and the caller rebuilds the engine.

use sha2::{Digest, Sha256};

use super::network::TrtPrecision;
use super::profile::{Profile, Size};
use crate::model::Model;

const MAGIC: &[u8; 8] = b"MDCPTTRT";
/// Version of the file format and of the lowering in `network.rs`: bump it when either
/// changes, so engines built by older code are rebuilt.
const FORMAT: u32 = 1;
/// Bytes before the payload.
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;

/// Everything a serialized engine depends on. Engines are not portable across TensorRT
/// versions or GPU architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// TensorRT library version as `major, minor, patch`.
    pub tensorrt_version: [u32; 3],
    /// GPU compute capability `major, minor` (8.7 for Jetson Orin).
    pub compute_capability: [u32; 2],
    /// Network precision.
    pub precision: TrtPrecision,
    /// Optimization profile.
    pub profile: Profile,
    /// SHA-256 of the weights ([`weights_hash`]).
    pub weights: [u8; 32],
}

/// SHA-256 over every tensor of `model` in key order: key, dtype, shape and raw bytes, each
/// length-prefixed so no two different weight sets hash the same input.
pub fn weights_hash(model: &Model) -> [u8; 32] {
    let mut h = Sha256::new();
    for (key, tensor) in model.weights().iter() {
        for part in [key.as_bytes(), tensor.dtype().name().as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update((tensor.shape().len() as u64).to_le_bytes());
        for &d in tensor.shape() {
            h.update((d as u64).to_le_bytes());
        }
        h.update((tensor.bytes().len() as u64).to_le_bytes());
        h.update(tensor.bytes());
    }
    h.finalize().into()
}

impl CacheKey {
    /// SHA-256 of a fixed-layout encoding of every field and the format version.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FORMAT.to_le_bytes());
        for v in self.tensorrt_version.iter().chain(&self.compute_capability) {
            h.update(v.to_le_bytes());
        }
        h.update([match self.precision {
            TrtPrecision::F32 => 0u8,
            TrtPrecision::F16 => 1,
        }]);
        let Profile { min, opt, max } = self.profile;
        for Size { height, width } in [min, opt, max] {
            h.update((height as u64).to_le_bytes());
            h.update((width as u64).to_le_bytes());
        }
        h.update(self.weights);
        h.finalize().into()
    }

    /// File name for this key in a cache folder: 32 hex digits of the digest and `.engine`.
    pub fn file_name(&self) -> String {
        let hex: String = self.digest()[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}.engine")
    }
}

/// Why a cached file was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a maskdcpt engine file.
    Magic,
    /// Written by another version of this format.
    Format(u32),
    /// Built for another key (TensorRT version, GPU, precision, profile or weights).
    Key,
    /// Shorter or longer than its header says.
    Length,
    /// The payload does not match its checksum.
    Checksum,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Magic => f.write_str("not a maskdcpt TensorRT engine file"),
            Reject::Format(v) => write!(f, "engine file format {v}, expected {FORMAT}"),
            Reject::Key => f.write_str("built for another TensorRT version, GPU, precision, profile or weights"),
            Reject::Length => f.write_str("truncated or extended"),
            Reject::Checksum => f.write_str("payload checksum mismatch"),
        }
    }
}

/// A cache file holding `engine` (a serialized TensorRT engine) for `key`.
pub fn encode(key: &CacheKey, engine: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + engine.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&key.digest());
    out.extend_from_slice(&(engine.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(engine));
    out.extend_from_slice(engine);
    out
}

/// The serialized engine in `file`, if it was written by [`encode`] for `key` and is intact.
pub fn decode<'a>(key: &CacheKey, file: &'a [u8]) -> Result<&'a [u8], Reject> {
    if file.len() < 12 || &file[..8] != MAGIC {
        return Err(Reject::Magic);
    }
    let format = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(Reject::Format(format));
    }
    if file.len() < HEADER_LEN {
        return Err(Reject::Length);
    }
    if file[12..44] != key.digest() {
        return Err(Reject::Key);
    }
    let len = u64::from_le_bytes(file[44..52].try_into().expect("8 bytes"));
    let payload = &file[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(Reject::Length);
    }
    if file[52..84] != Sha256::digest(payload)[..] {
        return Err(Reject::Checksum);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{random_model, tiny_spec};
    use proptest::prelude::*;

    fn key() -> CacheKey {
        let s = |height, width| Size { height, width };
        CacheKey {
            tensorrt_version: [10, 3, 0],
            compute_capability: [8, 7],
            precision: TrtPrecision::F16,
            profile: Profile { min: s(16, 16), opt: s(720, 1280), max: s(1088, 1920) },
            weights: [7; 32],
        }
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = key();
        let s = |height, width| Size { height, width };
        let mut variants = vec![];
        for i in 0..3 {
            let mut k = base;
            k.tensorrt_version[i] += 1;
            variants.push(k);
        }
        for i in 0..2 {
            let mut k = base;
            k.compute_capability[i] += 1;
            variants.push(k);
        }
        variants.push(CacheKey { precision: TrtPrecision::F32, ..base });
        for p in [
            Profile { min: s(32, 16), ..base.profile },
            Profile { opt: s(720, 1296), ..base.profile },
            Profile { max: s(1088, 1936), ..base.profile },
            // Same numbers in other fields must not collide.
            Profile { min: s(16, 16), opt: s(1088, 1920), max: s(720, 1280) },
        ] {
            variants.push(CacheKey { profile: p, ..base });
        }
        variants.push(CacheKey { weights: [8; 32], ..base });
        let mut digests: Vec<[u8; 32]> = variants.iter().map(CacheKey::digest).collect();
        digests.push(base.digest());
        let n = digests.len();
        digests.sort_unstable();
        digests.dedup();
        assert_eq!(digests.len(), n);
        assert_eq!(base.file_name().len(), 32 + ".engine".len());
    }

    #[test]
    fn weights_hash_sees_every_value() {
        let spec = tiny_spec();
        let (a, b) = (random_model(&spec, 1), random_model(&spec, 2));
        assert_eq!(weights_hash(&a), weights_hash(&random_model(&spec, 1)));
        assert_ne!(weights_hash(&a), weights_hash(&b));
    }

    #[test]
    fn round_trip_and_rejections() {
        let engine = b"serialized engine bytes".to_vec();
        let file = encode(&key(), &engine);
        assert_eq!(decode(&key(), &file), Ok(&engine[..]));
        assert_eq!(decode(&CacheKey { weights: [0; 32], ..key() }, &file), Err(Reject::Key));
        assert_eq!(decode(&key(), b""), Err(Reject::Magic));
        assert_eq!(decode(&key(), &file[..file.len() - 1]), Err(Reject::Length));
        let mut old = file.clone();
        old[8] = 0;
        assert_eq!(decode(&key(), &old), Err(Reject::Format(0)));
        assert_eq!(decode(&key(), &encode(&key(), &[])), Ok(&[][..]));
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(
            engine in proptest::collection::vec(any::<u8>(), 0..200),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut file = encode(&key(), &engine);
            let i = at.index(file.len());
            file[i] ^= xor;
            prop_assert!(decode(&key(), &file).is_err(), "byte {} changed", i);
        }

        #[test]
        fn truncated_or_extended_files_are_rejected(
            engine in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<prop::sample::Index>(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let file = encode(&key(), &engine);
            prop_assert!(decode(&key(), &file[..cut.index(file.len())]).is_err());
            let mut longer = file.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(decode(&key(), &longer), Err(Reject::Length));
        }

        #[test]
        fn arbitrary_bytes_never_decode_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(decode(&key(), &bytes).is_err());
        }
    }
}
