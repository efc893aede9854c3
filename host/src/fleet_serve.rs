//! `host fleet serve`: the fleet's merger. It subscribes to every board's updates over MQTT, keeps each one
//! durably on disk before acknowledging it, merges the latest update of every board with the Fisher-weighted
//! closed form ([`firmware::fleet::merge_updates`]) and publishes the merged model, versioned, as the retained
//! message of `edgelearn/<fleet>/model`.
//!
//! On disk (`--dir`):
//!
//! ```text
//! updates/<device>/<generation, 20 digits>.elfu   every accepted update frame, as received
//! models/<version, 20 digits>.elfm                 every published fleet-model frame
//! rejected/<unix ns>-<device>.bin                  messages refused (damaged, another base, another device's id)
//! ```
//!
//! Files are written with [`firmware::store::write_durable`] (temp file, fsync, rename, folder fsync), so a crash
//! leaves a file whole or absent. The merger connects with a persistent session and acknowledges a QoS 1 update
//! only after it is on disk: what the broker delivered and the merger did not store is delivered again. An update
//! is named by (device, generation): a repeat of a stored one is acknowledged and ignored, so a board that
//! re-sends after a lost acknowledgement is merged once. On start the merger reads its folder back (the newest
//! generation per device, the last model version) and publishes nothing until a new update arrives.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firmware::fleet::mqtt::{self, BrokerConfig, Link};
use firmware::fleet::{FleetModel, FleetUpdate, Refusal, decode_update, encode_model, merge_updates};
use firmware::store::write_durable;
use tracing::{info, warn};

use crate::{Error, Result};

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
    /// Exit after this long without a message; `None`: never.
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
    /// Models published in this run.
    pub published: u64,
    /// The last model version on disk at exit (0: none yet).
    pub version: u64,
}

/// The merger's folder: stored updates and published models.
#[derive(Debug)]
pub struct MergerStore {
    dir: PathBuf,
    /// The newest stored update per device, by device id.
    latest: std::collections::BTreeMap<String, FleetUpdate>,
    version: u64,
}

impl MergerStore {
    /// Open (create) the folder and read back every stored update; a stored frame that no longer decodes is
    /// moved to `rejected/` with a warning, never deleted.
    pub fn open(dir: &Path, fleet: &str, base_model: &str, max_payload: usize) -> Result<Self> {
        let mut store = Self { dir: dir.to_path_buf(), latest: Default::default(), version: 0 };
        let updates = dir.join("updates");
        fs::create_dir_all(&updates).map_err(|e| Error::io(&updates, e))?;
        let mut devices: Vec<PathBuf> = read_dir_sorted(&updates)?;
        devices.retain(|p| p.is_dir());
        for d in devices {
            let device = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            for f in read_dir_sorted(&d)?.into_iter().filter(|f| f.extension().is_some_and(|e| e == "elfu")) {
                let bytes = fs::read(&f).map_err(|e| Error::io(&f, e))?;
                match decode_update(&bytes, max_payload, &device, base_model) {
                    Ok(u) if u.fleet == fleet => store.keep(u),
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

    fn keep(&mut self, u: FleetUpdate) {
        match self.latest.get(&u.device) {
            Some(old) if old.generation >= u.generation => {}
            _ => {
                self.latest.insert(u.device.clone(), u);
            }
        }
    }

    /// Whether update (device, generation) is stored.
    pub fn has(&self, device: &str, generation: u64) -> bool {
        self.dir.join("updates").join(device).join(format!("{generation:020}.elfu")).exists()
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

    /// The newest update of every device, in device-id order.
    pub fn latest(&self) -> Vec<FleetUpdate> {
        self.latest.values().cloned().collect()
    }

    /// The last model version written (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Merge the latest updates into the next model version and store its frame durably; returns the frame.
    pub fn merge_next(&mut self, fleet: &str) -> Result<(FleetModel, Vec<u8>)> {
        let merged = merge_updates(&self.latest())?;
        let model = FleetModel::from_merge(fleet, self.version + 1, &merged);
        // The model goes out as one MQTT packet: the link's packet limit is its cap.
        let frame = encode_model(&model, mqtt::MAX_PACKET)?;
        let path = self.dir.join("models").join(format!("{:020}.elfm", model.version));
        write_durable(&path, &frame)?;
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

/// Run the merger until `max_merges` models were published, `idle_exit` passed without a message, or an error.
pub fn serve(cfg: &ServeConfig) -> Result<ServeReport> {
    mqtt::check_id(&cfg.fleet, "fleet")?;
    let mut store = MergerStore::open(&cfg.dir, &cfg.fleet, &cfg.base_model, cfg.max_payload)?;
    info!(
        fleet = %cfg.fleet,
        devices = store.latest.len(),
        version = store.version(),
        dir = %cfg.dir.display(),
        "merger store opened"
    );
    let mut link = Link::connect(&cfg.broker, &format!("merger-{}", cfg.fleet), false, true)?;
    link.subscribe(&mqtt::update_filter(&cfg.fleet))?;
    info!(broker = %format!("{}:{}", cfg.broker.host, cfg.broker.port), "merger subscribed");
    let mut report = ServeReport { version: store.version(), ..Default::default() };
    let mut last_message = Instant::now();
    loop {
        if cfg.max_merges.is_some_and(|m| report.published >= m) {
            break;
        }
        if cfg.idle_exit.is_some_and(|d| last_message.elapsed() >= d) {
            info!("idle: exiting");
            break;
        }
        let Some(msg) = link.next_message(Duration::from_millis(500))? else { continue };
        last_message = Instant::now();
        let Some(device) = mqtt::device_of_update_topic(&msg.topic, &cfg.fleet).map(str::to_string) else {
            warn!(topic = %msg.topic, "message on an unexpected topic, ignored");
            link.ack(&msg)?;
            continue;
        };
        match decode_update(&msg.payload, cfg.max_payload, &device, &cfg.base_model) {
            Err(r) => {
                warn!(%device, refusal = %r, "update refused; kept under rejected/");
                store.reject(&device, &msg.payload)?;
                report.refused += 1;
            }
            Ok(u) if u.fleet != cfg.fleet => {
                let r = Refusal::Inconsistent(format!("update for fleet {:?}", u.fleet));
                warn!(%device, refusal = %r, "update refused; kept under rejected/");
                store.reject(&device, &msg.payload)?;
                report.refused += 1;
            }
            Ok(u) if store.has(&u.device, u.generation) => {
                info!(%device, generation = u.generation, "repeat of a stored update, ignored");
                report.repeats += 1;
            }
            Ok(u) => {
                let generation = u.generation;
                store.put(&msg.payload, u)?;
                report.accepted += 1;
                info!(%device, generation, "update stored");
                match store.merge_next(&cfg.fleet) {
                    Ok((model, frame)) => {
                        link.publish(&mqtt::model_topic(&cfg.fleet), frame, true)?;
                        report.published += 1;
                        report.version = model.version;
                        info!(
                            version = model.version,
                            devices = model.merged.len(),
                            classes = model.classes.len(),
                            "fleet model published"
                        );
                    }
                    // The update stays stored; the fleet model stays the last good one.
                    Err(e) => warn!(%device, error = %e, "merge failed; fleet model unchanged"),
                }
            }
        }
        // Acknowledged only now: the update (or its rejection) is on disk.
        link.ack(&msg)?;
    }
    link.disconnect();
    Ok(report)
}
