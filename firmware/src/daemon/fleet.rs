//! The daemon in a fleet (`--fleet`, feature `fleet-mqtt`): what a learn adds to the commit, and adopting the
//! fleet model between requests.
//!
//! ```text
//! learn:  statistics before ─ learn ─ update frame (gen g+1) durably into the outbox ─ commit (gen g+1)
//!         ─ tell the link thread that g+1 is committed (it publishes, and deletes the frame on PUBACK)
//! idle:   newest fleet model from the link (checked there: fleet, base, CRC, version) ─ adopted_state ─ one commit
//! ```

use std::path::{Path, PathBuf};

use crate::daemon::DeviceLearner;
use crate::daemon::config::FleetOptions;
use crate::error::{Error, Result};
use crate::fleet::client::{ClientConfig, FleetClient};
use crate::fleet::mqtt::{BrokerConfig, MAX_PACKET};
use crate::fleet::{FleetModel, FleetUpdate, SldaSums, adopted_state, encode_update, outbox};
use crate::store::{FleetState, SldaState};

/// Largest update or model frame a board sends or accepts (one MQTT packet, less room for the topic).
pub const MAX_FRAME: usize = MAX_PACKET - 4096;

/// The fleet side of a [`crate::daemon::Device`].
#[derive(Debug)]
pub struct FleetSide {
    opts: FleetOptions,
    base: String,
    outbox: PathBuf,
    client: FleetClient,
    /// A received model not yet looked at (kept while samples are buffered).
    pending: Option<FleetModel>,
}

/// What [`FleetSide::poll_model`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// The model was adopted: its version and the generation that committed it.
    Adopted {
        /// Fleet model version.
        version: u64,
        /// Generation of the commit.
        generation: u64,
    },
    /// Nothing to do now (no model, not newer, not merged our newest task yet, or samples buffered).
    Nothing,
}

impl FleetSide {
    /// Delete outbox frames of generations the store never committed, then start the link thread.
    pub fn open(opts: &FleetOptions, state: &Path, model_file: &Path, committed: u64) -> Result<Self> {
        let base = match &opts.base {
            Some(b) => b.clone(),
            None => {
                let bytes = std::fs::read(model_file)
                    .map_err(|source| Error::Io { context: format!("reading {}", model_file.display()), source })?;
                crate::fleet::base_model_id(&bytes)
            }
        };
        let mut broker = BrokerConfig::parse(&opts.broker)?;
        if let Some(file) = &opts.password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|source| Error::Io { context: format!("reading {}", file.display()), source })?;
            let password = text.lines().next().unwrap_or_default().to_string();
            broker.credentials = Some((opts.user.clone().unwrap_or_else(|| opts.device.clone()), password));
        }
        broker.ca = opts.ca.clone();
        let outbox = outbox::dir_of(state);
        outbox::discard_uncommitted(&outbox, committed)?;
        let cfg = ClientConfig {
            broker,
            fleet: opts.fleet.clone(),
            device: opts.device.clone(),
            outbox: outbox.clone(),
            base_model: base.clone(),
            max_model: MAX_FRAME,
            resend_after: std::time::Duration::from_secs_f64(opts.resend_s),
        };
        let client = FleetClient::start(cfg, committed)?;
        tracing::info!(fleet = %opts.fleet, device = %opts.device, base = %base, "fleet link started");
        Ok(Self { opts: opts.clone(), base, outbox, client, pending: None })
    }

    /// The fleet's base model id this board uses.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Update frames waiting for the broker.
    pub fn outbox_len(&self) -> usize {
        outbox::pending(&self.outbox).map_or(0, |p| p.len())
    }

    /// Whether the link is up.
    pub fn connected(&self) -> bool {
        self.client.connected()
    }

    /// The SLDA statistics before a learn (what the task's update is measured from).
    pub fn before_learn(&self, learner: &DeviceLearner) -> Result<Option<SldaState>> {
        Ok(learner.state()?.slda)
    }

    /// After a learn, before its commit as `generation`: the task's update frame goes durably into the outbox
    /// and the learner's fleet record names `generation` as the newest learned one.
    pub fn stage_update(&self, learner: &mut DeviceLearner, before: Option<&SldaState>, generation: u64) -> Result<()> {
        let mut record = learner.fleet().cloned().unwrap_or_default();
        record.learned_generation = generation;
        learner.set_fleet(record);
        let state = learner.state()?;
        let classes: Vec<String> = state.classes.iter().map(|c| c.name.clone()).collect();
        let slda = state.slda.as_ref().map(|after| SldaSums::delta(before, after, &classes)).transpose()?;
        let fisher = state.fisher.clone().ok_or_else(|| Error::Config("the learner kept no Fisher".into()))?;
        let update = FleetUpdate {
            fleet: self.opts.fleet.clone(),
            device: self.opts.device.clone(),
            generation,
            base_model: self.base.clone(),
            layout: state.layout,
            params: state.params,
            fisher,
            classes,
            slda,
        };
        let frame = encode_update(&update, MAX_FRAME)?;
        outbox::put(&self.outbox, generation, &frame)
    }

    /// `generation` is committed: its frame may go.
    pub fn committed(&self, generation: u64) {
        self.client.committed(generation);
    }

    /// Look at the newest fleet model received (checked by the link: fleet, base model, CRC, version), and adopt it when it is newer and has merged this board's newest
    /// task (and no samples are buffered: their class ids would change). A refused model is logged and dropped.
    pub fn poll_model(&mut self, learner: &mut DeviceLearner) -> Result<Adoption> {
        if let Some(m) = self.client.latest_model() {
            self.pending = Some(m);
        }
        if !learner.buffer().is_empty() {
            return Ok(Adoption::Nothing);
        }
        let Some(model) = self.pending.take() else { return Ok(Adoption::Nothing) };
        let current = learner.state()?;
        let Some(next) = adopted_state(&current, &model, &self.opts.device)? else {
            tracing::debug!(version = model.version, "fleet model not adopted (not newer, or without our newest task)");
            return Ok(Adoption::Nothing);
        };
        let generation = learner.adopt(next)?;
        self.client.committed(generation);
        tracing::info!(version = model.version, generation, classes = model.classes.len(), "fleet model adopted");
        Ok(Adoption::Adopted { version: model.version, generation })
    }

    /// The board's fleet record (adopted model version, newest learned generation).
    pub fn record(learner: &DeviceLearner) -> FleetState {
        learner.fleet().cloned().unwrap_or_default()
    }
}
