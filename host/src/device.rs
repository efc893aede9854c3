//! The host side of the serial protocol (`docs/protocol.md`): a [`DeviceClient`] that talks to a device daemon
//! over a tty (a serial port, a USB adapter, one side of a pseudo-terminal pair); `host device …` is
//! [`crate::commands::device`].
//!
//! Every request carries a sequence number; replies with another number (stale replies from before a device
//! restart) are skipped, and a request that gets no reply within the timeout is an error.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use firmware::protocol::{
    Command, Image, Link, LinkError, PROTOCOL_VERSION, RESET_CONFIRM, Reply, Request, Response, Status, StdIo,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};

/// How long one read waits for bytes before the client checks its deadline.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// A byte stream whose reads wait at most [`POLL_SLICE`] for data (then return 0 bytes: "nothing yet").
#[derive(Debug)]
pub struct Polled<F>(pub F);

impl<F: AsFd + Read> Read for Polled<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let ms = u16::try_from(POLL_SLICE.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(ms)).map_err(std::io::Error::from)?;
        if ready == 0 {
            return Ok(0);
        }
        self.0.read(buf)
    }
}

impl<F: Write> Write for Polled<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A client of one device over a byte stream `F` (a tty [`File`] for a real link).
#[derive(Debug)]
pub struct DeviceClient<F: AsFd + Read + Write> {
    link: Link<StdIo<Polled<F>>>,
    seq: u32,
    timeout: Duration,
}

fn link_err<E: std::fmt::Debug>(e: LinkError<E>) -> Error {
    Error::Invalid(format!("serial link: {e}"))
}

impl DeviceClient<File> {
    /// Open the tty at `path` raw (and at `baud`, if given) and talk to the device there.
    pub fn open(path: &Path, baud: Option<u32>, timeout: Duration) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // Not as the controlling terminal: a hang-up on the line must not signal the CLI.
        let tty = File::options()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        firmware::io::serial::make_raw(&tty, baud, 0)?;
        Self::new(tty, timeout)
    }
}

impl<F: AsFd + Read + Write> DeviceClient<F> {
    /// A client over an already open stream (e.g. the master side of a pty pair, already raw). Sends a lone
    /// delimiter first, so that the device drops whatever partial frame it may hold.
    pub fn new(stream: F, timeout: Duration) -> Result<Self> {
        let mut link = Link::new(StdIo(Polled(stream)));
        link.resync().map_err(link_err)?;
        Ok(Self { link, seq: 0, timeout })
    }

