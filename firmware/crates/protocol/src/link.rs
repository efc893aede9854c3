//! A framed message link over an `embedded_io` byte stream.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{FrameError, MAX_FRAME, decode_frame, encode_frame};

/// Bytes read from the stream per `read` call (processed one by one).
const RX_CHUNK: usize = 256;

/// What can go wrong on a link: the byte stream failed, or a frame was bad (the link itself stays usable).
#[derive(Debug, thiserror::Error)]
pub enum LinkError<E: core::fmt::Debug> {
    /// The underlying stream failed.
    #[error("serial I/O: {0:?}")]
    Io(E),
    /// One frame was bad; the bytes up to its delimiter were dropped and the next frame is read normally.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
}

/// Frames over a byte stream `T` (`embedded_io::Read + Write`): see the [module docs](super).
///
/// Receiving collects bytes into a fixed [`MAX_FRAME`]-byte buffer (a `heapless::Vec`: no allocation per byte,
/// no growth); a frame longer than that is dropped whole, reported once as [`FrameError::TooLong`] when its
/// delimiter arrives, and the link carries on with the next frame.
///
/// A `read` returning 0 bytes is taken as "nothing more right now" (a tty opened with `VMIN = 0` returns that
/// after its `VTIME` timeout): [`Link::recv`] then returns `Ok(None)` and keeps the partial frame.
#[derive(Debug)]
pub struct Link<T> {
    io: T,
    frame: heapless::Vec<u8, MAX_FRAME>,
    overflow: bool,
    rx: [u8; RX_CHUNK],
    rx_pos: usize,
    rx_len: usize,
    tx: Box<[u8; MAX_FRAME]>,
}

impl<T: embedded_io::Read + embedded_io::Write> Link<T> {
    /// A link over `io`.
    pub fn new(io: T) -> Self {
        Self {
            io,
            frame: heapless::Vec::new(),
            overflow: false,
            rx: [0; RX_CHUNK],
            rx_pos: 0,
            rx_len: 0,
            tx: Box::new([0; MAX_FRAME]),
        }
    }

    /// The byte stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The byte stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Drop any partial frame and buffered bytes (e.g. after the peer restarted).
    pub fn clear(&mut self) {
        self.frame.clear();
        self.overflow = false;
        self.rx_pos = 0;
        self.rx_len = 0;
    }

    /// Read until one whole frame arrived and decode it: `Ok(Some(msg))`, `Ok(None)` when the stream has no more
    /// bytes right now (partial frames are kept), `Err(LinkError::Frame)` for a bad frame (already dropped: the
    /// next call reads the next frame), `Err(LinkError::Io)` when the stream failed. Empty frames (repeated
    /// delimiters, used to resynchronise) are skipped.
    pub fn recv<M: DeserializeOwned>(&mut self) -> Result<Option<M>, LinkError<T::Error>> {
        loop {
            if self.rx_pos == self.rx_len {
                let n = self.io.read(&mut self.rx).map_err(LinkError::Io)?;
                if n == 0 {
                    return Ok(None);
                }
                self.rx_pos = 0;
                self.rx_len = n;
            }
            while self.rx_pos < self.rx_len {
                let byte = self.rx[self.rx_pos];
                self.rx_pos += 1;
                if let Some(outcome) = self.accept(byte) {
                    return outcome.map(Some).map_err(LinkError::Frame);
                }
            }
        }
    }

    /// Feed one byte: at a delimiter that ends a non-empty frame, decode it (and start the next frame).
    fn accept<M: DeserializeOwned>(&mut self, byte: u8) -> Option<Result<M, FrameError>> {
        if byte != 0 {
            if !self.overflow && self.frame.push(byte).is_err() {
                self.overflow = true;
                self.frame.clear();
            }
            return None;
        }
        if self.overflow {
            self.overflow = false;
            self.frame.clear();
            return Some(Err(FrameError::TooLong { max: MAX_FRAME }));
        }
        if self.frame.is_empty() {
            return None;
        }
        let outcome = decode_frame(&mut self.frame);
        self.frame.clear();
        Some(outcome)
    }

    /// Encode `msg` as one frame and write it (then flush).
    pub fn send<M: Serialize>(&mut self, msg: &M) -> Result<(), LinkError<T::Error>> {
        let frame = encode_frame(msg, &mut self.tx[..])?;
        self.io.write_all(frame).map_err(LinkError::Io)?;
        self.io.flush().map_err(LinkError::Io)
    }

    /// Write a lone delimiter: whatever partial frame the peer holds ends there (and is dropped as bad).
    pub fn resync(&mut self) -> Result<(), LinkError<T::Error>> {
        self.io.write_all(&[0]).map_err(LinkError::Io)?;
        self.io.flush().map_err(LinkError::Io)
    }
}

/// `embedded_io` traits over a `std::io` stream (a tty file, a pipe, a `Vec` in tests), with
/// `std::io::Error` as the error type. `WouldBlock`, `TimedOut` and `Interrupted` reads count as "no bytes now"
/// (`Ok(0)`).
#[derive(Debug)]
pub struct StdIo<S>(pub S);

impl<S> embedded_io::ErrorType for StdIo<S> {
    type Error = std::io::Error;
}

impl<S: std::io::Read> embedded_io::Read for StdIo<S> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
        match self.0.read(buf) {
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => Ok(0),
            other => other,
        }
    }
}

impl<S: std::io::Write> embedded_io::Write for StdIo<S> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self.0.write(buf) {
            // embedded_io's write_all would panic on a zero-length write: report it as an error instead.
            Ok(0) if !buf.is_empty() => Err(std::io::ErrorKind::WriteZero.into()),
            other => other,
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush()
    }
}
