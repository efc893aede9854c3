//! The device daemon: the field loop of a board with no screen.
//!
//! ```text
//! loop (every ≤ 100 ms):
//!   serial link ── Command ──► Device::handle ── Reply ──► serial link     (protocol: docs/protocol.md)
//!   learn button ── press ──► Device::learn                                  (debounced)
//!   --learn-interval ── photos waiting and S seconds since the last ──► Device::learn
//!   inbox ── count waiting photos ──► phase ──► status LED                   (idle / collecting / training / error)
//!   SIGTERM / SIGINT ──► finish the current request, exit 0
//! ```
//!
//! [`Device`] owns the shipped model (an ONNX file cut into a frozen prefix run by tract and a trainable suffix),
//! the [`Learner`] with its state store, and the [`Inbox`]. A learn request (button, protocol) turns the
//! buffered samples plus every waiting inbox photo into one task, learns it with GPM+BECAME under the board's
//! budgets, commits the new state (which records the photos it learned), and only then moves the photos to
//! `processed/`. After a crash the committed ledger tells which photos still in the inbox were already learned
//! ([`Inbox::reconcile`]): no photo is lost, none is learned twice.

pub mod config;
#[cfg(feature = "fleet-mqtt")]
pub mod fleet;
#[cfg(test)]
mod tests;

pub use config::{Config, FleetOptions, USAGE};

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use embedded_hal::digital::{InputPin, OutputPin};
use ndarray::Array2;

use crate::backend::BackendKind;
use crate::budget::BoardProfile;
use crate::error::{Error, Result};
use crate::inbox::{Inbox, InboxFile, LoadedPhoto, Preprocess};
use crate::intake::{buffer_intake, photo_features};
use crate::io::{Button, Clock, NoPin, StatusLed, SystemClock};
use crate::learner::Learner;
use crate::method::Became;
use crate::nn::Mode;
use crate::onnx::{Cut, DeviceModel, OnnxModel};
use crate::protocol::{
    BudgetUse, Command, ErrorCode, Image, Link, LinkError, MAX_FRAME, MAX_MESSAGE, PROTOCOL_VERSION, Phase,
    RESET_CONFIRM, Reply, Request, Response, Status,
};
use crate::store::{CRC32C, StateStore};
use crate::train::TrainConfig;

/// Samples the device buffers between two learns (protocol samples, inbox photos and the jittered copies of
/// few-shot photos, [`crate::augment`]).
pub const SAMPLE_CAPACITY: usize = 2048;
/// Most inbox photos one learn takes (the rest wait for the next); the buffer's other half is room for copies.
pub const PHOTOS_PER_LEARN: usize = 1024;
/// Seed of the augmentation stream, mixed with the daemon's seed and the task count.
const AUGMENT_STREAM: u64 = 0xA06_E17;
/// Bytes of ONNX per [`Response::OnnxChunk`].
pub const EXPORT_CHUNK: usize = 3072;
const _: () = assert!(EXPORT_CHUNK + 64 < MAX_MESSAGE);

/// The learner the daemon runs.
pub type DeviceLearner = Learner<Became, SAMPLE_CAPACITY>;

/// What one learn did.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnOutcome {
    /// Task id.
    pub task: u32,
    /// Committed generation.
    pub generation: u64,
    /// Samples learned.
    pub samples: u32,
    /// Of which inbox photos.
    pub from_inbox: u32,
    /// Inbox files rejected during this learn.
    pub rejected: u32,
    /// α of the merge.
    pub alpha: Option<f64>,
    /// Where the time went.
    pub times: LearnTimes,
}

/// Wall-clock seconds of one learn, phase by phase (`host bench inbox` reports them).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LearnTimes {
    /// Reading the inbox's photos and decoding them into model inputs (format, orientation, alpha, resize).
    pub decode: f64,
    /// The jittered copies and the frozen backbone over photos and copies.
    pub backbone: f64,
    /// The learner's task: GPM stage, second stage, Fisher, merge, basis update.
    pub learn: f64,
    /// The durable A/B commit of the state, and the photos moved to `processed/`.
    pub commit: f64,
    /// From the start of the learn to its end.
    pub total: f64,
    /// Rows the backbone ran: the photos and their jittered copies.
    pub backbone_rows: usize,
}

