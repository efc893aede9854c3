//! Holistic continual model merging: tangent-space fine-tuning around the base model θ₀, a merge weighted by the
//! optimiser's second-moment statistics as a Fisher proxy, and a post-merge correction that aligns the current
//! head's input representation after the merge with the task model's before it, at constant memory.
//!
//! Task `t`:
//! 1. *Tangent-space fine-tuning* of a task vector τ_t from 0 in the model linearised at θ₀,
//!    `f_lin(x; τ) = f(x; θ₀) + J_θ₀(x) τ` (Ortiz-Jiménez et al., 2023), with Adam on the cross-entropy of `f_lin`.
//!    `f(x; θ₀)` and `J_θ₀(x) τ` come from one forward-mode pass at θ₀ through the real layers ([`edgelearn_core::nn::jvp`]:
//!    each layer's own derivative, exact up to rounding, no finite-difference step), and the gradient
//!    `∇_τ L = J_θ₀ᵀ ∂L/∂f_lin` is one backward pass at θ₀ on that pass's caches.
//! 2. *Merge* with Adam's final second moments `v_t` as the diagonal Fisher proxy
//!    ([`second_moment_merge`]): `τ*_t = (V_{t−1} τ*_{t−1} + v_t τ_t)/(V_{t−1} + v_t)`, `V_t = V_{t−1} + v_t`;
//!    θ* = θ₀ + τ*_t (task 1: τ*₁ = τ₁).
//! 3. *Post-merge correction*: per feature `j` of the current head's input, the least-squares scale that maps the
//!    merged model's feature onto the task model's on the current task's inputs ([`correction_scales`]), folded
//!    into the current head's weight columns, `W_h[:, j] ← s_j W_h[:, j]`.
//!
//! After training, the task's *linearisation error* on its validation split (training split when there is none),
//! `‖f(θ₀ + τ) − f_lin(τ)‖ / ‖f(θ₀ + τ) − f(θ₀)‖` over the logits ([`linearisation_error`]), goes into the task
//! report: near 0, the deployed network is the linear model that was trained; near 1 or above, the tangent model
//! says little about the deployed one.
//!
//! Memory kept between tasks: θ₀ and `V` (two vectors, constant in the number of tasks); τ*_{t−1} is θ − θ₀.
//!
//! Choices (the method's description leaves them open):
//! - The deployed model is the ordinary network at θ₀ + τ* (the device runs one network, not a linearised one);
//!   tangent training keeps τ in the regime where the two agree, with a small Adam rate [`HOLISTIC_LR`] = 1e-4
//!   for [`TrainConfig::epochs`] epochs at the stream's batch size, no validation schedule (the linearised
//!   model's validation loss is not the deployed one's).
//! - The correction is folded into the current head only, so that in multi-head runs it cannot disturb old heads;
//!   it uses up to [`CORRECTION_SAMPLES`] training samples, and its scales are clipped to [0.5, 2].
//! - Each task trains from τ = 0 (task vectors are independent fine-tunings of θ₀, as in continual merging).

use std::time::Instant;

use ndarray::Array2;
use rand::seq::SliceRandom;

use super::{AdamMoments, LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::merge::holistic::{correction_scales, second_moment_merge};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Mode, Model, ParamGrowth, jvp, softmax_cross_entropy};
use edgelearn_core::train::{EpochLog, TrainConfig, TrainLog, evaluate};

/// Adam learning rate of the tangent-space fine-tuning.
pub const HOLISTIC_LR: f32 = 1e-4;
/// Training samples the post-merge correction uses.
pub const CORRECTION_SAMPLES: usize = 2048;

/// Holistic continual merging. See the module documentation.
#[derive(Debug, Clone)]
pub struct Holistic {
    /// Epochs and batch size of the tangent fine-tuning (its `lr` is [`Holistic::lr`]).
    pub train: TrainConfig,
    /// Adam learning rate.
    pub lr: f32,
    /// The base model θ₀ (set on the first task).
    pub theta0: Vec<f32>,
    /// Accumulated second moments `V`.
    pub v_acc: Vec<f32>,
    /// Entries a head growth added to θ₀, filled from the model at the next task.
    grown: Option<Vec<bool>>,
    tasks_seen: usize,
}

impl Holistic {
    /// Holistic merging with the stream's epochs and batch size.
    pub fn new(train: TrainConfig) -> Self {
        Self { train, lr: HOLISTIC_LR, theta0: Vec::new(), v_acc: Vec::new(), grown: None, tasks_seen: 0 }
    }

