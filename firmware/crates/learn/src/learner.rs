//! The device learner: a model, a continual-learning method, the class and task registries and the state store,
//! under a board profile's budgets, learning new classes in the field (class-incremental, one growing head).
//!
//! ```text
//! add_sample("cat", pixels) ─┐  (new class: the head grows by one zero row, within max_classes and the budgets)
//! add_sample("dog", pixels) ─┤  samples wait in a fixed-capacity buffer (overflow is an error, never a drop)
//!            learn() ────────┘  footprint checked first; then one task of the method over the buffered samples
//!            commit()           everything to the A/B state store (crash-safe)
//!            load()             the newest committed state back, after a restart
//! ```
//!
//! Every input from outside is checked before anything changes, and refused with a typed error that leaves the
//! learner exactly as it was: a sample of the wrong size ([`Error::Shape`]), NaN or ±∞ pixels
//! ([`Error::NonFinite`]), a full buffer ([`Error::BufferFull`]), a class beyond the profile's `max_classes`
//! ([`Error::TooManyClasses`]), an unknown class or task id ([`Error::UnknownClass`], [`Error::UnknownTask`]), a
//! class or task over a budget ([`Error::OverBudget`]), a state file from a newer firmware
//! ([`Error::UnsupportedVersion`]).
//!
//! Classes get ids `0, 1, 2, …` in order of first arrival; class id `c` is output `c` of the single head. The
//! method is used unchanged: GPM's bases are over layer inputs and do not change when the head grows; per-parameter
//! vectors (BECAME's `F_old`, EWC's Fisher and anchor) are resized through [`Method::params_grown`], new entries
//! getting zero Fisher.
//!
//! The learner keeps an exemplar memory ([`ReplayBuffer`], class-balanced reservoir) sized from the profile's
//! `replay` budget over the model input (the samples as they arrive; with a frozen prefix, the features after it,
//! which are this learner's input). [`Learner::learn`] hands its stored samples to the method
//! ([`LearnContext::replay`]) and, after the task is learned, offers the task's samples to it; it is part of the
//! committed state. A stored buffer over the budget is refused on load ([`Error::OverBudget`]).

use std::path::Path;

use ndarray::Array2;
use rand_chacha::ChaCha8Rng;

use crate::budget::{BoardProfile, Footprint};
use crate::method::{LearnContext, Method, MethodState, TaskReport};
use crate::replay::ReplayBuffer;
use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Linear, Model};
use edgelearn_core::train::{Progress, Silent};
use edgelearn_store::{
    CRC_LEN, ClassEntry, FleetState, HEADER_LEN, InboxLedger, LearnerState, LedgerFile, MetricsHistory, StateStore,
    TaskEntry,
};

/// Longest class name accepted, in bytes.
pub const MAX_CLASS_NAME: usize = 64;

/// Every `VAL_EVERY`-th buffered sample (from a buffer of at least that many) is held out as the task's validation
/// split (the methods' learning-rate schedule and best-validation restore use it), unless the method trains
/// nothing ([`crate::method::Method::uses_validation`]).
pub const VAL_EVERY: usize = 10;

/// A fixed-capacity buffer of labelled samples: at most `CAP` samples of `features` values each, allocated once
/// when it is created. Nothing is ever dropped: a push into a full buffer is refused with [`Error::BufferFull`].
#[derive(Debug, Clone)]
pub struct SampleBuffer<const CAP: usize> {
    features: usize,
    labels: heapless::Vec<u32, CAP>,
    pixels: Box<[f32]>,
}

impl<const CAP: usize> SampleBuffer<CAP> {
    /// An empty buffer for samples of `features` values (`CAP · features` floats allocated now).
    pub fn new(features: usize) -> Self {
        Self { features, labels: heapless::Vec::new(), pixels: vec![0.0; CAP * features].into_boxed_slice() }
    }

    /// Values per sample.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// True when the next push would be refused.
    pub fn is_full(&self) -> bool {
        self.labels.is_full()
    }

    /// Most samples it can hold (`CAP`).
    pub fn capacity(&self) -> usize {
        CAP
    }

