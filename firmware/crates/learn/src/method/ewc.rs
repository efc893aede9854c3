//! Elastic Weight Consolidation, online: one accumulated Fisher and the last task's parameters.

use std::time::Instant;

use super::{LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::fisher::diagonal_fisher;
use crate::merge::add_assign;
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::{Model, ParamGrowth};
use edgelearn_core::train::{GradHook, TrainConfig, train};
use edgelearn_store::FisherBlob;

/// EWC with the penalty `(λ/2) Σₚ Fₚ (θₚ − θ_old,p)²`, whose gradient `λ F ⊙ (θ − θ_old)` is added before each step.
///
/// `F` is the running sum of the diagonal Fishers (same estimator as BECAME) at the end of each task;
/// `θ_old` the parameters after the previous task.
#[derive(Debug, Clone)]
pub struct Ewc {
    /// Training settings.
    pub train: TrainConfig,
    /// Penalty strength λ.
    pub lambda: f32,
    /// Accumulated Fisher, flat.
    pub fisher: Vec<f32>,
    /// Parameters after the previous task, flat.
    pub theta_old: Vec<f32>,
}

impl Ewc {
    /// EWC with strength `lambda`.
    pub fn new(train: TrainConfig, lambda: f32) -> Self {
        Self { train, lambda, fisher: Vec::new(), theta_old: Vec::new() }
    }
}

struct Penalty<'a> {
    lambda: f32,
    fisher: &'a [f32],
    theta_old: &'a [f32],
}

impl GradHook for Penalty<'_> {
    fn after_backward(&mut self, model: &mut Model, _: &TaskData<'_>) -> Result<()> {
        let mut off = 0;
        for p in model.params_mut() {
            let n = p.len();
            let (f, t) = (&self.fisher[off..off + n], &self.theta_old[off..off + n]);
            for (((g, v), fi), ti) in p.grad.iter_mut().zip(p.value.iter()).zip(f).zip(t) {
                *g += self.lambda * fi * (v - ti);
            }
            off += n;
        }
        Ok(())
    }
}

impl Method for Ewc {
    fn name(&self) -> String {
        "ewc".into()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let t0 = Instant::now();
        let log = if self.fisher.is_empty() {
            train(model, task, &self.train, &mut edgelearn_core::train::NoHook, ctx.rng, ctx.progress, "train")?
        } else {
            if self.fisher.len() != model.num_params() {
                return Err(edgelearn_core::error::shape_err("EWC Fisher", model.num_params(), self.fisher.len()));
            }
            let mut hook = Penalty { lambda: self.lambda, fisher: &self.fisher, theta_old: &self.theta_old };
            train(model, task, &self.train, &mut hook, ctx.rng, ctx.progress, "train")?
        };
        let t_train = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let f = diagonal_fisher(model, task)?;
        if self.fisher.is_empty() {
            self.fisher = f;
        } else {
            add_assign(&mut self.fisher, &f)?;
        }
        self.theta_old = model.flat_params();
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("train".into(), log)],
            timings: vec![("train".into(), t_train), ("fisher".into(), t0.elapsed().as_secs_f64())],
            bytes_kept: self.bytes_kept(),
            ..Default::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        (self.fisher.len() + self.theta_old.len()) * 4
    }

    /// SGD's workspace plus the Fisher pass (its result and f64 accumulator); F and θ_old (f32) are the `fisher`
    /// budget line.
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let n = model.num_params() as u64;
        let plan = StepPlan {
            flat_copies: 2,
            fisher_pass: true,
            kept_bytes: 8 * n,
            stored_fisher_bytes: 4 * n,
            ..sgd_plan(&self.train)
        };
        Footprint::estimate(model, &plan)
    }

    /// New parameters get Fisher 0 (no penalty) and an anchor at their current value.
    fn params_grown(&mut self, growth: &ParamGrowth) -> Result<()> {
        if self.fisher.is_empty() || growth.is_identity() {
            return Ok(());
        }
        let fisher = growth.resize(&self.fisher, 0.0)?;
        let theta_old = growth.resize(&self.theta_old, 0.0)?;
        (self.fisher, self.theta_old) = (fisher, theta_old);
        Ok(())
    }

    /// The Fisher, as an f32 blob. θ_old is not stored: it equals the parameters committed right after a task
    /// (and [`Method::import_state`] takes it from the restored model).
    fn export_state(&self) -> Result<MethodState> {
        Ok(MethodState {
            tasks_seen: usize::from(!self.fisher.is_empty()),
            bases: Vec::new(),
            fisher: (!self.fisher.is_empty()).then(|| FisherBlob::from_f32(&self.fisher)),
            slda: None,
        })
    }

    fn import_state(&mut self, model: &Model, state: MethodState) -> Result<()> {
        if !state.bases.is_empty() {
            return Err(Error::Config("EWC keeps no bases; the stored state has some".into()));
        }
        let fisher = state.fisher.as_ref().map(FisherBlob::to_f32).transpose()?.unwrap_or_default();
        if !fisher.is_empty() && fisher.len() != model.num_params() {
            return Err(edgelearn_core::error::shape_err("stored EWC Fisher", model.num_params(), fisher.len()));
        }
        self.theta_old = if fisher.is_empty() { Vec::new() } else { model.flat_params() };
        self.fisher = fisher;
        Ok(())
    }
}
