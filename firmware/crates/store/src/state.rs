//! The learner state: everything the device must keep across a restart, as one serde value.
//!
//! The types in this file ARE the on-disk schema (postcard is not self-describing: field order and types are the
//! format). They deliberately do not reuse the in-memory types of other modules (`ParamInfo`, `LayerRef`,
//! `AccuracyMatrix`, ...) so that a change there cannot silently change the file format. Any change here needs a
//! [`FORMAT_VERSION`](super::FORMAT_VERSION) bump and an entry in `docs/state-format.md`.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use edgelearn_core::error::{Corruption, Error, Result, shape_err};
use edgelearn_core::nn::{Model, ParamInfo};

/// Format tag of a Fisher blob holding plain little-endian f32 values, one per parameter.
pub const FISHER_F32LE: &str = "f32le";

/// All learner state, as stored in one slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    /// Commit counter: 1 for the first commit, +1 for every later one. [`StateStore::commit`](super::StateStore::commit)
    /// sets it; it is repeated in the file header.
    pub generation: u64,
    /// What model the parameters belong to.
    pub model: ModelDesc,
    /// All trainable parameters, flat, in [`Model::params`] order.
    pub params: Vec<f32>,
    /// Name, shape and offset of each parameter inside `params`.
    pub layout: Vec<ParamEntry>,
    /// GPM bases, one per projected layer.
    pub bases: Vec<BasisState>,
    /// The accumulated Fisher `F_old` (absent before the first task).
    pub fisher: Option<FisherBlob>,
    /// Tasks learned (or started) so far.
    pub tasks: Vec<TaskEntry>,
    /// Class names known to the device.
    pub classes: Vec<ClassEntry>,
    /// Metrics recorded after each task.
    pub metrics: MetricsHistory,
    /// Which inbox photos the last committed task learned, and how many samples were learned in all (format
    /// version 2; a version 1 file reads as an empty ledger).
    pub inbox: InboxLedger,
    /// The replay buffer's stored samples (format version 3; older files read as an empty buffer).
    pub replay: ReplayState,
    /// The streaming-LDA head's statistics and the trained head behind it (the `slda` class-incremental option;
    /// format version 4, older files read as `None`).
    pub slda: Option<SldaState>,
    /// The board's place in a fleet (issue 18; format version 5, older files read as `None`: not in a fleet).
    pub fleet: Option<FleetState>,
}

/// What a board in a fleet records in its state, committed with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetState {
    /// Version of the fleet model the state was adopted from (0: none adopted yet).
    pub model_version: u64,
    /// Generation of the board's newest learned task (its newest update; 0: none). A fleet model is adopted only
    /// when it has merged this generation of this board, so adopting never drops a task the board learned.
    pub learned_generation: u64,
}

/// SLDA's statistics as stored (`edgelearn_learn::method::prototype::SldaStats`): the class means and counts, the
/// shared covariance (f64, exactly as kept in memory, so a restart changes no decision) and the trained head the
/// method trains with between tasks (f32).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SldaState {
    /// Feature width `d`.
    pub dim: u32,
    /// `μ_c`, `classes · d` values, class after class.
    pub means: Vec<f64>,
    /// `n_c`, one per class.
    pub counts: Vec<u64>,
    /// Σ, `d · d` values, row-major.
    pub sigma: Vec<f64>,
    /// `t`, samples absorbed into Σ.
    pub updates: u64,
    /// The trained head's weight, `rows · d` values (empty when none is kept).
    pub train_weight: Vec<f32>,
    /// The trained head's bias, `rows` values.
    pub train_bias: Vec<f32>,
}

impl SldaState {
    /// Consistency of the lengths and finiteness (what [`LearnerState::validate`] checks).
    pub fn validate(&self) -> Result<()> {
        let d = u64::from(self.dim);
        let classes = self.counts.len() as u64;
        if Some(self.means.len() as u64) != classes.checked_mul(d) {
            return Err(inconsistent(format!("SLDA: {} mean values for {classes} classes of {d}", self.means.len())));
        }
        if Some(self.sigma.len() as u64) != d.checked_mul(d) {
            return Err(inconsistent(format!("SLDA: {} covariance values for d = {d}", self.sigma.len())));
        }
        let rows = self.train_bias.len() as u64;
        if Some(self.train_weight.len() as u64) != rows.checked_mul(d) {
            return Err(inconsistent(format!(
                "SLDA: trained head of {} values for {rows} rows of {d}",
                self.train_weight.len()
            )));
        }
        let f64s = self.means.iter().chain(&self.sigma);
        if f64s.into_iter().any(|v| !v.is_finite())
            || self.train_weight.iter().chain(&self.train_bias).any(|v| !v.is_finite())
        {
            return Err(inconsistent("SLDA statistics have a non-finite value"));
        }
        Ok(())
    }
}

