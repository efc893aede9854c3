//! Joint training on every task seen so far: the upper bound that keeps all data.

use std::time::Instant;

use rand::seq::SliceRandom;

use super::{LearnContext, Method, TaskReport, sgd_plan};
use crate::budget::Footprint;
use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::{Mode, Model, Sgd, softmax_cross_entropy};
use edgelearn_core::train::{EpochLog, TrainConfig, TrainLog, evaluate};

/// Joint training: after each task, train on the union of all tasks' training data seen so far
/// (mini-batches mix tasks; each sample's loss goes through its own head). Keeps every sample — it is the
/// reference upper bound, not something a board can afford.
#[derive(Debug, Clone)]
pub struct Joint {
    /// Training settings (epochs, batch size, learning rate; best-validation restore on the mean val loss).
    pub train: TrainConfig,
    seen: Vec<(usize, Samples, Samples)>,
}

impl Joint {
    /// Joint training with the given settings.
    pub fn new(train: TrainConfig) -> Self {
        Self { train, seen: Vec::new() }
    }
}

impl Method for Joint {
    fn name(&self) -> String {
        "joint".into()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        self.train.validate()?;
        task.train.check_labels(model.head_outputs(task.head)?)?;
        self.seen.push((task.head, task.train.clone(), task.val.clone()));
        let t0 = Instant::now();
        let mut all: Vec<(usize, usize)> =
            self.seen.iter().enumerate().flat_map(|(t, (_, s, _))| (0..s.len()).map(move |i| (t, i))).collect();
        if all.is_empty() {
            return Err(Error::Empty("joint training: no samples".into()));
        }
        let mut opt = Sgd::new(self.train.lr, self.train.momentum)?;
        let mut log = TrainLog::default();
        let mut best = (f32::INFINITY, model.flat_params());
        for epoch in 0..self.train.epochs {
            all.shuffle(ctx.rng);
            let mut sum = 0.0f64;
            for chunk in all.chunks(self.train.batch_size) {
                model.zero_grad();
                for (t, (head, samples, _)) in self.seen.iter().enumerate() {
                    let idx: Vec<usize> = chunk.iter().filter(|(tt, _)| *tt == t).map(|&(_, i)| i).collect();
                    if idx.is_empty() {
                        continue;
                    }
                    let b = samples.select(&idx);
                    let logits = model.forward(&b.x.view(), *head, Mode::Train)?;
                    let (loss, mut grad) = softmax_cross_entropy(&logits.view(), &b.y)?;
                    let share = idx.len() as f32 / chunk.len() as f32;
                    grad.mapv_inplace(|g| g * share);
                    model.backward(grad, *head)?;
                    sum += f64::from(loss) * idx.len() as f64;
                }
                opt.step(model)?;
                ctx.progress.batch(chunk.len());
            }
            let mut val = 0.0f32;
            let mut acc = 0.0f32;
            for (head, _, v) in &self.seen {
                if !v.is_empty() {
                    let (l, a) = evaluate(model, v, *head, 256)?;
                    val += l / self.seen.len() as f32;
                    acc += a / self.seen.len() as f32;
                }
            }
            let entry =
                EpochLog { train_loss: (sum / all.len() as f64) as f32, val_loss: val, val_acc: acc, lr: opt.lr };
            ctx.progress.epoch("joint", epoch, &entry);
            log.epochs.push(entry);
            if val < best.0 {
                best = (val, model.flat_params());
                log.kept_epoch = epoch;
            }
        }
        if self.train.restore_best {
            model.set_flat_params(&best.1)?;
        }
        model.clear_cache();
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("joint".into(), log)],
            timings: vec![("train".into(), t0.elapsed().as_secs_f64())],
            bytes_kept: self.bytes_kept(),
            ..Default::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        self.seen.iter().map(|(_, t, v)| t.bytes() + v.bytes()).sum()
    }

    /// Plain SGD's footprint; the samples it keeps (it is the reference upper bound, not a device method) are not
    /// counted.
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        Footprint::estimate(model, &sgd_plan(&self.train))
    }
}
