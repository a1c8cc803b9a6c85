//! The file container that binds a serialized engine (TensorRT's, or the CUDA engine's
//! kernels and tuned algorithms) to everything it was built from, so a stale or damaged file
//! is rebuilt instead of trusted.
//!
//! A file is `magic [8] · format u32 · key digest [32] · payload length u64 · payload
//! SHA-256 [32] · payload` (little-endian). [`decode`] returns the payload only when every
//! field matches; anything else (another key, an older format, truncation, a flipped bit) is
//! a [`Reject`], and the caller rebuilds.

use sha2::{Digest, Sha256};

use crate::model::Model;

/// Which engine files a container holds: its magic and format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// First eight bytes of every file.
    pub magic: [u8; 8],
    /// Version of the format and of whatever produced the payload: bump it when either
    /// changes, so files written by older code are rebuilt.
    pub format: u32,
}

/// Bytes before the payload.
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;

/// Why an engine file was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not an engine file of this kind.
    Magic,
    /// Written by another version of this format.
    Format {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// Built for another key (library version, GPU, precision, shapes or weights).
    Key,
    /// Shorter or longer than its header says.
    Length,
    /// The payload does not match its checksum.
    Checksum,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Magic => f.write_str("not a maskdcpt engine file of this backend"),
            Reject::Format { found, expected } => write!(f, "engine file format {found}, expected {expected}"),
            Reject::Key => f.write_str("built for another library version, GPU, precision, shape or weights"),
            Reject::Length => f.write_str("truncated or extended"),
            Reject::Checksum => f.write_str("payload checksum mismatch"),
        }
    }
}

/// A `kind` file holding `payload` for the key whose digest is `key`.
pub fn encode(kind: &Kind, key: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&kind.magic);
    out.extend_from_slice(&kind.format.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// The payload of `file`, if [`encode`] wrote it for `kind` and `key` and it is intact.
pub fn decode<'a>(kind: &Kind, key: &[u8; 32], file: &'a [u8]) -> Result<&'a [u8], Reject> {
    if file.len() < 12 || file[..8] != kind.magic {
        return Err(Reject::Magic);
    }
    let format = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
    if format != kind.format {
        return Err(Reject::Format { found: format, expected: kind.format });
    }
    if file.len() < HEADER_LEN {
        return Err(Reject::Length);
    }
    if file[12..44] != key[..] {
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

/// The first 16 bytes of a digest as 32 hex digits (engine file names in cache folders).
pub fn short_hex(digest: &[u8; 32]) -> String {
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that no two of `digests` are equal (key tests: every field must change a digest).
#[cfg(test)]
pub(crate) fn assert_distinct(mut digests: Vec<[u8; 32]>) {
    let n = digests.len();
    digests.sort_unstable();
    digests.dedup();
    assert_eq!(digests.len(), n, "two keys share a digest");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{random_model, tiny_spec};
    use proptest::prelude::*;

    const KIND: Kind = Kind { magic: *b"MDCPTTST", format: 3 };
    const KEY: [u8; 32] = [7; 32];

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
        let file = encode(&KIND, &KEY, &engine);
        assert_eq!(decode(&KIND, &KEY, &file), Ok(&engine[..]));
        assert_eq!(decode(&KIND, &[0; 32], &file), Err(Reject::Key));
        assert_eq!(decode(&Kind { magic: *b"MDCPTOTH", ..KIND }, &KEY, &file), Err(Reject::Magic));
        assert_eq!(decode(&KIND, &KEY, b""), Err(Reject::Magic));
        assert_eq!(decode(&KIND, &KEY, &file[..file.len() - 1]), Err(Reject::Length));
        let mut old = file.clone();
        old[8] = 0;
        assert_eq!(decode(&KIND, &KEY, &old), Err(Reject::Format { found: 0, expected: 3 }));
        assert_eq!(decode(&KIND, &KEY, &encode(&KIND, &KEY, &[])), Ok(&[][..]));
        assert_eq!(short_hex(&KEY).len(), 32);
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_rejected(
            engine in proptest::collection::vec(any::<u8>(), 0..200),
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let mut file = encode(&KIND, &KEY, &engine);
            let i = at.index(file.len());
            file[i] ^= xor;
            prop_assert!(decode(&KIND, &KEY, &file).is_err(), "byte {} changed", i);
        }

        #[test]
        fn truncated_or_extended_files_are_rejected(
            engine in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<prop::sample::Index>(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let file = encode(&KIND, &KEY, &engine);
            prop_assert!(decode(&KIND, &KEY, &file[..cut.index(file.len())]).is_err());
            let mut longer = file.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(decode(&KIND, &KEY, &longer), Err(Reject::Length));
        }

        #[test]
        fn arbitrary_bytes_never_decode_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(decode(&KIND, &KEY, &bytes).is_err());
        }
    }
}
