use super::frame::CRC_BYTES;
use super::*;
use edgelearn_store::CRC32C;

use std::io::Cursor;

/// A byte stream for a [`Link`]: reads come from `rx` (0 bytes once it is used up: "nothing more right now"),
/// writes go to `tx`.
#[derive(Debug, Default)]
struct Duplex {
    rx: Cursor<Vec<u8>>,
    tx: Vec<u8>,
}

impl std::io::Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rx.read(buf)
    }
}

impl std::io::Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn link_reading(bytes: Vec<u8>) -> Link<StdIo<Duplex>> {
    Link::new(StdIo(Duplex { rx: Cursor::new(bytes), tx: Vec::new() }))
}

fn image(width: u16, height: u16, channels: u8) -> Image {
    let n = usize::from(width) * usize::from(height) * usize::from(channels);
    Image { width, height, channels, pixels: (0..n).map(|i| (i * 37 % 251) as u8).collect() }
}

fn every_request() -> Vec<Request> {
    vec![
        Request::Hello { protocol: PROTOCOL_VERSION },
        Request::AddSample { class: "cat".into(), image: image(28, 28, 1) },
        Request::BeginTask,
        Request::Learn,
        Request::Status,
        Request::Predict { image: image(8, 6, 3) },
        Request::ExportOnnx { offset: 3072 },
        Request::Reset { confirm: RESET_CONFIRM },
    ]
}

fn every_response() -> Vec<Response> {
    vec![
        Response::Hello {
            protocol: PROTOCOL_VERSION,
            firmware: "0.1.0".into(),
            board: "host-sim".into(),
            input: vec![1, 28, 28],
            max_frame: MAX_FRAME as u32,
        },
        Response::SampleAdded { class_id: 4, new_class: true, buffered: 17, capacity: 1024 },
        Response::TaskBegun { task: 2, discarded: 3 },
        Response::Learned {
            task: 1,
            generation: 9,
            samples: 200,
            from_inbox: 150,
            rejected: 1,
            alpha: Some(0.25),
            millis: 1234,
        },
        Response::Status(Status {
            generation: 3,
            phase: Phase::Collecting,
            tasks: 2,
            classes: 6,
            buffered: 10,
            capacity: 1024,
            inbox_pending: 5,
            rejected: 1,
            samples_learned: 400,
            last_alpha: None,
            budget: vec![BudgetUse { name: "params".into(), used: 1000, limit: 4000 }],
            fleet: Some(FleetStatus {
                fleet: "lab".into(),
                model_version: 4,
                learned_generation: 9,
                outbox: 1,
                connected: true,
            }),
        }),
        Response::Prediction { class_id: 3, class: "3".into(), confidence: 0.875 },
        Response::OnnxChunk { total: 10, offset: 4, crc: 0xdead_beef, bytes: vec![1, 2, 3] },
        Response::ResetDone,
        Response::error(ErrorCode::BadFrame, "CRC mismatch"),
    ]
}

/// One frame's bytes without its delimiter.
fn body(frame: &[u8]) -> Vec<u8> {
    assert_eq!(frame.last(), Some(&0), "a frame ends with the delimiter");
    frame[..frame.len() - 1].to_vec()
}

/// COBS-frame arbitrary decoded bytes (a message body plus whatever trailer the test wants).
fn cobs_frame(decoded: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; cobs::max_encoding_length(decoded.len()) + 1];
    let n = cobs::encode(decoded, &mut out);
    out.truncate(n);
    out.push(0);
    out
}

#[test]
fn every_command_and_reply_survives_a_frame_round_trip() {
    for (seq, request) in every_request().into_iter().enumerate() {
        let cmd = Command { seq: seq as u32 * 1000 + 1, request };
        let frame = encode_frame_vec(&cmd).unwrap();
        assert!(frame.len() <= MAX_FRAME);
        assert_eq!(frame.iter().filter(|&&b| b == 0).count(), 1, "only the delimiter is 0: {cmd:?}");
        let back: Command = decode_frame(&mut body(&frame)).unwrap();
        assert_eq!(back, cmd);
    }
    for (seq, response) in every_response().into_iter().enumerate() {
        let reply = Reply { seq: seq as u32, response };
        let frame = encode_frame_vec(&reply).unwrap();
        let back: Reply = decode_frame(&mut body(&frame)).unwrap();
        assert_eq!(back, reply);
    }
}

