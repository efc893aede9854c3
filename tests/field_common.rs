//! Helpers shared by the field session and daemon kill tests (included with `#[path]`): a pseudo-terminal pair,
//! the device daemon as a child process on its slave side, a protocol client on its master side, and real MNIST
//! samples as raw pixels and PNG files.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firmware::protocol::{Image, Response};
use host::device::DeviceClient;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Real MNIST, or a clear failure.
pub fn mnist() -> host::data::Dataset {
    let dir = host::data::data_dir().join("mnist");
    host::data::load_mnist(&dir)
        .unwrap_or_else(|e| panic!("real MNIST is needed for this test ({e}); run `bash scripts/fetch-data.sh`"))
}

/// MNIST's pixel normalisation (the shipped model's).
pub const MNIST_NORM: (f32, f32) = (0.1307, 0.3081);

/// A normalised 28×28 sample back to its grey bytes.
pub fn raw_image(x: ndarray::ArrayView1<'_, f32>, norm: (f32, f32)) -> Image {
    let pixels = x.iter().map(|&v| ((v * norm.1 + norm.0) * 255.0).round().clamp(0.0, 255.0) as u8).collect();
    Image { width: 28, height: 28, channels: 1, pixels }
}

/// A grey image as PNG bytes.
pub fn png(image: &Image) -> Vec<u8> {
    let img = image::GrayImage::from_raw(u32::from(image.width), u32::from(image.height), image.pixels.clone())
        .expect("pixel count matches");
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// Drop a file into `inbox/<class>/` the way a camera tool does: written as `.tmp`, then renamed.
pub fn drop_into_inbox(field: &Path, class: &str, name: &str, bytes: &[u8]) {
    let dir = field.join("inbox").join(class);
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Every file under `dir` (recursively), sorted, without the rejection log.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.file_name().is_some_and(|n| n != firmware::inbox::REJECTED_LOG) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A pseudo-terminal pair: the daemon opens the slave by path, the test talks on the master.
pub struct Pty {
    /// The host side.
    pub master: File,
    /// The device side's path (`/dev/pts/N`).
    pub slave_path: PathBuf,
    /// Kept open so that the master never sees a hang-up while the daemon restarts.
    _slave: OwnedFd,
}

impl Pty {
    /// A new pair, the slave already raw (no echo before the daemon opens it).
    pub fn open() -> Self {
        let p = nix::pty::openpty(None, None).expect("openpty");
        let slave_path = nix::unistd::ttyname(&p.slave).expect("ttyname");
        firmware::io::serial::make_raw(&p.slave, None, 1).expect("raw slave");
        Self { master: File::from(p.master), slave_path, _slave: p.slave }
    }

    /// A protocol client on the master side, once the daemon answers hello (retried for up to `wait`).
    pub fn connect(&self, wait: Duration, timeout: Duration) -> DeviceClient<File> {
        let started = Instant::now();
        let mut client = DeviceClient::new(self.master.try_clone().unwrap(), Duration::from_millis(500)).unwrap();
        loop {
            match client.hello() {
                Ok(Response::Hello { .. }) => break,
                Ok(other) => panic!("unexpected hello reply {other:?}"),
                Err(e) => assert!(started.elapsed() < wait, "the daemon did not answer hello within {wait:?}: {e}"),
            }
        }
        client.set_timeout(timeout);
        client
    }
}

/// The device daemon (`firmware daemon`) as a child process, its log in a file.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its stderr (tracing log).
    pub log: PathBuf,
}

impl Daemon {
    /// Start the daemon with the shipped MNIST model on the host-sim board, state in `state`, inbox root
    /// `field`, on the tty `tty`, plus `extra` flags.
    pub fn start(state: &Path, field: &Path, tty: &Path, extra: &[&str], log: &Path) -> Self {
        let root = root();
        let err = File::options().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_device_daemon"))
            .arg("--board")
            .arg(root.join("boards/host-sim.toml"))
            .arg("--model")
            .arg(root.join("models/mnist-cnn-0123.onnx"))
            .arg("--state")
            .arg(state)
            .arg("--inbox")
            .arg(field)
            .arg("--serial")
            .arg(tty)
            .args(extra)
            .env("EDGELEARN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn device_daemon");
        Self { child, log: log.to_path_buf() }
    }

    /// SIGKILL ("cut the power") and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the daemon");
        use std::os::unix::process::ExitStatusExt;
        assert!(status.signal() == Some(9) || status.code().is_some(), "{status}");
    }

    /// SIGTERM, then wait for a clean exit (status 0) within `within`.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                panic!("the daemon did not stop within {within:?} of SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
