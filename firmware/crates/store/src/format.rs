//! The byte format of one state slot: a fixed 20-byte header, the postcard payload, a CRC-32C trailer.
//!
//! ```text
//! offset  size  field
//!      0     4  magic            b"ELST"
//!      4     2  format_version   u16 LE (this build: FORMAT_VERSION)
//!      6     2  flags            u16 LE, must be 0
//!      8     8  generation       u64 LE (equals LearnerState::generation)
//!     16     4  payload_len      u32 LE (n)
//!     20     n  payload          postcard(LearnerState)
//!   20+n     4  crc              u32 LE, CRC-32C (Castagnoli) of bytes 0 .. 20+n
//! ```
//!
//! The frame (everything but the payload schema) is the same for every format version, so a file from a newer
//! firmware is recognised as such only after its CRC verified: a bit flip in the version field reads as
//! corruption, not as "newer".

use crc::{CRC_32_ISCSI, Crc};

use super::LearnerState;
use edgelearn_core::error::{Error, Result};

/// The four magic bytes at the start of every state file.
pub const MAGIC: [u8; 4] = *b"ELST";
/// The payload format version this build writes (and reads).
pub const FORMAT_VERSION: u16 = 5;
/// The oldest payload format version this build still reads: version 4 is version 5 without the trailing `fleet`
/// record, version 3 is version 4 without the trailing `slda`
/// statistics, version 2 is version 3 without the trailing `replay` buffer, version 1 is version 2 without the
/// trailing `inbox` ledger; they read as a state without SLDA statistics (and with an empty replay buffer and an
/// empty ledger).
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The postcard encoding of an empty [`InboxLedger`](super::InboxLedger) (`samples_learned` 0, no files): what a
/// version 1 payload lacks before the replay buffer.
const EMPTY_LEDGER: [u8; 2] = [0, 0];
/// The postcard encoding of an empty [`ReplayState`](super::ReplayState) (features 0, no labels, values or seen
/// counts): what a version 1 or 2 payload lacks at its end.
const EMPTY_REPLAY: [u8; 4] = [0, 0, 0, 0];
/// The postcard encoding of `slda: None`: what a version 1, 2 or 3 payload lacks before the fleet record.
const NO_SLDA: [u8; 1] = [0];
/// The postcard encoding of `fleet: None`: what a version 1 to 4 payload lacks at its end.
const NO_FLEET: [u8; 1] = [0];
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Bytes of the CRC trailer.
pub const CRC_LEN: usize = 4;
/// Default cap on a payload's size (the board profile's state budget normally sets a tighter one).
pub const DEFAULT_MAX_PAYLOAD: usize = 256 << 20;

/// The CRC used by the trailer: CRC-32C (Castagnoli, `CRC_32_ISCSI`), the one postcard's `use-crc` uses.
pub const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

pub use edgelearn_core::error::Corruption;

/// The parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload format version.
    pub format_version: u16,
    /// Reserved flags (0).
    pub flags: u16,
    /// Commit generation.
    pub generation: u64,
    /// Payload bytes.
    pub payload_len: u32,
}

