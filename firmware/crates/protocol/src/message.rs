//! The messages of the serial protocol. postcard is not self-describing: the order of the variants and fields
//! below **is** the wire format (an enum is its variant index as a varint, then its fields). Append new variants at
//! the end and bump [`PROTOCOL_VERSION`] for any other change; `docs/protocol.md` lists every message.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// A merge coefficient from the wire: `None`, or a number in `[0, 1]` (BECAME's α* is clamped there); NaN, ±∞ or
/// anything outside is a decode error, not a value a host would show or act on.
fn alpha_in_unit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        Some(a) if !(0.0..=1.0).contains(&a) => Err(D::Error::custom(format!("alpha {a} is not in [0, 1]"))),
        a => Ok(a),
    }
}

/// A probability from the wire: in `[0, 1]` (NaN is not).
fn probability<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let p = f32::deserialize(d)?;
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(D::Error::custom(format!("probability {p} is not in [0, 1]"))) }
}

/// Version of this message set; [`Request::Hello`] and [`Response::Hello`] exchange it.
/// Version 2: [`Status::fleet`].
pub const PROTOCOL_VERSION: u16 = 2;

/// The value [`Request::Reset`] must carry (`"RSET"` as a little-endian u32), so that a corrupted or stray request
/// cannot wipe the device's learned state.
pub const RESET_CONFIRM: u32 = u32::from_le_bytes(*b"RSET");

/// Host → device: one request and the sequence number its reply will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Chosen by the host (e.g. counting up); echoed in the [`Reply`]. Lets the host skip stale replies.
    pub seq: u32,
    /// What to do.
    pub request: Request,
}

/// Device → host: the response to the [`Command`] with the same `seq` (`seq` 0 for an error about a frame that
/// could not be decoded, whose sequence number is unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The command's sequence number.
    pub seq: u32,
    /// The outcome.
    pub response: Response,
}

/// An image sent over the link: `height × width × channels` bytes, row-major, channels interleaved (1 = grey,
/// 3 = RGB). The device resizes and normalises it exactly like an inbox photo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// The pixel bytes.
    pub pixels: Vec<u8>,
}

/// What the host asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Variant 0: Who are you? Carries the host's [`PROTOCOL_VERSION`]; answered with [`Response::Hello`].
    Hello {
        /// The host's protocol version.
        protocol: u16,
    },
    /// Variant 1: Buffer one labelled sample. A class name not seen before is a new class (the head grows).
    AddSample {
        /// Class name (1–64 bytes).
        class: String,
        /// The sample.
        image: Image,
    },
    /// Variant 2: Begin a new task: drop the samples buffered so far (not learned) and start collecting afresh.
    BeginTask,
    /// Variant 3: Learn: the buffered samples plus every photo waiting in the inbox become one new task; the new state is
    /// committed before the reply (and before any inbox photo is moved to `processed/`).
    Learn,
    /// Variant 4: Progress, last α, budget use: answered with [`Response::Status`].
    Status,
    /// Variant 5: Classify one image.
    Predict {
        /// The sample.
        image: Image,
    },
    /// Variant 6: The current model as ONNX, in chunks: the bytes from `offset` on (as many as fit one frame). Offset 0
    /// exports afresh; later offsets read the same export.
    ExportOnnx {
        /// First byte wanted.
        offset: u32,
    },
    /// Variant 7: Forget everything learned: delete the stored state and go back to the shipped model. `confirm` must be
    /// [`RESET_CONFIRM`].
    Reset {
        /// [`RESET_CONFIRM`].
        confirm: u32,
    },
}

/// What the device is doing (also shown on the status LED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Nothing buffered, waiting.
    Idle,
    /// Samples buffered or photos waiting in the inbox.
    Collecting,
    /// Learning a task.
    Training,
    /// The last operation failed (cleared by the next one that succeeds).
    Error,
}

/// Use of one of the board's byte budgets by the next learn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetUse {
    /// `params`, `bases`, `fisher`, `workspace` or `state_file`.
    pub name: String,
    /// Bytes needed.
    pub used: u64,
    /// Bytes the board allows.
    pub limit: u64,
}