/// The device: model, learner, inbox. See the [module docs](self).
#[derive(Debug)]
pub struct Device {
    cfg: Config,
    profile: BoardProfile,
    base: DeviceModel,
    base_classes: Vec<String>,
    learner: DeviceLearner,
    pre: Preprocess,
    inbox: Option<Inbox>,
    generation: u64,
    failed: bool,
    rejected: u32,
    inbox_pending: u32,
    export: Option<(Vec<u8>, u32)>,
    #[cfg(feature = "fleet-mqtt")]
    fleet: Option<fleet::FleetSide>,
}

/// The device's method: [`crate::method::FIELD_METHOD`] (in a fleet [`crate::method::FLEET_METHOD`]) with the
/// daemon's schedule, the board's Fisher format and
/// the random-feature width its `fisher` budget holds.
fn become_method(cfg: &Config, profile: &BoardProfile) -> Result<Became> {
    let train = TrainConfig { epochs: cfg.epochs, batch_size: cfg.batch, lr: cfg.lr, ..TrainConfig::default() };
    // A board in a fleet keeps the fleet's trunk, so that the boards' statistics pool exactly.
    let method = if cfg.fleet.is_some() { crate::method::fleet_method } else { crate::method::field_method };
    method(train, profile.fisher_format, profile.budget.fisher)
}

fn build_learner(
    cfg: &Config,
    profile: &BoardProfile,
    base: &DeviceModel,
    classes: &[String],
) -> Result<DeviceLearner> {
    let arch = cfg.model.file_stem().map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    Learner::new(profile.clone(), arch, base.trainable.clone(), become_method(cfg, profile)?, &names, cfg.seed)?
        .with_store(&cfg.state)
}

