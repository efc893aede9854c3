//! BECAME (Li et al., ICML 2025) on top of GPM or Adam-NSCL: a projected stage, an unconstrained stage, and a
//! closed-form Fisher-weighted merge of the two with one global coefficient α.
//!
//! With Adam-NSCL as stage 1 ([`Became::with_adam_nscl`], `adam-nscl+became`) everything but stage 1 and the
//! layer memory is unchanged: stage 1 is Adam-NSCL's null-space-projected Adam (plain Adam on task 1) → θ_NS in the
//! role of θ_GP; stage 2 is the same fresh plain SGD from θ_NS; α and θ* are computed by the same code; and the
//! input covariances are updated from θ* where GPM's bases would be.

use std::time::Instant;

use super::AdamNscl;
use super::class_il::{
    ClassIl, HeadMerge, first_task_plain, group_alphas, merge_groups, param_groups, task_classes, with_replay,
};
use super::gpm::{gpm_layers, projected_stage, restore_gpm, restore_slda, update_bases};
use super::prototype::{SldaStats, slda_refit};
use super::{LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::fisher::{CompactFisher, FisherFormat, compact, diagonal_fisher};
use crate::gpm::{Gpm, GpmConfig};
use crate::merge::{add_assign, became_alpha, interpolate};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::{Model, ParamGrowth};
use edgelearn_core::train::{NoHook, TrainConfig, train};

/// GPM + BECAME.
///
/// Task 1: plain SGD → θ₁; `F_old = Fisher(θ₁)`; bases from θ₁.
/// Task t ≥ 2: stage 1, GPM-projected SGD from θ*₍t−1₎ with best-validation restore → θ_GP; stage 2, a fresh
/// plain SGD (no projection, every parameter trainable, schedule restarted, no restore) from θ_GP → θ̂;
/// `F_cur = Fisher(θ̂)`; α = [`became_alpha`]; `θ* = (1 − α) θ_GP + α θ̂`; `F_old ← F_old + Fisher(θ*)`;
/// bases from θ*.
///
/// Between tasks it keeps only the bases and one accumulated Fisher vector, stored in [`Became::fisher_format`]:
/// after every addition `F_old` is encoded ([`compact::encode`]) and from then on only its decoded form is used,
/// exactly as a device that keeps it compactly would (decode → add the new Fisher in f32 → re-encode). `F_cur`
/// and the Fisher of θ* are transient and always f32.
#[derive(Debug, Clone)]
pub struct Became {
    /// Stage-1 training settings (best-validation restore on).
    pub stage1: TrainConfig,
    /// Stage-2 training settings (restore forced off).
    pub stage2: TrainConfig,
    /// GPM settings.
    pub gpm_cfg: GpmConfig,
    /// Bases, created on the first task.
    pub gpm: Option<Gpm>,
    /// How the accumulated Fisher is stored between tasks (default f32: lossless).
    pub fisher_format: FisherFormat,
    /// Bytes the bases may take ([`Gpm::max_bytes`]; `None`: unlimited).
    pub bases_budget: Option<u64>,
    /// Accumulated Fisher of the merged models, flat: the decoded form of [`Self::f_old_stored`], the only
    /// version the method uses.
    pub f_old: Vec<f32>,
    f_old_stored: Option<CompactFisher>,
    /// Stage 1 by Adam-NSCL instead of GPM (then [`Self::gpm_cfg`] and [`Self::gpm`] are unused).
    pub nscl: Option<AdamNscl>,
    /// Class-incremental options (all off: the method as published); see [`super::class_il`].
    pub ci: ClassIl,
    /// SLDA statistics of the `slda` class-incremental option.
    slda: Option<SldaStats>,
    tasks_seen: usize,
}

/// What one task of [`Became`] computed, handed to the observer of [`Became::learn_task_observed`] (for
/// measurements such as the α each compact Fisher format would have given; the method does not depend on it).
#[derive(Debug, Clone, Copy)]
pub struct BecameTrace<'a> {
    /// Task index in the stream.
    pub task_id: usize,
    /// The merge of a task ≥ 2; `None` on the first task.
    pub merge: Option<MergeTrace<'a>>,
    /// The f32 Fisher added to `F_old` after this task: `Fisher(θ₁)` on the first task, `Fisher(θ*)` later.
    pub fisher_added: &'a [f32],
}

