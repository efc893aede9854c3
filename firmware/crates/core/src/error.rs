//! The one error type of the firmware crate, with the typed errors its variants carry ([`ProfileError`],
//! [`Corruption`], [`FrameError`]). A leaf: it imports nothing of the crate, so every module can use it.

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
    /// A data file whose contents do not fit its format: sizes that do not agree, trailing bytes, zero or
    /// overflowing dimensions (IDX files, see [`crate::data::idx`]).
    #[error("{0}")]
    Format(String),
    /// An IDX file whose magic number is wrong.
    #[error("{path}: not an IDX file (magic {magic:#010x})")]
    BadMagic {
        /// The file.
        path: String,
        /// The four magic bytes read.
        magic: u32,
    },
    /// An IDX file that ends before its header says it should.
    #[error("{path}: truncated IDX file (expected {expected} bytes of data, found {found})")]
    Truncated {
        /// The file.
        path: String,
        /// Bytes the header promises.
        expected: usize,
        /// Bytes actually present.
        found: usize,
    },
    /// An IDX file whose element type is not unsigned byte (0x08), the only one the reader supports.
    #[error("{path}: unsupported IDX element type {dtype:#04x} (only 0x08, unsigned byte, is supported)")]
    UnsupportedDtype {
        /// The file.
        path: String,
        /// The type byte read from the header.
        dtype: u8,
    },
    /// A state file (or state bytes) that is not a valid learner state: bad magic, truncated, CRC mismatch,
    /// undecodable or inconsistent payload. See `docs/state-format.md`.
    #[error("corrupt state: {0}")]
    CorruptState(#[from] Corruption),
    /// A state file written in a format version this build cannot read (a newer firmware wrote it). Nothing is
    /// loaded and nothing is written.
    #[error("state format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the file header.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// No state slot could be used although state files exist (every slot is corrupt).
    #[error("no usable state slot: {0}")]
    NoValidState(String),
    /// An I/O operation on the state store failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that are not a usable ONNX model: not protobuf, truncated, no graph, a tensor whose data does not
    /// match its shape, a name that nothing defines. Nothing is loaded.
    #[error("invalid ONNX model: {0}")]
    OnnxInvalid(String),
    /// A valid ONNX construct this build cannot use: an operator that cannot become a trainable layer, an
    /// attribute value the native layer does not implement, a data type other than f32, external data, ...
    #[error("unsupported ONNX operator {op} (node '{node}'): {reason}")]
    OnnxUnsupported {
        /// The ONNX operator type (e.g. `Softmax`), or the construct (e.g. `graph input`).
        op: String,
        /// The node's name (or the tensor's) in the file.
        node: String,
        /// Why it cannot be used and what would work instead.
        reason: String,
    },
    /// The requested cut point does not exist or does not split the graph into a frozen prefix and a chain of
    /// trainable layers.
    #[error("cannot cut the ONNX graph: {0}")]
    OnnxCut(String),
    /// tract could not load, type or run the frozen prefix.
    #[error("tract: {0}")]
    Tract(String),
    /// A board profile (`boards/*.toml`) that cannot be used: unreadable, not TOML, a missing or unknown key, a
    /// value out of range. See [`ProfileError`].
    #[error("board profile: {0}")]
    Profile(#[from] ProfileError),
    /// A request that would not fit one of the board's byte budgets (`edgelearn_learn::budget::Budgets`). It was refused
    /// before any state changed.
    #[error(
        "over the {budget} budget: needs {needed} bytes, the board allows {limit} ({over} bytes over)",
        over = .needed.saturating_sub(*.limit)
    )]
    OverBudget {
        /// Which budget: `params`, `bases`, `fisher`, `workspace`, `replay`, `state_file` or `model_file`.
        budget: &'static str,
        /// Bytes the request needs.
        needed: u64,
        /// Bytes the board profile allows.
        limit: u64,
    },
    /// A new class would take the output layer past the board profile's `max_classes`.
    #[error("cannot add class {name:?}: the board allows at most {max} classes")]
    TooManyClasses {
        /// The class that was refused.
        name: String,
        /// The profile's `max_classes`.
        max: usize,
    },
    /// A fixed-capacity buffer of incoming data is full; nothing was dropped (the new item was refused).
    #[error("{what} buffer full: capacity {capacity}")]
    BufferFull {
        /// Which buffer (e.g. `sample`).
        what: &'static str,
        /// Its capacity in items.
        capacity: usize,
    },
    /// A class id or name that the registry does not hold.
    #[error("unknown class {0}")]
    UnknownClass(String),
    /// A task id that the registry does not hold.
    #[error("unknown task {id}: {known} task(s) learned")]
    UnknownTask {
        /// Requested task id.
        id: u32,
        /// Number of tasks in the registry.
        known: usize,
    },
    /// A compute backend (`edgelearn_learn::backend`) that this build or this machine cannot provide: CUDA not compiled in,
    /// the CUDA libraries missing, no GPU. Nothing was computed.
    #[error("{backend} backend unavailable: {reason}")]
    BackendUnavailable {
        /// The backend asked for (`cuda`).
        backend: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// A compute backend operation failed (a CUDA driver, cuBLAS or NVRTC error).
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend (`cuda`).
        backend: &'static str,
        /// What failed.
        message: String,
    },
    /// A pin or tty of the board's I/O (`firmware::io`) failed: a GPIO line that cannot be requested, termios
    /// settings that cannot be applied, a pin read or write error.
    #[error("board I/O: {0}")]
    Hal(String),
    /// The fleet's MQTT broker refused the connection (bad credentials, an ACL), did not answer in time, or the
    /// link broke (`firmware::fleet::mqtt`, feature `fleet-mqtt`).
    #[error("MQTT broker: {0}")]
    Broker(String),
    /// A bad frame on the serial link (`edgelearn_protocol`); the link stays up.
    #[error("protocol frame: {0}")]
    Frame(#[from] FrameError),
    /// An image (an inbox photo, a sample sent over the link) that cannot be used: unreadable, not PNG/JPEG, an
    /// impossible size. Inbox files with this error are moved to `rejected/` (`firmware::inbox`).
    #[error("image {source_name}: {reason}")]
    Image {
        /// The file or `"link"`.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a board profile (`edgelearn_learn::budget`) could not be used.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The profile's path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key that is missing, unknown or of the wrong type (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The profile's path (`<string>` when parsed from memory).
        path: String,
        /// What the TOML parser or the schema check said.
        message: String,
    },
    /// A key whose value is out of range.
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        /// The profile's path (`<string>` when parsed from memory).
        path: String,
        /// The offending key (`budget.params` for a budget).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why some bytes are not a valid state (`edgelearn_store`; the format is `docs/state-format.md`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Corruption {
    /// Fewer bytes than header + trailer.
    #[error("{len} bytes, a state file has at least {min}")]
    TooShort {
        /// Bytes present.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The first four bytes are not `edgelearn_store::MAGIC`.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The payload (or the file) is larger than the configured cap; nothing was allocated for it.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length claimed or found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The file length does not match the header's payload length (truncated or trailing bytes).
    #[error("length mismatch: header says {expected} bytes in all, file has {actual}")]
    LengthMismatch {
        /// `HEADER_LEN + payload_len + CRC_LEN`.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The CRC trailer does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// CRC in the trailer.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A header field that must be zero is not.
    #[error("reserved header flags {0:#06x} set")]
    Flags(u16),
    /// postcard could not decode the payload.
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// The payload decoded but did not use all of its bytes.
    #[error("{0} unused byte(s) after the payload")]
    TrailingBytes(usize),
    /// Header and payload disagree on the generation.
    #[error("header generation {header} but payload generation {payload}")]
    GenerationMismatch {
        /// From the header.
        header: u64,
        /// From the payload.
        payload: u64,
    },
    /// The payload decoded but is not a consistent learner state (see
    /// `edgelearn_store::LearnerState::validate`).
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

/// Why bytes are not a frame of the serial protocol (`edgelearn_protocol`, receiving) or a message does not fit
/// one (sending).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// More than `edgelearn_protocol::MAX_FRAME` bytes arrived without a delimiter; they were dropped up
    /// to the next `0x00`.
    #[error("frame longer than {max} bytes (dropped up to the next 0x00)")]
    TooLong {
        /// `edgelearn_protocol::MAX_FRAME`.
        max: usize,
    },
    /// The bytes between two delimiters are not valid COBS.
    #[error("invalid COBS encoding")]
    Cobs,
    /// Fewer decoded bytes than a message plus its CRC.
    #[error("frame of {len} decoded bytes is too short for a message and its CRC")]
    TooShort {
        /// Decoded bytes.
        len: usize,
    },
    /// The CRC trailer does not match the message bytes.
    #[error("CRC mismatch: frame says {stored:#010x}, message gives {computed:#010x}")]
    Crc {
        /// The trailer.
        stored: u32,
        /// CRC-32C of the message bytes.
        computed: u32,
    },
    /// The CRC matched but postcard could not decode the message (an unknown request, a field out of range).
    #[error("message does not decode: {0}")]
    Decode(String),
    /// The message decoded but left bytes unused before the CRC.
    #[error("{0} unused byte(s) after the message")]
    TrailingBytes(usize),
    /// (Sending) the message does not fit `edgelearn_protocol::MAX_MESSAGE` bytes, or does not encode.
    #[error("message does not fit a frame: {0}")]
    Encode(String),
}

/// `Result` with the firmware [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Build an [`Error::Shape`] from anything printable.
pub fn shape_err(context: &str, expected: impl std::fmt::Debug, got: impl std::fmt::Debug) -> Error {
    Error::Shape { context: context.to_string(), expected: format!("{expected:?}"), got: format!("{got:?}") }
}