    /// Labels of the samples held, in arrival order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Append one sample; [`Error::BufferFull`] when full, [`Error::Shape`] on a wrong length, [`Error::NonFinite`]
    /// on NaN/±∞. The buffer is unchanged on error.
    pub fn push(&mut self, label: u32, pixels: &[f32]) -> Result<()> {
        if pixels.len() != self.features {
            return Err(shape_err("sample", self.features, pixels.len()));
        }
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("sample pixel {i} = {}", pixels[i])));
        }
        let n = self.labels.len();
        self.labels.push(label).map_err(|_| Error::BufferFull { what: "sample", capacity: CAP })?;
        self.pixels[n * self.features..(n + 1) * self.features].copy_from_slice(pixels);
        Ok(())
    }

    /// Forget every sample (the allocation stays).
    pub fn clear(&mut self) {
        self.labels.clear();
    }

    /// Every sample held, in arrival order.
    pub fn all(&self) -> Result<Samples> {
        self.rows(&(0..self.len()).collect::<Vec<_>>())
    }

    fn rows(&self, idx: &[usize]) -> Result<Samples> {
        let mut x = Array2::<f32>::zeros((idx.len(), self.features));
        for (row, &i) in idx.iter().enumerate() {
            x.row_mut(row)
                .as_slice_mut()
                .expect("rows of a new array are contiguous")
                .copy_from_slice(&self.pixels[i * self.features..(i + 1) * self.features]);
        }
        Samples::new(x, idx.iter().map(|&i| self.labels[i] as usize).collect())
    }
}

/// The device's validation rule over `n` samples in arrival order: (training indices, validation indices), every
/// [`VAL_EVERY`]-th sample held out when at least [`VAL_EVERY`] are given, none otherwise. The one rule behind
/// [`Learner::learn`] and [`Learner::learn_samples`].
pub fn split_indices(n: usize) -> (Vec<usize>, Vec<usize>) {
    let val_of = |i: usize| n >= VAL_EVERY && i % VAL_EVERY == VAL_EVERY - 1;
    ((0..n).filter(|&i| !val_of(i)).collect(), (0..n).filter(|&i| val_of(i)).collect())
}

/// Which budgets a check covers: what stays resident between tasks (a new learner, a loaded state), or
/// everything one learning step needs (a new class, a task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `params`, `bases` and `fisher`.
    Resident,
    /// Every budget ([`Footprint::check`]).
    Step,
}

/// The learner's one budget check: refuse `fp` with [`Error::OverBudget`] when it exceeds a budget of `scope`.
fn check_budget(profile: &BoardProfile, fp: &Footprint, scope: Scope, what: &str) -> Result<()> {
    let result = match scope {
        Scope::Step => fp.check(&profile.budget),
        Scope::Resident => Footprint { workspace: 0, state_file: 0, replay: 0, ..*fp }.check(&profile.budget),
    };
    if let Err(e) = &result {
        tracing::warn!(what, error = %e, footprint = %fp, "refused: over the board's budget");
    }
    result
}

/// A class-incremental learner on one board: see the [module docs](self).
///
/// `M` is the continual-learning method (GPM+BECAME on the device); `CAP` the capacity of the sample buffer.
#[derive(Debug)]
pub struct Learner<M: Method, const CAP: usize> {
    profile: BoardProfile,
    arch: String,
    model: Model,
    method: M,
    classes: Vec<ClassEntry>,
    tasks: Vec<TaskEntry>,
    metrics: MetricsHistory,
    inbox: InboxLedger,
    fleet: Option<FleetState>,
    buffer: SampleBuffer<CAP>,
    /// How many of the buffered samples are jittered copies of a photo ([`Learner::add_copy`]): buffered and
    /// learned like samples, not counted as samples learned.
    copies: usize,
    replay: ReplayBuffer,
    store: Option<StateStore>,
    rng: ChaCha8Rng,
    /// The replay buffer's own random stream, so that the method's stream is the same with and without replay.
    replay_rng: ChaCha8Rng,
}

/// Seed offset of the replay buffer's random stream.
const REPLAY_SEED: u64 = 0x5EED_0B0F;

fn check_class_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_CLASS_NAME || name.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "class name {name:?}: 1 to {MAX_CLASS_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

