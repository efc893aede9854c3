//! `host fleet demo` (scripts/fleet-demo.sh): a fleet on this machine, every part a real process — mosquitto on
//! loopback with the fleet's password file and ACL ([`crate::fleet::broker`]), the merger (`host fleet serve`) and
//! N boards (`firmware daemon --fleet … --learn-interval 1`, the firmware binary built with `fleet-mqtt`).
//!
//! Each board gets real MNIST photos in its inbox: the factory's provisioning images of the base digits 0–3 (the
//! same on every board) and its own new digits ([`crate::fleet::sim::deal`]: board `i` gets `k = max(2, ⌈6/N⌉)` of
//! 4–9, each digit's images dealt to its boards in disjoint slices). The boards learn on their own, send their
//! updates, the merger merges and publishes, the boards adopt the fleet model. When every board runs the newest
//! model, the demo stops the processes and scores, over the whole MNIST test set (digits 0–9, no task id): the
//! fleet model, each board's own model (its newest update, before merging), the plain parameter average of the
//! same updates, and one board that learned every board's photos (joint, with the field method and with the fleet
//! method).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firmware::budget::BoardProfile;
use firmware::daemon::DeviceLearner;
use firmware::fleet::{FleetUpdate, MergedModel, decode_model, decode_update, merge_updates};
use firmware::learner::Learner;
use firmware::method::Became;
use firmware::onnx::{Cut, OnnxModel};
use firmware::store::StateStore;
use serde::{Deserialize, Serialize};

use crate::fleet::sim::{Data, accuracy, add, averaged, deal, model_of, provisioned};
use crate::{Error, Result};

const FLEET: &str = "demo";
/// Photos one board takes into one learn (the daemon's sample buffer).
const JOINT_CAPACITY: usize = 8 * 2 * firmware::daemon::PHOTOS_PER_LEARN;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The shipped base model (ONNX).
    pub model: PathBuf,
    /// Board profile of every board.
    pub board: PathBuf,
    /// Number of boards (1 to 8).
    pub devices: usize,
    /// Seed of the dealing of photos.
    pub seed: u64,
    /// Folder for everything (broker, merger, boards, report).
    pub out: PathBuf,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Give up after this long.
    pub timeout: Duration,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoReport {
    /// Boards.
    pub devices: usize,
    /// Each board's new digits.
    pub classes: Vec<Vec<usize>>,
    /// The fleet model's version at the end and the updates it merged.
    pub version: u64,
    /// Updates merged.
    pub updates: usize,
    /// Bytes of each stored update frame.
    pub update_bytes: Vec<u64>,
    /// Accuracy (%) of the fleet model over digits 0–9.
    pub merged: f64,
    /// Accuracy (%) of each board's own model.
    pub alone: Vec<f64>,
    /// Accuracy (%) of the plain average of the boards' newest updates.
    pub average: f64,
    /// Accuracy (%) of one board with every photo, field method.
    pub joint: f64,
    /// Accuracy (%) of one board with every photo, fleet method.
    pub joint_fleet_method: f64,
    /// Seconds from the boards' start until every board ran the newest model.
    pub fleet_seconds: f64,
}

/// A child process killed when dropped (SIGTERM first for the boards: see [`stop`]).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ask a process to stop (SIGTERM) and wait up to 30 s, then kill it.
fn stop(mut p: Proc) {
    let pid = nix::unistd::Pid::from_raw(p.0.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = p.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(p);
}

fn spawn(exe: &Path, args: &[String], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log).map_err(|e| Error::io(log, e))?;
    let child = Command::new(exe)
        .args(args)
        .env("EDGELEARN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .map_err(|e| Error::io(exe, e))?;
    Ok(Proc(child))
}

/// 8-bit grayscale PNG of a normalised MNIST row (the inverse of the daemon's `(p/255 − 0.1307)/0.3081`).
fn png(row: ndarray::ArrayView1<'_, f32>) -> Result<Vec<u8>> {
    let pixels: Vec<u8> =
        row.iter().map(|&v| ((v * 0.3081 + 0.1307) * 255.0).round().clamp(0.0, 255.0) as u8).collect();
    let img = image::GrayImage::from_raw(28, 28, pixels).ok_or_else(|| Error::Invalid("an MNIST row of 784".into()))?;
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("PNG: {e}")))?;
    Ok(out)
}

