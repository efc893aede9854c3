//! Elastic Weight Consolidation, online: one accumulated Fisher and the last task's parameters.

use std::time::Instant;

use super::{LearnContext, Method, TaskReport};
use crate::data::TaskData;
use crate::error::Result;
use crate::fisher::diagonal_fisher;
use crate::merge::add_assign;
use crate::nn::Model;
use crate::train::{GradHook, TrainConfig, train};

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
            train(model, task, &self.train, &mut crate::train::NoHook, ctx.rng, ctx.progress, "train")?
        } else {
            if self.fisher.len() != model.num_params() {
                return Err(crate::error::shape_err("EWC Fisher", model.num_params(), self.fisher.len()));
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
}