/// The device's state, as reported by [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Generation of the last committed state (0: nothing committed yet).
    pub generation: u64,
    /// What the device is doing.
    pub phase: Phase,
    /// Tasks learned.
    pub tasks: u32,
    /// Classes known (outputs of the head).
    pub classes: u32,
    /// Samples buffered (not learned yet).
    pub buffered: u32,
    /// Capacity of the sample buffer.
    pub capacity: u32,
    /// Photos waiting in the inbox.
    pub inbox_pending: u32,
    /// Files set aside in `rejected/` since start.
    pub rejected: u32,
    /// Samples learned over the device's life (all committed tasks).
    pub samples_learned: u64,
    /// α of the last BECAME merge (`None` before the second task); a decoded α must be in [0, 1].
    #[serde(deserialize_with = "alpha_in_unit")]
    pub last_alpha: Option<f64>,
    /// Budget use of the next learn, per budget.
    pub budget: Vec<BudgetUse>,
    /// The board's place in a fleet (`None`: not in one). Protocol version 2.
    pub fleet: Option<FleetStatus>,
}

/// A fleet board's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Fleet name.
    pub fleet: String,
    /// Version of the fleet model the board runs (0: none adopted yet).
    pub model_version: u64,
    /// Generation of the board's newest learned task (its newest update).
    pub learned_generation: u64,
    /// Updates waiting for the broker's acknowledgement.
    pub outbox: u32,
    /// Whether the link to the broker is up.
    pub connected: bool,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame could not be decoded (too long, bad COBS, bad CRC, unknown message); the link stays up.
    BadFrame,
    /// The request is malformed or not allowed now (bad image, empty class name, nothing to learn, wrong
    /// confirmation, …).
    BadRequest,
    /// The learner refused it (a budget, too many classes, buffer full, …); nothing changed.
    Refused,
    /// Storage failed (state store, inbox, export).
    Storage,
    /// Anything else.
    Internal,
}

/// What the device answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Variant 0: Reply to [`Request::Hello`].
    Hello {
        /// The device's [`PROTOCOL_VERSION`].
        protocol: u16,
        /// Firmware version.
        firmware: String,
        /// Board profile name.
        board: String,
        /// Per-sample input shape of the model (`[channels, height, width]` for an image model).
        input: Vec<u32>,
        /// [`MAX_FRAME`](super::MAX_FRAME) of the device.
        max_frame: u32,
    },
    /// Variant 1: The sample is buffered.
    SampleAdded {
        /// Its class id.
        class_id: u32,
        /// True when this sample created the class.
        new_class: bool,
        /// Samples buffered now.
        buffered: u32,
        /// Capacity of the buffer.
        capacity: u32,
    },
    /// Variant 2: A new task begins.
    TaskBegun {
        /// Id the task will have.
        task: u32,
        /// Buffered samples that were dropped.
        discarded: u32,
    },
    /// Variant 3: A task was learned and committed.
    Learned {
        /// The task's id.
        task: u32,
        /// Generation of the committed state.
        generation: u64,
        /// Samples learned (buffered + inbox photos; the photos' jittered copies not counted).
        samples: u32,
        /// Of which inbox photos (now in `processed/`).
        from_inbox: u32,
        /// Inbox files set aside in `rejected/` during this learn.
        rejected: u32,
        /// α of the merge (`None` for the first task); a decoded α must be in [0, 1].
        #[serde(deserialize_with = "alpha_in_unit")]
        alpha: Option<f64>,
        /// Time spent, in milliseconds.
        millis: u32,
    },
    /// Variant 4: Reply to [`Request::Status`].
    Status(Status),
    /// Variant 5: Reply to [`Request::Predict`].
    Prediction {
        /// Predicted class id.
        class_id: u32,
        /// Its name.
        class: String,
        /// Softmax probability of that class; a decoded one must be in [0, 1].
        #[serde(deserialize_with = "probability")]
        confidence: f32,
    },
    /// Variant 6: A chunk of the exported ONNX model.
    OnnxChunk {
        /// Bytes of the whole export.
        total: u32,
        /// Offset of `bytes` in it.
        offset: u32,
        /// CRC-32C of the whole export (to check the reassembled file).
        crc: u32,
        /// The bytes (empty at or past the end).
        bytes: Vec<u8>,
    },
    /// Variant 7: The stored state was deleted; the device runs the shipped model again.
    ResetDone,
    /// Variant 8: The request failed; nothing changed unless the message says otherwise.
    Error {
        /// Category.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
}

impl Response {
    /// An [`Response::Error`] whose message is cut to fit a frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self::Error { code, message }
    }
}
