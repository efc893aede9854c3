//! GPM as a method: projected SGD for every task after the first, bases updated after each task.

use std::time::Instant;

use super::{LearnContext, Method, TaskReport};
use crate::data::TaskData;
use crate::error::Result;
use crate::gpm::{FreezeVectors, Gpm, GpmConfig};
use crate::nn::Model;
use crate::train::{GradHook, NoHook, TrainConfig, train};

/// Gradient Projection Memory (Saha et al., 2021).
#[derive(Debug, Clone)]
pub struct GpmMethod {
    /// Training settings (best-validation restore on).
    pub train: TrainConfig,
    /// GPM settings.
    pub gpm_cfg: GpmConfig,
    /// Bases, created on the first task.
    pub gpm: Option<Gpm>,
    tasks_seen: usize,
}

impl GpmMethod {
    /// GPM with the given settings.
    pub fn new(train: TrainConfig, gpm_cfg: GpmConfig) -> Self {
        Self { train, gpm_cfg, gpm: None, tasks_seen: 0 }
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
) -> Result<(crate::train::TrainLog, f64)> {
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

/// Update the bases from the model as it is now (GPM: θ after training; BECAME: the merged θ*).
pub(crate) fn update_bases(
    gpm: &mut Gpm,
    model: &mut Model,
    task: &TaskData<'_>,
    task_index: usize,
    ctx: &mut LearnContext<'_>,
) -> Result<f64> {
    let t0 = Instant::now();
    let reps = gpm.representations(model, task, ctx.rng)?;
    let updates = gpm.update(&reps, task_index)?;
    for (l, u) in updates.iter().enumerate() {
        tracing::debug!(layer = l, before = u.before, after = u.after, captured = u.captured, "GPM basis");
    }
    Ok(t0.elapsed().as_secs_f64())
}

impl Method for GpmMethod {
    fn name(&self) -> String {
        "gpm".into()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let gpm = match &mut self.gpm {
            Some(g) => g,
            None => self.gpm.insert(Gpm::for_model(model, self.gpm_cfg.clone())?),
        };
        let (log, t_train) = projected_stage(gpm, self.tasks_seen == 0, model, task, &self.train, ctx, "stage1")?;
        let t_basis = update_bases(gpm, model, task, self.tasks_seen, ctx)?;
        self.tasks_seen += 1;
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("stage1".into(), log)],
            alpha: None,
            basis_sizes: gpm.basis_sizes(),
            timings: vec![("stage1".into(), t_train), ("basis".into(), t_basis)],
            bytes_kept: gpm.bytes(),
        })
    }

    fn bytes_kept(&self) -> usize {
        self.gpm.as_ref().map_or(0, Gpm::bytes)
    }
}
