//! TRM, trajectory-regularised merging ("Revitalizing the Beginning: Avoiding Storage Dependency for Model Merging
//! in Continual Learning", 2026): the merge of task `t` is a short optimisation inside the subspace spanned by the
//! task's own training trajectory, with task-alignment, prediction-consistency and gradient-responsiveness terms,
//! using no stored old data and nothing kept between tasks but the model.
//!
//! Task `t ≥ 2`, from the previous merged model θ_{t−1}:
//! 1. Fine-tune with the stream's plain SGD → θ̂_t, recording the trajectory: the model at the end of every epoch.
//! 2. Augmented trajectory subspace `B` = orthonormal basis ([`trajectory_basis`]) of
//!    `{θ^(e) − θ_{t−1}}_e ∪ {θ̂_t − θ_{t−1}} ∪ {−∇L_t(θ_{t−1})}`.
//! 3. Merge `θ(c) = θ_{t−1} + B c`, from `c₀ = ½ Bᵀ(θ̂_t − θ_{t−1})`, by [`TRM_STEPS`] Adam steps on `c` over
//!    mini-batches of the current task's training split, minimising
//!
//!    `L(c) = CE(f_θ(c)(x), y) + β Σ_{h old} KL(f_{θ_{t−1}}(x; h) ‖ f_θ(c)(x; h)) − γ H(f_θ(c)(x; h_t))`,
//!
//!    with `∇_c L = Bᵀ ∇_θ L` ([`coordinates`]). θ* = θ(c) after the last step. Task 1 keeps θ̂₁.
//!
//! The paper's abstract fixes the three terms but not their form; the choices, and why:
//! - *Task alignment* = the new task's cross-entropy at the merged point (aligns the merge with task `t`).
//! - *Prediction consistency* = KL from the previous merged model's softmax to the merged model's, on the current
//!   task's inputs, through every head an old task used (single-head: the one head): the old model is the only
//!   witness of old tasks available without storage, and the current inputs are the only inputs.
//! - *Gradient responsiveness* = negative predictive entropy on the current head ([`responsiveness_logit_grad`]):
//!   the paper's concern is vanishing gradients at the start of the next task; a saturated softmax is what makes
//!   `p − y` vanish, so the term keeps the merge away from it.
//! - β = [`TRM_BETA`] = 1, γ = [`TRM_GAMMA`] = 0.1; [`TRM_STEPS`] = 30 steps of batch 64; the "augmentation" of the
//!   trajectory is the task gradient at θ_{t−1} (1 batch of 256); `c₀` at the midpoint, as CoMA's a = ½.
//! - Adam on `c` (β's of [`super::ADAM_BETA1`]/[`super::ADAM_BETA2`]) with step `2‖Bᵀτ‖/(S√K)` (τ = θ̂_t − θ_{t−1},
//!   `K` = basis size, `S` steps): `S` steps can cross the whole trajectory in every coordinate.
//! - Kept between tasks: the list of heads the old tasks used (8 bytes each); the trajectory, basis and old model
//!   are transient.

use std::time::Instant;

use ndarray::Array2;
use rand::seq::index::sample;

use super::{ADAM_BETA1, ADAM_BETA2, ADAM_EPS, LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::merge::trm::{consistency_logit_grad, coordinates, point, responsiveness_logit_grad, trajectory_basis};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Mode, Model, softmax_cross_entropy};
use edgelearn_core::train::{GradHook, TrainConfig, train};

/// Weight β of prediction consistency.
pub const TRM_BETA: f32 = 1.0;
/// Weight γ of gradient responsiveness.
pub const TRM_GAMMA: f32 = 0.1;
/// Adam steps of the merge.
pub const TRM_STEPS: usize = 30;
/// Mini-batch of a merge step.
const MERGE_BATCH: usize = 64;
/// Samples of the augmenting gradient.
const GRAD_SAMPLES: usize = 256;

/// Records the model at the start of every epoch after the first (= the end of the previous one).
struct Trajectory {
    per_epoch: usize,
    batches: usize,
    snaps: Vec<Vec<f32>>,
}