/// The replay buffer (`edgelearn_learn::replay::ReplayBuffer`) as stored: its samples and per-class seen counts. Its
/// capacity is not stored: it comes from the board profile's `replay` budget when the state is loaded, and a
/// stored buffer larger than that is refused ([`Error::OverBudget`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayState {
    /// Values per sample (0 for an empty buffer written by a learner that never stored one).
    pub features: u32,
    /// Class id of each stored sample.
    pub labels: Vec<u32>,
    /// `labels.len() · features` values, sample after sample.
    pub values: Vec<f32>,
    /// Samples offered per class (the per-class reservoir's counters), ascending class ids.
    pub seen: Vec<ReplaySeen>,
}

/// How many samples of one class the replay buffer has been offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaySeen {
    /// Class id.
    pub class: u32,
    /// Samples of it offered so far.
    pub seen: u64,
}

/// The inbox photos learned by the newest committed task, committed atomically with the parameters they changed:
/// after a crash between the commit and moving the photos to `processed/`, the daemon finds them still in the
/// inbox, recognises them here and moves them without learning them a second time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxLedger {
    /// Samples learned over the device's life (every committed task, inbox photos and samples sent over the link).
    pub samples_learned: u64,
    /// The photos of the newest committed task.
    pub files: Vec<LedgerFile>,
}

/// One inbox photo, identified by its class folder, file name, length and content checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerFile {
    /// The class folder (`inbox/<class>/`).
    pub class: String,
    /// The file name inside it.
    pub name: String,
    /// Bytes of the file.
    pub len: u64,
    /// CRC-32C of the file's bytes.
    pub crc: u32,
}

/// Enough of the model's structure to refuse parameters that belong to another model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDesc {
    /// Free-form label of the architecture (e.g. the board profile's model name); informational.
    pub arch: String,
    /// Per-sample input shape.
    pub input_shape: Vec<u32>,
    /// Layer kinds of the trunk, in order (`"linear"`, `"relu"`, ...).
    pub trunk: Vec<String>,
    /// Number of outputs of each head.
    pub head_outputs: Vec<u32>,
}

/// One parameter tensor inside [`LearnerState::params`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// Parameter name, e.g. `trunk.0.weight`.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<u32>,
    /// Offset of its first scalar in the flat vector.
    pub offset: u64,
}

/// Which layer a basis belongs to (mirrors `edgelearn_learn::gpm::LayerRef`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerSlot {
    /// `model.trunk[i]`.
    Trunk(u32),
    /// `model.heads[h]`.
    Head(u32),
}

/// One GPM basis: an orthonormal `rows × cols` matrix (`d_in × k`), row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BasisState {
    /// The projected layer.
    pub layer: LayerSlot,
    /// Input dimension `d_in`.
    pub rows: u32,
    /// Number of basis vectors `k` (may be 0).
    pub cols: u32,
    /// `rows · cols` values, row-major.
    pub data: Vec<f32>,
}

/// The accumulated Fisher in some encoding, kept opaque so that compact encodings plug in without a format change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FisherBlob {
    /// Encoding tag: [`FISHER_F32LE`] or a compact format's tag.
    pub format: String,
    /// Number of Fisher entries (one per parameter).
    pub entries: u64,
    /// The encoded values.
    pub bytes: Vec<u8>,
}

/// One task in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// Task id (unique).
    pub id: u32,
    /// Human-readable name.
    pub name: String,
    /// Head index the task uses.
    pub head: u32,
    /// Class ids of the task, in head-output order.
    pub classes: Vec<u32>,
}

/// One class in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassEntry {
    /// Class id (unique).
    pub id: u32,
    /// Class name (unique).
    pub name: String,
}

/// Metrics history: one accuracy row and one BECAME α per learned task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsHistory {
    /// `accuracy[i][j]`: accuracy on task `j` after learning task `i`.
    pub accuracy: Vec<Vec<f64>>,
    /// Accuracy of the untrained model per task, if measured.
    pub random_init: Vec<f64>,
    /// α of the BECAME merge per task (`None` for the first task or for methods without a merge).
    pub alphas: Vec<Option<f64>>,
    /// GPM basis size per projected layer after each task.
    pub basis_sizes: Vec<Vec<u32>>,
}

