//! Adam-NSCL (Wang et al., CVPR 2021): Adam updates projected into the approximate null space of the uncentred
//! covariance of each layer's inputs over all tasks learned so far.
//!
//! For every projected layer `l` (each Linear/Conv2d of the trunk, plus the head in single-head runs) the method
//! keeps the uncentred input covariance `X̄_l = Σ_{tasks} Σ_{samples} x xᵀ` (Conv2d: over im2col patches). Before
//! task `t ≥ 2` it eigendecomposes `X̄_l = U Λ Uᵀ` and takes as approximate null space `U₀` the eigenvectors with
//!
//! `λ ≤ a · λ_min`,
//!
//! the authors' code's rule (`eigen_value <= eigen_value[-1] * thres`); every Adam update `Δ` of the layer's
//! weight then becomes `Δ U₀U₀ᵀ / ‖U₀U₀ᵀ‖_F` ([`project_update`]), so `Δ x ≈ 0` for the old tasks' inputs.
//!
//! Choices (the paper or the code leave them open, or their values are for ResNet-18 on CIFAR-100):
//! - `a` = [`NSCL_THRESHOLD`] = 10, the `svd_thres` of the authors' published run commands (the optimiser's
//!   default is 1.001).
//! - λ_min is floored at `f32::EPSILON · λ_max` ([`NSCL_EIG_FLOOR`]) before scaling by `a`: the reference code runs
//!   a float32 SVD, which cannot resolve eigenvalues below that; without the floor an exactly singular covariance
//!   (MNIST's always-black border pixels, dead ReLUs) would make the f64 null space depend on rounding noise.
//! - The covariance is accumulated per sample, as the paper's `X̄ = XᵀX` (the code averages each batch's inputs
//!   before the outer product, which a batch-size choice would then change); it is summed over the task's whole
//!   training split in evaluation mode, at the model the task ends with (Adam-NSCL's own model, or BECAME's merged
//!   θ*), and never rescaled (the threshold rule is scale-free).
//! - Learning rates: the code's ratios (model 1e-4, null-space 5e-5, head 1e-3) scaled by 10 to the usual Adam
//!   rate for an MNIST MLP: [`NsclConfig::lr_first`] 1e-3 on the first task, [`NsclConfig::lr_later`] 5e-4 for the
//!   projected trunk afterwards, heads 1e-2 ([`NsclConfig::head_lr`]); the stream's epochs, batch size, plateau
//!   schedule and best-validation restore are kept, and the optimiser is fresh per task (the code resets it).
//! - Heads: multi-head runs leave heads unprojected (as the code's `last` layers); single-head runs project the
//!   shared head as another layer (as GPM does), else it would forget freely. 1-D parameters (biases, norm
//!   affines) are frozen after the first task, as in GPM.
//! - The covariances are not in the state store's schema (it holds bases and one Fisher), so
//!   [`Method::export_state`] refuses with a typed error once there are any: the method is for host-side comparison.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, linalg::general_mat_mul};

use super::adam::{AdamHook, adam_stage_config};
use super::{LearnContext, Method, MethodState, TaskReport, sgd_plan};
use crate::budget::{Footprint, StepPlan};
use crate::gpm::{FreezeVectors, Gpm, GpmConfig, LayerRef, input_dim, layer_input};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Mode, Model, Projector};
use edgelearn_core::train::{TrainConfig, TrainLog, train};

pub use super::adam::project_update;

/// Adam-NSCL's null-space threshold `a` (eigenvalues `≤ a·λ_min` span the null space).
pub const NSCL_THRESHOLD: f64 = 10.0;

/// Relative floor on λ_min: `max(λ_min, NSCL_EIG_FLOOR · λ_max)` (float32's resolution, see the module docs).
pub const NSCL_EIG_FLOOR: f64 = f32::EPSILON as f64;

/// Batch size of the covariance pass.
const COV_BATCH: usize = 64;