impl GradHook for Trajectory {
    fn before_forward(&mut self, model: &mut Model) -> Result<()> {
        if self.batches > 0 && self.batches.is_multiple_of(self.per_epoch) {
            self.snaps.push(model.flat_params());
        }
        self.batches += 1;
        Ok(())
    }

    fn after_backward(&mut self, _: &mut Model, _: &TaskData<'_>) -> Result<()> {
        Ok(())
    }
}

/// Trajectory-regularised merging. See the module documentation.
#[derive(Debug, Clone)]
pub struct Trm {
    /// Training settings of every task.
    pub train: TrainConfig,
    /// Heads the learned tasks used (prediction consistency goes through them).
    pub old_heads: Vec<usize>,
    /// Weight β of prediction consistency ([`TRM_BETA`] unless chosen, `trm:<β>`).
    pub beta: f32,
    tasks_seen: usize,
}

impl Trm {
    /// TRM with the stream's training settings.
    pub fn new(train: TrainConfig) -> Self {
        Self { train, old_heads: Vec::new(), beta: TRM_BETA, tasks_seen: 0 }
    }

    /// The same with consistency weight `beta` (`trm:<β>` of `host compare`); an error unless finite and ≥ 0.
    pub fn with_beta(self, beta: f32) -> Result<Self> {
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(Error::Config(format!("trm: β must be finite and >= 0, got {beta}")));
        }
        Ok(Self { beta, ..self })
    }
}

/// `∂L/∂z` of one merge step through the current head: the cross-entropy's gradient plus γ times the
/// responsiveness gradient, both already averaged over the batch.
fn current_head_grad(logits: &Array2<f32>, labels: &[usize], gamma: f32) -> Result<(f32, Array2<f32>)> {
    let (loss, mut g) = softmax_cross_entropy(&logits.view(), labels)?;
    let n = logits.nrows() as f32;
    for (mut row, z) in g.rows_mut().into_iter().zip(logits.rows()) {
        let zr: Vec<f32> = z.iter().copied().collect();
        for (gi, r) in row.iter_mut().zip(responsiveness_logit_grad(&zr)) {
            *gi += gamma * r / n;
        }
    }
    Ok((loss, g))
}

