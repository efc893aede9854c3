//! `host fleet serve`: the fleet's merger. It subscribes to every board's updates over MQTT, keeps each one
//! durably on disk before acknowledging it, merges every stored update of every board with the Fisher-weighted
//! closed form ([`firmware::fleet::merge_updates`]) and publishes the merged model, versioned, as the retained
//! message of `edgelearn/<fleet>/model`.
//!
//! On disk (`--dir`, one fleet's):
//!
//! ```text
//! updates/<device>/<generation, 20 digits>.elfu   every accepted update frame, as received
//! models/<version, 20 digits>.elfm                 every fleet-model frame, written before it is published
//! rejected/<unix ns>-<device>.bin                  messages refused (damaged, another base, another device's id)
//! ```
//!
//! Files are written with [`firmware::store::write_durable`] (temp file, fsync, rename, folder fsync), so a crash
//! leaves a file whole or absent. The merger connects with a persistent session and acknowledges a QoS 1 update
//! only after it is on disk: what the broker delivered and the merger did not store is delivered again.
//!
//! **Every update is merged, each once.** An update is named by (device, generation). Its parameters, Fisher and
//! class registry are the board's whole state, but its SLDA statistics are a *delta* (what the board's task added
//! since its previous update), so the merge takes every stored update of every board: the newest per board for
//! the trunk, all of them, once each, for the pooled statistics of the head. A repeat of a stored pair (a board
//! that re-sends after a lost acknowledgement, a redelivery after the merger's lost acknowledgement) is
//! acknowledged and ignored; an update older than the newest stored one of its board but not itself stored (sent
//! late, after a reconnection) is a distinct delta: it is stored and merged. The merger keeps every stored update
//! in memory, sorted by (device, generation), and reads them all back from its folder at start.
//!
//! **The broker going away.** A failure of the link (connection, subscription, receive, acknowledgement, publish)
//! is logged as a warning; the merger drops the link, waits (200 ms, doubling up to 2 s) and connects again with
//! the same client id (`merger-<fleet>`) and persistent session, subscribes again (a broker restarted without
//! persistence has forgotten the session) and goes on. Nothing stored is lost: an update is on disk before its
//! acknowledgement, and one whose acknowledgement was lost comes again and is recognised as a repeat. After every
//! connection, the first one included, the merger re-publishes its newest model file (retained, the same bytes:
//! idempotent), which restores a retained model a restarted broker lost and publishes a model whose publish the
//! failure (or a crash) interrupted. `idle_exit` also counts while the broker is unreachable, so a bounded run
//! stays bounded; failing configuration (a client id the link refuses, disk errors) still ends the run.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firmware::fleet::mqtt::{self, BrokerConfig, Link};
use firmware::fleet::{FleetModel, FleetUpdate, Refusal, decode_model, decode_update, encode_model, merge_updates};
use firmware::store::format::{CRC_LEN, HEADER_LEN};
use firmware::store::write_durable;
use tracing::{info, warn};

use crate::{Error, Result};

/// The first wait before connecting again after the link to the broker failed; it doubles up to
/// [`RECONNECT_MAX`] while connecting keeps failing.
pub const RECONNECT_START: Duration = Duration::from_millis(200);

/// The longest wait between two connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Bytes [`Link::publish`] keeps for an MQTT PUBLISH's own header beside its topic.
const PUBLISH_HEADER: usize = 16;

/// How the merger runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The broker and the merger's credentials.
    pub broker: BrokerConfig,
    /// Fleet name (`edgelearn/<fleet>/…`).
    pub fleet: String,
    /// The fleet's base model id; updates from another base are refused.
    pub base_model: String,
    /// The merger's folder.
    pub dir: PathBuf,
    /// Largest update payload accepted, bytes.
    pub max_payload: usize,
    /// Exit after publishing this many models (tests, one-shot merges); `None`: run until stopped.
    pub max_merges: Option<u64>,
    /// Exit after this long without a message, also while the broker is unreachable; `None`: never.
    pub idle_exit: Option<Duration>,
}