/// The inputs and result of one BECAME merge (task ≥ 2).
#[derive(Debug, Clone, Copy)]
pub struct MergeTrace<'a> {
    /// Stage-1 (GPM-projected) parameters θ_GP.
    pub theta_gp: &'a [f32],
    /// Stage-2 (unconstrained) parameters θ̂.
    pub theta_hat: &'a [f32],
    /// `F_cur = Fisher(θ̂)`, f32.
    pub f_cur: &'a [f32],
    /// The accumulated Fisher the merge used (decoded from its stored format).
    pub f_old: &'a [f32],
    /// The merge coefficient α.
    pub alpha: f64,
}

impl Became {
    /// BECAME with stage 2 using the same schedule as stage 1 (without the best-validation restore).
    pub fn new(stage1: TrainConfig, gpm_cfg: GpmConfig) -> Self {
        let stage2 = TrainConfig { restore_best: false, ..stage1.clone() };
        Self {
            stage1,
            stage2,
            gpm_cfg,
            gpm: None,
            fisher_format: FisherFormat::F32,
            bases_budget: None,
            f_old: Vec::new(),
            f_old_stored: None,
            nscl: None,
            ci: ClassIl::default(),
            slda: None,
            tasks_seen: 0,
        }
    }

    /// Adam-NSCL + BECAME: stage 1 by `nscl` (its own Adam schedule), stage 2 plain SGD with `stage2` (restore off).
    /// Host-side comparison (feature `baselines`).
    #[cfg(feature = "baselines")]
    pub fn with_adam_nscl(nscl: AdamNscl, stage2: TrainConfig) -> Self {
        let layers_only = GpmConfig {
            thresholds: Vec::new(),
            threshold_increment: 0.0,
            samples: 1,
            project_heads: nscl.cfg.project_heads,
        };
        let mut b = Self::new(nscl.cfg.train.clone(), layers_only);
        b.stage2 = TrainConfig { restore_best: false, ..stage2 };
        b.nscl = Some(nscl);
        b
    }

    /// The same, storing `F_old` in `format` between tasks.
    pub fn with_fisher_format(mut self, format: FisherFormat) -> Self {
        self.fisher_format = format;
        self
    }

    /// The same with the class-incremental options `ci`; the labels trick is set on both stages' training.
    pub fn with_class_il(mut self, ci: ClassIl, labels_trick: bool) -> Self {
        self.ci = ci;
        self.stage1.labels_trick = labels_trick;
        self.stage2.labels_trick = labels_trick;
        self
    }

    /// The accumulated Fisher as stored between tasks (`None` before the first task).
    pub fn f_old_stored(&self) -> Option<&CompactFisher> {
        self.f_old_stored.as_ref()
    }

    /// `F_old ← F_old + added`, stored in [`Became::fisher_format`] (and decoded from it); returns the `F_old`
    /// it replaced. On error `F_old` is unchanged.
    fn accumulate_f_old(&mut self, added: &[f32]) -> Result<Vec<f32>> {
        let mut f_new = self.f_old.clone();
        add_assign(&mut f_new, added)?;
        let (decoded, stored) = store(&f_new, self.fisher_format)?;
        self.f_old_stored = stored;
        Ok(std::mem::replace(&mut self.f_old, decoded))
    }

    /// Number of tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }
}

/// `F_old` as the device keeps it: encoded in `format`, and the decoded form the method uses from then on.
fn store(f: &[f32], format: FisherFormat) -> Result<(Vec<f32>, Option<CompactFisher>)> {
    let stored = compact::encode(f, format)?;
    Ok((stored.decode(), Some(stored)))
}

impl Method for Became {
    /// `gpm+became` (or `adam-nscl+became`), with `:<format>` appended when `F_old` is stored in anything but f32
    /// (e.g. `gpm+became:q4`).
    fn name(&self) -> String {
        let base = if self.nscl.is_some() { "adam-nscl+became" } else { "gpm+became" };
        let base = format!("{base}{}", self.ci.suffix(self.stage1.labels_trick));
        match self.fisher_format {
            FisherFormat::F32 => base,
            f => format!("{base}:{f}"),
        }
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        self.learn_task_observed(model, task, ctx, &mut |_| {})
    }

    /// `+ft` trains nothing: every sample goes into the statistics.
    fn uses_validation(&self) -> bool {
        !self.ci.frozen_trunk
    }

    fn bytes_kept(&self) -> usize {
        self.gpm.as_ref().map_or(0, Gpm::bytes)
            + self.nscl.as_ref().map_or(0, AdamNscl::bytes)
            + self.f_old_stored.as_ref().map_or(0, CompactFisher::bytes)
            + self.slda.as_ref().map_or(0, SldaStats::bytes)
    }

