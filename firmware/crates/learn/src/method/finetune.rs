//! Plain fine-tuning: train each task with SGD, keep nothing. The lower bound of every comparison.

use std::time::Instant;

use super::{LearnContext, Method, TaskReport, sgd_plan};
use crate::budget::Footprint;
use edgelearn_core::data::TaskData;
use edgelearn_core::error::Result;
use edgelearn_core::nn::Model;
use edgelearn_core::train::{NoHook, TrainConfig, train};

/// Fine-tuning: the same training loop as every other method, with no protection against forgetting.
#[derive(Debug, Clone)]
pub struct FineTune {
    /// Training settings used for every task.
    pub cfg: TrainConfig,
}

impl FineTune {
    /// Fine-tuning with the given settings.
    pub fn new(cfg: TrainConfig) -> Self {
        Self { cfg }
    }
}

impl Method for FineTune {
    fn name(&self) -> String {
        "finetune".into()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let t0 = Instant::now();
        let log = train(model, task, &self.cfg, &mut NoHook, ctx.rng, ctx.progress, "train")?;
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("train".into(), log)],
            timings: vec![("train".into(), t0.elapsed().as_secs_f64())],
            ..TaskReport::default()
        })
    }

    fn footprint(&self, model: &Model) -> Result<Footprint> {
        Footprint::estimate(model, &sgd_plan(&self.cfg))
    }
}