impl<M: Method, const CAP: usize> Learner<M, CAP> {
    /// A learner for `model` running `method` under `profile`. `arch` labels the model in the state file.
    ///
    /// Class-incremental (the field): one head, whose outputs are the classes `classes`, in order (may be none).
    /// Task-incremental (a head per task, task id at test; host-side simulation of the papers' protocol): a model
    /// with several heads and no class registry (`classes` empty), each task naming its head
    /// ([`Learner::learn_task`]); such a learner has no state store.
    ///
    /// Errors when the class list does not match the head, names repeat or exceed `max_classes`, the buffer has no
    /// capacity, or the model alone is over the params, bases or Fisher budget.
    pub fn new(
        profile: BoardProfile,
        arch: impl Into<String>,
        model: Model,
        mut method: M,
        classes: &[&str],
        seed: u64,
    ) -> Result<Self> {
        if model.heads.is_empty() || (model.heads.len() > 1 && !classes.is_empty()) {
            return Err(Error::Config(format!(
                "the learner needs one head with a class registry, or several heads without one; got {} heads and {} \
                 classes",
                model.heads.len(),
                classes.len()
            )));
        }
        if CAP == 0 {
            return Err(Error::Config("the sample buffer needs a capacity of at least 1".into()));
        }
        let outputs = model.head_outputs(0)?;
        if model.heads.len() == 1 && classes.len() != outputs {
            return Err(shape_err("initial classes vs head outputs", outputs, classes.len()));
        }
        if classes.len() > profile.max_classes {
            return Err(Error::TooManyClasses {
                name: classes[profile.max_classes].to_string(),
                max: profile.max_classes,
            });
        }
        let mut entries: Vec<ClassEntry> = Vec::with_capacity(classes.len());
        for (id, &name) in classes.iter().enumerate() {
            check_class_name(name)?;
            if entries.iter().any(|c| c.name == name) {
                return Err(Error::Config(format!("class {name:?} listed twice")));
            }
            entries.push(ClassEntry { id: id as u32, name: name.to_string() });
        }
        method.set_bases_budget(Some(profile.budget.bases));
        check_budget(&profile, &method.footprint(&model)?, Scope::Resident, "model")?;
        let buffer = SampleBuffer::new(model.input_len());
        // Stored samples carry class ids of the one head: a task-incremental learner keeps none.
        let replay = match model.heads.len() {
            1 => ReplayBuffer::with_budget(profile.budget.replay, model.input_len()),
            _ => ReplayBuffer::new(0, model.input_len()),
        };
        Ok(Self {
            profile,
            arch: arch.into(),
            model,
            method,
            classes: entries,
            tasks: Vec::new(),
            metrics: MetricsHistory::default(),
            inbox: InboxLedger::default(),
            fleet: None,
            buffer,
            replay,
            store: None,
            rng: edgelearn_core::seeded_rng(seed),
            replay_rng: edgelearn_core::seeded_rng(seed.wrapping_add(REPLAY_SEED)),
            copies: 0,
        })
    }

    /// Persist state in the A/B store in `dir` (created if needed); one slot may take at most the profile's
    /// `state_file` budget.
    pub fn with_store(mut self, dir: impl AsRef<Path>) -> Result<Self> {
        if self.model.heads.len() != 1 {
            return Err(Error::Config("a state store needs the single-head (class-incremental) learner".into()));
        }
        // The frame's payload length is a u32.
        let max_payload = self.profile.budget.state_file.saturating_sub((HEADER_LEN + CRC_LEN) as u64);
        let max_payload = usize::try_from(max_payload.min(u64::from(u32::MAX))).unwrap_or(usize::MAX);
        self.store = Some(StateStore::open_with_limit(dir.as_ref(), max_payload)?);
        Ok(self)
    }

    /// A replay buffer of `samples` stored samples instead of what the profile's `replay` budget holds (host
    /// simulation's `--replay N`; 0: no exemplar memory). [`Error::OverBudget`] when it exceeds that budget; only
    /// before anything is stored ([`Error::Config`] otherwise).
    pub fn with_replay_capacity(mut self, samples: usize) -> Result<Self> {
        if !self.replay.is_empty() {
            return Err(Error::Config("the replay buffer is resized only before anything is stored".into()));
        }
        if samples > 0 && self.model.heads.len() != 1 {
            return Err(Error::Config("replay needs one shared head (stored labels are its class ids)".into()));
        }
        let replay = ReplayBuffer::new(samples, self.model.input_len());
        let fp = Footprint { replay: replay.capacity_bytes(), ..Footprint::default() };
        check_budget(&self.profile, &fp, Scope::Step, "replay buffer")?;
        self.replay = replay;
        Ok(self)
    }

