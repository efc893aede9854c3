use super::*;

use std::cell::Cell;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;

use crate::inbox::{PROCESSED, REJECTED, REJECTED_LOG};
use crate::protocol::{StdIo, encode_frame_vec};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "edgelearn-daemon-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A device on the shipped MNIST CNN (digits 0-3) and the host-sim board, with its state and inbox in `dir`.
fn config(dir: &Path) -> Config {
    let mut cfg = Config::new(
        format!("{ROOT}/boards/host-sim.toml"),
        format!("{ROOT}/models/mnist-cnn-0123.onnx"),
        dir.join("state"),
    );
    cfg.inbox = Some(dir.join("field"));
    cfg.epochs = 4;
    cfg.batch = 8;
    cfg.lr = 0.05;
    cfg
}

/// splitmix64.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 28×28 grey picture of a new "class": a thick vertical bar ("bar") or a hollow square ("box"), at a random
/// offset, with noise.
fn picture(class: &str, s: &mut u64) -> Image {
    let dx = (next(s) % 7) as i32 - 3;
    let dy = (next(s) % 7) as i32 - 3;
    let mut pixels = vec![0u8; 784];
    for y in 0..28i32 {
        for x in 0..28i32 {
            let (u, v) = (x - dx, y - dy);
            let on = match class {
                "bar" => (11..17).contains(&u) && (3..25).contains(&v),
                _ => {
                    let inside = (5..23).contains(&u) && (5..23).contains(&v);
                    let hole = (9..19).contains(&u) && (9..19).contains(&v);
                    inside && !hole
                }
            };
            let noise = (next(s) % 40) as u8;
            pixels[(y * 28 + x) as usize] = if on { 255 - noise } else { noise };
        }
    }
    Image { width: 28, height: 28, channels: 1, pixels }
}

