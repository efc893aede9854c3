//! The board's side of the fleet link: a thread that sends the outbox's committed update frames
//! ([`super::outbox`]) and receives the fleet model, so that the daemon's loop never waits on the network.
//!
//! ```text
//! loop until stopped:
//!   not connected ── connect (persistent session, client id = device id) + subscribe edgelearn/<fleet>/model
//!                    └─ failed: wait (200 ms, doubling to 5 s), try again
//!   every outbox frame with generation ≤ committed, not sent on this connection or not within `resend_after`
//!                    ── publish QoS 1 on edgelearn/<fleet>/<device>/update (wait for the PUBACK)
//!                    └─ no PUBACK: drop the connection (the frame stays)
//!   a message on the model topic (the retained one comes with every subscription)
//!                    ── decode_model (fleet, base model, CRC, version); refused: logged, dropped
//!                    ── delete the outbox frames whose (device, generation) the model lists as merged
//!                    ── hand the model to the daemon
//! ```
//!
//! **A frame leaves the outbox only when a fleet model shows it merged**, not at the broker's PUBACK: a broker
//! that restarts without persistence (or a merger that crashes between storing and merging) cannot lose an
//! update, because the board sends every frame still in its outbox again on each new connection and, while no
//! model confirms it, every `resend_after` (a broker that restarted while the merger was away drops what it gets
//! before the merger subscribes again, and the board's own connection may have survived nothing); the merger
//! counts a `(device, generation)` once. The daemon adopts the model itself ([`super::adopt`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mqtt::{BrokerConfig, Link, check_id, model_topic, update_topic};
use crate::{FleetModel, decode_model, outbox};
use edgelearn_core::error::Result;

/// What the link needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The broker and this board's credentials.
    pub broker: BrokerConfig,
    /// Fleet name.
    pub fleet: String,
    /// This board's id (also its MQTT client id and its topic level).
    pub device: String,
    /// The outbox folder.
    pub outbox: PathBuf,
    /// The fleet's base model id (a model of another base is refused).
    pub base_model: String,
    /// Largest fleet-model frame accepted, bytes.
    pub max_model: usize,
    /// Send a frame again when no fleet model has confirmed it this long after it was last sent.
    pub resend_after: Duration,
}

/// The running link; see the [module docs](self). Dropping it stops the thread.
#[derive(Debug)]
pub struct FleetClient {
    committed: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    models: Receiver<FleetModel>,
    handle: Option<JoinHandle<()>>,
}

impl FleetClient {
    /// Start the thread; frames of generations up to `committed` may be sent at once.
    pub fn start(cfg: ClientConfig, committed: u64) -> Result<Self> {
        check_id(&cfg.fleet, "fleet id")?;
        check_id(&cfg.device, "device id")?;
        let committed = Arc::new(AtomicU64::new(committed));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, models) = channel();
        let worker = Worker {
            cfg,
            committed: Arc::clone(&committed),
            connected: Arc::clone(&connected),
            stop: Arc::clone(&stop),
            models: tx,
        };
        let handle =
            std::thread::Builder::new().name("fleet-link".into()).spawn(move || worker.run()).map_err(|source| {
                edgelearn_core::error::Error::Io { context: "starting the fleet link thread".into(), source }
            })?;
        Ok(Self { committed, connected, stop, models, handle: Some(handle) })
    }

    /// Frames of generations up to `generation` are committed and may be sent.
    pub fn committed(&self, generation: u64) {
        self.committed.fetch_max(generation, Ordering::SeqCst);
    }

    /// Whether the link is up now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The newest fleet model received (and checked) since the last call; older ones are dropped.
    pub fn latest_model(&self) -> Option<FleetModel> {
        self.models.try_iter().last()
    }
}

impl Drop for FleetClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Worker {
    cfg: ClientConfig,
    committed: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    models: Sender<FleetModel>,
}

impl Worker {
    fn run(self) {
        let mut link: Option<Link> = None;
        // Generations sent on the current connection, and when.
        let mut sent: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut backoff = Duration::from_millis(200);
        let mut warned = false;
        let model = model_topic(&self.cfg.fleet);
        while !self.stop.load(Ordering::SeqCst) {
            let Some(l) = link.as_mut() else {
                match Link::connect(&self.cfg.broker, &self.cfg.device, false, false)
                    .and_then(|mut l| l.subscribe(&model).map(|()| l))
                {
                    Ok(l) => {
                        tracing::info!(device = %self.cfg.device, "fleet link up");
                        link = Some(l);
                        sent.clear();
                        backoff = Duration::from_millis(200);
                        warned = false;
                        self.connected.store(true, Ordering::SeqCst);
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "fleet broker unreachable; updates wait in the outbox");
                            warned = true;
                        }
                        self.sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            };
            let result = self.send_pending(l, &mut sent).and_then(|()| self.receive(l, &model));
            if let Err(e) = result {
                tracing::warn!(error = %e, "fleet link lost; reconnecting");
                link = None;
                self.connected.store(false, Ordering::SeqCst);
            }
        }
        if let Some(l) = link {
            l.disconnect();
        }
    }

    /// Publish every committed frame not sent on this connection, or not within `resend_after`, oldest first.
    fn send_pending(&self, link: &mut Link, sent: &mut BTreeMap<u64, Instant>) -> Result<()> {
        let committed = self.committed.load(Ordering::SeqCst);
        for (g, path) in outbox::pending(&self.cfg.outbox)? {
            if g > committed || self.stop.load(Ordering::SeqCst) {
                break;
            }
            if sent.get(&g).is_some_and(|t| t.elapsed() < self.cfg.resend_after) {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // Deleted meanwhile (a model confirmed it).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(edgelearn_core::error::Error::Io {
                        context: format!("reading {}", path.display()),
                        source,
                    });
                }
            };
            link.publish(&update_topic(&self.cfg.fleet, &self.cfg.device), bytes, false)?;
            let again = sent.insert(g, Instant::now()).is_some();
            tracing::info!(generation = g, again, "fleet update sent (the broker acknowledged it)");
        }
        Ok(())
    }

    fn receive(&self, link: &mut Link, model: &str) -> Result<()> {
        let Some(m) = link.next_message(Duration::from_millis(200))? else { return Ok(()) };
        if m.topic != model {
            return Ok(());
        }
        match decode_model(&m.payload, self.cfg.max_model, &self.cfg.fleet, &self.cfg.base_model) {
            Ok(fm) => {
                for (g, path) in outbox::pending(&self.cfg.outbox)? {
                    if fm.merged.iter().any(|(d, mg)| *d == self.cfg.device && *mg == g) {
                        outbox::remove(&path)?;
                        tracing::info!(generation = g, version = fm.version, "fleet update merged; out of the outbox");
                    }
                }
                let _ = self.models.send(fm);
            }
            Err(r) => tracing::warn!(reason = %r, "fleet model refused"),
        }
        Ok(())
    }

    fn sleep(&self, d: Duration) {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(step.min(left));
            left = left.saturating_sub(step);
        }
    }
}