impl Trm {
    /// The merge of task `t ≥ 2` (module documentation, steps 2–3); leaves θ* in `model` and returns the
    /// effective coefficient along the task vector, `⟨θ* − θ_{t−1}, τ⟩ / ‖τ‖²`.
    fn merge(
        &self,
        model: &mut Model,
        task: &TaskData<'_>,
        theta_prev: &[f32],
        mut dirs: Vec<Vec<f32>>,
        ctx: &mut LearnContext<'_>,
    ) -> Result<f64> {
        let theta_hat = model.flat_params();
        let tau: Vec<f32> = theta_hat.iter().zip(theta_prev).map(|(a, b)| a - b).collect();
        let tau_sq: f64 = tau.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if tau_sq == 0.0 {
            return Ok(0.0);
        }
        // The augmenting direction: −∇L_t(θ_{t−1}) on a batch of the task.
        model.set_flat_params(theta_prev)?;
        let n = task.train.len();
        let idx = sample(ctx.rng, n, GRAD_SAMPLES.min(n)).into_vec();
        let batch = task.train.select(&idx);
        model.zero_grad();
        model.loss_and_grad(&batch.x.view(), &batch.y, task.head)?;
        dirs.push(model.flat_grads().iter().map(|g| -g).collect());
        model.zero_grad();
        dirs.push(tau.clone());
        let basis = trajectory_basis(&dirs)?;
        drop(dirs);
        let k = basis.len();
        let mut c: Vec<f64> = coordinates(&basis, &tau)?.into_iter().map(|v| 0.5 * v).collect();
        let span = c.iter().map(|v| 4.0 * v * v).sum::<f64>().sqrt();
        let lr = 2.0 * span / (TRM_STEPS as f64 * (k.max(1) as f64).sqrt());
        let (mut m1, mut m2) = (vec![0.0f64; k], vec![0.0f64; k]);
        for step in 1..=TRM_STEPS {
            let idx = sample(ctx.rng, n, MERGE_BATCH.min(n)).into_vec();
            let batch = task.train.select(&idx);
            // Teacher: the previous merged model on the current inputs, through every old head.
            model.set_flat_params(theta_prev)?;
            let mut teacher = Vec::with_capacity(self.old_heads.len());
            for &h in &self.old_heads {
                let z = model.forward(&batch.x.view(), h, Mode::Eval)?;
                let mut p = z.clone();
                for mut row in p.rows_mut() {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    row.mapv_inplace(|v| (v - max).exp());
                    let s = row.sum();
                    row.mapv_inplace(|v| v / s);
                }
                teacher.push(p);
            }
            // Student: θ(c).
            model.set_flat_params(&point(theta_prev, &basis, &c)?)?;
            model.zero_grad();
            let logits = model.forward(&batch.x.view(), task.head, Mode::Train)?;
            let (_, g) = current_head_grad(&logits, &batch.y, TRM_GAMMA)?;
            model.backward(g, task.head)?;
            let rows = batch.len() as f32;
            for (&h, p_old) in self.old_heads.iter().zip(&teacher) {
                let z = model.forward(&batch.x.view(), h, Mode::Train)?;
                let mut g = Array2::zeros(z.raw_dim());
                for ((mut gr, zr), pr) in g.rows_mut().into_iter().zip(z.rows()).zip(p_old.rows()) {
                    let zv: Vec<f32> = zr.iter().copied().collect();
                    let pv: Vec<f32> = pr.iter().copied().collect();
                    for (gi, v) in gr.iter_mut().zip(consistency_logit_grad(&zv, &pv)?) {
                        *gi = self.beta * v / rows;
                    }
                }
                model.backward(g, h)?;
            }
            let gc = coordinates(&basis, &model.flat_grads())?;
            if gc.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite(format!("TRM merge gradient at step {step}")));
            }
            let (b1, b2) = (f64::from(ADAM_BETA1), f64::from(ADAM_BETA2));
            let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
            for j in 0..k {
                m1[j] = b1 * m1[j] + (1.0 - b1) * gc[j];
                m2[j] = b2 * m2[j] + (1.0 - b2) * gc[j] * gc[j];
                c[j] -= lr * (m1[j] / bc1) / ((m2[j] / bc2).sqrt() + f64::from(ADAM_EPS));
            }
        }
        model.zero_grad();
        model.clear_cache();
        let merged = point(theta_prev, &basis, &c)?;
        model.set_flat_params(&merged)?;
        let along: f64 =
            merged.iter().zip(theta_prev).zip(&tau).map(|((m, p), t)| f64::from(m - p) * f64::from(*t)).sum();
        Ok(along / tau_sq)
    }
}