    /// The model, consuming the learner (the end of a simulation).
    pub fn into_model(self) -> Model {
        self.model
    }

    /// The board profile.
    pub fn profile(&self) -> &BoardProfile {
        &self.profile
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The method.
    pub fn method(&self) -> &M {
        &self.method
    }

    /// The class registry (ids `0..n` in order).
    pub fn classes(&self) -> &[ClassEntry] {
        &self.classes
    }

    /// The task registry.
    pub fn tasks(&self) -> &[TaskEntry] {
        &self.tasks
    }

    /// α and basis sizes per learned task.
    pub fn metrics(&self) -> &MetricsHistory {
        &self.metrics
    }

    /// The buffered samples.
    pub fn buffer(&self) -> &SampleBuffer<CAP> {
        &self.buffer
    }

    /// How many of the buffered samples are jittered copies ([`Learner::add_copy`]).
    pub fn buffered_copies(&self) -> usize {
        self.copies
    }

    /// The replay buffer (stored samples of learned tasks).
    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// The stored samples of the classes `ids` (a replay request); [`Error::UnknownClass`] for a class with no
    /// stored sample. Changes nothing.
    pub fn replay_samples(&self, ids: &[u32]) -> Result<Samples> {
        self.replay.restrict(&ids.iter().map(|&c| c as usize).collect::<Vec<_>>())
    }

    /// Drop the buffered samples (not learned); returns how many there were.
    pub fn clear_buffer(&mut self) -> usize {
        let n = self.buffer.len();
        self.buffer.clear();
        self.copies = 0;
        n
    }

    /// The inbox ledger: samples learned in all, and the inbox photos of the newest task (as committed, or as set
    /// by [`Learner::set_inbox_files`] for the next commit).
    pub fn inbox_ledger(&self) -> &InboxLedger {
        &self.inbox
    }

    /// The board's fleet record (`None` outside a fleet); committed with the state.
    pub fn fleet(&self) -> Option<&FleetState> {
        self.fleet.as_ref()
    }

    /// Set the fleet record the next [`Learner::commit`] stores.
    pub fn set_fleet(&mut self, fleet: FleetState) {
        self.fleet = Some(fleet);
    }

    /// Record the inbox photos the task just learned came from; the next [`Learner::commit`] stores them with the
    /// parameters they changed (see [`InboxLedger`]).
    pub fn set_inbox_files(&mut self, files: Vec<LedgerFile>) {
        self.inbox.files = files;
    }

    /// The id of class `name`; [`Error::UnknownClass`] when it has not been seen.
    pub fn class_id(&self, name: &str) -> Result<u32> {
        self.classes
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.id)
            .ok_or_else(|| Error::UnknownClass(format!("{name:?}")))
    }

    /// The name of class `id`; [`Error::UnknownClass`] when there is no such class.
    pub fn class_name(&self, id: u32) -> Result<&str> {
        self.classes.get(id as usize).map(|c| c.name.as_str()).ok_or_else(|| Error::UnknownClass(format!("id {id}")))
    }

    /// Task `id` of the registry; [`Error::UnknownTask`] when it has not been learned.
    pub fn task(&self, id: u32) -> Result<&TaskEntry> {
        self.tasks.iter().find(|t| t.id == id).ok_or(Error::UnknownTask { id, known: self.tasks.len() })
    }

    /// What the next [`Learner::learn`] needs in each budget: the method's footprint plus the registries,
    /// metrics and replay samples (as many as the buffer holds after the task) in the state file, the replay
    /// buffer at its capacity, and the copy of its stored samples handed to the method in the workspace.
    pub fn footprint(&self) -> Result<Footprint> {
        self.footprint_with(self.buffer.len())
    }

