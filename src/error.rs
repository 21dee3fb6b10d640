//! The library's one error type: every failure a caller can cause or meet, with context.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wgquant, typed so that callers can match on it and
/// the CLI can turn it into a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter satisfied the request; `found` lists what was seen.
    #[error("no usable GPU adapter ({reason}); adapters found: {found}")]
    NoAdapter { reason: String, found: String },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter '{adapter}': {msg}")]
    RequestDevice { adapter: String, msg: String },

    /// A shader or pipeline failed validation; names the kernel.
    #[error("shader '{kernel}' failed validation: {msg}")]
    ShaderValidation { kernel: String, msg: String },

    /// The device reported an error while running a kernel (out of memory, lost, validation).
    #[error("GPU error in '{op}': {msg}")]
    Device { op: String, msg: String },

    /// A buffer mapping or read-back failed.
    #[error("GPU read-back failed in '{op}': {msg}")]
    Readback { op: String, msg: String },

    /// An operation does not support this element type.
    #[error("{op}: unsupported dtype {dtype}")]
    UnsupportedDType { op: String, dtype: String },

    /// Two shapes or lengths that must agree do not.
    #[error("{op}: shape mismatch: {msg}")]
    ShapeMismatch { op: String, msg: String },

    /// A parameter is outside the range the operation supports.
    #[error("{op}: invalid parameter: {msg}")]
    InvalidParam { op: String, msg: String },

    /// A tensor holds NaN or ±Inf; names the tensor and the first offending index.
    #[error("tensor '{tensor}' holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        tensor: String,
        index: usize,
        value: f32,
    },

    /// A tensor is larger than the device can hold in one buffer.
    #[error("{op}: {bytes} bytes exceed the device's buffer limit of {limit} bytes")]
    TooLarge { op: String, bytes: u64, limit: u64 },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file is malformed (not safetensors, truncated, lying offsets, bad metadata).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A tensor inside a checkpoint cannot be handled; names file and tensor.
    #[error("{}: tensor '{tensor}': {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidParam`].
    pub fn param(op: &str, msg: impl Into<String>) -> Self {
        Error::InvalidParam {
            op: op.to_string(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(op: &str, msg: impl Into<String>) -> Self {
        Error::ShapeMismatch {
            op: op.to_string(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