/// Adam-NSCL settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NsclConfig {
    /// Epochs, batch size and schedule of every task (its `lr` and `momentum` are not used).
    pub train: TrainConfig,
    /// Adam learning rate of the first task.
    pub lr_first: f32,
    /// Adam learning rate of the projected layers on later tasks.
    pub lr_later: f32,
    /// Adam learning rate of the heads.
    pub head_lr: f32,
    /// Null-space threshold `a`.
    pub threshold: f64,
    /// Project the (single) head too.
    pub project_heads: bool,
}

impl NsclConfig {
    /// The defaults of the module documentation with the stream's schedule.
    pub fn new(train: TrainConfig, project_heads: bool) -> Self {
        Self { train, lr_first: 1e-3, lr_later: 5e-4, head_lr: 1e-2, threshold: NSCL_THRESHOLD, project_heads }
    }
}

/// Number of eigenvalues in the approximate null space, from eigenvalues in **nondecreasing** order:
///
/// `k₀ = #{ j : λ_j ≤ a · max(λ_min, ε_f32 · λ_max) }`.
///
/// At least one eigenvalue always qualifies (for `a ≥ 1`); 0 for an empty list.
pub fn null_space_dim(eigvals: &[f64], a: f64) -> usize {
    let (Some(&lo), Some(&hi)) = (eigvals.first(), eigvals.last()) else { return 0 };
    let thr = a * lo.max(NSCL_EIG_FLOOR * hi.max(0.0));
    eigvals.iter().take_while(|&&l| l <= thr).count()
}

/// The orthonormal complement `M` (`d × (d − k₀)`) of the approximate null space of the symmetric covariance `cov`,
/// and `k₀` ([`null_space_dim`]); the eigendecomposition is faer's, in f64.
pub fn range_basis(cov: &Array2<f32>, a: f64) -> Result<(Array2<f32>, usize)> {
    let (d, d2) = cov.dim();
    if d != d2 {
        return Err(shape_err("Adam-NSCL covariance", (d, d), (d, d2)));
    }
    if cov.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("Adam-NSCL covariance".into()));
    }
    let mat = faer::Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (f64::from(cov[[i, j]]) + f64::from(cov[[j, i]])));
    let eig = mat
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| Error::Numerical(format!("eigendecomposition of a {d}×{d} covariance: {e:?}")))?;
    let s = eig.S();
    let vals: Vec<f64> = (0..d).map(|i| s[i]).collect();
    let k0 = null_space_dim(&vals, a);
    let u = eig.U();
    Ok((Array2::from_shape_fn((d, d - k0), |(i, j)| u[(i, k0 + j)] as f32), k0))
}

/// Adam-NSCL as a method (also BECAME's alternative stage 1, [`super::Became::with_adam_nscl`]).
#[derive(Debug, Clone)]
pub struct AdamNscl {
    /// Settings.
    pub cfg: NsclConfig,
    /// Projected layers, model order (set on the first task).
    pub layers: Vec<LayerRef>,
    /// Uncentred input covariance per projected layer, `d_in × d_in`, summed over every task so far.
    pub cov: Vec<Array2<f32>>,
    /// Null-space dimension `k₀` per layer used by the last task (empty on the first).
    pub null_dims: Vec<usize>,
    tasks_seen: usize,
}

impl AdamNscl {
    /// Adam-NSCL with `cfg`.
    pub fn new(cfg: NsclConfig) -> Self {
        Self { cfg, layers: Vec::new(), cov: Vec::new(), null_dims: Vec::new(), tasks_seen: 0 }
    }

    /// Tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }

    /// The layers GPM would project on `model` (every trunk Linear/Conv2d, the head when projecting heads).
    fn model_layers(&self, model: &Model) -> Result<Vec<LayerRef>> {
        if !self.layers.is_empty() {
            return Ok(self.layers.clone());
        }
        let gcfg = GpmConfig {
            thresholds: Vec::new(),
            threshold_increment: 0.0,
            samples: 1,
            project_heads: self.cfg.project_heads,
        };
        Ok(Gpm::for_model(model, gcfg)?.layers)
    }

    fn ensure_layers(&mut self, model: &Model) -> Result<()> {
        if self.layers.is_empty() {
            self.layers = self.model_layers(model)?;
        }
        Ok(())
    }