    /// GPM's footprint, plus: `F_old` in [`Became::fisher_format`] and, with the `slda` option, the SLDA
    /// statistics ([`super::prototype::slda_bytes`]) (the `fisher` budget), the Fisher estimator
    /// (batches of 64, f64 accumulator) and nine transient full-length f32 vectors: the best-validation copy of a
    /// training stage, θ_GP, θ̂, `F_cur`, θ*, `Fisher(θ*)`, `F_old + Fisher(θ*)` before encoding, its decoded form,
    /// and the decoded `F_old` the method works with. With Adam-NSCL as stage 1, its plan ([`AdamNscl`]'s
    /// covariances and Adam moments) replaces GPM's.
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let model = &*self.ci.shaped(model, self.tasks_seen)?;
        let stored = self.fisher_format.storage_bytes(model.num_params()) as u64;
        if let Some(n) = &self.nscl {
            let base = n.plan(model)?;
            let plan = StepPlan {
                flat_copies: base.flat_copies + 8,
                fisher_pass: true,
                kept_bytes: stored,
                stored_fisher_bytes: stored,
                batch_size: base.batch_size.max(self.stage2.batch_size),
                ..base
            };
            return Footprint::estimate(model, &plan);
        }
        let plan = StepPlan {
            flat_copies: 9,
            fisher_pass: true,
            gpm_layers: gpm_layers(self.gpm.as_ref(), model, &self.gpm_cfg)?,
            gpm_samples: self.gpm_cfg.samples,
            bases_cap: self.bases_budget,
            // The SLDA statistics (`slda` option) are kept beside F_old, in the same budget.
            kept_bytes: stored + super::prototype::slda_bytes_for(model, self.ci.slda_head),
            stored_fisher_bytes: stored,
            ..sgd_plan(&self.stage1)
        };
        let mut fp = Footprint::estimate(model, &plan)?;
        // The drift probe without stored samples (`slda` + `sdc`): the task samples' features before and after.
        if self.ci.slda_head && self.ci.drift {
            let d = model.heads.first().map_or(0, |h| h.in_features()) as u64;
            fp.workspace = fp.workspace.saturating_add(2 * 4 * d * super::class_il::DRIFT_PROBE_SAMPLES as u64);
        }
        Ok(fp)
    }

    fn set_bases_budget(&mut self, bytes: Option<u64>) {
        self.bases_budget = bytes;
    }

    /// `F_old` gets exact zeros for the new parameters (nothing old depends on them) and is re-encoded in its
    /// format; zeros stay zeros and the old entries' codes do not move (every format re-encodes a decoded vector to
    /// itself, and new zeros change no per-tensor or per-block scale).
    fn params_grown(&mut self, growth: &ParamGrowth) -> Result<()> {
        if self.f_old_stored.is_none() || growth.is_identity() {
            return Ok(());
        }
        let grown = growth.resize(&self.f_old, 0.0)?;
        (self.f_old, self.f_old_stored) = store(&grown, self.fisher_format)?;
        Ok(())
    }

    fn export_state(&self) -> Result<MethodState> {
        if let Some(n) = &self.nscl {
            return n.export_state();
        }
        Ok(MethodState {
            tasks_seen: self.tasks_seen,
            bases: self.gpm.as_ref().map(Gpm::to_states).transpose()?.unwrap_or_default(),
            fisher: self.f_old_stored.as_ref().map(CompactFisher::to_blob).transpose()?,
            slda: self.slda.as_ref().map(SldaStats::to_state).transpose()?,
        })
    }

    /// Restores the bases and `F_old`; a Fisher stored in another format than [`Became::fisher_format`] (the
    /// board profile changed) is decoded and re-encoded in this one.
    fn import_state(&mut self, model: &Model, state: MethodState) -> Result<()> {
        if let Some(nscl) = &mut self.nscl {
            return nscl.import_state(model, state);
        }
        let n = model.num_params();
        let (f_old, stored) = match &state.fisher {
            None if state.tasks_seen > 0 => {
                return Err(Error::Config("stored BECAME state has tasks but no Fisher".into()));
            }
            None => (Vec::new(), None),
            Some(blob) => {
                let c = CompactFisher::from_blob(blob)?;
                if c.len() != n {
                    return Err(edgelearn_core::error::shape_err("stored Fisher", n, c.len()));
                }
                if c.format() == self.fisher_format {
                    (c.decode(), Some(c))
                } else {
                    store(&c.decode(), self.fisher_format)?
                }
            }
        };
        // `+ft` builds no basis: nothing moved that one would protect.
        if state.tasks_seen > 0 && state.bases.is_empty() && !self.ci.frozen_trunk {
            return Err(Error::Config("stored BECAME state has tasks but no bases".into()));
        }
        let gpm = restore_gpm(model, &self.gpm_cfg, &state.bases)?;
        let slda = restore_slda(model, self.ci.slda_head, state.tasks_seen, state.slda.as_ref())?;
        self.gpm = gpm;
        self.slda = slda;
        (self.f_old, self.f_old_stored) = (f_old, stored);
        self.tasks_seen = state.tasks_seen;
        Ok(())
    }
}