    /// [`Learner::footprint`] for a task of `incoming` samples.
    fn footprint_with(&self, incoming: usize) -> Result<Footprint> {
        let mut fp = self.method.footprint(&self.model)?;
        let per = crate::replay::bytes_per_sample(self.replay.features());
        let after = (self.replay.len() + incoming).min(self.replay.capacity()) as u64;
        let seen = (self.classes.len() as u64).saturating_mul(15) + 4 * 10;
        fp.state_file = fp.state_file.saturating_add(self.registry_bytes(1)).saturating_add(after * per + seen);
        fp.replay = self.replay.capacity_bytes();
        // The replayed copy: values and usize labels.
        let copy = (self.replay.len() as u64).saturating_mul(4 * self.replay.features() as u64 + 8);
        fp.workspace = fp.workspace.saturating_add(copy);
        Ok(fp)
    }

    /// Upper bound of the registries and metrics in the state file after `more` further tasks.
    fn registry_bytes(&self, more: usize) -> u64 {
        const VARINT: u64 = 10;
        let classes: u64 = self.classes.iter().map(|c| 2 * VARINT + c.name.len() as u64).sum();
        let tasks = (self.tasks.len() + more) as u64;
        let per_task = 4 * VARINT + 16 + VARINT * self.classes.len().max(1) as u64;
        let layers = self.metrics.basis_sizes.first().map_or(4, Vec::len) as u64;
        let metrics = 4 * VARINT + tasks * (9 + VARINT + VARINT * layers);
        4 * VARINT + classes + tasks * per_task + metrics
    }