    /// The same with Adam learning rate `lr` (the `holistic:<lr>` of `host compare`); an error unless finite and
    /// positive.
    pub fn with_lr(self, lr: f32) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Config(format!("holistic: the Adam learning rate must be finite and > 0, got {lr}")));
        }
        Ok(Self { lr, ..self })
    }
}

fn add_scaled(a: &[f32], b: &[f32], k: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + k * y).collect()
}

/// Tangent-space fine-tuning of τ from 0 around θ₀ (module documentation, step 1). Returns τ, Adam's second
/// moments and the log (training loss of the linearised model per epoch; validation of θ₀ + τ).
fn tangent_finetune(
    model: &mut Model,
    theta0: &[f32],
    task: &TaskData<'_>,
    cfg: &TrainConfig,
    lr: f32,
    ctx: &mut LearnContext<'_>,
) -> Result<(Vec<f32>, Vec<f32>, TrainLog)> {
    cfg.validate()?;
    let n = theta0.len();
    let mut tau = vec![0.0f32; n];
    let mut adam = AdamMoments::default();
    let mut log = TrainLog::default();
    let mut order: Vec<usize> = (0..task.train.len()).collect();
    for epoch in 0..cfg.epochs {
        order.shuffle(ctx.rng);
        model.set_flat_params(theta0)?;
        let mut sum = 0.0f64;
        for chunk in order.chunks(cfg.batch_size) {
            let batch = task.train.select(chunk);
            model.zero_grad();
            // f_lin(x; τ) = f(x; θ₀) + J_θ₀(x) τ, in one forward-mode pass at θ₀; backward then runs on its caches.
            let (mut z, j) = jvp(model, &batch.x.view(), task.head, &tau, Mode::Train)?;
            z += &j;
            let (loss, g) = softmax_cross_entropy(&z.view(), &batch.y)?;
            model.backward(g, task.head)?;
            adam.direction(model)?;
            let d = model.flat_grads();
            tau.iter_mut().zip(&d).for_each(|(t, g)| *t -= lr * g);
            sum += f64::from(loss) * chunk.len() as f64;
            ctx.progress.batch(chunk.len());
        }
        if tau.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("tangent fine-tuning at epoch {epoch} (lr {lr} too high?)")));
        }
        model.set_flat_params(&add_scaled(theta0, &tau, 1.0))?;
        let train_loss = (sum / task.train.len() as f64) as f32;
        let (val_loss, val_acc) =
            if task.val.is_empty() { (train_loss, f32::NAN) } else { evaluate(model, task.val, task.head, 64)? };
        let entry = EpochLog { train_loss, val_loss, val_acc, lr };
        ctx.progress.epoch("train", epoch, &entry);
        log.epochs.push(entry);
    }
    log.kept_epoch = log.epochs.len().saturating_sub(1);
    model.zero_grad();
    model.clear_cache();
    Ok((tau, adam.flat_second_moment(), log))
}

/// `‖f(θ₀ + τ) − f_lin(τ)‖ / ‖f(θ₀ + τ) − f(θ₀)‖` over the logits of up to [`CORRECTION_SAMPLES`] samples of
/// `samples` on head `head` (evaluation mode), with `f_lin(τ) = f(θ₀) + J_θ₀ τ` ([`edgelearn_core::nn::jvp`]): how far the
/// deployed network is from the linearised one that was trained, relative to how far training moved it. 0 when τ
/// does not move the logits. Leaves the model at θ₀ + τ.
pub fn linearisation_error(
    model: &mut Model,
    theta0: &[f32],
    tau: &[f32],
    samples: &edgelearn_core::data::Samples,
    head: usize,
) -> Result<f64> {
    let m = samples.len().min(CORRECTION_SAMPLES);
    let (x, _) = samples.slice(0, m);
    model.set_flat_params(theta0)?;
    let (f0, j) = jvp(model, &x, head, tau, Mode::Eval)?;
    model.set_flat_params(&add_scaled(theta0, tau, 1.0))?;
    let f = model.forward(&x, head, Mode::Eval)?;
    model.clear_cache();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for ((&fv, &f0v), &jv) in f.iter().zip(&f0).zip(&j) {
        num += (f64::from(fv) - f64::from(f0v) - f64::from(jv)).powi(2);
        den += (f64::from(fv) - f64::from(f0v)).powi(2);
    }
    Ok(if den > 0.0 { (num / den).sqrt() } else { 0.0 })
}