/// A state whose parts disagree with each other ([`Corruption::Inconsistent`]): the error every conversion from a
/// stored part to its in-memory form returns for a part that cannot be right.
pub fn inconsistent(msg: impl Into<String>) -> Error {
    Error::CorruptState(Corruption::Inconsistent(msg.into()))
}

/// A size or index as the state format stores it (u32); one that does not fit is [`Error::Config`].
pub fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Config(format!("{what} {v} does not fit the state format (u32)")))
}

/// Number of scalars of a shape, or `None` on overflow.
fn shape_len(shape: &[u32]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
}

impl ModelDesc {
    /// The description of `model`, with a free-form architecture label.
    pub fn of(model: &Model, arch: impl Into<String>) -> Result<Self> {
        Ok(Self {
            arch: arch.into(),
            input_shape: model.input_shape.iter().map(|&d| to_u32(d, "input dimension")).collect::<Result<_>>()?,
            trunk: model.trunk.iter().map(|l| l.kind().to_string()).collect(),
            head_outputs: (0..model.heads.len())
                .map(|h| to_u32(model.head_outputs(h)?, "head outputs"))
                .collect::<Result<_>>()?,
        })
    }
}

impl ParamEntry {
    /// Store-schema copy of a parameter layout entry.
    pub fn from_info(info: &ParamInfo) -> Result<Self> {
        Ok(Self {
            name: info.name.clone(),
            shape: info.shape.iter().map(|&d| to_u32(d, "parameter dimension")).collect::<Result<_>>()?,
            offset: info.offset as u64,
        })
    }

    /// Number of scalars (`None` on overflow, which [`LearnerState::validate`] rejects).
    pub fn len(&self) -> Option<u64> {
        shape_len(&self.shape)
    }

    /// True for a zero-sized tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

impl BasisState {
    /// Copy of one basis matrix.
    pub fn from_array(layer: LayerSlot, basis: &Array2<f32>) -> Result<Self> {
        let (rows, cols) = basis.dim();
        Ok(Self {
            layer,
            rows: to_u32(rows, "basis rows")?,
            cols: to_u32(cols, "basis columns")?,
            data: basis.iter().copied().collect(),
        })
    }