/// What one run of the merger did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Updates stored and merged.
    pub accepted: u64,
    /// Repeats of stored updates, acknowledged and ignored.
    pub repeats: u64,
    /// Messages refused (kept under `rejected/`).
    pub refused: u64,
    /// New model versions merged in this run and published (at once, or after a reconnection when the link failed
    /// on the way); re-publications of a model already counted, or of one from an earlier run, are not counted.
    pub published: u64,
    /// The last model version on disk at exit (0: none yet).
    pub version: u64,
    /// Connections re-established after the link to the broker failed.
    pub reconnects: u64,
}

/// The merger's folder: stored updates and published models.
#[derive(Debug)]
pub struct MergerStore {
    dir: PathBuf,
    /// Every stored update, sorted by (device, generation), each pair once.
    updates: Vec<FleetUpdate>,
    version: u64,
}

impl MergerStore {
    /// Open (create) the folder and read back every stored update; a stored frame that no longer decodes is
    /// moved to `rejected/` with a warning, never deleted.
    pub fn open(dir: &Path, fleet: &str, base_model: &str, max_payload: usize) -> Result<Self> {
        let mut store = Self { dir: dir.to_path_buf(), updates: Vec::new(), version: 0 };
        let updates = dir.join("updates");
        fs::create_dir_all(&updates).map_err(|e| Error::io(&updates, e))?;
        let mut devices: Vec<PathBuf> = read_dir_sorted(&updates)?;
        devices.retain(|p| p.is_dir());
        for d in devices {
            let device = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            for f in read_dir_sorted(&d)?.into_iter().filter(|f| f.extension().is_some_and(|e| e == "elfu")) {
                let bytes = fs::read(&f).map_err(|e| Error::io(&f, e))?;
                match decode_update(&bytes, max_payload, &device, base_model) {
                    Ok(u) if u.fleet == fleet => {
                        let generation = u.generation;
                        if !store.keep(u) {
                            warn!(file = %f.display(), generation, "a second stored file of one generation, skipped");
                        }
                    }
                    Ok(u) => warn!(file = %f.display(), fleet = %u.fleet, "stored update of another fleet, skipped"),
                    Err(r) => {
                        warn!(file = %f.display(), refusal = %r, "stored update no longer decodes; moved to rejected/");
                        store.reject(&device, &bytes)?;
                        fs::remove_file(&f).map_err(|e| Error::io(&f, e))?;
                    }
                }
            }
        }
        let models = dir.join("models");
        fs::create_dir_all(&models).map_err(|e| Error::io(&models, e))?;
        store.version = read_dir_sorted(&models)?
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "elfm"))
            .filter_map(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok(store)
    }

    fn position(&self, device: &str, generation: u64) -> std::result::Result<usize, usize> {
        self.updates.binary_search_by(|u| (u.device.as_str(), u.generation).cmp(&(device, generation)))
    }

    /// Remember `u` unless its (device, generation) is already known; whether it was new.
    fn keep(&mut self, u: FleetUpdate) -> bool {
        match self.position(&u.device, u.generation) {
            Ok(_) => false,
            Err(at) => {
                self.updates.insert(at, u);
                true
            }
        }
    }

    /// Whether update (device, generation) is stored.
    pub fn has(&self, device: &str, generation: u64) -> bool {
        self.position(device, generation).is_ok()
    }

    /// Store an accepted update's frame durably, then remember it.
    pub fn put(&mut self, frame: &[u8], u: FleetUpdate) -> Result<()> {
        let path = self.dir.join("updates").join(&u.device).join(format!("{:020}.elfu", u.generation));
        write_durable(&path, frame)?;
        self.keep(u);
        Ok(())
    }

    /// Keep a refused message for inspection.
    pub fn reject(&self, device: &str, bytes: &[u8]) -> Result<()> {
        let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = self.dir.join("rejected").join(format!("{ns}-{device}.bin"));
        write_durable(&path, bytes)?;
        Ok(())
    }

    /// Every stored update, sorted by device id, then generation; each (device, generation) once.
    pub fn updates(&self) -> &[FleetUpdate] {
        &self.updates
    }

    /// How many devices have a stored update.
    pub fn devices(&self) -> usize {
        let mut n = 0;
        let mut last: Option<&str> = None;
        for u in &self.updates {
            if last != Some(u.device.as_str()) {
                n += 1;
                last = Some(u.device.as_str());
            }
        }
        n
    }

    /// The last model version written (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The frame of the last model version written (`None`: none yet), read back from `models/`.
    pub fn newest_model(&self) -> Result<Option<Vec<u8>>> {
        if self.version == 0 {
            return Ok(None);
        }
        let path = self.model_path(self.version);
        fs::read(&path).map(Some).map_err(|e| Error::io(&path, e))
    }

    /// Whether some stored update is not in the newest model (a crash between storing an update and merging it,
    /// or a merge that failed): then the next connection merges before it re-publishes.
    pub fn behind(&self, fleet: &str, base_model: &str) -> Result<bool> {
        if self.updates.is_empty() {
            return Ok(false);
        }
        let Some(frame) = self.newest_model()? else { return Ok(true) };
        let merged = match decode_model(&frame, usize::MAX >> 1, fleet, base_model) {
            Ok(m) => m.merged,
            Err(r) => {
                warn!(refusal = %r, "the newest stored fleet model does not decode; merging again");
                return Ok(true);
            }
        };
        Ok(self.updates.len() != merged.len()
            || self.updates.iter().zip(&merged).any(|(u, (d, g))| u.device != *d || u.generation != *g))
    }

    fn model_path(&self, version: u64) -> PathBuf {
        self.dir.join("models").join(format!("{version:020}.elfm"))
    }

    /// Merge every stored update into the next model version and store its frame durably; returns the frame.
    /// A model whose frame would not fit one MQTT packet on the model topic is an error (nothing written).
    pub fn merge_next(&mut self, fleet: &str) -> Result<(FleetModel, Vec<u8>)> {
        let merged = merge_updates(&self.updates)?;
        let model = FleetModel::from_merge(fleet, self.version + 1, &merged);
        // The model goes out as one MQTT packet: the frame (header, payload, CRC) and the topic fit the link's
        // packet limit.
        let cap =
            mqtt::MAX_PACKET.saturating_sub(mqtt::model_topic(fleet).len() + PUBLISH_HEADER + HEADER_LEN + CRC_LEN);
        let frame = encode_model(&model, cap)?;
        write_durable(&self.model_path(model.version), &frame)?;
        self.version = model.version;
        Ok((model, frame))
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    v.sort();
    Ok(v)
}

