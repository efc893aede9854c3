//! The training loop shared by every method: shuffled mini-batch SGD with GPM's validation-driven
//! learning-rate schedule (decay on plateau, early stop, optional best-validation restore).

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Samples, TaskData};
use crate::error::{Error, Result};
use crate::nn::{Mode, Model, Sgd, softmax_cross_entropy_over};

/// Hyper-parameters of one training stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Mini-batch size (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f32,
    /// Stop when the decayed learning rate falls below this.
    pub lr_min: f32,
    /// Epochs without validation improvement before the learning rate is divided by `lr_factor`.
    pub lr_patience: usize,
    /// Divisor applied to the learning rate on a plateau.
    pub lr_factor: f32,
    /// SGD momentum (0 in GPM/BECAME).
    pub momentum: f32,
    /// Restore the weights of the best validation loss at the end (GPM stage 1: yes; BECAME stage 2: no).
    pub restore_best: bool,
    /// The labels trick of class-incremental learning: the training and validation loss of a task are taken over
    /// the classes its training split contains only ([`crate::nn::softmax_cross_entropy_over`]), so the head rows
    /// of every other class get no gradient. Off by default (the plain loss over every output).
    #[serde(default)]
    pub labels_trick: bool,
}

impl Default for TrainConfig {
    /// GPM's PMNIST settings: 5 epochs, batch 10, lr 0.01, lr_min 1e-5, patience 6, factor 2, best restore.
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 10,
            lr: 0.01,
            lr_min: 1e-5,
            lr_patience: 6,
            lr_factor: 2.0,
            momentum: 0.0,
            restore_best: true,
            labels_trick: false,
        }
    }
}

impl TrainConfig {
    /// Reject settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::Config("epochs and batch_size must be at least 1".into()));
        }
        let ok = self.lr.is_finite() && self.lr > 0.0 && self.lr_factor.is_finite() && self.lr_factor > 1.0;
        if !ok {
            return Err(Error::Config(format!(
                "need lr > 0 and lr_factor > 1, got {} and {}",
                self.lr, self.lr_factor
            )));
        }
        Ok(())
    }
}

/// Called between backward and the optimizer step: GPM projects gradients here, EWC adds its penalty.
pub trait GradHook {
    /// Modify the gradients stored in `model` before the update.
    fn after_backward(&mut self, model: &mut Model, task: &TaskData<'_>) -> Result<()>;

    /// Called before each mini-batch's forward pass (P&M evaluates the gradient at a perturbed point here and
    /// moves back in [`GradHook::after_backward`]). The default does nothing.
    fn before_forward(&mut self, _model: &mut Model) -> Result<()> {
        Ok(())
    }
}

/// The identity hook (plain SGD).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl GradHook for NoHook {
    fn after_backward(&mut self, _: &mut Model, _: &TaskData<'_>) -> Result<()> {
        Ok(())
    }
}

/// Receives training progress (the host shows progress bars; the device logs).
pub trait Progress {
    /// Called once per finished epoch.
    fn epoch(&mut self, _stage: &str, _epoch: usize, _info: &EpochLog) {}
    /// Called after each optimizer step with the number of samples in the batch.
    fn batch(&mut self, _samples: usize) {}
}

/// A progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// What happened in one epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub train_loss: f32,
    /// Validation loss after the epoch.
    pub val_loss: f32,
    /// Validation accuracy after the epoch.
    pub val_acc: f32,
    /// Learning rate used during the epoch.
    pub lr: f32,
}

/// Per-stage log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainLog {
    /// One entry per epoch run.
    pub epochs: Vec<EpochLog>,
    /// Index of the epoch whose weights were kept (the last one when `restore_best` is off).
    pub kept_epoch: usize,
}

/// Mean loss and accuracy on `samples` through head `head`, in evaluation mode, batches of `batch`.
pub fn evaluate(model: &mut Model, samples: &Samples, head: usize, batch: usize) -> Result<(f32, f32)> {
    evaluate_over(model, samples, head, batch, None)
}

/// [`evaluate`] with the loss and the predictions over the `active` classes only (`None`: every output).
pub fn evaluate_over(
    model: &mut Model,
    samples: &Samples,
    head: usize,
    batch: usize,
    active: Option<&[bool]>,
) -> Result<(f32, f32)> {
    if samples.is_empty() {
        return Err(Error::Empty("evaluation set".into()));
    }
    samples.check_labels(model.head_outputs(head)?)?;
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    let batch = batch.max(1);
    for start in (0..samples.len()).step_by(batch) {
        let end = (start + batch).min(samples.len());
        let (x, y) = samples.slice(start, end);
        let mut logits = model.forward(&x, head, Mode::Eval)?;
        let (l, _) = softmax_cross_entropy_over(&logits.view(), y, active)?;
        loss += f64::from(l) * (end - start) as f64;
        if let Some(a) = active {
            for mut row in logits.rows_mut() {
                row.iter_mut().zip(a).filter(|(_, on)| !**on).for_each(|(v, _)| *v = f32::NEG_INFINITY);
            }
        }
        let pred = crate::nn::argmax_rows(&logits.view());
        correct += pred.iter().zip(y).filter(|(p, t)| p == t).count();
    }
    model.clear_cache();
    Ok(((loss / samples.len() as f64) as f32, correct as f32 / samples.len() as f32))
}

