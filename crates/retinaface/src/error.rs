//! Error types of the library.

use std::path::PathBuf;

/// Everything the library can refuse, with enough context to name the culprit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights file could not be read or does not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// An image could not be decoded or is out of bounds.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Options or configuration out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a weights file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read (absent, not a regular file, too large).
    #[error(transparent)]
    Read(#[from] Box<ImageError>),
    /// The parser panicked on the bytes (caught): the file is damaged.
    #[error("damaged weights file: the parser failed ({0})")]
    ParserPanic(String),
    /// The bytes are not a weights format we know.
    #[error("unknown weights format (expected ONNX, PyTorch .pth or safetensors)")]
    UnknownFormat,
    /// The file is damaged or truncated in the named format.
    #[error("damaged {format} file: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error("tensor `{name}` is missing (expected shape {expected:?})")]
    Missing { name: String, expected: Vec<usize> },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor holds a data type we cannot convert to f32.
    #[error("tensor `{name}` has unsupported data type {dtype}")]
    DType { name: String, dtype: String },
    /// The file holds another network (another detector's weights: SCRFD, YuNet, …).
    #[error("not a RetinaFace model: {0}")]
    NotRetinaFace(String),
    /// The file's structure does not match the model (e.g. the ONNX graph has other layers).
    #[error("weights do not match the model: {0}")]
    Mismatch(String),
    /// Writing a weights file failed.
    #[error("cannot write weights: {0}")]
    Write(String),
    /// The error of a weights file, with its path.
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<WeightsError>,
    },
}

impl WeightsError {
    /// Shorthand for a damaged file of `format`.
    pub fn corrupt(format: &'static str, reason: impl Into<String>) -> Self {
        WeightsError::Corrupt {
            format,
            reason: reason.into(),
        }
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("{path}: image is {width}×{height}, above the limit of {max_pixels} pixels")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Only regular files are read (a FIFO or a device could block or never end).
    #[error("{path}: {kind}, not a regular file")]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The file is larger than the input size limit.
    #[error("{path}: file is {bytes} bytes, above the limit of {max_bytes}")]
    FileTooLarge {
        path: PathBuf,
        bytes: u64,
        max_bytes: u64,
    },
    /// The decoder crate panicked on this file (a bug of the decoder, caught).
    #[error("{path}: cannot decode image: the decoder failed on malformed data ({message})")]
    DecoderPanic { path: PathBuf, message: String },
}