/// Run the merger until `max_merges` models were published, `idle_exit` passed without a message, or a fatal
/// error; a failing link to the broker is re-established (module docs).
pub fn serve(cfg: &ServeConfig) -> Result<ServeReport> {
    serve_until(cfg, &AtomicBool::new(false))
}

/// [`serve`], also ending cleanly (between two messages, the link disconnected) once `stop` is set, e.g. by a
/// SIGTERM handler. An update being handled when `stop` is set is finished (stored, merged, acknowledged) first.
pub fn serve_until(cfg: &ServeConfig, stop: &AtomicBool) -> Result<ServeReport> {
    mqtt::check_id(&cfg.fleet, "fleet")?;
    let client_id = format!("merger-{}", cfg.fleet);
    mqtt::check_id(&client_id, "the merger's client id (merger-<fleet>)")?;
    let store = MergerStore::open(&cfg.dir, &cfg.fleet, &cfg.base_model, cfg.max_payload)?;
    info!(
        fleet = %cfg.fleet,
        devices = store.devices(),
        updates = store.updates().len(),
        version = store.version(),
        dir = %cfg.dir.display(),
        "merger store opened"
    );
    let broker = format!("{}:{}", cfg.broker.host, cfg.broker.port);
    let report = ServeReport { version: store.version(), ..Default::default() };
    let mut m = Merger { cfg, store, report, unpublished: false };
    let mut link: Option<Link> = None;
    let mut connected_once = false;
    // When the current link came up; a link that stayed up for RECONNECT_MAX resets the wait.
    let mut up_since: Option<Instant> = None;
    let mut wait = RECONNECT_START;
    let mut last_message = Instant::now();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            info!("stop requested: exiting");
            break Ok(());
        }
        if cfg.max_merges.is_some_and(|n| m.report.published >= n) {
            break Ok(());
        }
        if cfg.idle_exit.is_some_and(|d| last_message.elapsed() >= d) {
            info!(connected = link.is_some(), "idle: exiting");
            break Ok(());
        }
        let outcome = match link.as_mut() {
            Some(l) => m.step(l, &mut last_message),
            None => match m.connect(&client_id) {
                Ok(l) => {
                    if connected_once {
                        m.report.reconnects += 1;
                        info!(%broker, "merger reconnected and subscribed");
                    } else {
                        info!(%broker, "merger subscribed");
                    }
                    connected_once = true;
                    up_since = Some(Instant::now());
                    link = Some(l);
                    Ok(())
                }
                Err(f) => Err(f),
            },
        };
        match outcome {
            Ok(()) => {}
            Err(Fault::Fatal(e)) => break Err(e),
            Err(Fault::Link(e)) => {
                if let Some(l) = link.take() {
                    l.disconnect();
                }
                if up_since.take().is_some_and(|t| t.elapsed() >= RECONNECT_MAX) {
                    wait = RECONNECT_START;
                }
                warn!(%broker, error = %e, retry_in = ?wait, "link to the broker failed; connecting again");
                pause(wait, stop, cfg.idle_exit.map(|d| last_message + d));
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        }
    };
    if let Some(l) = link {
        l.disconnect();
    }
    if m.unpublished {
        warn!(version = m.store.version(), "the newest fleet model was not published; it is at the next start");
    }
    m.report.version = m.store.version();
    result.map(|()| m.report)
}

