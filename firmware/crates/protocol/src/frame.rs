//! One message ⇄ one frame: `COBS(postcard(message) ‖ CRC-32C LE) 0x00`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use edgelearn_store::CRC32C;

/// Most bytes of one frame on the wire, COBS overhead and the `0x00` delimiter included. A receiver drops a frame
/// that grows past it ([`FrameError::TooLong`]) and resynchronises at the next delimiter.
pub const MAX_FRAME: usize = 4096;

/// Bytes of the CRC trailer.
pub const CRC_BYTES: usize = 4;

/// Most bytes of one postcard-encoded message: what is left of [`MAX_FRAME`] after the CRC, the worst-case COBS
/// overhead (one byte per 254) and the delimiter.
pub const MAX_MESSAGE: usize = MAX_FRAME - 1 - CRC_BYTES - (MAX_FRAME / 254 + 1);

const _: () = assert!(cobs::max_encoding_length(MAX_MESSAGE + CRC_BYTES) < MAX_FRAME);

pub use edgelearn_core::error::FrameError;

/// Encode `msg` as one frame into `out`, delimiter included; returns the frame's bytes (a prefix of `out`).
/// `out` needs [`MAX_FRAME`] bytes for the largest message.
pub fn encode_frame<'a, M: Serialize>(msg: &M, out: &'a mut [u8]) -> Result<&'a [u8], FrameError> {
    let mut raw = [0u8; MAX_MESSAGE + CRC_BYTES];
    let n = postcard::to_slice(msg, &mut raw[..MAX_MESSAGE])
        .map_err(|e| FrameError::Encode(format!("{e} (at most {MAX_MESSAGE} bytes)")))?
        .len();
    let crc = CRC32C.checksum(&raw[..n]);
    raw[n..n + CRC_BYTES].copy_from_slice(&crc.to_le_bytes());
    let used = cobs::try_encode(&raw[..n + CRC_BYTES], out)
        .map_err(|_| FrameError::Encode(format!("output buffer of {} bytes is too small", out.len())))?;
    let end = out.get_mut(used).ok_or_else(|| FrameError::Encode("no room for the delimiter".into()))?;
    *end = 0;
    Ok(&out[..=used])
}

/// [`encode_frame`] into a new vector.
pub fn encode_frame_vec<M: Serialize>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; MAX_FRAME];
    let n = encode_frame(msg, &mut out)?.len();
    out.truncate(n);
    Ok(out)
}

/// Decode one frame's bytes, **without** the delimiter (and without any `0x00`), into a message. The buffer is
/// used as scratch space (COBS is decoded in place). Never panics.
pub fn decode_frame<M: DeserializeOwned>(frame: &mut [u8]) -> Result<M, FrameError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::TooLong { max: MAX_FRAME });
    }
    if frame.contains(&0) {
        return Err(FrameError::Cobs);
    }
    let report = cobs::decode_in_place_report(frame).map_err(|_| FrameError::Cobs)?;
    if report.src_used != frame.len() {
        return Err(FrameError::Cobs);
    }
    let n = report.dst_used;
    if n <= CRC_BYTES {
        return Err(FrameError::TooShort { len: n });
    }
    let (body, trailer) = frame[..n].split_at(n - CRC_BYTES);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = CRC32C.checksum(body);
    if stored != computed {
        return Err(FrameError::Crc { stored, computed });
    }
    let (msg, rest) = postcard::take_from_bytes::<M>(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}