/// Run the demo; see the [module docs](self).
pub fn run(cfg: &DemoConfig) -> Result<DemoReport> {
    if !(1..=8).contains(&cfg.devices) {
        return Err(Error::Invalid("--devices: 1 to 8 boards".into()));
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    let firmware_bin = exe.with_file_name("firmware");
    if !firmware_bin.exists() {
        return Err(Error::Invalid(format!(
            "{} not found: build it beside host with `cargo build --release -p host -p firmware --features \
             firmware/fleet-mqtt`",
            firmware_bin.display()
        )));
    }
    let _ = std::fs::remove_dir_all(&cfg.out);
    let onnx = std::fs::read(&cfg.model).map_err(|e| Error::io(&cfg.model, e))?;
    let base = firmware::fleet::base_model_id(&onnx);
    let dm = OnnxModel::open(&cfg.model)?.split(&Cut::parse("last:2")?)?;
    let profile = BoardProfile::load(&cfg.board)?;
    let ds = crate::data::load_mnist(&cfg.data_dir.join("mnist"))?;
    let data = Data::load(&dm, &ds)?;
    let (classes, photos, mut rng) = deal(&data.train.y, cfg.devices, cfg.seed);

    // Broker, merger.
    let port = crate::fleet::broker::free_port()?;
    let broker_dir = cfg.out.join("broker");
    let mut users = vec![("merger".to_string(), format!("m-{}", cfg.seed))];
    users.extend((0..cfg.devices).map(|d| (format!("board-{d}"), format!("b{d}-{}", cfg.seed))));
    let conf = crate::fleet::broker::write_config(&broker_dir, port, &users, None)?;
    let broker = crate::fleet::broker::start(&conf, port, &broker_dir.join("broker.log"))?;
    let addr = format!("127.0.0.1:{port}");
    let merger_dir = cfg.out.join("merger");
    let s = |v: &str| v.to_string();
    let merger = spawn(
        &exe,
        &[
            s("fleet"),
            s("serve"),
            s("--broker"),
            addr.clone(),
            s("--fleet"),
            s(FLEET),
            s("--base-model"),
            base.clone(),
            s("--dir"),
            merger_dir.display().to_string(),
            s("--user"),
            s("merger"),
            s("--password-file"),
            broker_dir.join("merger.pw").display().to_string(),
        ],
        &cfg.out.join("merger.log"),
    )?;

    // Boards: photos into their inboxes, then the daemons.
    let mut boards = Vec::new();
    let mut written = Vec::new();
    for (d, own) in photos.iter().enumerate() {
        let dir = cfg.out.join(format!("board-{d}"));
        let mut n = 0u64;
        for &i in data.provision.iter().chain(own) {
            let class_dir = dir.join("field/inbox").join(ds.train_y[i].to_string());
            std::fs::create_dir_all(&class_dir).map_err(|e| Error::io(&class_dir, e))?;
            let file = class_dir.join(format!("{i:05}.png"));
            std::fs::write(&file, png(ds.train_x.row(i))?).map_err(|e| Error::io(&file, e))?;
            n += 1;
        }
        written.push(n);
    }
    let t0 = Instant::now();
    for d in 0..cfg.devices {
        let dir = cfg.out.join(format!("board-{d}"));
        let args = [
            s("daemon"),
            s("--board"),
            cfg.board.display().to_string(),
            s("--model"),
            cfg.model.display().to_string(),
            s("--state"),
            dir.join("state").display().to_string(),
            s("--inbox"),
            dir.join("field").display().to_string(),
            s("--learn-interval"),
            s("1"),
            s("--fleet"),
            s(FLEET),
            s("--device-id"),
            format!("board-{d}"),
            s("--broker"),
            addr.clone(),
            s("--broker-password-file"),
            broker_dir.join(format!("board-{d}.pw")).display().to_string(),
        ];
        boards.push(spawn(&firmware_bin, &args, &cfg.out.join(format!("board-{d}.log")))?);
    }
    println!("fleet demo: broker on {addr}, merger and {} boards started; logs in {}", cfg.devices, cfg.out.display());

    // Wait until every board learned all its photos, its outbox is empty and it runs the newest model.
    let version = loop {
        if t0.elapsed() > cfg.timeout {
            return Err(Error::Invalid(format!(
                "the fleet did not settle within {:?} (logs in {})",
                cfg.timeout,
                cfg.out.display()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
        let newest = newest_model(&merger_dir, &base)?.map_or(0, |m| m.version);
        let mut done = 0;
        for (d, &n) in written.iter().enumerate() {
            let dir = cfg.out.join(format!("board-{d}/state"));
            let Ok(Some(state)) = StateStore::open(&dir).and_then(|mut st| st.load()) else { continue };
            let outbox = firmware::fleet::outbox::pending(&firmware::fleet::outbox::dir_of(&dir))?;
            let fleet_version = state.state.fleet.as_ref().map_or(0, |f| f.model_version);
            if state.state.inbox.samples_learned == n && outbox.is_empty() && newest > 0 && fleet_version == newest {
                done += 1;
            }
        }
        if done == cfg.devices {
            break newest;
        }
    };
    let fleet_seconds = t0.elapsed().as_secs_f64();
    println!("fleet demo: every board runs fleet model version {version} after {fleet_seconds:.1} s; scoring");
    for b in boards {
        stop(b);
    }
    stop(merger);
    drop(broker);

    // Score.
    let model = newest_model(&merger_dir, &base)?.ok_or_else(|| Error::Invalid("no fleet model".into()))?;
    let mut board0: DeviceLearner = Learner::new(
        profile.clone(),
        "mnist-cnn-0123",
        dm.trainable.clone(),
        firmware::method::fleet_method(Default::default(), profile.fisher_format, profile.budget.fisher)?,
        &["0", "1", "2", "3"],
        0,
    )?
    .with_store(cfg.out.join("board-0/state"))?;
    board0.load()?;
    let template = board0.model().clone();
    let names: Vec<String> = board0.classes().iter().map(|c| c.name.clone()).collect();
    if names != model.classes || board0.state()?.params != model.params {
        return Err(Error::Invalid("board 0 does not run the fleet model".into()));
    }
    let merged = accuracy(&template, &names, &data.test)?;
    let mut newest = Vec::new();
    let mut update_bytes = Vec::new();
    for d in 0..cfg.devices {
        let device = format!("board-{d}");
        let dir = merger_dir.join("updates").join(&device);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "elfu"))
            .collect();
        files.sort();
        for f in &files {
            update_bytes.push(std::fs::metadata(f).map_err(|e| Error::io(f, e))?.len());
        }
        let last = files.last().ok_or_else(|| Error::Invalid(format!("no update of {device}")))?;
        let bytes = std::fs::read(last).map_err(|e| Error::io(last, e))?;
        newest.push(
            decode_update(&bytes, usize::MAX >> 1, &device, &base)
                .map_err(|r| Error::Invalid(format!("{}: {r}", last.display())))?,
        );
    }
    let as_model = |u: &FleetUpdate| MergedModel {
        base_model: u.base_model.clone(),
        classes: u.classes.clone(),
        layout: u.layout.clone(),
        params: u.params.clone(),
        fisher: Vec::new(),
        merged: Vec::new(),
        slda: None,
    };
    let alone = newest
        .iter()
        .map(|u| accuracy(&model_of(&template, &as_model(u))?, &u.classes, &data.test))
        .collect::<Result<Vec<_>>>()?;
    let avg = merge_updates(&averaged(&newest)?)?;
    let average = accuracy(&model_of(&template, &avg)?, &avg.classes, &data.test)?;
    let mut all: Vec<usize> = photos.concat();
    rand::seq::SliceRandom::shuffle(&mut all[..], &mut rng);
    let mut joint = [0.0; 2];
    for (fleet, acc) in [false, true].into_iter().zip(joint.iter_mut()) {
        let mut l: Learner<Became, JOINT_CAPACITY> = provisioned(3, &profile, &dm, &data, cfg.seed, fleet)?;
        for &i in &all {
            add(&mut l, &data, i)?;
        }
        l.learn()?;
        let registry: Vec<String> = l.classes().iter().map(|c| c.name.clone()).collect();
        *acc = accuracy(l.model(), &registry, &data.test)?;
    }
    let report = DemoReport {
        devices: cfg.devices,
        classes,
        version,
        updates: model.merged.len(),
        update_bytes,
        merged,
        alone,
        average,
        joint: joint[0],
        joint_fleet_method: joint[1],
        fleet_seconds,
    };
    crate::reports::write_json(&cfg.out.join("fleet-demo.json"), &report)?;
    Ok(report)
}

fn newest_model(merger: &Path, base: &str) -> Result<Option<firmware::fleet::FleetModel>> {
    let dir = merger.join("models");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(None) };
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "elfm")).collect();
    files.sort();
    let Some(last) = files.last() else { return Ok(None) };
    let bytes = std::fs::read(last).map_err(|e| Error::io(last, e))?;
    decode_model(&bytes, usize::MAX >> 1, FLEET, base)
        .map(Some)
        .map_err(|r| Error::Invalid(format!("{}: {r}", last.display())))
}

/// The report as Markdown.
pub fn markdown(r: &DemoReport) -> String {
    let alone = crate::reports::MeanStd::of(&r.alone);
    let kib = r.update_bytes.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    format!(
        "Fleet demo: {} boards (new digits {:?}), fleet model version {} merging {} updates (largest {:.0} KiB), \
         settled in {:.1} s.\n\nClass-incremental accuracy (%) on the 10 000 MNIST test images, digits 0–9, no task \
         id:\n\n| fleet model | each board alone | plain average | joint (field method) | joint (fleet method) |\n\
         |---|---|---|---|---|\n| **{:.2}** | {:.2} ± {:.2} | {:.2} | {:.2} | {:.2} |\n",
        r.devices,
        r.classes,
        r.version,
        r.updates,
        kib,
        r.fleet_seconds,
        r.merged,
        alone.mean,
        alone.std,
        r.average,
        r.joint,
        r.joint_fleet_method
    )
}