/// `mask[c]` is true for every class `c < classes` that occurs among the labels of `samples` (the active set of
/// the labels trick). Labels are checked against `classes` by the caller.
pub fn class_mask(samples: &Samples, classes: usize) -> Vec<bool> {
    let mut mask = vec![false; classes];
    for &y in &samples.y {
        if let Some(m) = mask.get_mut(y) {
            *m = true;
        }
    }
    mask
}

/// GPM's validation-driven learning-rate schedule, one call of [`Plateau::observe`] per epoch: a strictly better
/// validation loss is remembered and resets the patience; otherwise the patience drops, and at zero the learning
/// rate is divided by `lr_factor` (stop once it falls below `lr_min`) and the patience restarts.
#[derive(Debug, Clone)]
pub struct Plateau {
    /// The learning rate to use for the next epoch.
    pub lr: f32,
    best_loss: f32,
    patience: usize,
    lr_patience: usize,
    lr_factor: f32,
    lr_min: f32,
}

/// What [`Plateau::observe`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The best validation loss so far: remember these weights.
    Improved,
    /// Go on with [`Plateau::lr`] (possibly just decayed).
    Continue,
    /// The decayed learning rate fell below `lr_min`: stop training.
    Stop,
}

impl Plateau {
    /// A schedule starting at `cfg.lr` with `cfg`'s patience, decay factor and floor.
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            lr: cfg.lr,
            best_loss: f32::INFINITY,
            patience: cfg.lr_patience,
            lr_patience: cfg.lr_patience,
            lr_factor: cfg.lr_factor,
            lr_min: cfg.lr_min,
        }
    }

    /// Record one epoch's validation loss.
    pub fn observe(&mut self, val_loss: f32) -> Verdict {
        if val_loss < self.best_loss {
            self.best_loss = val_loss;
            self.patience = self.lr_patience;
            return Verdict::Improved;
        }
        self.patience = self.patience.saturating_sub(1);
        if self.patience == 0 {
            let lr = self.lr / self.lr_factor;
            if lr < self.lr_min {
                return Verdict::Stop;
            }
            self.lr = lr;
            self.patience = self.lr_patience;
        }
        Verdict::Continue
    }
}

/// Train `model` on `task` with the GPM schedule; `hook` may rewrite gradients before each step.
///
/// Per epoch: shuffle, mini-batch SGD, then validate. If the validation loss improves (strictly), remember the
/// weights and reset patience; otherwise decrement patience, and at zero divide the lr by `lr_factor`, stopping
/// early once it falls below `lr_min`. With `restore_best`, the remembered weights are put back at the end.
pub fn train(
    model: &mut Model,
    task: &TaskData<'_>,
    cfg: &TrainConfig,
    hook: &mut dyn GradHook,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn Progress,
    stage: &str,
) -> Result<TrainLog> {
    cfg.validate()?;
    if task.train.is_empty() {
        return Err(Error::Empty(format!("training split of task {}", task.task_id)));
    }
    let classes = model.head_outputs(task.head)?;
    task.train.check_labels(classes)?;
    let active = if cfg.labels_trick { Some(class_mask(task.train, classes)) } else { None };
    let active = active.as_deref();
    let mut opt = Sgd::new(cfg.lr, cfg.momentum)?;
    let mut schedule = Plateau::new(cfg);
    let mut best = model.flat_params();
    let mut log = TrainLog::default();
    let mut order: Vec<usize> = (0..task.train.len()).collect();
    for epoch in 0..cfg.epochs {
        order.shuffle(rng);
        let mut sum = 0.0f64;
        for chunk in order.chunks(cfg.batch_size) {
            let batch = task.train.select(chunk);
            model.zero_grad();
            hook.before_forward(model)?;
            let loss = model.loss_and_grad_over(&batch.x.view(), &batch.y, task.head, active)?;
            hook.after_backward(model, task)?;
            opt.step(model)?;
            sum += f64::from(loss) * chunk.len() as f64;
            progress.batch(chunk.len());
        }
        let (val_loss, val_acc) = if task.val.is_empty() {
            ((sum / task.train.len() as f64) as f32, f32::NAN)
        } else {
            evaluate_over(
                model,
                task.val,
                task.head,
                64,
                active.filter(|a| task.val.y.iter().all(|&y| a.get(y).copied().unwrap_or(false))),
            )?
        };
        let lr = schedule.lr;
        let entry = EpochLog { train_loss: (sum / task.train.len() as f64) as f32, val_loss, val_acc, lr };
        progress.epoch(stage, epoch, &entry);
        tracing::debug!(stage, epoch, train_loss = entry.train_loss, val_loss, val_acc, lr, "epoch");
        log.epochs.push(entry);
        if !val_loss.is_finite() {
            return Err(Error::NonFinite(format!("validation loss at epoch {epoch} (lr {lr} too high?)")));
        }
        match schedule.observe(val_loss) {
            Verdict::Improved => {
                best = model.flat_params();
                log.kept_epoch = epoch;
            }
            Verdict::Continue => opt.lr = schedule.lr,
            Verdict::Stop => break,
        }
    }
    if cfg.restore_best {
        model.set_flat_params(&best)?;
    } else {
        log.kept_epoch = log.epochs.len().saturating_sub(1);
    }
    model.zero_grad();
    model.clear_cache();
    Ok(log)
}