/// Sum over the first [`CORRECTION_SAMPLES`] training samples of the current head's input features, per feature:
/// `Σ h_a h_b` and `Σ h_b²`, with `h_a` from `theta_a` and `h_b` from `theta_b`.
fn feature_sums(
    model: &mut Model,
    task: &TaskData<'_>,
    theta_a: &[f32],
    theta_b: &[f32],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let m = task.train.len().min(CORRECTION_SAMPLES);
    let (x, _) = task.train.slice(0, m);
    let head_input = |model: &mut Model, theta: &[f32]| -> Result<Array2<f32>> {
        model.set_flat_params(theta)?;
        model.forward(&x, task.head, Mode::Eval)?;
        let h = model.heads.get(task.head).and_then(|h| h.cached_input()).cloned();
        model.clear_cache();
        h.ok_or_else(|| Error::Config("holistic correction: head input not cached".into()))
    };
    let ha = head_input(model, theta_a)?;
    let hb = head_input(model, theta_b)?;
    if ha.dim() != hb.dim() {
        return Err(shape_err("holistic correction features", ha.dim(), hb.dim()));
    }
    let dot =
        (0..ha.ncols()).map(|j| ha.column(j).iter().zip(hb.column(j)).map(|(a, b)| f64::from(a * b)).sum()).collect();
    let sq = (0..hb.ncols()).map(|j| hb.column(j).iter().map(|b| f64::from(b * b)).sum()).collect();
    Ok((dot, sq))
}