/// A reply whose α or confidence is NaN, ±∞ or outside [0, 1] encodes (the sender is not trusted to check) but
/// does not decode: a typed error, never a number a host would print or act on.
#[test]
fn a_reply_with_a_non_finite_or_out_of_range_alpha_or_confidence_is_refused() {
    let learned =
        |alpha| Response::Learned { task: 1, generation: 2, samples: 3, from_inbox: 0, rejected: 0, alpha, millis: 4 };
    let prediction = |confidence| Response::Prediction { class_id: 1, class: "1".into(), confidence };
    for bad in [
        learned(Some(f64::NAN)),
        learned(Some(f64::INFINITY)),
        learned(Some(-0.5)),
        learned(Some(1.5)),
        prediction(f32::NAN),
        prediction(2.0),
        Response::Status(Status { last_alpha: Some(f64::NEG_INFINITY), ..status_of(&every_response()) }),
    ] {
        let frame = encode_frame_vec(&Reply { seq: 1, response: bad.clone() }).unwrap();
        let err = decode_frame::<Reply>(&mut body(&frame)).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{bad:?}: {err}");
    }
    for good in [learned(None), learned(Some(0.0)), learned(Some(1.0)), prediction(0.0), prediction(1.0)] {
        let reply = Reply { seq: 2, response: good };
        let frame = encode_frame_vec(&reply).unwrap();
        assert_eq!(decode_frame::<Reply>(&mut body(&frame)).unwrap(), reply);
    }
}

fn status_of(responses: &[Response]) -> Status {
    responses
        .iter()
        .find_map(|r| if let Response::Status(s) = r { Some(s.clone()) } else { None })
        .expect("every_response has a Status")
}

#[test]
fn frame_layout_is_cobs_of_postcard_then_crc32c_le() {
    let cmd = Command { seq: 300, request: Request::ExportOnnx { offset: 5 } };
    let frame = encode_frame_vec(&cmd).unwrap();
    let mut decoded = body(&frame);
    let n = cobs::decode_in_place(&mut decoded).unwrap();
    decoded.truncate(n);
    let message = postcard::to_allocvec(&cmd).unwrap();
    assert_eq!(&decoded[..decoded.len() - CRC_BYTES], &message[..]);
    assert_eq!(decoded[decoded.len() - CRC_BYTES..], CRC32C.checksum(&message).to_le_bytes());
}