fn code_of(e: &Error) -> ErrorCode {
    match e {
        Error::Io { .. } | Error::CorruptState(_) | Error::NoValidState(_) | Error::UnsupportedVersion { .. } => {
            ErrorCode::Storage
        }
        Error::OverBudget { .. } | Error::TooManyClasses { .. } | Error::BufferFull { .. } => ErrorCode::Refused,
        Error::Shape { .. }
        | Error::NonFinite(_)
        | Error::Config(_)
        | Error::Empty(_)
        | Error::UnknownClass(_)
        | Error::Image { .. }
        | Error::Frame(_) => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}

impl Device {
    /// Load the board profile and the model, open the state store (loading the newest committed state) and the
    /// inbox (moving photos the committed state already learned to `processed/`).
    pub fn open(cfg: Config) -> Result<Self> {
        let profile = BoardProfile::load(&cfg.board)?;
        // The learner computes on the board's cores (its Fisher passes; the result does not depend on it).
        crate::threads::set_threads(profile.threads);
        // Its large products on the board's GPU when the profile names one, this build has CUDA and the GPU
        // answers; on the CPU otherwise (said in the log).
        let kind = if profile.cuda_feature.is_empty() { BackendKind::Cpu } else { BackendKind::Auto };
        let device = crate::backend::install(kind)?;
        tracing::info!(backend = device, board = %profile.name, "compute backend of the large products");
        // The file is decoded whole in RAM: one larger than the learner's whole RAM budget cannot be the board's.
        let file = OnnxModel::open_within(&cfg.model, profile.budget.ram())?.with_engine(cfg.engine);
        let base = file.split(&Cut::parse(&cfg.cut)?)?;
        if base.trainable.heads.len() != 1 {
            return Err(Error::Config(format!(
                "the model has {} outputs heads; the device learns on a single-head model",
                base.trainable.heads.len()
            )));
        }
        let outputs = base.trainable.head_outputs(0)?;
        let base_classes = match &cfg.classes {
            Some(c) if c.len() == outputs => c.clone(),
            Some(c) => {
                return Err(Error::Config(format!("--classes names {} classes, the model has {outputs}", c.len())));
            }
            None => (0..outputs).map(|i| i.to_string()).collect(),
        };
        let shape = match &base.prefix {
            Some(p) => p.input_shape().to_vec(),
            None => base.trainable.input_shape.clone(),
        };
        // The preprocessing spec: `--preprocess FILE`, else the one in the model file's metadata, else
        // `<model>.preprocess.json` beside it, else `--norm` on the model's input shape.
        let embedded = file.input_spec();
        let spec = match &cfg.preprocess {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| Error::Io { context: format!("reading {}", path.display()), source })?;
                Some((Preprocess::from_spec(&text, &path.display().to_string())?, path.display().to_string()))
            }
            None => Preprocess::discover(&cfg.model, embedded.as_deref())?,
        };
        let pre = match spec {
            Some((pre, origin)) => {
                let want = pre.input_shape();
                if shape.iter().product::<usize>() != pre.len() || (shape.len() == 3 && shape != want) {
                    return Err(Error::Config(format!(
                        "preprocessing spec {origin} makes {want:?} inputs, the model takes {shape:?}"
                    )));
                }
                tracing::info!(spec = %origin, "preprocessing from the model's spec");
                pre
            }
            None => Preprocess::for_input_shape(&shape, cfg.norm.0, cfg.norm.1)?,
        };
        if pre.len() != base.input_len() {
            return Err(Error::Config(format!("model input {shape:?} vs {} values", base.input_len())));
        }
        let mut learner = build_learner(&cfg, &profile, &base, &base_classes)?;
        let generation = learner.load()?.unwrap_or(0);
        let inbox = cfg.inbox.as_ref().map(Inbox::open).transpose()?;
        #[cfg(feature = "fleet-mqtt")]
        let fleet =
            cfg.fleet.as_ref().map(|f| fleet::FleetSide::open(f, &cfg.state, &cfg.model, generation)).transpose()?;
        #[cfg(not(feature = "fleet-mqtt"))]
        if cfg.fleet.is_some() {
            return Err(Error::Config("--fleet needs a firmware built with the fleet-mqtt feature".into()));
        }
        let mut dev = Self {
            cfg,
            profile,
            base,
            base_classes,
            learner,
            pre,
            inbox,
            generation,
            failed: false,
            rejected: 0,
            inbox_pending: 0,
            export: None,
            #[cfg(feature = "fleet-mqtt")]
            fleet,
        };
        if let Some(inbox) = &dev.inbox {
            inbox.reconcile(dev.learner.inbox_ledger())?;
        }
        dev.refresh();
        tracing::info!(
            board = %dev.profile.name,
            model = %dev.cfg.model.display(),
            generation,
            classes = dev.learner.classes().len(),
            tasks = dev.learner.tasks().len(),
            inbox_pending = dev.inbox_pending,
            "device ready"
        );
        Ok(dev)
    }

    /// The model file as split at the board's cut: the frozen prefix and the trainable part as loaded.
    pub fn base(&self) -> &DeviceModel {
        &self.base
    }

    /// How an image becomes the model's input (size, channels, normalisation).
    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }

    /// The learner.
    pub fn learner(&self) -> &DeviceLearner {
        &self.learner
    }

    /// Generation of the last committed state (0: none).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Recount the waiting inbox photos (for the phase and the status).
    pub fn refresh(&mut self) {
        if let Some(inbox) = &self.inbox {
            match inbox.pending() {
                Ok(p) => self.inbox_pending = u32::try_from(p.len()).unwrap_or(u32::MAX),
                Err(e) => tracing::warn!(error = %e, "inbox unreadable"),
            }
        }
    }

    /// What the LED shows: error after a failed operation, collecting while samples or photos wait, else idle.
    pub fn phase(&self) -> Phase {
        if self.failed {
            Phase::Error
        } else if !self.learner.buffer().is_empty() || self.inbox_pending > 0 {
            Phase::Collecting
        } else {
            Phase::Idle
        }
    }

    /// Model input of a raw image.
    fn input(&self, image: &Image) -> Result<Array2<f32>> {
        let v = self.pre.from_raw(image)?;
        Array2::from_shape_vec((1, v.len()), v).map_err(|e| Error::Config(e.to_string()))
    }

    /// Buffer one sample of class `class`.
    pub fn add_sample(&mut self, class: &str, image: &Image) -> Result<Response> {
        let x = self.input(image)?;
        let f = self.base.features(&x.view())?;
        let known = self.learner.classes().len();
        let features = f.as_slice().ok_or_else(|| Error::Config("features are not contiguous".into()))?;
        let class_id = self.learner.add_sample(class, features)?;
        self.export = None;
        Ok(Response::SampleAdded {
            class_id,
            new_class: self.learner.classes().len() > known,
            buffered: self.learner.buffer().len() as u32,
            capacity: SAMPLE_CAPACITY as u32,
        })
    }

    /// Read the waiting photos (as many as the buffer takes); unusable ones are rejected on the spot.
    fn collect_photos(&mut self, inbox: &Inbox) -> Result<(Vec<LoadedPhoto>, u32)> {
        let room = PHOTOS_PER_LEARN.min(SAMPLE_CAPACITY - self.learner.buffer().len());
        let mut photos = Vec::new();
        let mut rejected = 0;
        for file in inbox.pending()? {
            if photos.len() == room {
                break;
            }
            match inbox.load(&file, &self.pre) {
                Ok(p) => photos.push(p),
                Err(e @ Error::Image { .. }) => {
                    inbox.reject(&file, &e.to_string())?;
                    rejected += 1;
                }
                Err(e) => tracing::warn!(file = %file.path.display(), error = %e, "inbox file skipped for now"),
            }
        }
        Ok((photos, rejected))
    }

    /// Learn the buffered samples plus the waiting inbox photos as one task and commit; then move the photos to
    /// `processed/`. On failure the learner is back at the last committed state, the photos stay in the inbox and
    /// the buffered samples are dropped.
    pub fn learn(&mut self) -> Result<LearnOutcome> {
        let outcome = self.try_learn();
        if outcome.is_err() {
            self.learner.clear_buffer();
            if let Err(e) = self.rollback() {
                tracing::error!(error = %e, "could not reload the committed state after a failed learn");
            }
        }
        self.failed = outcome.is_err();
        self.refresh();
        outcome
    }

    fn rollback(&mut self) -> Result<()> {
        let mut learner = build_learner(&self.cfg, &self.profile, &self.base, &self.base_classes)?;
        self.generation = learner.load()?.unwrap_or(0);
        self.learner = learner;
        Ok(())
    }

    fn try_learn(&mut self) -> Result<LearnOutcome> {
        let started = Instant::now();
        let mut times = LearnTimes::default();
        let inbox = self.inbox.clone();
        let (mut photos, mut rejected) = (Vec::new(), 0);
        if let Some(inbox) = &inbox {
            inbox.reconcile(self.learner.inbox_ledger())?;
            (photos, rejected) = self.collect_photos(inbox)?;
        }
        let mut used: Vec<LoadedPhoto> = Vec::with_capacity(photos.len());
        if !photos.is_empty() {
            let mut x = Array2::<f32>::zeros((photos.len(), self.pre.len()));
            for (mut row, p) in x.rows_mut().into_iter().zip(&photos) {
                row.assign(&ndarray::ArrayView1::from(&p.input[..]));
            }
            let classes: Vec<&str> = photos.iter().map(|p| p.id.class.as_str()).collect();
            let mut rng = crate::seeded_rng(self.cfg.seed ^ AUGMENT_STREAM ^ self.learner.tasks().len() as u64);
            times.decode = started.elapsed().as_secs_f64();
            let room = SAMPLE_CAPACITY.saturating_sub(self.learner.buffer().len());
            let intake = photo_features(
                &self.base,
                x.view(),
                &classes,
                self.pre.shape(),
                &self.profile.augment,
                room,
                &mut rng,
            )?;
            times.backbone = started.elapsed().as_secs_f64() - times.decode;
            times.backbone_rows = intake.features.nrows();
            let taken = buffer_intake(&mut self.learner, &intake, &classes, |i, e| {
                if let Some(inbox) = &inbox {
                    inbox.reject(&photos[i].file, &e.to_string())?;
                }
                rejected += 1;
                Ok(())
            })?;
            let mut photos: Vec<Option<LoadedPhoto>> = photos.into_iter().map(Some).collect();
            used.extend(taken.into_iter().filter_map(|i| photos[i].take()));
        }
        // Samples as the ledger counts them: protocol samples and photos, not the photos' jittered copies.
        let samples = (self.learner.buffer().len() - self.learner.buffered_copies()) as u32;
        if samples == 0 {
            return Err(Error::Empty("nothing to learn: no samples buffered and no photos in the inbox".into()));
        }
        #[cfg(feature = "fleet-mqtt")]
        let before = self.fleet.as_ref().map(|f| f.before_learn(&self.learner)).transpose()?.flatten();
        let learn_started = Instant::now();
        let report = self.learner.learn()?;
        times.learn = learn_started.elapsed().as_secs_f64();
        let commit_started = Instant::now();
        self.learner.set_inbox_files(used.iter().map(|p| p.id.clone()).collect());
        // In a fleet the task's update is in the outbox, durably, before the commit that makes it count.
        #[cfg(feature = "fleet-mqtt")]
        if let Some(f) = &self.fleet {
            f.stage_update(&mut self.learner, before.as_ref(), self.generation + 1)?;
        }
        let generation = self.learner.commit()?;
        #[cfg(feature = "fleet-mqtt")]
        if let Some(f) = &self.fleet {
            if generation != self.generation + 1 {
                tracing::error!(generation, expected = self.generation + 1, "commit generation is not the update's");
            }
            f.committed(generation);
        }
        self.generation = generation;
        self.export = None;
        if self.cfg.pause_after_commit_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.cfg.pause_after_commit_ms));
        }
        if let Some(inbox) = &inbox {
            let files: Vec<&InboxFile> = used.iter().map(|p| &p.file).collect();
            if let Err(e) = inbox.mark_processed(&files) {
                // The committed ledger lists them: the next learn or restart moves them.
                tracing::warn!(error = %e, "moving learned photos to processed/ failed; retried later");
            }
        }
        times.commit = commit_started.elapsed().as_secs_f64();
        times.total = started.elapsed().as_secs_f64();
        self.rejected += rejected;
        let task = self.learner.tasks().last().map_or(0, |t| t.id);
        tracing::info!(
            task,
            generation,
            samples,
            from_inbox = used.len(),
            rejected,
            alpha = ?report.alpha,
            seconds = started.elapsed().as_secs_f64(),
            "task learned and committed"
        );
        Ok(LearnOutcome {
            task,
            generation,
            samples,
            from_inbox: used.len() as u32,
            rejected,
            alpha: report.alpha,
            times,
        })
    }

    /// In a fleet: adopt the newest fleet model the link received when it is newer, has merged this board's
    /// newest task and no samples are buffered (one A/B commit). Returns the adopted version. A model that does
    /// not fit this board is logged and dropped; the board goes on with its own state.
    #[cfg(feature = "fleet-mqtt")]
    pub fn fleet_tick(&mut self) -> Option<u64> {
        let f = self.fleet.as_mut()?;
        match f.poll_model(&mut self.learner) {
            Ok(fleet::Adoption::Adopted { version, generation }) => {
                self.generation = generation;
                self.export = None;
                Some(version)
            }
            Ok(fleet::Adoption::Nothing) => None,
            Err(e) => {
                tracing::warn!(error = %e, "fleet model not adopted");
                None
            }
        }
    }

    /// The class of one image and its softmax probability.
    pub fn predict(&mut self, image: &Image) -> Result<(u32, f32)> {
        let x = self.input(image)?;
        let f = self.base.features(&x.view())?;
        let mut model = self.learner.model().clone();
        let logits = model.forward(&f.view(), 0, Mode::Eval)?;
        let row = logits.row(0);
        let (best, max) = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) });
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let id = u32::try_from(best).map_err(|_| Error::Config("class id overflow".into()))?;
        Ok((id, 1.0 / sum))
    }

    /// The current model as ONNX bytes and their CRC-32C (cached until the model changes).
    pub fn export(&mut self) -> Result<&(Vec<u8>, u32)> {
        if self.export.is_none() {
            let mut dm = self.base.clone();
            dm.trainable = self.learner.model().clone();
            let bytes = dm.to_onnx_bytes()?;
            if u32::try_from(bytes.len()).is_err() {
                return Err(Error::Config("exported model over 4 GiB".into()));
            }
            let crc = CRC32C.checksum(&bytes);
            self.export = Some((bytes, crc));
        }
        self.export.as_ref().ok_or_else(|| Error::Config("export cache".into()))
    }

    /// Delete the stored state and go back to the shipped model.
    pub fn reset(&mut self) -> Result<()> {
        StateStore::open(&self.cfg.state)?.reset()?;
        self.learner = build_learner(&self.cfg, &self.profile, &self.base, &self.base_classes)?;
        self.generation = 0;
        self.export = None;
        tracing::warn!("state reset: the device runs the shipped model again");
        Ok(())
    }

    /// The device's status.
    pub fn status(&self) -> Status {
        let budget = match self.learner.footprint() {
            Ok(fp) => fp
                .entries()
                .iter()
                .zip(self.profile.budget.entries())
                .map(|(&(name, used), (_, limit))| BudgetUse { name: name.to_string(), used, limit })
                .collect(),
            Err(_) => Vec::new(),
        };
        Status {
            generation: self.generation,
            phase: self.phase(),
            tasks: self.learner.tasks().len() as u32,
            classes: self.learner.classes().len() as u32,
            buffered: self.learner.buffer().len() as u32,
            capacity: SAMPLE_CAPACITY as u32,
            inbox_pending: self.inbox_pending,
            rejected: self.rejected,
            samples_learned: self.learner.inbox_ledger().samples_learned,
            last_alpha: self.learner.metrics().alphas.iter().rev().find_map(|a| *a),
            budget,
            fleet: self.fleet_status(),
        }
    }

    #[cfg(feature = "fleet-mqtt")]
    fn fleet_status(&self) -> Option<crate::protocol::FleetStatus> {
        let f = self.fleet.as_ref()?;
        let record = fleet::FleetSide::record(&self.learner);
        Some(crate::protocol::FleetStatus {
            fleet: self.cfg.fleet.as_ref().map(|o| o.fleet.clone()).unwrap_or_default(),
            model_version: record.model_version,
            learned_generation: record.learned_generation,
            outbox: u32::try_from(f.outbox_len()).unwrap_or(u32::MAX),
            connected: f.connected(),
        })
    }

    #[cfg(not(feature = "fleet-mqtt"))]
    fn fleet_status(&self) -> Option<crate::protocol::FleetStatus> {
        None
    }

    fn hello(&self) -> Response {
        let input = match &self.base.prefix {
            Some(p) => p.input_shape().to_vec(),
            None => self.base.trainable.input_shape.clone(),
        };
        Response::Hello {
            protocol: PROTOCOL_VERSION,
            firmware: env!("CARGO_PKG_VERSION").to_string(),
            board: self.profile.name.clone(),
            input: input.iter().map(|&d| d as u32).collect(),
            max_frame: MAX_FRAME as u32,
        }
    }

    /// Answer one request. Never panics; a failure is a [`Response::Error`] (and shows on the LED).
    pub fn handle(&mut self, request: Request) -> Response {
        let query = matches!(request, Request::Hello { .. } | Request::Status);
        let result = match request {
            Request::Hello { protocol } => {
                if protocol != PROTOCOL_VERSION {
                    tracing::warn!(host = protocol, device = PROTOCOL_VERSION, "protocol versions differ");
                }
                Ok(self.hello())
            }
            Request::AddSample { class, image } => self.add_sample(&class, &image),
            Request::BeginTask => {
                let discarded = self.learner.clear_buffer() as u32;
                Ok(Response::TaskBegun { task: self.learner.tasks().len() as u32, discarded })
            }
            Request::Learn => self.learn().map(|o| Response::Learned {
                task: o.task,
                generation: o.generation,
                samples: o.samples,
                from_inbox: o.from_inbox,
                rejected: o.rejected,
                alpha: o.alpha,
                millis: 0,
            }),
            Request::Status => {
                self.refresh();
                Ok(Response::Status(self.status()))
            }
            Request::Predict { image } => self.predict(&image).and_then(|(id, confidence)| {
                let class = self.learner.class_name(id)?.to_string();
                Ok(Response::Prediction { class_id: id, class, confidence })
            }),
            Request::ExportOnnx { offset } => {
                if offset == 0 {
                    self.export = None;
                }
                self.export().map(|(bytes, crc)| {
                    let start = (offset as usize).min(bytes.len());
                    let end = (start + EXPORT_CHUNK).min(bytes.len());
                    Response::OnnxChunk {
                        total: bytes.len() as u32,
                        offset: start as u32,
                        crc: *crc,
                        bytes: bytes[start..end].to_vec(),
                    }
                })
            }
            Request::Reset { confirm } if confirm == RESET_CONFIRM => self.reset().map(|()| Response::ResetDone),
            Request::Reset { .. } => Err(Error::Config("reset needs the confirmation value RESET_CONFIRM".into())),
        };
        // The error phase lasts until the next request that succeeds (queries leave it as it is).
        if result.is_err() {
            self.failed = true;
        } else if !query {
            self.failed = false;
        }
        match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "request failed");
                Response::error(code_of(&e), e.to_string())
            }
        }
    }
}

