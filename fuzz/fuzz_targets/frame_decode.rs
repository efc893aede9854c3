//! Fuzz the serial protocol's receiving side: any bytes → `decode_frame` (as a command and as a reply) and a
//! `Link` reading them as a byte stream must return (never panic, never grow past `MAX_FRAME`), a frame that
//! decodes must re-encode to a frame that decodes to the same message, and after any garbage a lone delimiter
//! followed by a valid frame must get that frame through (the link stays up).
//!
//! 3. The input as a message body: framed with a correct CRC-32C and COBS, then decoded as both message types.
//!    Random mutations of whole frames almost never keep the CRC right; this pass reaches postcard and the
//!    messages' own checks with any body, as a hostile sender would.
#![no_main]

use edgelearn_protocol::{Command, Link, LinkError, MAX_FRAME, Reply, Request, decode_frame, encode_frame_vec};
use edgelearn_store::CRC32C;
use libfuzzer_sys::fuzz_target;

/// Reads the fuzz input (then "nothing more right now"); writes are dropped.
struct Bytes<'a> {
    data: &'a [u8],
    /// Bytes per read: varies the chunking the link sees.
    chunk: usize,
}

impl embedded_io::ErrorType for Bytes<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Bytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.data.len()).min(self.chunk);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl embedded_io::Write for Bytes<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn round_trip<M>(msg: &M)
where
    M: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // A decoded message may not re-encode when it is at the size limit; one that does must decode back to the
    // same message: compared as its frame's bytes, since a float field may hold a NaN (a `Learned` reply's α),
    // which `==` never equals (the first long run's one crash, docs/fuzzing.md).
    if let Ok(frame) = encode_frame_vec(msg) {
        assert!(frame.len() <= MAX_FRAME);
        let mut body = frame[..frame.len() - 1].to_vec();
        let back: M = decode_frame(&mut body).expect("a re-encoded frame decodes");
        assert_eq!(encode_frame_vec(&back).expect("a decoded frame re-encodes"), frame, "{back:?} vs {msg:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. One frame's bytes, as both message types.
    if let Ok(cmd) = decode_frame::<Command>(&mut data.to_vec()) {
        round_trip(&cmd);
    }
    if let Ok(reply) = decode_frame::<Reply>(&mut data.to_vec()) {
        round_trip(&reply);
    }

    // 2. The bytes as a stream, then a delimiter and a valid frame: every frame in between is a message or a
    // typed error, and the valid frame comes through last.
    let chunk = 1 + usize::from(data.first().copied().unwrap_or(0)) % 300;
    let marker = Command { seq: 0xfeed_f00d, request: Request::Status };
    let mut stream = data.to_vec();
    stream.push(0);
    stream.extend(encode_frame_vec(&marker).expect("the marker encodes"));
    let mut link = Link::new(Bytes { data: &stream, chunk });
    let mut last = None;
    // Each frame needs at least one byte: the stream length bounds the number of messages.
    for _ in 0..=stream.len() {
        match link.recv::<Command>() {
            Ok(Some(cmd)) => last = Some(cmd),
            Ok(None) => break,
            Err(LinkError::Frame(_)) => last = None,
            Err(LinkError::Io(e)) => match e {},
        }
    }
    assert_eq!(last, Some(marker), "the valid frame after the input must come through");

    // 3. The bytes as a message body with a correct trailer.
    let mut raw = data.to_vec();
    raw.extend_from_slice(&CRC32C.checksum(data).to_le_bytes());
    let frame = cobs::encode_vec(&raw);
    if frame.len() <= MAX_FRAME {
        if let Ok(cmd) = decode_frame::<Command>(&mut frame.clone()) {
            round_trip(&cmd);
        }
        if let Ok(reply) = decode_frame::<Reply>(&mut frame.clone()) {
            round_trip(&reply);
        }
    }
});