    /// The reply timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Send `request` and wait for its reply (skipping stale replies). A device error reply is returned as
    /// `Ok(Response::Error { .. })`; see [`DeviceClient::call`] for one that makes it an `Err`.
    pub fn request(&mut self, request: Request) -> Result<Response> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.link.send(&Command { seq, request }).map_err(link_err)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.link.recv::<Reply>() {
                Ok(Some(reply)) if reply.seq == seq => return Ok(reply.response),
                Ok(Some(reply)) => tracing::debug!(seq = reply.seq, "stale reply skipped"),
                Ok(None) => {}
                Err(LinkError::Frame(e)) => tracing::warn!(error = %e, "bad frame from the device skipped"),
                Err(e) => return Err(link_err(e)),
            }
            if Instant::now() >= deadline {
                return Err(Error::Invalid(format!("no reply from the device within {:?}", self.timeout)));
            }
        }
    }

    /// [`DeviceClient::request`], with a device error reply turned into an `Err`.
    pub fn call(&mut self, request: Request) -> Result<Response> {
        match self.request(request)? {
            Response::Error { code, message } => Err(Error::Invalid(format!("device: {code:?}: {message}"))),
            r => Ok(r),
        }
    }

    /// Hello: the device's firmware, board and input shape.
    pub fn hello(&mut self) -> Result<Response> {
        self.call(Request::Hello { protocol: PROTOCOL_VERSION })
    }

    /// The device's status.
    pub fn status(&mut self) -> Result<Status> {
        match self.call(Request::Status)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Predicted class id, name and confidence of one image.
    pub fn predict(&mut self, image: Image) -> Result<(u32, String, f32)> {
        match self.call(Request::Predict { image })? {
            Response::Prediction { class_id, class, confidence } => Ok((class_id, class, confidence)),
            other => Err(unexpected(&other)),
        }
    }

    /// The device's current model as ONNX bytes (fetched in chunks, checked against the device's CRC).
    pub fn export_onnx(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut expected = None;
        loop {
            let offset = u32::try_from(out.len()).map_err(|_| Error::Invalid("export over 4 GiB".into()))?;
            match self.call(Request::ExportOnnx { offset })? {
                Response::OnnxChunk { total, offset: at, crc, bytes } => {
                    if at != offset || expected.is_some_and(|(t, c)| (t, c) != (total, crc)) {
                        return Err(Error::Invalid("the export changed while it was read".into()));
                    }
                    expected = Some((total, crc));
                    out.extend_from_slice(&bytes);
                    if out.len() >= total as usize {
                        break;
                    }
                    if bytes.is_empty() {
                        return Err(Error::Invalid("empty export chunk before the end".into()));
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
        let (_, crc) = expected.ok_or_else(|| Error::Invalid("no export".into()))?;
        let got = firmware::store::CRC32C.checksum(&out);
        if got != crc {
            return Err(Error::Invalid(format!("export CRC {got:#010x}, device says {crc:#010x}")));
        }
        Ok(out)
    }

    /// Reset the device (deletes its learned state).
    pub fn reset(&mut self) -> Result<()> {
        match self.call(Request::Reset { confirm: RESET_CONFIRM })? {
            Response::ResetDone => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// The error for a reply that does not answer the request.
pub fn unexpected(r: &Response) -> Error {
    Error::Invalid(format!("unexpected reply from the device: {r:?}"))
}

/// An image file (PNG/JPEG) as raw pixels for the device: grey when `channels` is 1, RGB when 3, resized to
/// `width × height` (the device's input size, from its hello) so that it fits one frame.
pub fn image_file(path: &Path, channels: usize, width: u32, height: u32) -> Result<Image> {
    let img = image::open(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let img = img.resize_exact(width, height, image::imageops::FilterType::Triangle);
    let pixels = if channels == 3 { img.into_rgb8().into_raw() } else { img.into_luma8().into_raw() };
    let dim = |v: u32| u16::try_from(v).map_err(|_| Error::Invalid(format!("image side {v} too large")));
    Ok(Image { width: dim(width)?, height: dim(height)?, channels: if channels == 3 { 3 } else { 1 }, pixels })
}

/// `[C, H, W]` → (channels, width, height) of a device's hello input shape.
pub fn input_geometry(input: &[u32]) -> Result<(usize, u32, u32)> {
    match *input {
        [c, h, w] => Ok((c as usize, w, h)),
        [h, w] => Ok((1, w, h)),
        [n] => {
            let s = f64::from(n).sqrt().round() as u32;
            if s * s == n { Ok((1, s, s)) } else { Err(Error::Invalid(format!("input of {n} values is not an image"))) }
        }
        _ => Err(Error::Invalid(format!("input shape {input:?} is not an image"))),
    }
}

/// One line describing a reply, for the CLI.
pub fn describe(r: &Response) -> String {
    match r {
        Response::Hello { protocol, firmware, board, input, max_frame } => {
            format!(
                "device: firmware {firmware}, protocol {protocol}, board {board}, input {input:?}, max frame {max_frame} bytes"
            )
        }
        Response::SampleAdded { class_id, new_class, buffered, capacity } => format!(
            "sample added to class {class_id}{}; {buffered}/{capacity} buffered",
            if *new_class { " (new class)" } else { "" }
        ),
        Response::TaskBegun { task, discarded } => format!("task {task} begun ({discarded} buffered samples dropped)"),
        Response::Learned { task, generation, samples, from_inbox, rejected, alpha, millis } => format!(
            "learned task {task} from {samples} samples ({from_inbox} inbox photos, {rejected} rejected) in {millis} ms; \
             alpha {}; committed generation {generation}",
            alpha.map_or_else(|| "- (first task)".to_string(), |a| format!("{a:.4}"))
        ),
        Response::Status(s) => {
            format!(
                "generation {}, {:?}, {} tasks, {} classes, {}/{} buffered, {} in the inbox, {} rejected, {} samples \
             learned, last alpha {}; budget: {}",
                s.generation,
                s.phase,
                s.tasks,
                s.classes,
                s.buffered,
                s.capacity,
                s.inbox_pending,
                s.rejected,
                s.samples_learned,
                s.last_alpha.map_or_else(|| "-".to_string(), |a| format!("{a:.4}")),
                s.budget
                    .iter()
                    .map(|b| format!(
                        "{} {:.1}% ({} of {} bytes)",
                        b.name,
                        100.0 * b.used as f64 / b.limit.max(1) as f64,
                        b.used,
                        b.limit
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ) + &s.fleet.as_ref().map_or_else(String::new, |f| {
                format!(
                    "; fleet {}: model version {}, newest learned generation {}, {} update(s) waiting, broker {}",
                    f.fleet,
                    f.model_version,
                    f.learned_generation,
                    f.outbox,
                    if f.connected { "connected" } else { "unreachable" }
                )
            })
        }
        Response::Prediction { class_id, class, confidence } => {
            format!("class {class_id} '{class}' (confidence {:.1} %)", 100.0 * confidence)
        }
        Response::OnnxChunk { total, offset, bytes, .. } => {
            format!("ONNX bytes {offset}..{} of {total}", offset + bytes.len() as u32)
        }
        Response::ResetDone => "state reset: the device runs its shipped model again".into(),
        Response::Error { code, message } => format!("device error ({code:?}): {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware::protocol::{Phase, Status};

    /// A fake device on the slave side of a pty: answers each command with a stale reply first (an older
    /// sequence number), a bad frame, then the real one; `Status` gets a fixed status, `ExportOnnx` chunks of
    /// `export`, anything else an error.
    fn fake_device(slave: std::os::fd::OwnedFd, export: Vec<u8>, replies: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut link = Link::new(StdIo(File::from(slave)));
            let mut answered = 0;
            while answered < replies {
                let cmd = match link.recv::<Command>() {
                    Ok(Some(cmd)) => cmd,
                    Ok(None) | Err(LinkError::Frame(_)) => continue,
                    Err(e) => panic!("{e}"),
                };
                link.send(&Reply { seq: cmd.seq.wrapping_sub(1), response: Response::ResetDone }).unwrap();
                link.get_mut().0.write_all(&[0x55, 0x66, 0x00]).unwrap();
                let response = match cmd.request {
                    Request::Status => Response::Status(Status {
                        generation: 7,
                        phase: Phase::Idle,
                        tasks: 3,
                        classes: 9,
                        buffered: 0,
                        capacity: 1024,
                        inbox_pending: 2,
                        rejected: 1,
                        samples_learned: 600,
                        last_alpha: Some(0.5),
                        budget: vec![],
                        fleet: None,
                    }),
                    Request::ExportOnnx { offset } => {
                        let start = (offset as usize).min(export.len());
                        let end = (start + 1000).min(export.len());
                        Response::OnnxChunk {
                            total: export.len() as u32,
                            offset: start as u32,
                            crc: firmware::store::CRC32C.checksum(&export),
                            bytes: export[start..end].to_vec(),
                        }
                    }
                    _ => Response::error(firmware::protocol::ErrorCode::BadRequest, "not in this fake"),
                };
                link.send(&Reply { seq: cmd.seq, response }).unwrap();
                answered += 1;
            }
        })
    }

    #[test]
    fn client_skips_stale_replies_and_bad_frames_and_reassembles_exports() {
        let p = nix::pty::openpty(None, None).unwrap();
        firmware::io::serial::make_raw(&p.slave, None, 1).unwrap();
        let export: Vec<u8> = (0..3500u32).map(|i| (i * 7 % 256) as u8).collect();
        // Status, 4 export chunks, one refused request.
        let device = fake_device(p.slave, export.clone(), 6);
        let mut client = DeviceClient::new(File::from(p.master), Duration::from_secs(10)).unwrap();
        let s = client.status().unwrap();
        assert_eq!((s.generation, s.tasks, s.classes, s.last_alpha), (7, 3, 9, Some(0.5)));
        assert_eq!(client.export_onnx().unwrap(), export);
        let e = client.call(Request::Learn).unwrap_err().to_string();
        assert!(e.contains("BadRequest") && e.contains("not in this fake"), "{e}");
        device.join().unwrap();
        // The device is gone: no reply within the timeout is an error, not a hang.
        client.set_timeout(Duration::from_millis(200));
        assert!(client.status().is_err());
    }

    #[test]
    fn geometry_and_descriptions() {
        assert_eq!(input_geometry(&[1, 28, 28]).unwrap(), (1, 28, 28));
        assert_eq!(input_geometry(&[3, 32, 24]).unwrap(), (3, 24, 32));
        assert_eq!(input_geometry(&[784]).unwrap(), (1, 28, 28));
        assert!(input_geometry(&[783]).is_err());
        assert!(input_geometry(&[1, 2, 3, 4]).is_err());
        let learned = Response::Learned {
            task: 1,
            generation: 2,
            samples: 240,
            from_inbox: 240,
            rejected: 1,
            alpha: Some(0.1667),
            millis: 950,
        };
        let d = describe(&learned);
        assert!(d.contains("task 1") && d.contains("generation 2") && d.contains("0.1667"), "{d}");
        assert!(describe(&Response::ResetDone).contains("reset"));
    }

    #[test]
    fn image_files_are_resized_to_the_device_input() {
        let dir = std::env::temp_dir().join(format!("edgelearn-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.png");
        image::RgbImage::from_pixel(100, 60, image::Rgb([200, 100, 0])).save(&path).unwrap();
        let img = image_file(&path, 1, 28, 28).unwrap();
        assert_eq!((img.width, img.height, img.channels, img.pixels.len()), (28, 28, 1, 784));
        let rgb = image_file(&path, 3, 8, 4).unwrap();
        assert_eq!((rgb.channels, rgb.pixels.len(), &rgb.pixels[..3]), (3, 96, &[200u8, 100, 0][..]));
        assert!(image_file(&dir.join("missing.png"), 1, 28, 28).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