/// Run the loop until `stop` is set: answer commands on `link` (if any), learn on a button press, keep the LED's
/// pattern up to date. Returns when `stop` is set (after finishing the request in hand).
pub fn serve<T, L, B, C>(
    dev: &mut Device,
    mut link: Option<&mut Link<T>>,
    led: &mut StatusLed<L>,
    button: &mut Button<B>,
    clock: &C,
    stop: &AtomicBool,
) -> Result<()>
where
    T: embedded_io::Read + embedded_io::Write,
    L: OutputPin,
    B: InputPin,
    C: Clock,
{
    let mut last_refresh = 0u64;
    let mut last_auto_learn = 0u64;
    let mut io_failing = false;
    led.set_phase(dev.phase(), clock.now_ms())?;
    while !stop.load(Ordering::Relaxed) {
        match link.as_deref_mut() {
            Some(l) => match l.recv::<Command>() {
                Ok(Some(cmd)) => {
                    io_failing = false;
                    if cmd.request == Request::Learn {
                        led.set_phase(Phase::Training, clock.now_ms())?;
                    }
                    let started = Instant::now();
                    let mut response = dev.handle(cmd.request);
                    if let Response::Learned { millis, .. } = &mut response {
                        *millis = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                    }
                    if let Err(e) = l.send(&Reply { seq: cmd.seq, response }) {
                        tracing::warn!(error = %e, "reply not sent");
                    }
                }
                Ok(None) => {}
                Err(LinkError::Frame(e)) => {
                    tracing::warn!(error = %e, "bad frame");
                    let response = Response::error(ErrorCode::BadFrame, e.to_string());
                    if let Err(e) = l.send(&Reply { seq: 0, response }) {
                        tracing::warn!(error = %e, "reply not sent");
                    }
                }
                Err(LinkError::Io(e)) => {
                    if !io_failing {
                        tracing::warn!(error = ?e, "serial link read failed (peer gone?); retrying");
                        io_failing = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            },
            None => std::thread::sleep(Duration::from_millis(50)),
        }
        let now = clock.now_ms();
        // `--learn-interval`: photos waiting in the inbox are learned on their own, at most that often.
        let every = dev.cfg.learn_interval_ms;
        if every > 0 && dev.inbox_pending > 0 && now.saturating_sub(last_auto_learn) >= every {
            last_auto_learn = now;
            led.set_phase(Phase::Training, now)?;
            match dev.learn() {
                Ok(o) => tracing::info!(generation = o.generation, samples = o.samples, "inbox learned (interval)"),
                Err(e) => tracing::warn!(error = %e, "learn (interval) failed"),
            }
        }
        if button.poll(now)? {
            tracing::info!("learn button pressed");
            led.set_phase(Phase::Training, now)?;
            if let Err(e) = dev.learn() {
                tracing::warn!(error = %e, "learn (button) failed");
            }
        }
        if now.saturating_sub(last_refresh) >= 500 {
            dev.refresh();
            #[cfg(feature = "fleet-mqtt")]
            dev.fleet_tick();
            last_refresh = now;
        }
        led.set_phase(dev.phase(), clock.now_ms())?;
    }
    tracing::info!(generation = dev.generation(), "stop requested: shutting down cleanly");
    Ok(())
}

/// An LED or button pin: a GPIO line or nothing.
pub enum BoardPin {
    /// Not wired.
    Unwired(NoPin),
    /// A GPIO character-device line.
    #[cfg(target_os = "linux")]
    Gpio(linux_embedded_hal::CdevPin),
}

impl std::fmt::Debug for BoardPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unwired(_) => f.write_str("BoardPin::Unwired"),
            #[cfg(target_os = "linux")]
            Self::Gpio(_) => f.write_str("BoardPin::Gpio"),
        }
    }
}

