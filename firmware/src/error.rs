//! The one error type of the firmware crate.

use thiserror::Error;

/// Everything that can go wrong inside the on-device learner.
///
/// Input that comes from outside (samples, labels, files, commands) is checked and reported through these
/// variants; nothing reachable from outside panics.
#[derive(Debug, Error)]
pub enum Error {
    /// A tensor or sample did not have the shape an operation needs.
    #[error("shape mismatch in {context}: expected {expected}, got {got}")]
    Shape {
        /// Where the mismatch was found.
        context: String,
        /// The shape that was needed.
        expected: String,
        /// The shape that arrived.
        got: String,
    },
    /// A value was NaN or infinite.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    /// A label was outside the number of classes of its head.
    #[error("label {label} out of range for a head with {classes} classes")]
    LabelOutOfRange {
        /// The offending label.
        label: usize,
        /// Number of outputs of the head.
        classes: usize,
    },
    /// A head (task) index that the model does not have.
    #[error("unknown head {head}: the model has {heads} head(s)")]
    UnknownHead {
        /// Requested head.
        head: usize,
        /// Heads the model has.
        heads: usize,
    },
    /// A configuration value that cannot work (zero batch size, negative learning rate, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An empty data set where samples are needed.
    #[error("empty data: {0}")]
    Empty(String),
    /// A numerical routine (SVD, ...) failed.
    #[error("numerical failure: {0}")]
    Numerical(String),
}

/// `Result` with the firmware [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Build an [`Error::Shape`] from anything printable.
pub(crate) fn shape_err(context: &str, expected: impl std::fmt::Debug, got: impl std::fmt::Debug) -> Error {
    Error::Shape { context: context.to_string(), expected: format!("{expected:?}"), got: format!("{got:?}") }
}