/// Sleep `wait`, in short slices, returning early once `stop` is set or `deadline` passed.
fn pause(wait: Duration, stop: &AtomicBool, deadline: Option<Instant>) {
    let end = Instant::now() + wait;
    let end = deadline.map_or(end, |d| d.min(end));
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Why a step of the merger did not complete.
enum Fault {
    /// The link to the broker failed: connect again.
    Link(firmware::Error),
    /// Anything else: the run ends with it.
    Fatal(Error),
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        Fault::Fatal(e)
    }
}

/// A link operation's error: the broker's (the link failed: recoverable), or any other (fatal).
fn on_link(e: firmware::Error) -> Fault {
    match e {
        firmware::Error::Broker(_) => Fault::Link(e),
        e => Fault::Fatal(e.into()),
    }
}

/// The merger's state across connections.
struct Merger<'a> {
    cfg: &'a ServeConfig,
    store: MergerStore,
    report: ServeReport,
    /// A model merged in this run whose publish the broker has not acknowledged yet (the link failed on the way).
    unpublished: bool,
}

impl Merger<'_> {
    /// Connect with the persistent session, subscribe to the updates and re-publish the newest model.
    fn connect(&mut self, client_id: &str) -> std::result::Result<Link, Fault> {
        let mut link = Link::connect(&self.cfg.broker, client_id, false, true).map_err(on_link)?;
        match self.prepare(&mut link) {
            Ok(()) => Ok(link),
            Err(f) => {
                link.disconnect();
                Err(f)
            }
        }
    }

    fn prepare(&mut self, link: &mut Link) -> std::result::Result<(), Fault> {
        link.subscribe(&mqtt::update_filter(&self.cfg.fleet)).map_err(on_link)?;
        if self.store.behind(&self.cfg.fleet, &self.cfg.base_model)? {
            match self.store.merge_next(&self.cfg.fleet) {
                Ok((model, _)) => {
                    info!(
                        version = model.version,
                        updates = model.merged.len(),
                        "stored updates merged at (re)connection"
                    );
                    self.unpublished = true;
                }
                Err(e) => warn!(error = %e, "merge failed; fleet model unchanged"),
            }
        }
        let Some(frame) = self.store.newest_model()? else { return Ok(()) };
        let version = self.store.version();
        match link.publish(&mqtt::model_topic(&self.cfg.fleet), frame, true) {
            Ok(()) => {
                if std::mem::take(&mut self.unpublished) {
                    self.report.published += 1;
                }
                info!(version, "fleet model (re-)published, retained");
                Ok(())
            }
            Err(e @ firmware::Error::Broker(_)) => Err(Fault::Link(e)),
            // Not the link's fault (a model file too large for a packet): retrying cannot help.
            Err(e) => {
                warn!(version, error = %e, "the newest fleet model cannot be published; left on disk");
                self.unpublished = false;
                Ok(())
            }
        }
    }

    /// Wait up to 500 ms for one message and handle it: store, merge and publish, then acknowledge.
    fn step(&mut self, link: &mut Link, last_message: &mut Instant) -> std::result::Result<(), Fault> {
        let Some(msg) = link.next_message(Duration::from_millis(500)).map_err(on_link)? else { return Ok(()) };
        *last_message = Instant::now();
        let (fleet, store) = (&self.cfg.fleet, &mut self.store);
        let Some(device) = mqtt::device_of_update_topic(&msg.topic, fleet).map(str::to_string) else {
            warn!(topic = %msg.topic, "message on an unexpected topic, ignored");
            return link.ack(&msg).map_err(on_link);
        };
        match decode_update(&msg.payload, self.cfg.max_payload, &device, &self.cfg.base_model) {
            Err(r) => {
                warn!(%device, refusal = %r, "update refused; kept under rejected/");
                store.reject(&device, &msg.payload)?;
                self.report.refused += 1;
            }
            Ok(u) if &u.fleet != fleet => {
                let r = Refusal::Inconsistent(format!("update for fleet {:?}", u.fleet));
                warn!(%device, refusal = %r, "update refused; kept under rejected/");
                store.reject(&device, &msg.payload)?;
                self.report.refused += 1;
            }
            Ok(u) if store.has(&u.device, u.generation) => {
                info!(%device, generation = u.generation, "repeat of a stored update, ignored");
                self.report.repeats += 1;
            }
            Ok(u) => {
                let generation = u.generation;
                store.put(&msg.payload, u)?;
                self.report.accepted += 1;
                info!(%device, generation, "update stored");
                match store.merge_next(fleet) {
                    Ok((model, frame)) => {
                        self.unpublished = true;
                        self.publish_new(link, &model, frame)?;
                    }
                    // The update stays stored; the fleet model stays the last good one.
                    Err(e) => warn!(%device, error = %e, "merge failed; fleet model unchanged"),
                }
            }
        }
        // Acknowledged only now: the update (or its rejection) is on disk.
        link.ack(&msg).map_err(on_link)
    }

    /// Publish a model just merged. When the link fails, the model stays marked unpublished and goes out after
    /// the reconnection ([`Merger::prepare`]).
    fn publish_new(&mut self, link: &mut Link, model: &FleetModel, frame: Vec<u8>) -> std::result::Result<(), Fault> {
        match link.publish(&mqtt::model_topic(&self.cfg.fleet), frame, true) {
            Ok(()) => {
                self.unpublished = false;
                self.report.published += 1;
                info!(
                    version = model.version,
                    updates = model.merged.len(),
                    classes = model.classes.len(),
                    "fleet model published"
                );
                Ok(())
            }
            Err(e @ firmware::Error::Broker(_)) => Err(Fault::Link(e)),
            Err(e) => {
                warn!(version = model.version, error = %e, "fleet model cannot be published; left on disk");
                self.unpublished = false;
                Ok(())
            }
        }
    }
}