    /// Input width of each projected layer of `model`.
    fn dims(&self, model: &Model) -> Result<Vec<usize>> {
        self.model_layers(model)?.iter().map(|&l| input_dim(model, l)).collect()
    }

    /// One task's training: plain Adam on the first task, null-space-projected Adam afterwards. Returns the log and
    /// the seconds it took (including the eigendecompositions).
    pub(crate) fn train_stage(
        &mut self,
        model: &mut Model,
        task: &TaskData<'_>,
        ctx: &mut LearnContext<'_>,
        stage: &str,
    ) -> Result<(TrainLog, f64)> {
        let t0 = Instant::now();
        self.ensure_layers(model)?;
        let first = self.tasks_seen == 0;
        let lr = if first { self.cfg.lr_first } else { self.cfg.lr_later };
        let mut hook = AdamHook::new();
        let head_mult = self.cfg.head_lr / lr;
        let n_trunk: usize = model.trunk.iter().map(|l| l.params().len()).sum();
        hook.lr_mult = (0..model.params().len()).map(|i| if i < n_trunk { 1.0 } else { head_mult }).collect();
        if !first {
            if self.cov.len() != self.layers.len() {
                return Err(shape_err("Adam-NSCL covariances", self.layers.len(), self.cov.len()));
            }
            self.null_dims.clear();
            for (&l, c) in self.layers.iter().zip(&self.cov) {
                let (m, k0) = range_basis(c, self.cfg.threshold)?;
                tracing::debug!(layer = ?l, null = k0, d = c.nrows(), "Adam-NSCL null space");
                self.null_dims.push(k0);
                hook.projections.push((l, Arc::new(Projector::new(m)?)));
            }
            hook.freeze = Some(FreezeVectors { heads: self.cfg.project_heads });
        }
        let cfg = adam_stage_config(&self.cfg.train, lr);
        let log = train(model, task, &cfg, &mut hook, ctx.rng, ctx.progress, stage)?;
        Ok((log, t0.elapsed().as_secs_f64()))
    }

    /// Add the task's uncentred input covariances at the model as it is now: `X̄_l ← X̄_l + Σ_x x xᵀ` over the
    /// whole training split (evaluation mode, batches of 64). Nothing changes on error. Returns the seconds.
    pub(crate) fn update_memory(&mut self, model: &mut Model, task: &TaskData<'_>) -> Result<f64> {
        let t0 = Instant::now();
        self.ensure_layers(model)?;
        let dims = self.dims(model)?;
        let mut acc: Vec<Array2<f32>> =
            if self.cov.is_empty() { dims.iter().map(|&d| Array2::zeros((d, d))).collect() } else { self.cov.clone() };
        for (a, &d) in acc.iter().zip(&dims) {
            if a.dim() != (d, d) {
                return Err(shape_err("Adam-NSCL covariance", (d, d), a.dim()));
            }
        }
        let data = task.train;
        for start in (0..data.len()).step_by(COV_BATCH) {
            let end = (start + COV_BATCH).min(data.len());
            let (x, _) = data.slice(start, end);
            model.forward(&x, task.head, Mode::Eval)?;
            for (&l, a) in self.layers.iter().zip(acc.iter_mut()) {
                let rows = layer_input(model, l)?;
                general_mat_mul(1.0, &rows.t(), &rows, 1.0, a);
            }
        }
        model.clear_cache();
        if acc.iter().any(|a| a.iter().any(|v| !v.is_finite())) {
            return Err(Error::NonFinite("Adam-NSCL covariance".into()));
        }
        self.cov = acc;
        self.tasks_seen += 1;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Null-space dimension per projected layer after the last task.
    pub fn null_dims(&self) -> &[usize] {
        &self.null_dims
    }

    /// Bytes of the covariances (f32).
    pub fn bytes(&self) -> usize {
        self.cov.iter().map(|c| 4 * c.len()).sum()
    }

    /// The [`StepPlan`] of one task: the covariances count as the layer memory (`gpm_layers` with `k = d_in`,
    /// `d_in × d_in` f32 each; the covariance pass's `d_in`-column workspace as `gpm_samples`), plus the Adam
    /// moments (two flat vectors), the best-validation copy, and the eigendecomposition's f64 matrix and
    /// eigenvectors and the f32 range basis (`5 · d_in²` f32 slots, rounded up to flat vectors).
    pub(crate) fn plan(&self, model: &Model) -> Result<StepPlan> {
        let dims = self.dims(model)?;
        let eig: usize = dims.iter().map(|d| 5 * d * d).sum();
        let eig_copies = eig.div_ceil(model.num_params().max(1));
        Ok(StepPlan {
            flat_copies: 3 + eig_copies,
            gpm_layers: dims.iter().map(|&d| (d, d)).collect(),
            gpm_samples: dims.iter().copied().max().unwrap_or(0),
            momentum: false,
            ..sgd_plan(&self.cfg.train)
        })
    }
}

impl Method for AdamNscl {
    fn name(&self) -> String {
        "adam-nscl".into()
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let (log, t_train) = self.train_stage(model, task, ctx, "train")?;
        let t_cov = self.update_memory(model, task)?;
        Ok(TaskReport {
            task_id: task.task_id,
            stages: vec![("train".into(), log)],
            basis_sizes: self.null_dims.clone(),
            timings: vec![("train".into(), t_train), ("basis".into(), t_cov)],
            bytes_kept: self.bytes_kept(),
            ..TaskReport::default()
        })
    }