/// The diagonal Fisher BECAME uses at `model` over `task`: of the model as it is, or with `+fl` of the classifier
/// the board answers with (the SLDA head refitted over this model's features from `stats`, on a copy).
fn fisher_at(ci: &ClassIl, stats: Option<&SldaStats>, model: &mut Model, task: &TaskData<'_>) -> Result<Vec<f32>> {
    if !(ci.lda_fisher && ci.slda_head) {
        return diagonal_fisher(model, task);
    }
    let mut m = model.clone();
    let mut st = stats.cloned();
    slda_refit(&mut m, task, &mut st, ci.shrinkage())?;
    diagonal_fisher(&mut m, task)
}

impl Became {
    /// [`Method::learn_task`], calling `observe` once with what the task computed (after `F_old` was updated,
    /// before the bases are).
    pub fn learn_task_observed(
        &mut self,
        model: &mut Model,
        task: &TaskData<'_>,
        ctx: &mut LearnContext<'_>,
        observe: &mut dyn FnMut(&BecameTrace<'_>),
    ) -> Result<TaskReport> {
        let first = self.tasks_seen == 0;
        self.ci.prepare_model(model, self.tasks_seen)?;
        let before = self.ci.slda_begin(model, task, ctx.replay, self.slda.as_ref())?;
        let new_rows = task_classes(model, task)?;
        let replay = ctx.replay;
        let with = |on: bool| if on { with_replay(task.train, replay).map(Some) } else { Ok(None) };
        let (train1, train2) = (with(self.ci.replay_stage1)?, with(self.ci.replay_stage2)?);
        let task1 = TaskData { train: train1.as_ref().unwrap_or(task.train), ..*task };
        let task2 = TaskData { train: train2.as_ref().unwrap_or(task.train), ..*task };
        let (log1, t1) = match &mut self.nscl {
            // `+ft`: nothing trains; no GPM is built, so no basis is updated below either.
            _ if self.ci.frozen_trunk => (edgelearn_core::train::TrainLog::default(), 0.0),
            Some(n) => n.train_stage(model, &task1, ctx, "stage1")?,
            None => {
                let gpm = match &mut self.gpm {
                    Some(g) => g,
                    None => self.gpm.insert(Gpm::for_model(model, self.gpm_cfg.clone())?),
                };
                projected_stage(gpm, first, model, &task1, &first_task_plain(&self.stage1, first), ctx, "stage1")?
            }
        };
        let mut report =
            TaskReport { task_id: task.task_id, stages: vec![("stage1".into(), log1)], ..Default::default() };
        report.timings.push(("stage1".into(), t1));
        if first {
            let t0 = Instant::now();
            let f1 = fisher_at(&self.ci, self.slda.as_ref(), model, task)?;
            (self.f_old, self.f_old_stored) = store(&f1, self.fisher_format)?;
            report.timings.push(("fisher".into(), t0.elapsed().as_secs_f64()));
            observe(&BecameTrace { task_id: task.task_id, merge: None, fisher_added: &f1 });
        } else if self.ci.frozen_trunk
            || self.ci.slda_head
                && !self.ci.merge_stage2
                && !(self.ci.replay_stage2 && replay.is_some_and(|r| !r.is_empty()))
        {
            // The SLDA head's class statistics rest on the trunk's features. The unconstrained stage 2 moves them
            // (split-mnist-ci, 3 seeds: 31.8 % with it, 89.1 % without), so with the SLDA head it runs only where
            // it replays stored samples (`r2`, with `sdc` measuring the drift on them); otherwise θ* = θ_GP, and
            // F_old accumulates Fisher(θ_GP) as it would Fisher(θ*).
            let t0 = Instant::now();
            self.ci.correct_head(model, task, &new_rows, &self.stage2, ctx)?;
            let f_gp = fisher_at(&self.ci, self.slda.as_ref(), model, task)?;
            self.accumulate_f_old(&f_gp)?;
            report.timings.push(("fisher".into(), t0.elapsed().as_secs_f64()));
            tracing::info!(task = task.task_id, "BECAME stage 2 skipped: SLDA head without replay in stage 2");
            observe(&BecameTrace { task_id: task.task_id, merge: None, fisher_added: &f_gp });
        } else {
            let theta_gp = model.flat_params();
            let t0 = Instant::now();
            let stage2 = TrainConfig { restore_best: false, ..self.stage2.clone() };
            let log2 = train(model, &task2, &stage2, &mut NoHook, ctx.rng, ctx.progress, "stage2")?;
            report.stages.push(("stage2".into(), log2));
            report.timings.push(("stage2".into(), t0.elapsed().as_secs_f64()));
            let theta_hat = model.flat_params();

            let t0 = Instant::now();
            let f_cur = fisher_at(&self.ci, self.slda.as_ref(), model, task)?;
            let t_fisher_cur = t0.elapsed().as_secs_f64();

            let t0 = Instant::now();
            let (alpha, merged) = match self.ci.head_merge {
                HeadMerge::Global => {
                    let alpha = became_alpha(&f_cur, &self.f_old, &theta_gp, &theta_hat)?;
                    (alpha, interpolate(&theta_gp, &theta_hat, alpha)?)
                }
                rule => {
                    let groups = param_groups(model, task.head, &new_rows)?;
                    let mut a = group_alphas(&f_cur, &self.f_old, &theta_gp, &theta_hat, &groups)?;
                    if rule == HeadMerge::KeepOld {
                        a[1] = 0.0;
                    }
                    tracing::info!(task = task.task_id, trunk = a[0], old_rows = a[1], new_rows = a[2], "grouped α");
                    (a[0], merge_groups(&theta_gp, &theta_hat, &groups, a)?)
                }
            };
            model.set_flat_params(&merged)?;
            self.ci.correct_head(model, task, &new_rows, &self.stage2, ctx)?;
            report.timings.push(("merge".into(), t0.elapsed().as_secs_f64()));

            let t0 = Instant::now();
            let f_merged = fisher_at(&self.ci, self.slda.as_ref(), model, task)?;
            let f_old_used = self.accumulate_f_old(&f_merged)?;
            report.timings.push(("fisher".into(), t_fisher_cur + t0.elapsed().as_secs_f64()));
            tracing::info!(task = task.task_id, alpha, "BECAME merge");
            report.alpha = Some(alpha);
            let merge =
                MergeTrace { theta_gp: &theta_gp, theta_hat: &theta_hat, f_cur: &f_cur, f_old: &f_old_used, alpha };
            observe(&BecameTrace { task_id: task.task_id, merge: Some(merge), fisher_added: &f_merged });
        }
        if self.ci.frozen_trunk {
            // Nothing moved: no input space to protect.
        } else if let Some(n) = &mut self.nscl {
            let t_basis = n.update_memory(model, task)?;
            report.timings.push(("basis".into(), t_basis));
            report.basis_sizes = n.null_dims().to_vec();
        } else if let Some(gpm) = &mut self.gpm {
            let (t_basis, updates) = update_bases(gpm, self.bases_budget, model, task, self.tasks_seen, ctx)?;
            report.timings.push(("basis".into(), t_basis));
            report.basis_sizes = gpm.basis_sizes();
            report.basis_energy_lost = updates.iter().map(|u| u.energy_lost).collect();
        }
        // Last: the Fisher and the bases above are the trained model's, not the SLDA head's.
        if let Some(t) = self.ci.slda_end(model, task, replay, before.as_ref(), &mut self.slda)? {
            report.timings.push(("slda".into(), t));
        }
        self.tasks_seen += 1;
        report.bytes_kept = self.bytes_kept();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelearn_core::data::Samples;
    use edgelearn_core::nn::zoo;
    use edgelearn_core::train::Silent;
    use ndarray::Array2;

    /// Two tiny 2-class tasks on 6 features: the label depends on different features per task.
    fn tiny_task(seed: u64, feature: usize) -> (Samples, Samples) {
        task_of(seed, feature, 48)
    }

    /// A 2-class task of `n` training samples (and 16 validation ones) whose label is the sign of `feature`.
    fn task_of(seed: u64, feature: usize, n: usize) -> (Samples, Samples) {
        edgelearn_core::test_util::tiny_task(seed, feature, n)
    }

    fn projector_matrix(m: &Array2<f32>) -> Array2<f32> {
        m.dot(&m.t())
    }

    #[test]
    fn slda_field_skips_stage_2_without_a_buffer_and_its_state_round_trips() {
        let (ci, lt) = ClassIl::parse_tokens(["lt", "split", "r2", "slda", "sdc"]).unwrap();
        let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: true };
        let fresh = || Became::new(cfg.clone(), gcfg.clone()).with_class_il(ci, lt);
        let (tr1, va1) = tiny_task(1, 0);
        let (mut tr2, va2) = tiny_task(2, 3);
        tr2.y.iter_mut().for_each(|y| *y += 2);
        let mut run_rng = edgelearn_core::seeded_rng(7);
        let run = |with_buffer: bool, rng: &mut rand_chacha::ChaCha8Rng| {
            let mut model = zoo::mlp(6, &[8], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
            let mut method = fresh();
            let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
            let mut ctx = LearnContext { rng: &mut *rng, progress: &mut Silent, replay: None };
            method.learn_task(&mut model, &t1, &mut ctx).unwrap();
            assert!(model.heads[0].bias.is_some(), "the SLDA head has a bias");
            let growth = model.grow_head(0, 4).unwrap();
            method.params_grown(&growth).unwrap();
            let stored = tr1.select(&(0..8).collect::<Vec<_>>());
            let t2 = TaskData { task_id: 1, head: 0, train: &tr2, val: &va2 };
            let replay = with_buffer.then_some(&stored);
            let mut ctx = LearnContext { rng: &mut *rng, progress: &mut Silent, replay };
            let r = method.learn_task(&mut model, &t2, &mut ctx).unwrap();
            (model, method, r)
        };
        let (_, _, r) = run(false, &mut run_rng);
        assert_eq!((r.stages.len(), r.alpha), (1, None), "no buffer: stage 2 skipped");
        let (model, method, r) = run(true, &mut run_rng);
        assert_eq!(r.stages.len(), 2, "with a buffer: stage 2 and the merge");
        assert!(r.alpha.is_some());
        let st = method.slda.as_ref().unwrap();
        assert!(st.means.count.iter().all(|&c| c > 0), "every class has statistics: {:?}", st.means.count);
        // The state round-trips; a state without the statistics, or statistics for a method without the option,
        // are refused.
        let state = method.export_state().unwrap();
        assert!(state.slda.is_some());
        let mut again = fresh();
        again.import_state(&model, state.clone()).unwrap();
        assert_eq!(again.slda, method.slda);
        let without = MethodState { slda: None, ..state.clone() };
        assert!(matches!(fresh().import_state(&model, without), Err(Error::Config(_))));
        let mut plain = Became::new(cfg.clone(), gcfg.clone());
        assert!(matches!(plain.import_state(&model, state), Err(Error::Config(_))));
    }

    /// `+ft` (a board in a fleet): the trunk does not move over two tasks, nothing trains, no basis is built, and
    /// the head is the SLDA head of the fixed trunk's features.
    #[test]
    fn frozen_trunk_moves_nothing_but_the_slda_head() {
        let (ci, lt) = ClassIl::parse_tokens(["lt", "slda", "ft"]).unwrap();
        assert_eq!(ci.suffix(lt), "+lt+slda+ft");
        let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: true };
        let mut method = Became::new(cfg.clone(), gcfg.clone()).with_class_il(ci, lt);
        let mut model = zoo::mlp(6, &[8], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let trunk_of = |m: &Model| format!("{:?}", m.trunk);
        let trunk_before = trunk_of(&model);
        let (tr1, va1) = tiny_task(1, 0);
        let (mut tr2, va2) = tiny_task(2, 3);
        tr2.y.iter_mut().for_each(|y| *y += 2);
        let mut rng = edgelearn_core::seeded_rng(7);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        let r1 = method.learn_task(&mut model, &t1, &mut ctx).unwrap();
        let growth = model.grow_head(0, 4).unwrap();
        method.params_grown(&growth).unwrap();
        let t2 = TaskData { task_id: 1, head: 0, train: &tr2, val: &va2 };
        let r2 = method.learn_task(&mut model, &t2, &mut ctx).unwrap();
        assert_eq!(trunk_before, trunk_of(&model), "the trunk moved");
        assert!(r1.stages[0].1.epochs.is_empty() && r2.stages[0].1.epochs.is_empty(), "something trained");
        assert_eq!(r2.alpha, None);
        assert!(method.gpm.is_none() && r2.basis_sizes.is_empty(), "a basis was built");
        let st = method.slda.as_ref().unwrap();
        assert_eq!(st.means.count.len(), 4);
        assert!(st.means.count.iter().all(|&c| c > 0), "{:?}", st.means.count);
        // The head is exactly the SLDA head of those statistics.
        let (w, b) = crate::method::slda_head(&st.means, &st.cov, crate::method::SLDA_SHRINKAGE).unwrap();
        assert_eq!(model.heads[0].w().to_owned(), w);
        assert_eq!(model.heads[0].bias.as_ref().unwrap().value.iter().copied().collect::<Vec<_>>(), b.to_vec());
        // Its state (no bases) restores.
        let state = method.export_state().unwrap();
        assert!(state.bases.is_empty());
        let mut again = Became::new(cfg.clone(), gcfg.clone()).with_class_il(ci, lt);
        again.import_state(&model, state).unwrap();
        assert_eq!(again.slda, method.slda);
    }

    /// Issue 19: the whole update (both stages, the Fisher passes, α, the merge, the bases) gives the same bits
    /// for any number of compute threads.
    #[test]
    fn two_tasks_give_the_same_bits_on_one_and_on_several_threads() {
        let run = |threads: usize| {
            edgelearn_core::threads::set_threads(threads);
            let mut model = zoo::mlp(6, &[8], &[2, 2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
            let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
            let gcfg =
                GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: false };
            let mut method = Became::new(cfg, gcfg);
            // Four Fisher batches per task (the threaded path needs more than one).
            let (tr1, va1) = task_of(1, 0, 4 * crate::fisher::FISHER_BATCH);
            let (tr2, va2) = task_of(2, 3, 4 * crate::fisher::FISHER_BATCH);
            let mut rng = edgelearn_core::seeded_rng(7);
            let mut alpha = None;
            for (i, (tr, va)) in [(&tr1, &va1), (&tr2, &va2)].into_iter().enumerate() {
                let t = TaskData { task_id: i, head: i, train: tr, val: va };
                let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
                alpha = method.learn_task(&mut model, &t, &mut ctx).unwrap().alpha;
            }
            edgelearn_core::threads::set_threads(1);
            (
                alpha.unwrap().to_bits(),
                model.flat_params().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                method.f_old,
            )
        };
        let one = run(1);
        for t in [2, 4] {
            let other = run(t);
            assert_eq!(one.0, other.0, "α differs on {t} threads");
            assert_eq!(one.1, other.1, "parameters differ on {t} threads");
            assert!(
                one.2.iter().zip(&other.2).all(|(a, b)| a.to_bits() == b.to_bits()),
                "F_old differs on {t} threads"
            );
        }
    }

    #[test]
    fn merged_model_drives_fisher_and_bases() {
        let mut rng = edgelearn_core::seeded_rng(0);
        let mut model = zoo::mlp(6, &[8], &[2, 2], false, &mut rng).unwrap();
        let cfg = TrainConfig { epochs: 3, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        // samples ≥ task size: the representation does not depend on which samples are drawn.
        let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: false };
        let mut method = Became::new(cfg, gcfg);
        let (tr1, va1) = tiny_task(1, 0);
        let (tr2, va2) = tiny_task(2, 3);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        let mut run_rng = edgelearn_core::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut run_rng, progress: &mut Silent, replay: None };

        let r1 = method.learn_task(&mut model, &t1, &mut ctx).unwrap();
        assert_eq!(r1.stages.len(), 1, "task 1 has no stage 2");
        assert!(r1.alpha.is_none());
        let f1 = diagonal_fisher(&mut model, &t1).unwrap();
        assert_eq!(method.f_old, f1, "F_old after task 1 is Fisher(θ₁)");
        let gpm_after_1 = method.gpm.clone().unwrap();

        let r2 = method.learn_task(&mut model, &t2, &mut ctx).unwrap();
        assert_eq!(r2.stages.len(), 2);
        let alpha = r2.alpha.unwrap();
        assert!((0.0..=1.0).contains(&alpha));
        assert!(alpha > 0.0 && alpha < 1.0, "α = {alpha}: the test needs a real interpolation");

        // F_old grew by exactly the Fisher of the model the method left behind (θ*).
        let f_star = diagonal_fisher(&mut model, &t2).unwrap();
        for ((new, old), fs) in method.f_old.iter().zip(&f1).zip(&f_star) {
            assert!((new - old - fs).abs() <= 1e-6 * (1.0 + fs.abs()), "F_old grew by {} not {fs}", new - old);
        }

        // The bases were updated from θ*: redo the update from the final model and compare the projectors.
        let mut expect = gpm_after_1;
        let reps = expect.representations(&mut model, &t2, &mut edgelearn_core::seeded_rng(99)).unwrap();
        expect.update(&reps, 1).unwrap();
        let got = method.gpm.as_ref().unwrap();
        for (a, b) in expect.bases.iter().zip(&got.bases) {
            assert_eq!(a.ncols(), b.ncols());
            let diff = &projector_matrix(a) - &projector_matrix(b);
            assert!(diff.iter().all(|v| v.abs() < 1e-3), "basis not built from θ*");
        }
        assert_eq!(r2.basis_sizes, got.basis_sizes());
        assert_eq!(method.bytes_kept(), got.bytes() + method.f_old.len() * 4);
    }

    #[test]
    fn compact_f_old_is_what_the_method_uses_and_counts() {
        let cfg = TrainConfig { epochs: 2, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        let gcfg = GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 1000, project_heads: false };
        let (tr1, va1) = tiny_task(1, 0);
        let (tr2, va2) = tiny_task(2, 3);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        for format in FisherFormat::ALL {
            let mut model = zoo::mlp(6, &[8], &[2, 2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
            let mut method = Became::new(cfg.clone(), gcfg.clone()).with_fisher_format(format);
            let mut run_rng = edgelearn_core::seeded_rng(7);
            let mut ctx = LearnContext { rng: &mut run_rng, progress: &mut Silent, replay: None };
            let mut traces = Vec::new();
            for t in [&t1, &t2] {
                method
                    .learn_task_observed(&mut model, t, &mut ctx, &mut |tr| {
                        traces.push((tr.merge.map(|m| (m.f_old.to_vec(), m.alpha)), tr.fisher_added.to_vec()));
                    })
                    .unwrap();
            }
            let stored = method.f_old_stored().unwrap();
            assert_eq!(stored.format(), format);
            assert_eq!(method.f_old, stored.decode(), "{format}: F_old is the decoded stored vector");
            let n = model.num_params();
            assert_eq!(method.bytes_kept(), method.gpm.as_ref().unwrap().bytes() + format.storage_bytes(n));
            // Task 2's α used F_old = decode(encode(Fisher(θ₁))); after it, F_old = Q(that + Fisher(θ*)).
            let (f1, f_star) = (&traces[0].1, &traces[1].1);
            let (used, _) = traces[1].0.clone().unwrap();
            assert_eq!(used, compact::encode(f1, format).unwrap().decode(), "{format}");
            let mut sum = used.clone();
            add_assign(&mut sum, f_star).unwrap();
            assert_eq!(method.f_old, compact::encode(&sum, format).unwrap().decode(), "{format}");
            assert_eq!(
                method.name(),
                if format == FisherFormat::F32 { "gpm+became".into() } else { format!("gpm+became:{format}") }
            );
        }
    }

    #[cfg(feature = "baselines")]
    #[test]
    fn adam_nscl_stage1_merges_with_the_same_alpha_rule() {
        use crate::method::{AdamNscl, NsclConfig};
        let cfg = TrainConfig { epochs: 4, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        let nscl = AdamNscl::new(NsclConfig { lr_first: 1e-2, lr_later: 1e-2, ..NsclConfig::new(cfg.clone(), false) });
        let mut method = Became::with_adam_nscl(nscl, cfg);
        assert_eq!(method.name(), "adam-nscl+became");
        let mut model = zoo::mlp(6, &[8], &[2, 2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let (tr1, va1) = tiny_task(1, 0);
        let (tr2, va2) = tiny_task(2, 3);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        let mut run_rng = edgelearn_core::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut run_rng, progress: &mut Silent, replay: None };
        let r1 = method.learn_task(&mut model, &t1, &mut ctx).unwrap();
        assert!(r1.alpha.is_none() && r1.stages.len() == 1);
        let mut seen = None;
        let r2 = method
            .learn_task_observed(&mut model, &t2, &mut ctx, &mut |tr| {
                let m = tr.merge.unwrap();
                let expect = became_alpha(m.f_cur, m.f_old, m.theta_gp, m.theta_hat).unwrap();
                seen = Some((expect, interpolate(m.theta_gp, m.theta_hat, expect).unwrap()));
            })
            .unwrap();
        let (expect, merged) = seen.unwrap();
        assert_eq!(r2.alpha, Some(expect));
        assert!(expect > 0.0 && expect < 1.0, "α = {expect}");
        assert_eq!(model.flat_params(), merged, "θ* = (1 − α) θ_NS + α θ̂");
        let n = method.nscl.as_ref().unwrap();
        assert_eq!(n.tasks_seen(), 2, "covariances updated after each task");
        assert_eq!(method.bytes_kept(), n.bytes() + 4 * model.num_params());
        assert!(method.footprint(&model).is_ok());
        assert!(method.export_state().is_err(), "covariances are not in the store's schema");
    }
}