    /// The basis as a matrix.
    pub fn to_array(&self) -> Result<Array2<f32>> {
        Array2::from_shape_vec((self.rows as usize, self.cols as usize), self.data.clone())
            .map_err(|e| shape_err("stored basis", (self.rows, self.cols), e))
    }
}

impl FisherBlob {
    /// A plain f32 Fisher ([`FISHER_F32LE`]).
    pub fn from_f32(values: &[f32]) -> Self {
        Self {
            format: FISHER_F32LE.to_string(),
            entries: values.len() as u64,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Decode a [`FISHER_F32LE`] blob; other formats are decoded by their own module.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.format != FISHER_F32LE {
            return Err(Error::Config(format!("Fisher blob format {:?} is not {FISHER_F32LE}", self.format)));
        }
        if self.bytes.len() as u64 != self.entries.saturating_mul(4) {
            return Err(inconsistent(format!("f32 Fisher: {} bytes for {} entries", self.bytes.len(), self.entries)));
        }
        Ok(self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

impl LearnerState {
    /// A state holding `model`'s parameters and layout (bases, Fisher, registries and metrics empty).
    pub fn from_model(model: &Model, arch: impl Into<String>) -> Result<Self> {
        Ok(Self {
            model: ModelDesc::of(model, arch)?,
            params: model.flat_params(),
            layout: model.param_infos().iter().map(ParamEntry::from_info).collect::<Result<_>>()?,
            ..Default::default()
        })
    }

    /// Check that the stored parameters belong to `model`: same input shape, trunk, heads and parameter layout.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        let desc = ModelDesc::of(model, self.model.arch.clone())?;
        if desc != self.model {
            return Err(shape_err("stored model", &desc, &self.model));
        }
        let layout = model.param_infos().iter().map(ParamEntry::from_info).collect::<Result<Vec<_>>>()?;
        if layout != self.layout {
            return Err(shape_err("stored parameter layout", layout, &self.layout));
        }
        Ok(())
    }

    /// Load the stored parameters into `model` after [`LearnerState::check_model`].
    pub fn restore_params(&self, model: &mut Model) -> Result<()> {
        self.check_model(model)?;
        model.set_flat_params(&self.params)
    }

    /// Internal consistency of a state: layout covers `params` exactly, sizes agree, registries refer to
    /// existing heads and classes, values are finite. [`decode`](super::decode) runs it on every state it
    /// returns, and [`StateStore::commit`](super::StateStore::commit) on every state it writes.
    pub fn validate(&self) -> Result<()> {
        let heads = self.model.head_outputs.len();
        if heads == 0 {
            return Err(inconsistent("model has no head"));
        }
        let mut offset = 0u64;
        for p in &self.layout {
            if p.offset != offset {
                return Err(inconsistent(format!("parameter {:?} at offset {} (expected {offset})", p.name, p.offset)));
            }
            let len = p.len().ok_or_else(|| inconsistent(format!("parameter {:?}: shape overflows", p.name)))?;
            offset = offset.checked_add(len).ok_or_else(|| inconsistent("parameter layout overflows"))?;
        }
        if offset != self.params.len() as u64 {
            return Err(inconsistent(format!("layout covers {offset} parameters, {} stored", self.params.len())));
        }
        if let Some(i) = self.params.iter().position(|v| !v.is_finite()) {
            return Err(inconsistent(format!("parameter {i} is not finite")));
        }
        for (i, b) in self.bases.iter().enumerate() {
            if u64::from(b.rows) * u64::from(b.cols) != b.data.len() as u64 {
                return Err(inconsistent(format!("basis {i}: {}×{} with {} values", b.rows, b.cols, b.data.len())));
            }
            if let LayerSlot::Head(h) = b.layer
                && h as usize >= heads
            {
                return Err(inconsistent(format!("basis {i} of head {h}, model has {heads}")));
            }
            if b.data.iter().any(|v| !v.is_finite()) {
                return Err(inconsistent(format!("basis {i} has a non-finite value")));
            }
        }
        if let Some(f) = &self.fisher {
            if f.format.is_empty() {
                return Err(inconsistent("Fisher blob without a format tag"));
            }
            if f.entries != self.params.len() as u64 {
                return Err(inconsistent(format!(
                    "Fisher has {} entries for {} parameters",
                    f.entries,
                    self.params.len()
                )));
            }
            if f.format == FISHER_F32LE {
                let values = f.to_f32()?;
                if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                    return Err(inconsistent("f32 Fisher has a negative or non-finite value"));
                }
            }
        }
        let mut class_ids = std::collections::BTreeSet::new();
        let mut class_names = std::collections::BTreeSet::new();
        for c in &self.classes {
            if !class_ids.insert(c.id) || !class_names.insert(c.name.as_str()) {
                return Err(inconsistent(format!("class {} ({:?}) registered twice", c.id, c.name)));
            }
        }
        let mut task_ids = std::collections::BTreeSet::new();
        for t in &self.tasks {
            if !task_ids.insert(t.id) {
                return Err(inconsistent(format!("task {} registered twice", t.id)));
            }
            if t.head as usize >= heads {
                return Err(inconsistent(format!("task {} uses head {}, model has {heads}", t.id, t.head)));
            }
            if let Some(c) = t.classes.iter().find(|c| !class_ids.contains(c)) {
                return Err(inconsistent(format!("task {} refers to unknown class {c}", t.id)));
            }
        }
        let r = &self.replay;
        if Some(r.values.len() as u64) != (r.labels.len() as u64).checked_mul(u64::from(r.features)) {
            return Err(inconsistent(format!(
                "replay buffer: {} values for {} samples of {}",
                r.values.len(),
                r.labels.len(),
                r.features
            )));
        }
        if r.values.iter().any(|v| !v.is_finite()) {
            return Err(inconsistent("replay buffer has a non-finite value"));
        }
        if r.seen.windows(2).any(|w| w[0].class >= w[1].class) {
            return Err(inconsistent("replay buffer: seen counts not in ascending class order"));
        }
        let mut stored = std::collections::BTreeMap::<u32, u64>::new();
        for &l in &r.labels {
            *stored.entry(l).or_default() += 1;
        }
        for (l, n) in stored {
            let seen = r.seen.binary_search_by_key(&l, |s| s.class).map_or(0, |i| r.seen[i].seen);
            if seen < n {
                return Err(inconsistent(format!("replay buffer: class {l} stores {n} samples but saw {seen}")));
            }
        }
        if let Some(sl) = &self.slda {
            sl.validate()?;
        }
        let m = &self.metrics;
        let finite = m.accuracy.iter().flatten().chain(&m.random_init).chain(m.alphas.iter().flatten());
        if finite.into_iter().any(|v| !v.is_finite()) {
            return Err(inconsistent("metrics history has a non-finite value"));
        }
        Ok(())
    }
}