    fn check_pixels(&self, pixels: &[f32]) -> Result<()> {
        if pixels.len() != self.model.input_len() {
            return Err(shape_err("sample", self.model.input_len(), pixels.len()));
        }
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("sample pixel {i} = {}", pixels[i])));
        }
        Ok(())
    }

    /// Buffer one sample of class `class` (a name). A class not seen before is registered and grows the head by
    /// one output (zero weights), if the profile's `max_classes` and every budget allow it. Returns the class id.
    /// On any error nothing changes.
    pub fn add_sample(&mut self, class: &str, pixels: &[f32]) -> Result<u32> {
        self.check_pixels(pixels)?;
        if self.buffer.is_full() {
            return Err(Error::BufferFull { what: "sample", capacity: CAP });
        }
        let id = match self.class_id(class) {
            Ok(id) => id,
            Err(_) => self.add_class(class)?,
        };
        self.buffer.push(id, pixels)?;
        Ok(id)
    }

    /// Buffer a jittered copy of a photo of the registered class `class` (`firmware::augment`): learned like any
    /// buffered sample, but the inbox ledger's `samples_learned` counts photos and protocol samples, not their
    /// copies. [`Error::UnknownClass`] for an id not registered; on any error nothing changes.
    pub fn add_copy(&mut self, class: u32, pixels: &[f32]) -> Result<()> {
        self.add_sample_id(class, pixels)?;
        self.copies += 1;
        Ok(())
    }

    /// Buffer one sample of an already registered class id; [`Error::UnknownClass`] for an id not registered.
    pub fn add_sample_id(&mut self, class: u32, pixels: &[f32]) -> Result<()> {
        self.class_name(class)?;
        self.check_pixels(pixels)?;
        self.buffer.push(class, pixels)
    }

    /// The id of class `name`, registering it first when it is new ([`Learner::add_sample`]'s rule: the head
    /// grows by one zero row, within `max_classes` and every budget). On any error nothing changes.
    pub fn ensure_class(&mut self, name: &str) -> Result<u32> {
        match self.class_id(name) {
            Ok(id) => Ok(id),
            Err(_) => self.add_class(name),
        }
    }

    /// Register class `name`: check it, grow the head by one zero row, check the footprint of the grown model
    /// (restoring the old head if it does not fit), resize the method's per-parameter state
    /// ([`Method::params_grown`], which leaves the method unchanged on error).
    fn add_class(&mut self, name: &str) -> Result<u32> {
        check_class_name(name)?;
        if self.model.heads.len() != 1 {
            return Err(Error::Config(
                "classes are registered only on the single-head (class-incremental) learner".into(),
            ));
        }
        if self.classes.len() >= self.profile.max_classes {
            return Err(Error::TooManyClasses { name: name.to_string(), max: self.profile.max_classes });
        }
        let id = u32::try_from(self.classes.len()).map_err(|_| Error::Config("class ids exhausted".into()))?;
        let old_head = self.model.heads[0].clone();
        let growth = self.model.grow_head(0, self.classes.len() + 1)?;
        let grown = self.method.footprint(&self.model).and_then(|mut fp| {
            fp.state_file = fp.state_file.saturating_add(self.registry_bytes(1) + 2 * 10 + name.len() as u64);
            check_budget(&self.profile, &fp, Scope::Step, name)
        });
        if let Err(e) = grown.and_then(|()| self.method.params_grown(&growth)) {
            self.model.heads[0] = old_head;
            return Err(e);
        }
        self.classes.push(ClassEntry { id, name: name.to_string() });
        tracing::info!(class = name, id, outputs = self.classes.len(), "new class: head grown");
        Ok(id)
    }

    /// Learn the buffered samples as one new task (the board's path: protocol samples and inbox photos). The
    /// footprint is checked first ([`Error::OverBudget`], nothing changed, the samples stay buffered);
    /// [`Error::Empty`] without samples. The validation split is [`split_indices`]' (none when the method trains
    /// nothing, [`Method::uses_validation`]); every buffered sample is offered to the replay buffer. On success
    /// the task is registered, α and the basis sizes are recorded and the buffer is emptied.
    pub fn learn(&mut self) -> Result<TaskReport> {
        if self.buffer.is_empty() {
            return Err(Error::Empty("no samples buffered: add samples before learning".into()));
        }
        let report = self.learn_samples(&self.buffer.all()?, &mut Silent)?;
        self.inbox.samples_learned = self.inbox.samples_learned.saturating_sub(self.copies as u64);
        self.clear_buffer();
        Ok(report)
    }

    /// Learn `photos` (labels: registered class ids, in arrival order) as one new task exactly as the board learns
    /// the same samples through its buffer ([`Learner::learn`]): the same validation rule, the same replay, the same
    /// random streams; for streams whose tasks do not fit the sample buffer (host simulation with `--board`).
    /// Buffered samples are not touched.
    pub fn learn_samples(&mut self, photos: &Samples, progress: &mut dyn Progress) -> Result<TaskReport> {
        let (train, val) = if self.method.uses_validation() {
            let (t, v) = split_indices(photos.len());
            (photos.select(&t), photos.select(&v))
        } else {
            (photos.clone(), photos.select(&[]))
        };
        self.learn_split(0, &train, &val, photos, progress)
    }

    /// Learn one task whose training and validation splits are given (host simulation of the papers' protocol:
    /// the stream's own validation slice), through head `task.head` (task-incremental learners have one per task).
    /// Labels are class ids of that head. The training split is offered to the replay buffer.
    pub fn learn_task(&mut self, task: &TaskData<'_>, progress: &mut dyn Progress) -> Result<TaskReport> {
        self.learn_split(task.head, task.train, task.val, task.train, progress)
    }

    /// The one learning step behind [`Learner::learn`], [`Learner::learn_samples`] and [`Learner::learn_task`]:
    /// check the samples and the footprint, replay the stored samples to the method, learn, offer `offered` to
    /// the replay buffer, record the task. On error nothing the learner keeps has changed except the model and
    /// method a failing method may have touched mid-task.
    fn learn_split(
        &mut self,
        head: usize,
        train: &Samples,
        val: &Samples,
        offered: &Samples,
        progress: &mut dyn Progress,
    ) -> Result<TaskReport> {
        if train.is_empty() {
            return Err(Error::Empty("a task needs training samples".into()));
        }
        let id = u32::try_from(self.tasks.len()).map_err(|_| Error::Config("task ids exhausted".into()))?;
        let outputs = self.model.head_outputs(head)?;
        for s in [train, val, offered] {
            if s.features() != self.model.input_len() {
                return Err(shape_err("task samples", self.model.input_len(), s.features()));
            }
            if s.check_labels(outputs).is_err() {
                return Err(Error::UnknownClass(format!("a label of task {id} is not a class of head {head}")));
            }
        }
        self.method.set_bases_budget(Some(self.profile.budget.bases));
        check_budget(&self.profile, &self.footprint_with(offered.len())?, Scope::Step, "task")?;
        // The stored samples before this task are replayed (one copy, counted in the footprint's workspace); this
        // task's samples are checked now and offered to the buffer only once the task was learned, so a refused
        // task changes nothing and no second copy of the buffer is ever held.
        let stored = if self.replay.is_empty() { None } else { Some(self.replay.samples()?) };
        let checked = self.replay.check_all(offered)?;
        let task = TaskData { task_id: id as usize, head, train, val };
        let mut ctx = LearnContext { rng: &mut self.rng, progress, replay: stored.as_ref() };
        let report = self.method.learn_task(&mut self.model, &task, &mut ctx)?;
        drop(stored);
        self.replay.offer_checked(offered, checked, &mut self.replay_rng);
        let mut classes: Vec<u32> = offered.y.iter().map(|&c| c as u32).collect();
        classes.sort_unstable();
        classes.dedup();
        self.tasks.push(TaskEntry { id, name: format!("task {id}"), head: head as u32, classes });
        self.metrics.alphas.push(report.alpha);
        self.metrics.basis_sizes.push(report.basis_sizes.iter().map(|&k| k as u32).collect());
        self.inbox.samples_learned = self.inbox.samples_learned.saturating_add(offered.len() as u64);
        self.inbox.files.clear();
        Ok(report)
    }

    /// Loss and accuracy of the model on `samples` through head `head` (batches of `batch`; the model's
    /// evaluation mode, nothing learned).
    pub fn evaluate(&mut self, samples: &Samples, head: usize, batch: usize) -> Result<(f32, f32)> {
        edgelearn_core::train::evaluate(&mut self.model, samples, head, batch)
    }

    /// The class id the model predicts for one sample.
    pub fn predict(&mut self, pixels: &[f32]) -> Result<u32> {
        self.check_pixels(pixels)?;
        if self.classes.is_empty() {
            return Err(Error::Empty("no classes learned yet".into()));
        }
        let x = Array2::from_shape_vec((1, pixels.len()), pixels.to_vec()).map_err(|e| shape_err("sample", 1, e))?;
        let pred = self.model.predict(&x.view(), 0)?;
        Ok(pred[0] as u32)
    }

    /// Everything as one state value (what [`Learner::commit`] writes).
    pub fn state(&self) -> Result<LearnerState> {
        let ms = self.method.export_state()?;
        let mut state = LearnerState::from_model(&self.model, self.arch.clone())?;
        state.bases = ms.bases;
        state.fisher = ms.fisher;
        state.slda = ms.slda;
        state.tasks = self.tasks.clone();
        state.classes = self.classes.clone();
        state.metrics = self.metrics.clone();
        state.inbox = self.inbox.clone();
        state.replay = self.replay.to_state()?;
        state.fleet = self.fleet.clone();
        Ok(state)
    }

    /// Commit the learner's state to the store (crash-safe, see [`StateStore::commit`]); returns the generation.
    /// Buffered samples are not part of the state.
    pub fn commit(&mut self) -> Result<u64> {
        let mut state = self.state()?;
        let store = self.store.as_mut().ok_or_else(|| Error::Config("no state store (use with_store)".into()))?;
        store.commit(&mut state)
    }
}