/// The worked example of `docs/protocol.md`: these exact bytes are in the document, so it cannot go stale.
#[test]
fn documented_byte_level_example_matches_the_code() {
    let hello = Command { seq: 1, request: Request::Hello { protocol: PROTOCOL_VERSION } };
    assert_eq!(postcard::to_allocvec(&hello).unwrap(), [0x01, 0x00, 0x02]);
    let crc = CRC32C.checksum(&[0x01, 0x00, 0x02]);
    assert_eq!(crc.to_le_bytes(), [0xf3, 0x41, 0x1e, 0x24], "CRC-32C of 01 00 02 is {crc:#010x}");
    let frame = encode_frame_vec(&hello).unwrap();
    let hello_wire = [0x02, 0x01, 0x06, 0x02, 0xf3, 0x41, 0x1e, 0x24, 0x00];
    assert_eq!(frame, hello_wire, "{}", hex(&frame));

    let done = Reply { seq: 1, response: Response::ResetDone };
    let reply_frame = encode_frame_vec(&done).unwrap();
    let reply_wire = [0x07, 0x01, 0x07, 0x4e, 0x8b, 0x09, 0x36, 0x00];
    assert_eq!(reply_frame, reply_wire, "{}", hex(&reply_frame));

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../docs/protocol.md"))
        .expect("docs/protocol.md");
    for bytes in [&hello_wire[..], &reply_wire[..]] {
        assert!(doc.contains(&hex(bytes)), "docs/protocol.md must show the frame {}", hex(bytes));
    }
    assert!(doc.contains(&format!("{MAX_FRAME}")), "docs/protocol.md must state MAX_FRAME");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn corrupt_crc_is_a_typed_error() {
    let cmd = Command { seq: 7, request: Request::Status };
    let mut decoded = postcard::to_allocvec(&cmd).unwrap();
    let good = CRC32C.checksum(&decoded);
    decoded.extend_from_slice(&(good ^ 0x0000_0100).to_le_bytes());
    let frame = cobs_frame(&decoded);
    match decode_frame::<Command>(&mut body(&frame)) {
        Err(FrameError::Crc { stored, computed }) => {
            assert_eq!(computed, good);
            assert_eq!(stored, good ^ 0x0000_0100);
        }
        other => panic!("expected a CRC error, got {other:?}"),
    }
    // One flipped bit anywhere in a real frame is caught (as bad COBS or bad CRC, never as a message).
    let frame = encode_frame_vec(&Command { seq: 7, request: Request::ExportOnnx { offset: 99 } }).unwrap();
    for i in 0..frame.len() - 1 {
        for bit in 0..8 {
            let mut bad = body(&frame);
            bad[i] ^= 1 << bit;
            if bad[i] == 0 {
                assert_eq!(decode_frame::<Command>(&mut bad), Err(FrameError::Cobs));
                continue;
            }
            let r = decode_frame::<Command>(&mut bad);
            assert!(
                matches!(r, Err(FrameError::Crc { .. } | FrameError::Cobs | FrameError::TooShort { .. })),
                "byte {i} bit {bit}: {r:?}"
            );
        }
    }
}

#[test]
fn malformed_frames_give_typed_errors() {
    // Too short for a CRC.
    assert_eq!(decode_frame::<Command>(&mut body(&cobs_frame(&[1, 2, 3]))), Err(FrameError::TooShort { len: 3 }));
    // A zero inside the frame bytes, or a COBS code running past the end.
    assert_eq!(decode_frame::<Command>(&mut [5, 1, 0, 2]), Err(FrameError::Cobs));
    assert_eq!(decode_frame::<Command>(&mut [9, 1, 2]), Err(FrameError::Cobs));
    // Longer than a frame may be.
    assert_eq!(decode_frame::<Command>(&mut vec![1u8; MAX_FRAME + 1]), Err(FrameError::TooLong { max: MAX_FRAME }));
    // A valid CRC over bytes that are no Command: request variant 200 does not exist.
    let mut decoded = vec![0x01, 0xc8, 0x01];
    decoded.extend_from_slice(&CRC32C.checksum(&decoded.clone()).to_le_bytes());
    assert!(matches!(decode_frame::<Command>(&mut body(&cobs_frame(&decoded))), Err(FrameError::Decode(_))));
    // A valid message followed by extra bytes under the same CRC.
    let mut decoded = postcard::to_allocvec(&Command { seq: 1, request: Request::Learn }).unwrap();
    decoded.extend_from_slice(&[7, 7]);
    decoded.extend_from_slice(&CRC32C.checksum(&decoded.clone()).to_le_bytes());
    assert_eq!(decode_frame::<Command>(&mut body(&cobs_frame(&decoded))), Err(FrameError::TrailingBytes(2)));
}

#[test]
fn a_message_too_large_for_a_frame_is_refused_when_sending() {
    let big = Command {
        seq: 1,
        request: Request::AddSample {
            class: "x".into(),
            image: Image { width: 100, height: 100, channels: 1, pixels: vec![1; 10_000] },
        },
    };
    assert!(matches!(encode_frame_vec(&big), Err(FrameError::Encode(_))));
    // The largest message that fits does fit, even in the worst case of COBS overhead (no zero bytes at all).
    let pixels = MAX_MESSAGE - 16;
    let fits = Command {
        seq: 1,
        request: Request::Predict {
            image: Image { width: pixels as u16, height: 1, channels: 1, pixels: vec![1; pixels] },
        },
    };
    let frame = encode_frame_vec(&fits).unwrap();
    assert!(frame.len() <= MAX_FRAME, "{} > {MAX_FRAME}", frame.len());
    assert_eq!(decode_frame::<Command>(&mut body(&frame)).unwrap(), fits);
    // A too-small output buffer is an error, not a panic.
    let mut small = [0u8; 8];
    assert!(matches!(encode_frame(&fits, &mut small), Err(FrameError::Encode(_))));
}

#[test]
fn link_sends_and_receives_frames_back_to_back() {
    let cmds: Vec<Command> =
        every_request().into_iter().enumerate().map(|(i, request)| Command { seq: i as u32 + 1, request }).collect();
    let mut writer = link_reading(Vec::new());
    for c in &cmds {
        writer.send(c).unwrap();
    }
    let wire = writer.get_ref().0.tx.clone();
    assert_eq!(wire.iter().filter(|&&b| b == 0).count(), cmds.len());
    let mut reader = link_reading(wire);
    for c in &cmds {
        assert_eq!(reader.recv::<Command>().unwrap().as_ref(), Some(c));
    }
    assert!(reader.recv::<Command>().unwrap().is_none(), "nothing more");
}

#[test]
fn link_keeps_a_partial_frame_until_the_rest_arrives() {
    let cmd = Command { seq: 5, request: Request::Predict { image: image(28, 28, 1) } };
    let frame = encode_frame_vec(&cmd).unwrap();
    let (a, b) = frame.split_at(frame.len() / 2);
    let mut link = link_reading(a.to_vec());
    assert!(link.recv::<Command>().unwrap().is_none());
    link.get_mut().0.rx = Cursor::new(b.to_vec());
    assert_eq!(link.recv::<Command>().unwrap(), Some(cmd));
}

fn expect_frame_error<T: embedded_io::Read + embedded_io::Write>(link: &mut Link<T>) -> FrameError {
    match link.recv::<Command>() {
        Err(LinkError::Frame(e)) => e,
        Ok(other) => panic!("expected a bad frame, got {other:?}"),
        Err(LinkError::Io(e)) => panic!("expected a bad frame, got an I/O error {e:?}"),
    }
}

#[test]
fn link_survives_oversize_corrupt_and_garbage_frames() {
    let good = |seq| encode_frame_vec(&Command { seq, request: Request::Status }).unwrap();
    let mut wire = Vec::new();
    // 1. An oversize frame: more than MAX_FRAME bytes without a delimiter.
    wire.extend(std::iter::repeat_n(0x41u8, MAX_FRAME + 500));
    wire.push(0);
    wire.extend(good(1));
    // 2. A frame with a bad CRC.
    let mut bad = good(2);
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == 0xff { 0xfe } else { bad[n - 3] + 1 };
    wire.extend(bad);
    wire.extend(good(3));
    // 3. Line noise, repeated delimiters (skipped silently), then a good frame.
    wire.extend([0x13, 0x37, 0xff, 0x02, 0x00, 0x00, 0x00]);
    wire.extend(good(4));
    // 4. A good frame cut short by a lone delimiter (the host resynchronising), then a good frame.
    let cut = good(5);
    wire.extend(&cut[..cut.len() / 2]);
    wire.push(0);
    wire.extend(good(6));

    let mut link = link_reading(wire);
    assert_eq!(expect_frame_error(&mut link), FrameError::TooLong { max: MAX_FRAME });
    assert_eq!(link.recv::<Command>().unwrap().map(|c| c.seq), Some(1));
    assert!(matches!(expect_frame_error(&mut link), FrameError::Crc { .. } | FrameError::Cobs));
    assert_eq!(link.recv::<Command>().unwrap().map(|c| c.seq), Some(3));
    let _ = expect_frame_error(&mut link);
    assert_eq!(link.recv::<Command>().unwrap().map(|c| c.seq), Some(4));
    let _ = expect_frame_error(&mut link);
    assert_eq!(link.recv::<Command>().unwrap().map(|c| c.seq), Some(6));
    assert!(link.recv::<Command>().unwrap().is_none());
}

#[test]
fn link_clear_drops_a_partial_frame() {
    let frame = encode_frame_vec(&Command { seq: 9, request: Request::Learn }).unwrap();
    let mut link = link_reading(frame[..3].to_vec());
    assert!(link.recv::<Command>().unwrap().is_none());
    link.clear();
    link.get_mut().0.rx = Cursor::new(frame.clone());
    assert_eq!(link.recv::<Command>().unwrap().map(|c| c.seq), Some(9));
}

#[test]
fn resync_writes_a_lone_delimiter() {
    let mut link = link_reading(Vec::new());
    link.resync().unwrap();
    assert_eq!(link.get_ref().0.tx, [0]);
}

#[test]
fn std_io_maps_would_block_to_no_bytes_and_zero_writes_to_an_error() {
    struct Stubborn;
    impl std::io::Read for Stubborn {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    impl std::io::Write for Stubborn {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Ok(0)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut link = Link::new(StdIo(Stubborn));
    assert!(link.recv::<Command>().unwrap().is_none());
    match link.send(&Command { seq: 1, request: Request::Status }) {
        Err(LinkError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WriteZero),
        other => panic!("expected WriteZero, got {other:?}"),
    }
}

/// splitmix64: reproducible pseudo-random bytes.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn random_bytes_never_panic_and_a_good_frame_after_them_still_arrives() {
    let mut s = 42u64;
    for round in 0..300 {
        let len = (splitmix(&mut s) % 600) as usize;
        let mut noise: Vec<u8> = (0..len).map(|_| splitmix(&mut s) as u8).collect();
        let _ = decode_frame::<Command>(&mut noise.clone());
        let _ = decode_frame::<Reply>(&mut noise.clone());
        noise.push(0);
        noise.extend(encode_frame_vec(&Command { seq: round, request: Request::Status }).unwrap());
        let mut link = link_reading(noise);
        let mut got = None;
        for _ in 0..1000 {
            match link.recv::<Command>() {
                Ok(Some(c)) => got = Some(c.seq),
                Ok(None) => break,
                Err(LinkError::Frame(_)) => {}
                Err(LinkError::Io(e)) => panic!("{e}"),
            }
        }
        assert_eq!(got, Some(round), "round {round}: the good frame after the noise is received last");
    }
}

#[test]
fn error_messages_are_cut_to_fit_a_frame() {
    let long = "é".repeat(5000);
    let Response::Error { code, message } = Response::error(ErrorCode::Internal, long) else { panic!() };
    assert_eq!(code, ErrorCode::Internal);
    assert!(message.len() <= 1024 && message.len() >= 1020);
    assert!(encode_frame_vec(&Reply { seq: 1, response: Response::Error { code, message } }).is_ok());
}

const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../fuzz/corpus/frame_decode");

/// The checked-in seed corpus of the `frame_decode` fuzz target: a valid frame of every command and reply, and a
/// few bad ones (bad CRC, truncated, oversize, noise, two frames in one input).
fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let names = ["hello", "add-sample", "begin-task", "learn", "status", "predict", "export-onnx", "reset"];
    for (i, (request, name)) in every_request().into_iter().zip(names).enumerate() {
        let frame = encode_frame_vec(&Command { seq: i as u32 + 1, request }).unwrap();
        seeds.push((format!("seed-valid-command-{name}"), frame));
    }
    for (i, response) in every_response().into_iter().enumerate() {
        seeds.push((format!("seed-valid-reply-{i}"), encode_frame_vec(&Reply { seq: i as u32, response }).unwrap()));
    }
    let status = encode_frame_vec(&Command { seq: 2, request: Request::Status }).unwrap();
    let mut bad_crc = status.clone();
    bad_crc[2] ^= 0x10;
    seeds.push(("seed-bad-crc".into(), bad_crc));
    seeds.push(("seed-bad-truncated".into(), status[..status.len() - 3].to_vec()));
    let mut oversize = vec![0x55u8; MAX_FRAME + 8];
    oversize.push(0);
    oversize.extend(&status);
    seeds.push(("seed-bad-oversize-then-valid".into(), oversize));
    seeds.push(("seed-bad-noise".into(), vec![0x13, 0x37, 0xff, 0x02, 0x00, 0x00, 0x09, 0x01]));
    let mut two = status.clone();
    two.extend(encode_frame_vec(&Command { seq: 3, request: Request::Learn }).unwrap());
    seeds.push(("seed-valid-two-frames".into(), two));
    seeds
}

/// Regenerate the seeds after a protocol change:
/// `cargo test -p firmware --lib protocol::tests::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand after a protocol change"]
fn write_fuzz_seeds() {
    edgelearn_core::test_util::write_fuzz_seeds(SEED_DIR, fuzz_seeds());
}

#[test]
fn checked_in_fuzz_seeds_are_current() {
    for (name, bytes) in fuzz_seeds() {
        let on_disk = std::fs::read(format!("{SEED_DIR}/{name}"))
            .unwrap_or_else(|e| panic!("fuzz seed {name} missing ({e}): run write_fuzz_seeds"));
        assert!(on_disk == bytes, "fuzz seed {name} is stale: run write_fuzz_seeds");
        let valid = name.starts_with("seed-valid");
        let mut link = link_reading(bytes);
        let (mut good, mut bad) = (0, 0);
        loop {
            let r = if name.contains("reply") {
                link.recv::<Reply>().map(|m| m.map(|_| ()))
            } else {
                link.recv::<Command>().map(|m| m.map(|_| ()))
            };
            match r {
                Ok(Some(())) => good += 1,
                Ok(None) => break,
                Err(_) => bad += 1,
            }
        }
        if valid {
            assert!(good >= 1 && bad == 0, "{name}: {good} good, {bad} bad");
        } else {
            assert!(good == 0 || name.contains("then-valid"), "{name}: {good} good");
            assert!(bad >= 1 || name.contains("truncated"), "{name}: no bad frame reported");
        }
    }
}
