//! The one error type of the host crate.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the host tool (data loading, streams, reports). The CLI prints them as one line.
#[derive(Debug, Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data folder or one of its files is missing.
    #[error("missing data: {0} (run scripts/fetch-data.sh, or pass --data-dir)")]
    MissingData(String),
    /// Sizes that do not agree (images vs labels, wrong dimensionality, a stream's tasks).
    #[error("{0}")]
    SizeMismatch(String),
    /// A stream name the tool does not know.
    #[error(
        "unknown stream '{0}' (known: pmnist, split-mnist, split-mnist-ci, split-fmnist, split-fmnist-ci, mnist-pt, mnist-pt-ci, fmnist-pt, fmnist-pt-ci, mnist-nsfw, mnist-nsfw-ci, fmnist-nsfw, fmnist-nsfw-ci, mnist-lite0, mnist-lite0-ci, fmnist-lite0, fmnist-lite0-ci, tux8, tux8-ci, custom)"
    )]
    UnknownStream(String),
    /// A method name the tool does not know.
    #[error("unknown method '{0}'")]
    UnknownMethod(String),
    /// A bad argument or configuration value.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// An error from the learner, and from what the host uses of it: the IDX reader ([`crate::data::idx`]), ONNX,
    /// the state store, the fleet's update format.
    #[error(transparent)]
    Firmware(#[from] firmware::Error),
    /// JSON encoding/decoding.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with the host [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
