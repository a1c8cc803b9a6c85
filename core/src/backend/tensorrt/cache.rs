//! The TensorRT engine cache: what a serialized engine depends on ([`CacheKey`]), stored in
//! the shared [`engine_file`] container under magic `MDCPTTRT`.

use sha2::{Digest, Sha256};

use super::network::TrtPrecision;
use super::profile::{Profile, Size};
use crate::engine_file::{self, Kind, Reject};

/// Version of the file format and of the lowering in `network.rs`: bump it when either
/// changes, so engines built by older code are rebuilt.
const FORMAT: u32 = 1;
/// TensorRT engine files.
const KIND: Kind = Kind { magic: *b"MDCPTTRT", format: FORMAT };

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
    /// SHA-256 of the weights ([`weights_hash`](crate::engine_file::weights_hash)).
    pub weights: [u8; 32],
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
        format!("{}.engine", engine_file::short_hex(&self.digest()))
    }
}

/// A cache file holding `engine` (a serialized TensorRT engine) for `key`.
pub fn encode(key: &CacheKey, engine: &[u8]) -> Vec<u8> {
    engine_file::encode(&KIND, &key.digest(), engine)
}

/// The serialized engine in `file`, if it was written by [`encode`] for `key` and is intact.
pub fn decode<'a>(key: &CacheKey, file: &'a [u8]) -> Result<&'a [u8], Reject> {
    engine_file::decode(&KIND, &key.digest(), file)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        crate::engine_file::assert_distinct(digests);
        assert_eq!(base.file_name().len(), 32 + ".engine".len());
    }

    #[test]
    fn round_trip_binds_the_key() {
        let engine = b"serialized engine bytes".to_vec();
        let file = encode(&key(), &engine);
        assert_eq!(decode(&key(), &file), Ok(&engine[..]));
        assert_eq!(decode(&CacheKey { weights: [0; 32], ..key() }, &file), Err(Reject::Key));
    }
}