impl Method for Holistic {
    /// `holistic`, or `holistic:<lr>` with a learning rate other than [`HOLISTIC_LR`].
    fn name(&self) -> String {
        if self.lr == HOLISTIC_LR { "holistic".into() } else { format!("holistic:{}", self.lr) }
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        if task.train.is_empty() {
            return Err(Error::Empty(format!("training split of task {}", task.task_id)));
        }
        let n = model.num_params();
        let current = model.flat_params();
        if let Some(mask) = self.grown.take()
            && mask.len() == self.theta0.len()
            && mask.len() == n
        {
            self.theta0.iter_mut().zip(&mask).zip(&current).filter(|((_, m), _)| **m).for_each(|((t, _), c)| *t = *c);
        }
        if self.tasks_seen == 0 {
            self.theta0 = current.clone();
            self.v_acc = vec![0.0; n];
        }
        if self.theta0.len() != n || self.v_acc.len() != n {
            return Err(shape_err("holistic θ₀ / V", n, self.theta0.len().min(self.v_acc.len())));
        }
        let theta0 = self.theta0.clone();
        let t0 = Instant::now();
        let (tau, v, log) = tangent_finetune(model, &theta0, task, &self.train, self.lr, ctx)?;
        let t_train = t0.elapsed().as_secs_f64();
        let probe = if task.val.is_empty() { task.train } else { task.val };
        let lin_err = linearisation_error(model, &theta0, &tau, probe, task.head)?;
        let t1 = Instant::now();
        let tau_merged: Vec<f32> = current.iter().zip(&theta0).map(|(a, b)| a - b).collect();
        let mut v_acc = self.v_acc.clone();
        let merged_tau = if self.tasks_seen == 0 {
            v_acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
            tau.clone()
        } else {
            second_moment_merge(&tau_merged, &mut v_acc, &tau, &v)?
        };
        let theta_task = add_scaled(&theta0, &tau, 1.0);
        let theta_star = add_scaled(&theta0, &merged_tau, 1.0);
        let (dot, sq) = feature_sums(model, task, &theta_task, &theta_star)?;
        let scales = correction_scales(&dot, &sq)?;
        model.set_flat_params(&theta_star)?;
        let heads = model.heads.len();
        let head = model.heads.get_mut(task.head).ok_or(Error::UnknownHead { head: task.head, heads })?;
        let w = &mut head.weight.value;
        if w.ndim() != 2 || w.shape()[1] != scales.len() {
            return Err(shape_err("holistic correction head", scales.len(), w.shape().get(1).copied().unwrap_or(0)));
        }
        for (mut col, &s) in w.axis_iter_mut(ndarray::Axis(1)).zip(&scales) {
            col.mapv_inplace(|x| x * s);
        }
        self.v_acc = v_acc;
        self.tasks_seen += 1;
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("train".into(), log)],
            timings: vec![("train".into(), t_train), ("merge".into(), t1.elapsed().as_secs_f64())],
            bytes_kept: self.bytes_kept(),
            linearisation_error: Some(lin_err),
            ..TaskReport::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        4 * (self.theta0.len() + self.v_acc.len())
    }

    /// Adam's two moments, θ₀ and `V` (kept), and transients: the JVP's parameter tangents, τ, v, the task model,
    /// θ*, the previous task vector and the flat gradient (`kept_bytes` = two vectors; nine flat copies, as many
    /// as the central difference this replaced needed).
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let plan = StepPlan {
            flat_copies: 9,
            momentum: false,
            kept_bytes: 8 * model.num_params() as u64,
            ..sgd_plan(&self.train)
        };
        Footprint::estimate(model, &plan)
    }

    /// θ₀ gets the new parameters' values at the next task (their task vectors start at 0), `V` zeros.
    fn params_grown(&mut self, growth: &ParamGrowth) -> Result<()> {
        if growth.is_identity() || self.tasks_seen == 0 {
            return Ok(());
        }
        // Both resized on the side first: unchanged on error.
        let (v_acc, theta0) = (growth.resize(&self.v_acc, 0.0)?, growth.resize(&self.theta0, 0.0)?);
        (self.v_acc, self.theta0) = (v_acc, theta0);
        self.grown = Some(growth.new_entries());
        Ok(())
    }

    fn export_state(&self) -> Result<MethodState> {
        if self.bytes_kept() > 0 {
            return Err(super::host_only_state(&self.name(), self.bytes_kept()));
        }
        Ok(MethodState::default())
    }

    fn import_state(&mut self, _model: &Model, state: MethodState) -> Result<()> {
        super::import_nothing(&self.name(), &state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::adam_nscl::tests::tiny_task;
    use edgelearn_core::nn::zoo;
    use edgelearn_core::train::Silent;

    #[test]
    fn tangent_gradient_matches_the_linearised_model() {
        // At τ = 0 the linearised model is f(θ₀), so the first step's gradient is the ordinary one at θ₀, and the
        // first Adam step moves every parameter with a nonzero gradient by lr (≈ sign of the gradient).
        let mut model = zoo::mlp(6, &[4], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let (tr, va) = tiny_task(1, 0, 6);
        let one = tr.select(&[0]);
        let task = TaskData { task_id: 0, head: 0, train: &one, val: &va };
        let theta0 = model.flat_params();
        model.zero_grad();
        model.loss_and_grad(&one.x.view(), &one.y, 0).unwrap();
        let g = model.flat_grads();
        let cfg = TrainConfig { epochs: 1, batch_size: 1, ..TrainConfig::default() };
        let mut rng = edgelearn_core::seeded_rng(1);
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        let (tau, v, _) = tangent_finetune(&mut model, &theta0, &task, &cfg, 0.1, &mut ctx).unwrap();
        for ((t, gi), vi) in tau.iter().zip(&g).zip(&v) {
            let expect = if gi.abs() > 1e-3 { -0.1 * gi.signum() } else { *t };
            assert!((t - expect).abs() < 1e-3, "τ {t} for gradient {gi}");
            assert!((vi - 0.001 * gi * gi).abs() < 1e-7, "v = (1 − β₂) g²");
        }
    }

    #[test]
    fn learns_two_tiny_tasks_at_constant_memory() {
        let mut model = zoo::mlp(6, &[32], &[2, 2], false, &mut edgelearn_core::seeded_rng(3)).unwrap();
        let (tr1, va1) = tiny_task(1, 0, 6);
        let (tr2, va2) = tiny_task(2, 3, 6);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        let cfg = TrainConfig { epochs: 30, batch_size: 8, ..TrainConfig::default() };
        let mut m = Holistic { lr: 1e-2, ..Holistic::new(cfg) };
        let mut rng = edgelearn_core::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        m.learn_task(&mut model, &t1, &mut ctx).unwrap();
        let kept = m.bytes_kept();
        assert_eq!(kept, 8 * model.num_params());
        let (_, acc1) = evaluate(&mut model, &va1, 0, 64).unwrap();
        assert!(acc1 > 0.8, "task 1 accuracy {acc1}");
        m.learn_task(&mut model, &t2, &mut ctx).unwrap();
        assert_eq!(m.bytes_kept(), kept, "constant memory");
        let (_, acc2) = evaluate(&mut model, &va2, 1, 64).unwrap();
        assert!(acc2 > 0.75, "task 2 accuracy {acc2}");
        let (_, acc1b) = evaluate(&mut model, &va1, 0, 64).unwrap();
        assert!(acc1b > 0.6, "task 1 after the merge {acc1b}");
    }
}