fn png(image: &Image) -> Vec<u8> {
    let img = image::GrayImage::from_raw(28, 28, image.pixels.clone()).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn status(dev: &mut Device) -> Status {
    match dev.handle(Request::Status) {
        Response::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

fn expect_error(r: Response, want: ErrorCode) -> String {
    match r {
        Response::Error { code, message } => {
            assert_eq!(code, want, "{message}");
            message
        }
        other => panic!("expected an error {want:?}, got {other:?}"),
    }
}

fn predict(dev: &mut Device, image: &Image) -> String {
    match dev.handle(Request::Predict { image: image.clone() }) {
        Response::Prediction { class, confidence, .. } => {
            assert!((0.0..=1.0).contains(&confidence), "{confidence}");
            class
        }
        other => panic!("{other:?}"),
    }
}

fn accuracy(dev: &mut Device, seed: u64) -> f64 {
    let mut s = seed;
    let mut right = 0;
    for i in 0..40 {
        let class = if i % 2 == 0 { "bar" } else { "box" };
        right += usize::from(predict(dev, &picture(class, &mut s)) == class);
    }
    right as f64 / 40.0
}

fn export(dev: &mut Device) -> Vec<u8> {
    let mut out = Vec::new();
    let mut expected_crc = None;
    loop {
        match dev.handle(Request::ExportOnnx { offset: out.len() as u32 }) {
            Response::OnnxChunk { total, offset, crc, bytes } => {
                assert_eq!(offset as usize, out.len());
                assert!(bytes.len() <= EXPORT_CHUNK);
                assert!(expected_crc.is_none_or(|c| c == crc));
                expected_crc = Some(crc);
                out.extend_from_slice(&bytes);
                if out.len() == total as usize {
                    assert_eq!(CRC32C.checksum(&out), crc);
                    return out;
                }
                assert!(!bytes.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn config_parses_flags_and_refuses_bad_ones() {
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let c = Config::parse(&args(
        "--board b.toml --model m.onnx --state st --inbox in --serial /dev/pts/3 --baud 115200 --cut last:3 \
         --classes a,b --norm 0.5,0.25 --epochs 2 --lr 0.1 --batch 4 --seed 9 --gpio-chip /dev/gpiochip0 \
         --led-line 3 --button-line 4 --led-active-low --button-active-high --pause-after-commit 250",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(c.board, PathBuf::from("b.toml"));
    assert_eq!(c.state, PathBuf::from("st"));
    assert_eq!(c.inbox, Some(PathBuf::from("in")));
    assert_eq!(c.serial, Some(PathBuf::from("/dev/pts/3")));
    assert_eq!((c.baud, c.cut.as_str(), c.norm), (Some(115_200), "last:3", (0.5, 0.25)));
    assert_eq!(c.classes, Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!((c.epochs, c.lr, c.batch, c.seed), (2, 0.1, 4, 9));
    assert_eq!((c.led_line, c.button_line, c.led_active_low, c.button_active_high), (Some(3), Some(4), true, true));
    assert_eq!(c.pause_after_commit_ms, 250);
    let f = Config::parse(&args(
        "--board b --model m --state s --learn-interval 2.5 --fleet lab --device-id cam-1 --broker h:1883 \
         --broker-password-file pw --fleet-resend-s 4",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(f.learn_interval_ms, 2500);
    let fleet = f.fleet.unwrap();
    assert_eq!((fleet.fleet.as_str(), fleet.device.as_str(), fleet.broker.as_str()), ("lab", "cam-1", "h:1883"));
    assert_eq!(
        (fleet.user, fleet.password_file, fleet.base, fleet.resend_s),
        (None, Some(PathBuf::from("pw")), None, 4.0)
    );
    let d = Config::parse(&args("--board b --model m --state s")).unwrap().unwrap();
    assert_eq!(d, Config::new("b", "m", "s"));
    assert_eq!(Config::parse(&args("--help")).unwrap(), None);
    for (bad, says) in [
        ("--model m --state s", "--board"),
        ("--board b --state s", "--model"),
        ("--board b --model m", "--state"),
        ("--board b --model m --state s --epochs", "needs a value"),
        ("--board b --model m --state s --epochs x", "not a valid number"),
        ("--board b --model m --state s --epochs 0", "at least 1"),
        ("--board b --model m --state s --lr -1", "positive"),
        ("--board b --model m --state s --norm 1", "MEAN,STD"),
        ("--board b --model m --state s --norm 0,0", "positive std"),
        ("--board b --model m --state s --classes a,,b", "empty class"),
        ("--board b --model m --state s --led-line 3", "--gpio-chip"),
        ("--board b --model m --state s --frobnicate", "unknown option"),
        ("--board b --model m --state s --learn-interval 0", "--learn-interval"),
        ("--board b --model m --state s --fleet lab --broker h:1", "--device-id"),
        ("--board b --model m --state s --fleet-base x", "--fleet"),
        ("--board b --model m --state s --fleet lab --device-id d --broker h:1 --fleet-resend-s -1", "resend"),
    ] {
        let e = Config::parse(&args(bad)).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn device_answers_every_request_and_refuses_bad_ones_with_typed_errors() {
    let dir = scratch("handle");
    let mut dev = Device::open(config(&dir)).unwrap();

    // Hello.
    match dev.handle(Request::Hello { protocol: PROTOCOL_VERSION }) {
        Response::Hello { protocol, board, input, max_frame, firmware } => {
            assert_eq!(protocol, PROTOCOL_VERSION);
            assert_eq!(board, "host-sim");
            assert_eq!(input, [1, 28, 28]);
            assert_eq!(max_frame as usize, MAX_FRAME);
            assert_eq!(firmware, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("{other:?}"),
    }
    // Status of a fresh device: the shipped model's 4 classes, nothing learned.
    let s = status(&mut dev);
    assert_eq!((s.generation, s.phase, s.tasks, s.classes, s.buffered), (0, Phase::Idle, 0, 4, 0));
    assert_eq!((s.capacity as usize, s.inbox_pending, s.samples_learned, s.last_alpha), (SAMPLE_CAPACITY, 0, 0, None));
    let names: Vec<&str> = s.budget.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["params", "bases", "fisher", "workspace", "state_file", "replay"]);
    assert!(s.budget.iter().all(|b| b.used <= b.limit), "{:?}", s.budget);
    // The head's 100×4 weights and the 800×100 layer are trainable parameters (f32); no basis before a task.
    assert!(s.budget[0].used >= 4 * (800 * 100 + 100 * 4), "{:?}", s.budget);
    assert_eq!(s.budget[1].used, 0, "no GPM basis before the first task");

    // Bad requests: nothing changes.
    expect_error(dev.handle(Request::Learn), ErrorCode::BadRequest);
    assert_eq!(status(&mut dev).phase, Phase::Error, "a failed learn shows on the LED");
    let mut s0 = 1;
    let bad_image = Image { width: 28, height: 28, channels: 1, pixels: vec![0; 700] };
    expect_error(
        dev.handle(Request::AddSample { class: "bar".into(), image: bad_image.clone() }),
        ErrorCode::BadRequest,
    );
    expect_error(dev.handle(Request::Predict { image: bad_image }), ErrorCode::BadRequest);
    let three = Image { width: 28, height: 28, channels: 2, pixels: vec![0; 28 * 28 * 2] };
    expect_error(dev.handle(Request::AddSample { class: "bar".into(), image: three }), ErrorCode::BadRequest);
    let good = picture("bar", &mut s0);
    expect_error(dev.handle(Request::AddSample { class: String::new(), image: good.clone() }), ErrorCode::BadRequest);
    expect_error(dev.handle(Request::AddSample { class: "a\nb".into(), image: good.clone() }), ErrorCode::BadRequest);
    expect_error(dev.handle(Request::Reset { confirm: 0 }), ErrorCode::BadRequest);
    let s = status(&mut dev);
    assert_eq!((s.classes, s.buffered, s.generation), (4, 0, 0));

    // Samples of two new classes; begin-task drops what is buffered.
    match dev.handle(Request::AddSample { class: "bar".into(), image: good.clone() }) {
        Response::SampleAdded { class_id, new_class, buffered, capacity } => {
            assert_eq!((class_id, new_class, buffered, capacity as usize), (4, true, 1, SAMPLE_CAPACITY));
        }
        other => panic!("{other:?}"),
    }
    match dev.handle(Request::AddSample { class: "bar".into(), image: good }) {
        Response::SampleAdded { class_id, new_class, buffered, .. } => {
            assert_eq!((class_id, new_class, buffered), (4, false, 2))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&mut dev).phase, Phase::Collecting);
    assert_eq!(dev.handle(Request::BeginTask), Response::TaskBegun { task: 0, discarded: 2 });
    assert_eq!(status(&mut dev).buffered, 0);

    let mut rng = 7;
    for i in 0..60 {
        let class = if i % 2 == 0 { "bar" } else { "box" };
        assert!(matches!(
            dev.handle(Request::AddSample { class: class.into(), image: picture(class, &mut rng) }),
            Response::SampleAdded { .. }
        ));
    }
    let before = accuracy(&mut dev, 1000);
    match dev.handle(Request::Learn) {
        Response::Learned { task, generation, samples, from_inbox, rejected, alpha, .. } => {
            assert_eq!((task, generation, samples, from_inbox, rejected, alpha), (0, 1, 60, 0, 0, None));
        }
        other => panic!("{other:?}"),
    }
    let s = status(&mut dev);
    assert_eq!(
        (s.generation, s.phase, s.tasks, s.classes, s.buffered, s.samples_learned),
        (1, Phase::Idle, 1, 6, 0, 60)
    );
    let after = accuracy(&mut dev, 1000);
    assert!(before <= 0.55, "before learning the new classes cannot be predicted well: {before}");
    assert!(after >= 0.9, "accuracy on the learned classes {after}");

    // Export: valid ONNX with 6 outputs, the same model that predicts.
    let bytes = export(&mut dev);
    let reloaded = OnnxModel::from_bytes(&bytes).unwrap().split(&Cut::parse("last:2").unwrap()).unwrap();
    assert_eq!(reloaded.trainable.head_outputs(0).unwrap(), 6);
    let x = Array2::from_shape_vec((1, 784), dev.pre.from_raw(&picture("box", &mut rng)).unwrap()).unwrap();
    let a = dev.learner.model().clone().forward(&dev.base.features(&x.view()).unwrap().view(), 0, Mode::Eval).unwrap();
    let mut rt = reloaded.trainable.clone();
    let b = rt.forward(&reloaded.features(&x.view()).unwrap().view(), 0, Mode::Eval).unwrap();
    // Relative: tract and the native GEMM sum in different orders, and untrained-class logits reach 1e3–1e4.
    assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-3 * p.abs().max(1.0)), "{a:?} vs {b:?}");
    // An offset past the end gives an empty chunk.
    match dev.handle(Request::ExportOnnx { offset: u32::MAX }) {
        Response::OnnxChunk { total, bytes: chunk, .. } => {
            assert_eq!(total as usize, bytes.len());
            assert!(chunk.is_empty());
        }
        other => panic!("{other:?}"),
    }

    // A restart loads the committed state: same generation, same predictions.
    let probe: Vec<Image> = (0..10).map(|i| picture(if i % 2 == 0 { "bar" } else { "box" }, &mut rng)).collect();
    let answers: Vec<String> = probe.iter().map(|p| predict(&mut dev, p)).collect();
    drop(dev);
    let mut dev = Device::open(config(&dir)).unwrap();
    assert_eq!(dev.generation(), 1);
    assert_eq!(status(&mut dev).classes, 6);
    assert_eq!(probe.iter().map(|p| predict(&mut dev, p)).collect::<Vec<_>>(), answers);

    // Reset: back to the shipped model, state deleted (a restart finds nothing).
    assert_eq!(dev.handle(Request::Reset { confirm: RESET_CONFIRM }), Response::ResetDone);
    let s = status(&mut dev);
    assert_eq!((s.generation, s.classes, s.tasks), (0, 4, 0));
    drop(dev);
    assert_eq!(Device::open(config(&dir)).unwrap().generation(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inbox_photos_are_learned_once_and_moved_only_after_the_commit() {
    let dir = scratch("inbox");
    let cfg = config(&dir);
    let field = cfg.inbox.clone().unwrap();
    let mut dev = Device::open(cfg.clone()).unwrap();
    let mut s = 3;
    for i in 0..40 {
        let class = if i % 2 == 0 { "bar" } else { "box" };
        let d = field.join("inbox").join(class);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{i:03}.png")), png(&picture(class, &mut s))).unwrap();
    }
    std::fs::write(field.join("inbox").join("bar").join("broken.png"), b"\x89PNG truncated").unwrap();
    std::fs::write(field.join("inbox").join("bar").join("half.png.part"), b"still being written").unwrap();
    dev.refresh();
    let st = status(&mut dev);
    assert_eq!((st.inbox_pending, st.phase), (41, Phase::Collecting));

    match dev.handle(Request::Learn) {
        Response::Learned { generation, samples, from_inbox, rejected, .. } => {
            assert_eq!((generation, samples, from_inbox, rejected), (1, 40, 40, 1));
        }
        other => panic!("{other:?}"),
    }
    let count = |sub: &str| walk(&field.join(sub)).len();
    assert_eq!(count("processed"), 40);
    assert_eq!(walk(&field.join(REJECTED)).iter().filter(|p| p.ends_with("broken.png")).count(), 1);
    let log = std::fs::read_to_string(field.join(REJECTED).join(REJECTED_LOG)).unwrap();
    assert!(log.contains("broken.png"), "{log}");
    assert_eq!(walk(&field.join("inbox")), vec![field.join("inbox/bar/half.png.part")]);
    let st = status(&mut dev);
    assert_eq!((st.inbox_pending, st.rejected, st.samples_learned, st.phase), (0, 1, 40, Phase::Idle));
    assert!(accuracy(&mut dev, 77) >= 0.9);

    // Simulate a power cut between the commit and the moves: put the learned photos back into the inbox. A
    // restart recognises them from the committed ledger and moves them without learning them again.
    for p in walk(&field.join(PROCESSED)) {
        let back = field.join("inbox").join(p.strip_prefix(field.join(PROCESSED)).unwrap());
        std::fs::rename(&p, back).unwrap();
    }
    drop(dev);
    let mut dev = Device::open(cfg.clone()).unwrap();
    assert_eq!(count("processed"), 40, "reconciled at start");
    let st = status(&mut dev);
    assert_eq!((st.generation, st.inbox_pending, st.samples_learned), (1, 0, 40));
    expect_error(dev.handle(Request::Learn), ErrorCode::BadRequest);
    assert_eq!(status(&mut dev).generation, 1, "nothing learned twice");

    // A photo not learned before is learned; one with a learned name but new content is new.
    let fresh = picture("box", &mut s);
    std::fs::write(field.join("inbox/box/001.png"), png(&fresh)).unwrap();
    match dev.handle(Request::Learn) {
        Response::Learned { generation, from_inbox, alpha, .. } => {
            assert_eq!((generation, from_inbox), (2, 1));
            // The field's SLDA head runs without BECAME's stage 2 (method::FIELD_METHOD): no merge, no α.
            assert_eq!(alpha, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(walk(&field.join(PROCESSED)).len(), 41);
    assert!(field.join("processed/box/001.png-1").is_file(), "kept next to the earlier 001.png");
    let st = status(&mut dev);
    assert_eq!((st.samples_learned, st.tasks), (41, 2));
    assert_eq!(st.last_alpha, None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A board whose profile has an `[augment]` table learns each inbox photo with its jittered copies: 6 photos of
/// each of two classes, `v(6) = ⌈24/6⌉ − 1 = 3` copies each, so 48 samples from 12 photos (the copies counted
/// in `firmware/src/intake/tests.rs`); the reply and the ledger count the 12 photos, the photos alone are moved to
/// `processed/`.
#[test]
fn inbox_photos_of_a_few_shot_class_are_learned_with_their_copies() {
    let dir = scratch("augment");
    let mut cfg = config(&dir);
    let profile = std::fs::read_to_string(&cfg.board).unwrap();
    cfg.board = dir.join("host-sim.toml");
    std::fs::write(&cfg.board, format!("{profile}\n[augment]\nsamples_per_class = 24\nmax_variants = 5\n")).unwrap();
    let field = cfg.inbox.clone().unwrap();
    let mut dev = Device::open(cfg).unwrap();
    let mut s = 11;
    for i in 0..12 {
        let class = if i % 2 == 0 { "bar" } else { "box" };
        let d = field.join("inbox").join(class);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{i:03}.png")), png(&picture(class, &mut s))).unwrap();
    }
    dev.refresh();
    match dev.handle(Request::Learn) {
        Response::Learned { samples, from_inbox, rejected, .. } => {
            assert_eq!((samples, from_inbox, rejected), (12, 12, 0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&mut dev).samples_learned, 12, "the copies are not samples learned");
    assert_eq!(walk(&field.join(PROCESSED)).len(), 12);
    assert!(accuracy(&mut dev, 78) >= 0.9);
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.file_name().is_some_and(|n| n != REJECTED_LOG) {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn open_refuses_bad_configurations() {
    let dir = scratch("open");
    let mut c = config(&dir);
    c.model = dir.join("missing.onnx");
    assert!(matches!(Device::open(c), Err(Error::Io { .. })));
    let mut c = config(&dir);
    c.classes = Some(vec!["a".into(), "b".into()]);
    assert!(matches!(Device::open(c), Err(Error::Config(_))));
    let mut c = config(&dir);
    c.board = dir.join("missing.toml");
    assert!(Device::open(c).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A byte stream for [`serve`]: reads the scripted bytes, then reports "nothing now" and, after a few such reads,
/// raises the stop flag (as SIGTERM would).
struct Script<'a> {
    rx: Cursor<Vec<u8>>,
    tx: Vec<u8>,
    idle: usize,
    stop: &'a AtomicBool,
}

impl std::io::Read for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.rx.read(buf)?;
        if n == 0 {
            self.idle += 1;
            if self.idle > 20 {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
        Ok(n)
    }
}

impl std::io::Write for Script<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A clock that moves 10 ms each time it is read.
struct Ticking(Cell<u64>);

impl Clock for Ticking {
    fn now_ms(&self) -> u64 {
        self.0.set(self.0.get() + 10);
        self.0.get()
    }
}

/// An LED that records the levels written to it.
#[derive(Default)]
struct Recorder(Vec<bool>);

impl embedded_hal::digital::ErrorType for Recorder {
    type Error = core::convert::Infallible;
}

impl OutputPin for Recorder {
    fn set_low(&mut self) -> std::result::Result<(), Self::Error> {
        self.0.push(false);
        Ok(())
    }
    fn set_high(&mut self) -> std::result::Result<(), Self::Error> {
        self.0.push(true);
        Ok(())
    }
}

/// A button held down (reads low) from the `from`-th read to the `to`-th.
struct Held {
    reads: usize,
    from: usize,
    to: usize,
}

impl embedded_hal::digital::ErrorType for Held {
    type Error = core::convert::Infallible;
}

impl InputPin for Held {
    fn is_high(&mut self) -> std::result::Result<bool, Self::Error> {
        self.reads += 1;
        Ok(!(self.from..self.to).contains(&self.reads))
    }
    fn is_low(&mut self) -> std::result::Result<bool, Self::Error> {
        self.is_high().map(|h| !h)
    }
}

#[test]
fn serve_answers_frames_survives_bad_ones_and_learns_on_a_button_press() {
    let dir = scratch("serve");
    let mut dev = Device::open(config(&dir)).unwrap();
    let mut s = 11;
    let mut wire = Vec::new();
    wire.extend(encode_frame_vec(&Command { seq: 1, request: Request::Hello { protocol: PROTOCOL_VERSION } }).unwrap());
    wire.extend([0x42, 0x17, 0x99, 0x00]); // garbage
    wire.extend(std::iter::repeat_n(0x11u8, MAX_FRAME + 10)); // oversize
    wire.push(0);
    for i in 0..20u32 {
        let class = if i % 2 == 0 { "bar" } else { "box" };
        let request = Request::AddSample { class: class.into(), image: picture(class, &mut s) };
        wire.extend(encode_frame_vec(&Command { seq: 10 + i, request }).unwrap());
    }
    wire.extend(encode_frame_vec(&Command { seq: 99, request: Request::Status }).unwrap());
    let stop = AtomicBool::new(false);
    let mut link = Link::new(StdIo(Script { rx: Cursor::new(wire), tx: Vec::new(), idle: 0, stop: &stop }));
    let mut led = StatusLed::new(Recorder::default(), true, 0);
    // Pressed (low) for reads 30..40 of the button (after the frames are answered): 10 loop turns of at least
    // 20 ms on the ticking clock, well over the debounce time.
    let mut button = Button::new(Held { reads: 0, from: 30, to: 40 }, true, 0);
    let clock = Ticking(Cell::new(0));
    serve(&mut dev, Some(&mut link), &mut led, &mut button, &clock, &stop).unwrap();

    let never = AtomicBool::new(false);
    let mut replies = Link::new(StdIo(Script {
        rx: Cursor::new(link.get_ref().0.tx.clone()),
        tx: Vec::new(),
        idle: 0,
        stop: &never,
    }));
    let mut got = Vec::new();
    while let Some(r) = replies.recv::<Reply>().unwrap() {
        got.push(r);
    }
    assert_eq!(got.len(), 1 + 2 + 20 + 1, "{got:?}");
    assert!(matches!(got[0], Reply { seq: 1, response: Response::Hello { .. } }));
    for r in &got[1..3] {
        assert_eq!(r.seq, 0);
        assert!(matches!(r.response, Response::Error { code: ErrorCode::BadFrame, .. }), "{r:?}");
    }
    for (i, r) in got[3..23].iter().enumerate() {
        assert_eq!(r.seq, 10 + i as u32);
        assert!(matches!(r.response, Response::SampleAdded { .. }), "{r:?}");
    }
    assert_eq!(got[23].seq, 99);
    let Response::Status(st) = &got[23].response else { panic!("{:?}", got[23]) };
    assert_eq!((st.buffered, st.classes), (20, 6));
    // The button press learned the 20 samples and committed them.
    assert_eq!(dev.generation(), 1);
    assert_eq!(dev.status().buffered, 0);
    assert!(button.into_inner().reads > 40);
    // The LED showed something (training keeps it lit; idle flashes briefly).
    let levels = led.into_inner().0;
    assert!(levels.contains(&true) && levels.contains(&false), "{levels:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