/// The error of a [`BoardPin`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PinError(String);

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl embedded_hal::digital::ErrorType for BoardPin {
    type Error = PinError;
}

impl OutputPin for BoardPin {
    fn set_low(&mut self) -> std::result::Result<(), PinError> {
        match self {
            Self::Unwired(p) => p.set_low().map_err(|e| PinError(format!("{e:?}"))),
            #[cfg(target_os = "linux")]
            Self::Gpio(p) => p.set_low().map_err(|e| PinError(e.to_string())),
        }
    }

    fn set_high(&mut self) -> std::result::Result<(), PinError> {
        match self {
            Self::Unwired(p) => p.set_high().map_err(|e| PinError(format!("{e:?}"))),
            #[cfg(target_os = "linux")]
            Self::Gpio(p) => p.set_high().map_err(|e| PinError(e.to_string())),
        }
    }
}

impl InputPin for BoardPin {
    fn is_high(&mut self) -> std::result::Result<bool, PinError> {
        match self {
            Self::Unwired(p) => p.is_high().map_err(|e| PinError(format!("{e:?}"))),
            #[cfg(target_os = "linux")]
            Self::Gpio(p) => p.is_high().map_err(|e| PinError(e.to_string())),
        }
    }

    fn is_low(&mut self) -> std::result::Result<bool, PinError> {
        self.is_high().map(|h| !h)
    }
}