impl Method for Trm {
    /// `trm`, or `trm:<β>` with a consistency weight other than [`TRM_BETA`].
    fn name(&self) -> String {
        if self.beta == TRM_BETA { "trm".into() } else { format!("trm:{}", self.beta) }
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        if task.train.is_empty() {
            return Err(Error::Empty(format!("training split of task {}", task.task_id)));
        }
        let theta_prev = model.flat_params();
        let t0 = Instant::now();
        let per_epoch = task.train.len().div_ceil(self.train.batch_size.max(1));
        let mut hook = Trajectory { per_epoch, batches: 0, snaps: Vec::new() };
        let log = train(model, task, &self.train, &mut hook, ctx.rng, ctx.progress, "train")?;
        let t_train = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let alpha = if self.tasks_seen == 0 {
            None
        } else {
            let dirs = hook
                .snaps
                .into_iter()
                .map(|s| {
                    if s.len() != theta_prev.len() {
                        return Err(shape_err("TRM trajectory", theta_prev.len(), s.len()));
                    }
                    Ok(s.iter().zip(&theta_prev).map(|(a, b)| a - b).collect())
                })
                .collect::<Result<Vec<Vec<f32>>>>()?;
            Some(self.merge(model, task, &theta_prev, dirs, ctx)?)
        };
        if !self.old_heads.contains(&task.head) {
            self.old_heads.push(task.head);
        }
        self.tasks_seen += 1;
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("train".into(), log)],
            alpha,
            timings: vec![("train".into(), t_train), ("merge".into(), t1.elapsed().as_secs_f64())],
            bytes_kept: self.bytes_kept(),
            ..TaskReport::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        8 * self.old_heads.len()
    }

    /// Plain SGD, plus the transient trajectory (one vector per epoch), the augmenting gradient and task vector,
    /// their f64 basis (two f32 slots each), θ_{t−1}, θ̂ and the merged point: `4 + 3·(epochs + 2)` flat vectors.
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let plan = StepPlan {
            flat_copies: 4 + 3 * (self.train.epochs + 2),
            kept_bytes: self.bytes_kept() as u64 + 8,
            ..sgd_plan(&self.train)
        };
        Footprint::estimate(model, &plan)
    }

    fn export_state(&self) -> Result<MethodState> {
        Ok(MethodState { tasks_seen: self.tasks_seen, ..MethodState::default() })
    }

    /// Restores the task count; the old heads are taken as `0..tasks` for a multi-head model and `[0]` for a
    /// single-head one (the store keeps no head list; the streams this crate runs use head = task index).
    fn import_state(&mut self, model: &Model, state: MethodState) -> Result<()> {
        if !state.bases.is_empty() || state.fisher.is_some() {
            return Err(Error::Config("TRM keeps no bases or Fisher; the stored state has some".into()));
        }
        let heads = model.heads.len();
        self.old_heads =
            if heads == 1 { vec![0; state.tasks_seen.min(1)] } else { (0..state.tasks_seen.min(heads)).collect() };
        self.tasks_seen = state.tasks_seen;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::adam_nscl::tests::tiny_task;
    use edgelearn_core::nn::zoo;
    use edgelearn_core::train::{Silent, evaluate};

    #[test]
    fn trajectory_hook_snapshots_each_epoch_end() {
        let mut model = zoo::mlp(6, &[4], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let (tr, va) = tiny_task(1, 0, 6);
        let task = TaskData { task_id: 0, head: 0, train: &tr, val: &va };
        let cfg = TrainConfig { epochs: 3, batch_size: 16, lr: 0.1, restore_best: false, ..TrainConfig::default() };
        let mut hook = Trajectory { per_epoch: 4, batches: 0, snaps: Vec::new() };
        train(&mut model, &task, &cfg, &mut hook, &mut edgelearn_core::seeded_rng(1), &mut Silent, "t").unwrap();
        assert_eq!((hook.batches, hook.snaps.len()), (12, 2), "64 samples / 16 = 4 batches per epoch, 3 epochs");
        assert_ne!(hook.snaps[0], hook.snaps[1]);
    }

    #[test]
    fn learns_two_tiny_tasks_and_merges_inside_the_trajectory() {
        let mut model = zoo::mlp(6, &[16], &[2, 2], false, &mut edgelearn_core::seeded_rng(3)).unwrap();
        let (tr1, va1) = tiny_task(1, 0, 6);
        let (tr2, va2) = tiny_task(2, 3, 6);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        let cfg = TrainConfig { epochs: 20, batch_size: 8, lr: 0.1, ..TrainConfig::default() };
        let mut m = Trm::new(cfg);
        let mut rng = edgelearn_core::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        let r1 = m.learn_task(&mut model, &t1, &mut ctx).unwrap();
        assert!(r1.alpha.is_none());
        let (_, acc1) = evaluate(&mut model, &va1, 0, 64).unwrap();
        assert!(acc1 > 0.85, "task 1 accuracy {acc1}");
        let r2 = m.learn_task(&mut model, &t2, &mut ctx).unwrap();
        let a = r2.alpha.unwrap();
        assert!(a.is_finite() && a > 0.0, "the merge moved toward task 2: {a}");
        let (_, acc2) = evaluate(&mut model, &va2, 1, 64).unwrap();
        assert!(acc2 > 0.8, "task 2 accuracy {acc2}");
        let (_, acc1_after) = evaluate(&mut model, &va1, 0, 64).unwrap();
        assert!(acc1_after > 0.7, "task 1 after the merge {acc1_after}");
        assert_eq!(m.old_heads, vec![0, 1]);
        assert_eq!(m.bytes_kept(), 16);
    }
}