    fn bytes_kept(&self) -> usize {
        self.bytes()
    }

    fn footprint(&self, model: &Model) -> Result<Footprint> {
        Footprint::estimate(model, &self.plan(model)?)
    }

    fn export_state(&self) -> Result<MethodState> {
        if !self.cov.is_empty() {
            return Err(super::host_only_state(&self.name(), self.bytes()));
        }
        Ok(MethodState::default())
    }

    fn import_state(&mut self, _model: &Model, state: MethodState) -> Result<()> {
        super::import_nothing(&self.name(), &state)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use edgelearn_core::data::Samples;
    use edgelearn_core::nn::zoo;
    use edgelearn_core::train::{Silent, evaluate};
    use rand::Rng;

    /// A tiny 2-class task on 6 features whose label is the sign of `feature`; only features `< active` vary.
    pub(crate) fn tiny_task(seed: u64, feature: usize, active: usize) -> (Samples, Samples) {
        let mut rng = edgelearn_core::seeded_rng(seed);
        let make = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| {
            let x =
                Array2::from_shape_fn((n, 6), |(_, j)| if j < active { rng.random_range(-1.0f32..1.0) } else { 0.0 });
            let y = (0..n).map(|i| usize::from(x[[i, feature]] > 0.0)).collect();
            Samples::new(x, y).unwrap()
        };
        (make(&mut rng, 64), make(&mut rng, 32))
    }

    #[test]
    fn null_space_rule_on_hand_example() {
        // λ = [0.5, 2, 4, 100]: λ_min·10 = 5 → three eigenvalues qualify.
        assert_eq!(null_space_dim(&[0.5, 2.0, 4.0, 100.0], 10.0), 3);
        assert_eq!(null_space_dim(&[0.5, 2.0, 4.0, 100.0], 1.001), 1);
        // A singular covariance: λ_min = 0 is floored at ε_f32·λ_max, so only the (numerically) zero ones qualify.
        assert_eq!(null_space_dim(&[-1e-14, 1e-12, 1e-3, 1.0], 10.0), 2);
        assert_eq!(null_space_dim(&[], 10.0), 0);
    }

    #[test]
    fn range_basis_of_a_diagonal_covariance() {
        // X̄ = diag(9, 0.1, 0.5): eigenvalues [0.1, 0.5, 9]; a = 10 → null space {e₁, e₂}, range M = ±e₀.
        let cov = Array2::from_diag(&ndarray::arr1(&[9.0f32, 0.1, 0.5]));
        let (m, k0) = range_basis(&cov, 10.0).unwrap();
        assert_eq!((k0, m.dim()), (2, (3, 1)));
        assert!((m[[0, 0]].abs() - 1.0).abs() < 1e-6 && m[[1, 0]].abs() < 1e-6 && m[[2, 0]].abs() < 1e-6);
        // With a = 1 only e₁ (λ = 0.1) is null: the update keeps its e₁ part, scaled by 1/√1.
        let (m, k0) = range_basis(&cov, 1.0).unwrap();
        assert_eq!(k0, 1);
        let p = Projector::new(m).unwrap();
        let mut u = ndarray::ArrayD::from_shape_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        project_update(&mut u, &p).unwrap();
        let got: Vec<f32> = u.iter().copied().collect();
        assert!(got[0].abs() < 1e-6 && (got[1] - 2.0).abs() < 1e-6 && got[2].abs() < 1e-6, "{got:?}");
        assert!(range_basis(&Array2::zeros((2, 3)), 10.0).is_err());
    }

    #[test]
    fn covariance_is_the_sum_of_outer_products_of_layer_inputs() {
        let mut model = zoo::mlp(6, &[4], &[2, 2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let (tr, va) = tiny_task(1, 0, 6);
        let task = TaskData { task_id: 0, head: 0, train: &tr, val: &va };
        let mut m = AdamNscl::new(NsclConfig::new(TrainConfig::default(), false));
        m.update_memory(&mut model, &task).unwrap();
        let expect = tr.x.t().dot(&tr.x);
        let diff = (&m.cov[0] - &expect).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
        assert!(diff < 1e-4, "first layer covariance off by {diff}");
        assert_eq!(m.cov.len(), 1, "multi-head: only the trunk layer is projected");
        assert_eq!(m.bytes_kept(), 36 * 4);
        m.update_memory(&mut model, &task).unwrap();
        let diff = (&m.cov[0] - &(2.0 * &expect)).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
        assert!(diff < 1e-3, "the covariance accumulates over tasks");
    }

    #[test]
    fn learns_two_tiny_tasks_and_protects_the_first() {
        // Task 1 lives on features 0..3 (features 3..6 always 0); task 2 uses feature 4. The first layer's null
        // space is span(e₃, e₄, e₅): task 2 can learn through it without changing task 1's first-layer outputs.
        let mut model = zoo::mlp(6, &[16], &[2, 2], false, &mut edgelearn_core::seeded_rng(3)).unwrap();
        let (tr1, va1) = tiny_task(1, 0, 3);
        let (tr2, va2) = tiny_task(2, 4, 6);
        let t1 = TaskData { task_id: 0, head: 0, train: &tr1, val: &va1 };
        let t2 = TaskData { task_id: 1, head: 1, train: &tr2, val: &va2 };
        let cfg = TrainConfig { epochs: 30, batch_size: 8, ..TrainConfig::default() };
        let mut m = AdamNscl::new(NsclConfig { lr_first: 1e-2, lr_later: 5e-2, ..NsclConfig::new(cfg, false) });
        let mut rng = edgelearn_core::seeded_rng(7);
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        m.learn_task(&mut model, &t1, &mut ctx).unwrap();
        let (_, acc1) = evaluate(&mut model, &va1, 0, 64).unwrap();
        assert!(acc1 > 0.85, "task 1 accuracy {acc1}");
        let w_before = model.params()[0].value.clone();
        let out1_before = model.forward(&va1.x.view(), 0, Mode::Eval).unwrap();
        let r2 = m.learn_task(&mut model, &t2, &mut ctx).unwrap();
        assert_eq!(r2.basis_sizes, vec![3], "null space of the first layer = the 3 silent features");
        let (_, acc2) = evaluate(&mut model, &va2, 1, 64).unwrap();
        assert!(acc2 > 0.8, "task 2 accuracy {acc2}");
        let out1_after = model.forward(&va1.x.view(), 0, Mode::Eval).unwrap();
        let drift = (&out1_after - &out1_before).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
        assert!(drift < 1e-4, "task 1 outputs moved by {drift}");
        assert!(model.params()[0].value != w_before, "the first layer did learn on task 2");
        assert!(matches!(m.export_state(), Err(Error::Config(_))));
    }
}