/// Restoring a committed state: the method is rebuilt on a copy, so that a state that does not fit leaves the
/// learner as it was.
impl<M: Method + Clone, const CAP: usize> Learner<M, CAP> {
    /// Load the newest committed state (after a restart). `Ok(None)` on a fresh store, otherwise the generation.
    /// Everything is rebuilt on the side and swapped in only when it is complete and consistent with this model
    /// and profile; on any error (corrupt slots, a newer format, another model, over budget, a stored replay
    /// buffer over the `replay` budget or of another sample width) the learner is unchanged. A state file older
    /// than format version 3 loads with an empty replay buffer. Buffered samples are discarded on success.
    pub fn load(&mut self) -> Result<Option<u64>> {
        let store = self.store.as_mut().ok_or_else(|| Error::Config("no state store (use with_store)".into()))?;
        let Some(loaded) = store.load()? else { return Ok(None) };
        self.install(loaded.state).map(Some)
    }

    /// Replace everything by `state` (a fleet model's state, [`crate::fleet::adopt`]) and commit it as the next
    /// generation, which it returns. The state is checked and built on the side exactly as [`Learner::load`]
    /// does, so a state that does not fit leaves the learner and the store unchanged; the commit is the store's,
    /// so a power cut leaves the old state or the adopted one on disk, never a mix. If the commit fails, the
    /// learner goes back to the committed state. Buffered samples are discarded.
    pub fn adopt(&mut self, state: LearnerState) -> Result<u64> {
        if self.store.is_none() {
            return Err(Error::Config("no state store (use with_store)".into()));
        }
        self.install(state)?;
        match self.commit() {
            Ok(generation) => Ok(generation),
            Err(e) => {
                if let Err(back) = self.load() {
                    tracing::error!(error = %back, "could not reload the committed state after a failed adoption");
                }
                Err(e)
            }
        }
    }

