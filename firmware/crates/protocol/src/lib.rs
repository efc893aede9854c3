//! # edgelearn-protocol — the serial command protocol
//!
//! The serial command protocol between a host and the device: postcard messages with a CRC-32C trailer, COBS
//! framed, delimited by `0x00`. The specification, with a byte-level example, is `docs/protocol.md`.
//!
//! ```text
//! message (postcard) ─► ‖ CRC-32C (4 bytes LE) ─► COBS ─► 0x00        one frame on the wire, ≤ MAX_FRAME bytes
//! ```
//!
//! - [`message`]: what is said: a [`Command`] (host → device: sequence number + [`Request`]) and a [`Reply`]
//!   (device → host: the same sequence number + [`Response`]).
//! - [`frame`]: one message ⇄ the bytes of one frame ([`encode_frame`], [`decode_frame`]), with typed errors
//!   ([`FrameError`]); decoding never panics, whatever the bytes.
//! - [`link`]: a [`Link`] over any `embedded_io` `Read + Write` byte stream: it collects bytes into a fixed
//!   [`MAX_FRAME`]-byte buffer, decodes each frame at its delimiter and, after a bad frame (too long, bad COBS, bad
//!   CRC, undecodable), resynchronises at the next `0x00`, so one bad frame costs one error reply, not the link.
#![warn(missing_docs)]

pub mod frame;
pub mod link;
pub mod message;
#[cfg(test)]
mod tests;

pub use frame::{FrameError, MAX_FRAME, MAX_MESSAGE, decode_frame, encode_frame, encode_frame_vec};
pub use link::{Link, LinkError, StdIo};
pub use message::{
    BudgetUse, Command, ErrorCode, FleetStatus, Image, PROTOCOL_VERSION, Phase, RESET_CONFIRM, Reply, Request,
    Response, Status,
};
