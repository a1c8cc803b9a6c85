//! The one error type of the crate: what failed, on what, and what to do about it.
//!
//! Every variant renders as a single readable line (the CLI prints it as is, the C ABI maps
//! it to a status code plus the same text). Nothing here knows about any backend.

use std::path::PathBuf;

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading weights, building an engine or restoring.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },

    /// A weights file is not a valid checkpoint of the format it claims to be.
    #[error("corrupt {format} file: {detail}")]
    CorruptWeights {
        /// `"safetensors"`, `"pth"`, `"pickle"`...
        format: &'static str,
        /// What exactly is wrong and where.
        detail: String,
    },

    /// The checkpoint's pickle references a Python global that a plain `torch.save` of tensors
    /// never emits; it is refused instead of executed.
    #[error(
        "refusing to load pickle global `{module}.{name}`: only tensors, dicts and the torch storage \
         types are accepted (the file is not a plain torch.save of a state dict)"
    )]
    ForbiddenGlobal {
        /// The Python module named by the pickle.
        module: String,
        /// The attribute named by the pickle.
        name: String,
    },

    /// The file is valid but holds no state dict we can use (e.g. wrong `param_key`).
    #[error("{0}")]
    NoStateDict(String),

    /// The set of keys matches no supported architecture.
    #[error("unrecognised architecture: {0}")]
    UnknownArchitecture(String),

    /// A key the inferred architecture needs is absent.
    #[error("missing key `{key}` (expected shape {expected:?})")]
    MissingKey {
        /// The state-dict key.
        key: String,
        /// The shape the architecture expects for it.
        expected: Vec<usize>,
    },

    /// A key that the inferred architecture does not have.
    #[error("unexpected key `{key}` (shape {shape:?}) for a {family} model")]
    UnexpectedKey {
        /// The state-dict key.
        key: String,
        /// Its shape in the file.
        shape: Vec<usize>,
        /// The family that was inferred.
        family: &'static str,
    },

    /// A tensor has the wrong shape.
    #[error("key `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The state-dict key.
        key: String,
        /// The shape the architecture expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// A tensor holds NaN or infinity.
    #[error("key `{key}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The state-dict key.
        key: String,
        /// Flat index of the first bad element.
        index: usize,
        /// The bad value.
        value: f32,
    },

    /// A tensor has a dtype the engine cannot use.
    #[error("key `{key}` has unsupported dtype {dtype}; supported: f32, f16, bf16, f64")]
    UnsupportedDtype {
        /// The state-dict key.
        key: String,
        /// The dtype name as found in the file.
        dtype: String,
    },

    /// An input image cannot be restored as given.
    #[error("invalid image: {0}")]
    InvalidImage(String),

    /// A caller-supplied option or argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The run would need more memory than is available.
    #[error(
        "not enough memory: this run needs about {needed_mb} MB but {available_mb} MB are \
         available; {hint}"
    )]
    OutOfMemory {
        /// Estimated need in MiB.
        needed_mb: u64,
        /// Available memory in MiB.
        available_mb: u64,
        /// What to do, e.g. which tile size fits.
        hint: String,
    },

    /// A CUDA library call failed (driver, NVRTC, cuBLASLt), with what was being done.
    #[error("CUDA: {0}")]
    Cuda(String),

    /// The requested backend or mode does not exist in this build or on this host.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Builds an [`Error::CorruptWeights`].
    pub fn corrupt(format: &'static str, detail: impl Into<String>) -> Self {
        Error::CorruptWeights { format, detail: detail.into() }
    }
}