    /// Check `state` against this model and profile, rebuild everything from it on the side and swap it in;
    /// returns its generation. On any error the learner is unchanged.
    fn install(&mut self, state: LearnerState) -> Result<u64> {
        let [outputs] = state.model.head_outputs[..] else {
            return Err(Error::Config(format!(
                "stored model has {} heads, the learner needs one",
                state.model.head_outputs.len()
            )));
        };
        let outputs = outputs as usize;
        if state.classes.len() != outputs || state.classes.iter().enumerate().any(|(i, c)| c.id as usize != i) {
            return Err(Error::Config("stored class registry does not number the head's outputs 0..n".into()));
        }
        if outputs > self.profile.max_classes {
            let name = state.classes[self.profile.max_classes].name.clone();
            return Err(Error::TooManyClasses { name, max: self.profile.max_classes });
        }
        let old = &self.model.heads[0];
        // The SLDA head gains a bias on the first task: the stored layout says whether the head has one.
        let has_bias = old.bias.is_some() || state.layout.iter().any(|p| p.name == "head.0.bias");
        let bias = has_bias.then(|| ndarray::Array1::zeros(outputs));
        let head = Linear::from_weights("head.0", Array2::zeros((outputs, old.in_features())), bias)?;
        let mut model = Model::new(self.model.input_shape.clone(), self.model.trunk.clone(), vec![head])?;
        // `+id` widens the trunk's Linears and the head before the first task (a function of the shapes alone): a
        // state whose first trunk Linear is that wide gets the widening back.
        if crate::method::identity_skip_of(&self.model, |name| {
            state.layout.iter().find(|p| p.name == name).map(|p| p.shape.clone())
        }) {
            crate::method::ensure_identity_skip(&mut model)?;
        }
        // RanPAC's expansion (`rp<M>`) is added on the first task and is a function of its widths alone: a state
        // whose trunk ends with it gets it back at the stored head's input width.
        if state.model.trunk.ends_with(&["RandomFeatures".to_string(), "Relu".to_string()])
            && let Some(m) = state.layout.iter().find(|p| p.name == "head.0.weight").and_then(|p| p.shape.get(1))
        {
            crate::method::ensure_random_features(&mut model, *m as usize)?;
        }
        model.clear_cache();
        state.restore_params(&mut model)?;
        let mut method = self.method.clone();
        let ms = MethodState {
            tasks_seen: state.tasks.len(),
            bases: state.bases.clone(),
            fisher: state.fisher.clone(),
            slda: state.slda.clone(),
        };
        method.import_state(&model, ms)?;
        method.set_bases_budget(Some(self.profile.budget.bases));
        check_budget(&self.profile, &method.footprint(&model)?, Scope::Resident, "stored state")?;
        let replay = ReplayBuffer::from_state(&state.replay, self.replay.capacity(), self.model.input_len())?;
        let generation = state.generation;
        self.model = model;
        self.replay = replay;
        self.method = method;
        self.classes = state.classes;
        self.tasks = state.tasks;
        self.metrics = state.metrics;
        self.inbox = state.inbox;
        self.fleet = state.fleet;
        self.clear_buffer();
        Ok(generation)
    }
}

#[cfg(test)]
mod tests;