fn corrupt(c: Corruption) -> Error {
    Error::CorruptState(c)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Encode a state: header with `state.generation`, postcard payload, CRC-32C trailer.
///
/// Fails (with [`Error::Config`]) when the payload is larger than `max_payload` or than `u32::MAX`.
pub fn encode(state: &LearnerState, max_payload: usize) -> Result<Vec<u8>> {
    let payload = postcard::to_allocvec(state).map_err(|e| Error::Config(format!("state does not encode: {e}")))?;
    frame(MAGIC, FORMAT_VERSION, state.generation, &payload, max_payload)
}

/// The frame layer alone: `magic`, `version`, zero flags, `generation`, the payload's length, the payload and the
/// CRC-32C trailer (the layout in the module doc). Shared by every framed format of the project (state slots,
/// fleet updates), each with its own magic.
///
/// Fails (with [`Error::Config`]) when the payload is larger than `max_payload` or than `u32::MAX`.
pub fn frame(magic: [u8; 4], version: u16, generation: u64, payload: &[u8], max_payload: usize) -> Result<Vec<u8>> {
    if payload.len() > max_payload.min(u32::MAX as usize) {
        return Err(Error::Config(format!(
            "encoded payload is {} bytes, over the limit of {max_payload}",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + CRC_LEN);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = CRC32C.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Check the frame (magic, lengths, CRC) and return the header; does not look at the version or the payload.
///
/// A header returned from here is trustworthy: its bytes passed the CRC.
pub fn read_frame(bytes: &[u8], max_payload: usize) -> Result<Header> {
    read_frame_of(MAGIC, bytes, max_payload)
}

/// [`read_frame`] for a frame with another magic ([`frame`]).
pub fn read_frame_of(magic: [u8; 4], bytes: &[u8], max_payload: usize) -> Result<Header> {
    if bytes.len() >= magic.len() && bytes[..magic.len()] != magic {
        return Err(corrupt(Corruption::BadMagic { found: [bytes[0], bytes[1], bytes[2], bytes[3]] }));
    }
    let min = HEADER_LEN + CRC_LEN;
    if bytes.len() < min {
        return Err(corrupt(Corruption::TooShort { len: bytes.len(), min }));
    }
    let header = Header {
        format_version: le_u16(bytes, 4),
        flags: le_u16(bytes, 6),
        generation: le_u64(bytes, 8),
        payload_len: le_u32(bytes, 16),
    };
    let n = u64::from(header.payload_len);
    if n > max_payload as u64 {
        return Err(corrupt(Corruption::TooLarge { len: n, max: max_payload as u64 }));
    }
    let expected = (HEADER_LEN + CRC_LEN) as u64 + n;
    if bytes.len() as u64 != expected {
        return Err(corrupt(Corruption::LengthMismatch { expected, actual: bytes.len() as u64 }));
    }
    let body = bytes.len() - CRC_LEN;
    let stored = le_u32(bytes, body);
    let computed = CRC32C.checksum(&bytes[..body]);
    if stored != computed {
        return Err(corrupt(Corruption::Crc { stored, computed }));
    }
    Ok(header)
}

/// Decode a state file's bytes. Never panics, whatever the bytes; allocates nothing in proportion to a length
/// field before the frame (including its length) has been checked against `bytes` and `max_payload`.
///
/// Errors: [`Error::CorruptState`] for anything that is not a valid state, [`Error::UnsupportedVersion`] for a
/// valid frame carrying a format version this build does not read.
pub fn decode(bytes: &[u8], max_payload: usize) -> Result<LearnerState> {
    let header = read_frame(bytes, max_payload)?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&header.format_version) {
        return Err(Error::UnsupportedVersion { found: header.format_version, supported: FORMAT_VERSION });
    }
    if header.flags != 0 {
        return Err(corrupt(Corruption::Flags(header.flags)));
    }
    let payload = &bytes[HEADER_LEN..bytes.len() - CRC_LEN];
    // Version 4 = version 5 without the trailing fleet record, version 3 = version 4 without the trailing SLDA statistics, version 2 = version 3 without the trailing
    // replay buffer, version 1 = version 2 without the trailing ledger: postcard is a plain concatenation of the fields, so the empty values' bytes complete them.
    let older;
    let payload = match header.format_version {
        1 => {
            older = [payload, &EMPTY_LEDGER[..], &EMPTY_REPLAY[..], &NO_SLDA[..], &NO_FLEET[..]].concat();
            &older[..]
        }
        2 => {
            older = [payload, &EMPTY_REPLAY[..], &NO_SLDA[..], &NO_FLEET[..]].concat();
            &older[..]
        }
        3 => {
            older = [payload, &NO_SLDA[..], &NO_FLEET[..]].concat();
            &older[..]
        }
        4 => {
            older = [payload, &NO_FLEET[..]].concat();
            &older[..]
        }
        _ => payload,
    };
    let (state, rest) =
        postcard::take_from_bytes::<LearnerState>(payload).map_err(|e| corrupt(Corruption::Decode(e.to_string())))?;
    if !rest.is_empty() {
        return Err(corrupt(Corruption::TrailingBytes(rest.len())));
    }
    if state.generation != header.generation {
        return Err(corrupt(Corruption::GenerationMismatch { header: header.generation, payload: state.generation }));
    }
    state.validate()?;
    Ok(state)
}
