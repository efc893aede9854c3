//! GPM as a method: projected SGD for every task after the first, bases updated after each task.

use std::time::Instant;

use super::class_il::{ClassIl, first_task_plain, task_classes, with_replay};
use super::prototype::SldaStats;
use super::{LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::gpm::{BasisUpdate, FreezeVectors, Gpm, GpmConfig};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::Model;
use edgelearn_core::train::{GradHook, NoHook, TrainConfig, train};
use edgelearn_store::BasisState;

/// Gradient Projection Memory (Saha et al., 2021).
#[derive(Debug, Clone)]
pub struct GpmMethod {
    /// Training settings (best-validation restore on).
    pub train: TrainConfig,
    /// GPM settings.
    pub gpm_cfg: GpmConfig,
    /// Bases, created on the first task.
    pub gpm: Option<Gpm>,
    /// Bytes the bases may take ([`Gpm::max_bytes`]; `None`: unlimited).
    pub bases_budget: Option<u64>,
    /// Class-incremental options ([`super::class_il`]; the head-merge choice does not apply, nothing is merged).
    pub ci: ClassIl,
    /// SLDA statistics of the `slda` option (`None` before the first task or without it).
    slda: Option<SldaStats>,
    tasks_seen: usize,
}

impl GpmMethod {
    /// GPM with the given settings.
    pub fn new(train: TrainConfig, gpm_cfg: GpmConfig) -> Self {
        Self { train, gpm_cfg, gpm: None, bases_budget: None, ci: ClassIl::default(), slda: None, tasks_seen: 0 }
    }

    /// The same with the class-incremental options `ci` and the labels trick on or off.
    pub fn with_class_il(mut self, ci: ClassIl, labels_trick: bool) -> Self {
        self.ci = ci;
        self.train.labels_trick = labels_trick;
        self
    }

    /// Number of tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }
}

/// Stage 1 shared by GPM and BECAME: plain SGD on the first task, projected SGD (with 1-D parameters frozen)
/// afterwards. Returns the training log and the elapsed seconds.
pub(crate) fn projected_stage(
    gpm: &Gpm,
    first: bool,
    model: &mut Model,
    task: &TaskData<'_>,
    cfg: &TrainConfig,
    ctx: &mut LearnContext<'_>,
    stage: &str,
) -> Result<(edgelearn_core::train::TrainLog, f64)> {
    let t0 = Instant::now();
    let log = if first {
        train(model, task, cfg, &mut NoHook, ctx.rng, ctx.progress, stage)?
    } else {
        gpm.attach(model)?;
        let mut hook = FreezeVectors { heads: gpm.cfg.project_heads };
        let r = train(model, task, cfg, &mut hook as &mut dyn GradHook, ctx.rng, ctx.progress, stage);
        gpm.detach(model)?;
        r?
    };
    Ok((log, t0.elapsed().as_secs_f64()))
}

/// Update the bases from the model as it is now (GPM: θ after training; BECAME: the merged θ*), within
/// `budget` bytes; returns the elapsed seconds and the per-layer updates.
pub(crate) fn update_bases(
    gpm: &mut Gpm,
    budget: Option<u64>,
    model: &mut Model,
    task: &TaskData<'_>,
    task_index: usize,
    ctx: &mut LearnContext<'_>,
) -> Result<(f64, Vec<BasisUpdate>)> {
    let t0 = Instant::now();
    gpm.max_bytes = budget;
    let reps = gpm.representations(model, task, ctx.rng)?;
    let updates = gpm.update(&reps, task_index)?;
    for (l, u) in updates.iter().enumerate() {
        tracing::debug!(layer = l, before = u.before, after = u.after, captured = u.captured, "GPM basis");
    }
    Ok((t0.elapsed().as_secs_f64(), updates))
}

/// `(d_in, k)` of each layer GPM projects on `model`: from the bases when they exist, else the layers GPM would
/// create (all with k = 0).
pub(crate) fn gpm_layers(gpm: Option<&Gpm>, model: &Model, cfg: &GpmConfig) -> Result<Vec<(usize, usize)>> {
    Ok(match gpm {
        Some(g) => g.bases.iter().map(|b| b.dim()).collect(),
        None => Gpm::for_model(model, cfg.clone())?.bases.iter().map(|b| b.dim()).collect(),
    })
}

/// SLDA statistics restored from the store for `model` (head 0's input width). Refused: statistics for a method
/// without the `slda` option, and a state of `tasks_seen > 0` tasks without statistics for a method with it (a
/// state written before format version 4 or by another method: its classes have no statistics to answer with,
/// and its parameter list has no head bias).
pub(crate) fn restore_slda(
    model: &Model,
    slda_head: bool,
    tasks_seen: usize,
    stored: Option<&edgelearn_store::SldaState>,
) -> Result<Option<SldaStats>> {
    match stored {
        None if slda_head && tasks_seen > 0 => Err(Error::Config(format!(
            "the stored state has {tasks_seen} task(s) learned without SLDA statistics (a state file older than \
             format version 4, or another method); this method's SLDA head cannot answer for those classes: start \
             from a fresh state or keep the method that wrote it"
        ))),
        None => Ok(None),
        Some(_) if !slda_head => {
            Err(Error::Config("the stored state has SLDA statistics; the method has no slda head".into()))
        }
        Some(st) => {
            let d = model.heads.first().map_or(0, |h| h.in_features());
            SldaStats::from_state(st, d).map(Some)
        }
    }
}

/// Bases restored from the store for `model` (an error when they do not fit its projected layers).
pub(crate) fn restore_gpm(model: &Model, cfg: &GpmConfig, bases: &[BasisState]) -> Result<Option<Gpm>> {
    if bases.is_empty() {
        return Ok(None);
    }
    let mut gpm = Gpm::for_model(model, cfg.clone())?;
    gpm.restore_states(bases)?;
    for (l, b) in gpm.bases.iter().enumerate() {
        if b.ncols() > b.nrows() {
            return Err(Error::Config(format!(
                "stored GPM basis {l} has {} columns for d_in {}",
                b.ncols(),
                b.nrows()
            )));
        }
    }
    Ok(Some(gpm))
}

impl Method for GpmMethod {
    /// `gpm` and the class-incremental suffix; first-session adaptation is `fsa` and the suffix (it projects
    /// nothing).
    fn name(&self) -> String {
        let base = if self.ci.first_session { "fsa" } else { "gpm" };
        format!("{base}{}", self.ci.suffix(self.train.labels_trick))
    }

    /// A trunk that never trains (`+ft`) holds nothing out.
    fn uses_validation(&self) -> bool {
        !self.ci.frozen_trunk
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        self.ci.prepare_model(model, self.tasks_seen)?;
        let gpm = match &mut self.gpm {
            Some(g) => g,
            None => self.gpm.insert(Gpm::for_model(model, self.gpm_cfg.clone())?),
        };
        let first = self.tasks_seen == 0;
        let before = self.ci.slda_begin(model, task, ctx.replay, self.slda.as_ref())?;
        let new_rows = task_classes(model, task)?;
        // `+ft` trains nothing, `fsa` only the first task; neither ever projects, so neither builds bases.
        let (log, t_train) = if self.ci.trains_trunk(self.tasks_seen) {
            let train1 = if self.ci.replay_stage1 { Some(with_replay(task.train, ctx.replay)?) } else { None };
            let task1 = TaskData { train: train1.as_ref().unwrap_or(task.train), ..*task };
            let cfg = first_task_plain(&self.train, first);
            let trained = projected_stage(gpm, first, model, &task1, &cfg, ctx, "stage1")?;
            self.ci.correct_head(model, task, &new_rows, &self.train, ctx)?;
            trained
        } else {
            (edgelearn_core::train::TrainLog::default(), 0.0)
        };
        let (t_basis, updates) = if self.ci.frozen_trunk || self.ci.first_session {
            (0.0, Vec::new())
        } else {
            update_bases(gpm, self.bases_budget, model, task, self.tasks_seen, ctx)?
        };
        let mut timings = vec![("stage1".into(), t_train), ("basis".into(), t_basis)];
        if let Some(t) = self.ci.slda_end(model, task, ctx.replay, before.as_ref(), &mut self.slda)? {
            timings.push(("slda".into(), t));
        }
        self.tasks_seen += 1;
        let basis_sizes = gpm.basis_sizes();
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("stage1".into(), log)],
            alpha: None,
            basis_sizes,
            timings,
            bytes_kept: self.bytes_kept(),
            basis_energy_lost: updates.iter().map(|u| u.energy_lost).collect(),
            ..TaskReport::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        self.gpm.as_ref().map_or(0, Gpm::bytes) + self.slda.as_ref().map_or(0, SldaStats::bytes)
    }

    /// Plain SGD's workspace (best-validation copy) plus GPM's projectors, representations and SVD; with the
    /// `slda` option its statistics are kept ([`super::prototype::slda_bytes`]).
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let model = &*self.ci.shaped(model, self.tasks_seen)?;
        let plan = StepPlan {
            gpm_layers: gpm_layers(self.gpm.as_ref(), model, &self.gpm_cfg)?,
            gpm_samples: self.gpm_cfg.samples,
            bases_cap: self.bases_budget,
            // The SLDA statistics of the `slda` option, in the `fisher` budget as BECAME counts them.
            kept_bytes: super::prototype::slda_bytes_for(model, self.ci.slda_head),
            ..sgd_plan(&self.train)
        };
        Footprint::estimate(model, &plan)
    }

    fn set_bases_budget(&mut self, bytes: Option<u64>) {
        self.bases_budget = bytes;
    }

    /// The bases, and the SLDA statistics of the `slda` option.
    fn export_state(&self) -> Result<MethodState> {
        let bases = self.gpm.as_ref().map(Gpm::to_states).transpose()?.unwrap_or_default();
        let slda = self.slda.as_ref().map(SldaStats::to_state).transpose()?;
        Ok(MethodState { tasks_seen: self.tasks_seen, bases, fisher: None, slda })
    }

    fn import_state(&mut self, model: &Model, state: MethodState) -> Result<()> {
        if state.fisher.is_some() {
            return Err(Error::Config("GPM keeps no Fisher; the stored state has one".into()));
        }
        if state.tasks_seen > 0 && state.bases.is_empty() && !(self.ci.frozen_trunk || self.ci.first_session) {
            return Err(Error::Config("stored GPM state has tasks but no bases".into()));
        }
        let gpm = restore_gpm(model, &self.gpm_cfg, &state.bases)?;
        let slda = restore_slda(model, self.ci.slda_head, state.tasks_seen, state.slda.as_ref())?;
        self.gpm = gpm;
        self.slda = slda;
        self.tasks_seen = state.tasks_seen;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::Rng;

    use super::*;
    use crate::method::Shrinkage;
    use edgelearn_core::data::Samples;
    use edgelearn_core::nn::zoo;
    use edgelearn_core::train::Silent;

    /// A 2-class task (labels `offset`, `offset + 1`: the sign of `feature`) of 48 training and 16 validation
    /// samples of 6 features.
    fn task(seed: u64, feature: usize, offset: usize) -> (Samples, Samples) {
        let mut rng = edgelearn_core::seeded_rng(seed);
        let mut make = |n: usize| {
            let x = Array2::from_shape_fn((n, 6), |_| rng.random_range(-1.0f32..1.0));
            let y = (0..n).map(|i| offset + usize::from(x[[i, feature]] > 0.0)).collect();
            Samples::new(x, y).unwrap()
        };
        (make(48), make(16))
    }

    /// First-session adaptation (`fsa+slda+oas`): the trunk trains on the first task and never again, no basis
    /// is built, and the head is streaming LDA with OAS over the frozen trunk's features of every class.
    #[test]
    fn first_session_adaptation_trains_the_first_task_only() {
        let (ci, lt) = ClassIl::parse_tokens(["fsa", "slda", "oas"]).unwrap();
        let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: true };
        let mut method = GpmMethod::new(cfg, gcfg).with_class_il(ci, lt);
        assert_eq!(method.name(), "fsa+slda+oas");
        let mut model = zoo::mlp(6, &[8], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let trunk_of = |m: &Model| format!("{:?}", m.trunk);
        let initial = trunk_of(&model);
        let mut rng = edgelearn_core::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        let (tr1, va1) = task(1, 0, 0);
        let r1 = method.learn_task(&mut model, &TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 }, &mut ctx);
        let r1 = r1.unwrap();
        assert!(!r1.stages[0].1.epochs.is_empty(), "the first task trains");
        let adapted = trunk_of(&model);
        assert_ne!(adapted, initial, "the first task moves the trunk");
        let growth = model.grow_head(0, 4).unwrap();
        method.params_grown(&growth).unwrap();
        let (tr2, va2) = task(2, 3, 2);
        let r2 = method.learn_task(&mut model, &TaskData { task_id: 1, head: 0, train: &tr2, val: &va2 }, &mut ctx);
        let r2 = r2.unwrap();
        assert!(r2.stages[0].1.epochs.is_empty(), "the second task trained");
        assert_eq!(trunk_of(&model), adapted, "the trunk moved after the first task");
        assert!(r2.basis_sizes.iter().all(|&k| k == 0), "a basis was built: {:?}", r2.basis_sizes);
        let st = method.slda.as_ref().unwrap();
        assert_eq!(
            st.means.count,
            vec![48 - st.means.count[1], st.means.count[1], 48 - st.means.count[3], st.means.count[3]]
        );
        let (w, b) = st.head(Shrinkage::Oas).unwrap();
        assert_eq!(model.heads[0].w().to_owned(), w);
        assert_eq!(model.heads[0].bias.as_ref().unwrap().value.iter().copied().collect::<Vec<_>>(), b.to_vec());
        assert_ne!(st.head(Shrinkage::default()).unwrap().0, w, "OAS is not the fixed ε here");
    }
}