fn pins(cfg: &Config) -> Result<(BoardPin, BoardPin)> {
    #[cfg(target_os = "linux")]
    if let Some(chip) = &cfg.gpio_chip {
        let led = match cfg.led_line {
            Some(l) => BoardPin::Gpio(crate::io::gpio::led(chip, l)?),
            None => BoardPin::Unwired(NoPin),
        };
        let button = match cfg.button_line {
            Some(l) => BoardPin::Gpio(crate::io::gpio::button(chip, l)?),
            None => BoardPin::Unwired(NoPin),
        };
        return Ok((led, button));
    }
    if cfg.gpio_chip.is_some() {
        return Err(Error::Config("GPIO lines need Linux".into()));
    }
    Ok((BoardPin::Unwired(NoPin), BoardPin::Unwired(NoPin)))
}

/// Open everything `cfg` names and run [`serve`] until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|source| Error::Io { context: "installing the SIGTERM handler".into(), source })?;
    }
    let clock = SystemClock::new();
    let (led_pin, button_pin) = pins(&cfg)?;
    let mut led = StatusLed::new(led_pin, !cfg.led_active_low, clock.now_ms());
    let mut button = Button::new(button_pin, !cfg.button_active_high, clock.now_ms());
    let serial = cfg.serial.clone();
    let baud = cfg.baud;
    let mut dev = Device::open(cfg)?;
    let mut link = match &serial {
        Some(path) => {
            let tty = crate::io::serial::open_tty(path, baud)?;
            tracing::info!(tty = %path.display(), "serial link open");
            Some(Link::new(crate::protocol::StdIo(tty)))
        }
        None => None,
    };
    serve(&mut dev, link.as_mut(), &mut led, &mut button, &clock, &stop)
}

/// Start the daemon's logging: `tracing` to stderr, level from `EDGELEARN_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGELEARN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// `firmware daemon ARGS…`: parse, log, run; exit 0 after a clean shutdown, 1 on an error, 2 on a usage error.
pub fn main(args: &[String]) -> ExitCode {
    let cfg = match Config::parse(args) {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("firmware: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "daemon stopped");
            eprintln!("firmware: daemon: {e}");
            ExitCode::FAILURE
        }
    }
}
