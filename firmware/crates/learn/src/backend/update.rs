//! A whole GPM + BECAME task update on a [`Backend`], with the parameters, the GPM bases and the accumulated Fisher
//! resident on it during the task: only logits (for the loss), the merged parameters θ* and α come back.
//!
//! [`BackendBecame`] is the same algorithm as [`crate::method::Became`] over [`crate::method::GpmMethod`]'s
//! projected stage, for the MLP trainable part (`Linear → ReLU` blocks without biases, then one linear head per
//! task): the same schedule ([`edgelearn_core::train::train`]'s plateau rule), the same random stream (one shuffle per epoch,
//! then GPM's sample of the representation), the same Fisher estimator. The GPM basis update (an SVD on the host,
//! [`crate::gpm::Gpm::update`]) runs on the merged model once it is back. On [`super::CpuBackend`] it reproduces the
//! native learner (tested to the same accuracy); on CUDA it is the GPU path.

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use rand::seq::SliceRandom;

use super::{Backend, Gemm};
use crate::fisher::FISHER_BATCH;
use crate::gpm::{Gpm, GpmConfig, LayerRef};
use crate::merge::alpha_from_terms;
use crate::method::{LearnContext, Method, TaskReport};
use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Layer, Model, argmax_rows, softmax_cross_entropy};
use edgelearn_core::train::{EpochLog, Plateau, TrainConfig, TrainLog, Verdict};

/// An MLP's weights resident on a backend: trunk layers first, then the heads, each `(out, in)` row-major (the
/// order and layout of [`Model::flat_params`]), with a gradient buffer each and the activations of the last
/// forward pass.
pub struct ResidentMlp<B: Backend> {
    /// `(out, in)` of every weight, trunk then heads.
    dims: Vec<(usize, usize)>,
    /// Trunk position ([`LayerRef::Trunk`]) of each trunk weight.
    trunk_index: Vec<usize>,
    weights: Vec<B::Buf>,
    grads: Vec<B::Buf>,
    /// `acts[0]` = the batch, `acts[l + 1]` = output of trunk block `l` (after ReLU).
    acts: Vec<B::Buf>,
    logits: Option<B::Buf>,
}

/// The bases installed for projected SGD: per trunk weight and for the head, `None` when not projected.
struct Projection<B: Backend> {
    trunk: Vec<Option<B::Basis>>,
    head: Option<B::Basis>,
}

impl<B: Backend> Projection<B> {
    fn none(trunk: usize) -> Self {
        Self { trunk: (0..trunk).map(|_| None).collect(), head: None }
    }
}

impl<B: Backend> ResidentMlp<B> {
    /// Upload `model`'s weights. The model must be `[Linear, Relu]*` with bias-free layers and bias-free heads (the
    /// GPM papers' MLPs, [`edgelearn_core::nn::zoo::mlp`] with `bias = false`); anything else is [`Error::Config`].
    pub fn upload(backend: &B, model: &Model) -> Result<Self> {
        let unsupported = |why: &str| {
            Error::Config(format!(
                "backend task update: {why}; it needs [Linear, Relu]* \
                                                            without biases and bias-free heads"
            ))
        };
        if !model.trunk.len().is_multiple_of(2) {
            return Err(unsupported("the trunk is not a sequence of Linear → ReLU blocks"));
        }
        let mut linears = Vec::new();
        let mut trunk_index = Vec::new();
        for (i, pair) in model.trunk.chunks(2).enumerate() {
            match pair {
                [Layer::Linear(l), Layer::Relu(_)] if l.bias.is_none() => {
                    linears.push(l);
                    trunk_index.push(2 * i);
                }
                _ => {
                    return Err(unsupported(&format!(
                        "trunk layers {}..{} are not a bias-free Linear → ReLU",
                        2 * i,
                        2 * i + 1
                    )));
                }
            }
        }
        if model.heads.iter().any(|h| h.bias.is_some()) {
            return Err(unsupported("a head has a bias"));
        }
        let mut width = model.input_len();
        for l in &linears {
            if l.in_features() != width {
                return Err(shape_err("backend MLP layer input", width, l.in_features()));
            }
            width = l.out_features();
        }
        let all = linears.into_iter().chain(model.heads.iter());
        let mut dims = Vec::new();
        let mut weights = Vec::new();
        let mut grads = Vec::new();
        for l in all {
            let w = l.w();
            dims.push(w.dim());
            let host = w.as_standard_layout();
            weights
                .push(backend.upload(host.as_slice().ok_or_else(|| Error::Config("weight not contiguous".into()))?)?);
            grads.push(backend.zeros(w.len())?);
        }
        Ok(Self { dims, trunk_index, weights, grads, acts: Vec::new(), logits: None })
    }

    fn trunk_len(&self) -> usize {
        self.trunk_index.len()
    }

    fn head_slot(&self, head: usize) -> Result<usize> {
        let heads = self.dims.len() - self.trunk_len();
        if head >= heads {
            return Err(Error::UnknownHead { head, heads });
        }
        Ok(self.trunk_len() + head)
    }

    /// Number of outputs of head `head`.
    pub fn head_outputs(&self, head: usize) -> Result<usize> {
        Ok(self.dims[self.head_slot(head)?].0)
    }

    /// Indices of the weights a pass through head `head` touches (the trunk and that head).
    fn active(&self, head: usize) -> Result<Vec<usize>> {
        let h = self.head_slot(head)?;
        Ok((0..self.trunk_len()).chain(std::iter::once(h)).collect())
    }

    /// Forward a batch `x (rows, input)` through the trunk and head `head`; the logits stay resident
    /// ([`ResidentMlp::logits`]) and the activations are kept for `ResidentMlp::backward`.
    pub fn forward(&mut self, backend: &B, x: &ArrayView2<'_, f32>, head: usize) -> Result<()> {
        let h = self.head_slot(head)?;
        let rows = x.nrows();
        let input = self.dims.first().map_or(0, |d| d.1);
        if x.ncols() != input && self.trunk_len() > 0 {
            return Err(shape_err("backend MLP input", input, x.ncols()));
        }
        let x = x.as_standard_layout();
        let first = backend.upload(x.as_slice().ok_or_else(|| Error::Config("batch not contiguous".into()))?)?;
        self.acts.clear();
        self.acts.push(first);
        for l in 0..self.trunk_len() {
            let (out, inp) = self.dims[l];
            let mut y = backend.zeros(rows * out)?;
            backend.gemm(Gemm::new(false, true, rows, out, inp), &self.acts[l], &self.weights[l], &mut y)?;
            backend.relu(&mut y)?;
            self.acts.push(y);
        }
        let (out, inp) = self.dims[h];
        let last = self.acts.last().ok_or_else(|| Error::Config("no activations".into()))?;
        if backend.len(last) != rows * inp {
            return Err(shape_err("backend MLP head input", rows * inp, backend.len(last)));
        }
        let mut logits = backend.zeros(rows * out)?;
        backend.gemm(Gemm::new(false, true, rows, out, inp), last, &self.weights[h], &mut logits)?;
        self.logits = Some(logits);
        Ok(())
    }

    /// The logits of the last forward pass, downloaded `(rows, classes)`.
    pub fn logits(&self, backend: &B, head: usize) -> Result<Array2<f32>> {
        let classes = self.head_outputs(head)?;
        let l = self.logits.as_ref().ok_or_else(|| Error::Config("logits before forward".into()))?;
        let host = backend.download(l)?;
        let rows = host.len() / classes.max(1);
        Array2::from_shape_vec((rows, classes), host).map_err(|e| shape_err("logits", classes, e))
    }

    /// Backward from `grad (rows, classes)` of the logits: the weight gradients of the trunk and head `head` are
    /// overwritten, each projected with its basis when `proj` has one (`G ← G − G M Mᵀ`).
    fn backward(&mut self, backend: &B, grad: &Array2<f32>, head: usize, proj: &Projection<B>) -> Result<()> {
        let h = self.head_slot(head)?;
        let rows = grad.nrows();
        let g = grad.as_standard_layout();
        let mut delta = backend.upload(g.as_slice().ok_or_else(|| Error::Config("gradient not contiguous".into()))?)?;
        let layers: Vec<usize> = std::iter::once(h).chain((0..self.trunk_len()).rev()).collect();
        for (step, &l) in layers.iter().enumerate() {
            let (out, inp) = self.dims[l];
            // The input of weight l: the last trunk output for the head, acts[l] for trunk layer l.
            let a = if l == h { self.trunk_len() } else { l };
            backend.gemm(Gemm::new(true, false, out, inp, rows), &delta, &self.acts[a], &mut self.grads[l])?;
            let basis = if l == h { proj.head.as_ref() } else { proj.trunk[l].as_ref() };
            if let Some(basis) = basis {
                backend.project_rows(basis, &mut self.grads[l])?;
            }
            if step + 1 < layers.len() {
                // δ ← (δ W) ⊙ [a > 0]: the gradient of the ReLU output that fed this weight.
                let mut next = backend.zeros(rows * inp)?;
                backend.gemm(Gemm::new(false, false, rows, inp, out), &delta, &self.weights[l], &mut next)?;
                backend.relu_backward(&self.acts[a], &mut next)?;
                delta = next;
            }
        }
        Ok(())
    }

    /// Forward, the mean cross-entropy against `labels` (on the host, from the downloaded logits) and backward;
    /// returns the loss.
    fn loss_and_grad(&mut self, backend: &B, batch: &Samples, head: usize, proj: &Projection<B>) -> Result<f32> {
        self.forward(backend, &batch.x.view(), head)?;
        let logits = self.logits(backend, head)?;
        let (loss, grad) = softmax_cross_entropy(&logits.view(), &batch.y)?;
        self.backward(backend, &grad, head, proj)?;
        Ok(loss)
    }

    /// Mean loss and accuracy on `samples` through head `head`, batches of `batch` (as [`edgelearn_core::train::evaluate`]).
    pub fn evaluate(&mut self, backend: &B, samples: &Samples, head: usize, batch: usize) -> Result<(f32, f32)> {
        if samples.is_empty() {
            return Err(Error::Empty("evaluation set".into()));
        }
        samples.check_labels(self.head_outputs(head)?)?;
        let (mut loss, mut correct) = (0.0f64, 0usize);
        let batch = batch.max(1);
        for start in (0..samples.len()).step_by(batch) {
            let end = (start + batch).min(samples.len());
            let (x, y) = samples.slice(start, end);
            self.forward(backend, &x, head)?;
            let logits = self.logits(backend, head)?;
            let (l, _) = softmax_cross_entropy(&logits.view(), y)?;
            loss += f64::from(l) * (end - start) as f64;
            correct += argmax_rows(&logits.view()).iter().zip(y).filter(|(p, t)| p == t).count();
        }
        Ok(((loss / samples.len() as f64) as f32, correct as f32 / samples.len() as f32))
    }

    /// Diagonal Fisher at the current weights over the task's training split, one resident buffer per weight:
    /// `F = (1/N) Σ_b |b|·(∇θ L_b)²`, `L_b` the mean cross-entropy of batch `b` (64 samples, in order) against the
    /// model's own predictions `argmax f_θ(x)` — the estimator of [`crate::fisher::diagonal_fisher`].
    pub fn fisher(&mut self, backend: &B, task: &TaskData<'_>) -> Result<Vec<B::Buf>> {
        let data = task.train;
        if data.is_empty() {
            return Err(Error::Empty(format!("Fisher of task {}: no training samples", task.task_id)));
        }
        let active = self.active(task.head)?;
        let mut fisher = self.weights.iter().map(|w| backend.zeros(backend.len(w))).collect::<Result<Vec<_>>>()?;
        let none = Projection::none(self.trunk_len());
        for start in (0..data.len()).step_by(FISHER_BATCH) {
            let end = (start + FISHER_BATCH).min(data.len());
            let (x, _) = data.slice(start, end);
            self.forward(backend, &x, task.head)?;
            let logits = self.logits(backend, task.head)?;
            let pseudo = argmax_rows(&logits.view());
            let (_, grad) = softmax_cross_entropy(&logits.view(), &pseudo)?;
            self.backward(backend, &grad, task.head, &none)?;
            for &p in &active {
                backend.fisher_accumulate(&self.grads[p], (end - start) as f32, &mut fisher[p])?;
            }
        }
        let inv = 1.0 / data.len() as f32;
        for f in &mut fisher {
            backend.scale(inv, f)?;
        }
        Ok(fisher)
    }

    /// Device copies of all weights.
    fn snapshot(&self, backend: &B) -> Result<Vec<B::Buf>> {
        self.weights.iter().map(|w| backend.download(w).and_then(|h| backend.upload(&h))).collect()
    }

    /// Copy `src` (a [`ResidentMlp::snapshot`]) into the weights, or the weights into `dst` with `into_weights`
    /// false.
    fn copy_all(&mut self, backend: &B, other: &mut [B::Buf], into_weights: bool) -> Result<()> {
        for (w, o) in self.weights.iter_mut().zip(other.iter_mut()) {
            if into_weights { backend.copy(o, w)? } else { backend.copy(w, o)? }
        }
        Ok(())
    }

    /// The weights, downloaded and concatenated in [`Model::flat_params`] order.
    pub fn flat_params(&self, backend: &B) -> Result<Vec<f32>> {
        let mut flat = Vec::new();
        for w in &self.weights {
            flat.extend(backend.download(w)?);
        }
        Ok(flat)
    }
}

/// Train `mlp` on `task` with the schedule of [`edgelearn_core::train::train`] (shuffle per epoch, mini-batch SGD, validate,
/// plateau decay, early stop, optional best-validation restore), every step on the backend.
fn train_resident<B: Backend>(
    backend: &B,
    mlp: &mut ResidentMlp<B>,
    task: &TaskData<'_>,
    cfg: &TrainConfig,
    proj: &Projection<B>,
    ctx: &mut LearnContext<'_>,
    stage: &str,
) -> Result<TrainLog> {
    cfg.validate()?;
    if cfg.momentum != 0.0 {
        return Err(Error::Config(
            "backend task update: SGD momentum is not supported (GPM and BECAME use none)".into(),
        ));
    }
    if task.train.is_empty() {
        return Err(Error::Empty(format!("training split of task {}", task.task_id)));
    }
    task.train.check_labels(mlp.head_outputs(task.head)?)?;
    let active = mlp.active(task.head)?;
    let mut schedule = Plateau::new(cfg);
    let mut best = mlp.snapshot(backend)?;
    let mut log = TrainLog::default();
    let mut order: Vec<usize> = (0..task.train.len()).collect();
    for epoch in 0..cfg.epochs {
        order.shuffle(ctx.rng);
        let mut sum = 0.0f64;
        for chunk in order.chunks(cfg.batch_size) {
            let batch = task.train.select(chunk);
            let loss = mlp.loss_and_grad(backend, &batch, task.head, proj)?;
            for &p in &active {
                backend.axpy(-schedule.lr, &mlp.grads[p], &mut mlp.weights[p])?;
            }
            sum += f64::from(loss) * chunk.len() as f64;
            ctx.progress.batch(chunk.len());
        }
        let train_loss = (sum / task.train.len() as f64) as f32;
        let (val_loss, val_acc) =
            if task.val.is_empty() { (train_loss, f32::NAN) } else { mlp.evaluate(backend, task.val, task.head, 64)? };
        let lr = schedule.lr;
        let entry = EpochLog { train_loss, val_loss, val_acc, lr };
        ctx.progress.epoch(stage, epoch, &entry);
        tracing::debug!(backend = backend.name(), stage, epoch, train_loss, val_loss, val_acc, lr, "epoch");
        log.epochs.push(entry);
        if !val_loss.is_finite() {
            return Err(Error::NonFinite(format!("validation loss at epoch {epoch} (lr {lr} too high?)")));
        }
        match schedule.observe(val_loss) {
            Verdict::Improved => {
                mlp.copy_all(backend, &mut best, false)?;
                log.kept_epoch = epoch;
            }
            Verdict::Continue => {}
            Verdict::Stop => break,
        }
    }
    if cfg.restore_best {
        mlp.copy_all(backend, &mut best, true)?;
    } else {
        log.kept_epoch = log.epochs.len().saturating_sub(1);
    }
    Ok(log)
}

/// GPM + BECAME with every task update on backend `B` (see the [module documentation](self)).
///
/// Task 1: plain SGD → θ₁; `F_old = Fisher(θ₁)`; bases from θ₁. Task t ≥ 2: stage 1, GPM-projected SGD
/// (`G ← G − G M Mᵀ` on every projected weight) with best-validation restore → θ_GP; stage 2, plain SGD from θ_GP
/// without restore → θ̂; `F_cur = Fisher(θ̂)`; `α = Σ F_cur Δ² / Σ (F_cur + F_old) Δ²`, `Δ = θ̂ − θ_GP`;
/// `θ* = (1 − α) θ_GP + α θ̂`; `F_old ← F_old + Fisher(θ*)`; bases from θ*. `F_old` stays resident on the backend
/// between tasks (f32); the bases live on the host (their SVD update runs there) and are uploaded per task.
pub struct BackendBecame<B: Backend> {
    /// The backend every update runs on.
    pub backend: B,
    /// Stage-1 training settings (best-validation restore on).
    pub stage1: TrainConfig,
    /// Stage-2 training settings (restore forced off).
    pub stage2: TrainConfig,
    /// GPM settings.
    pub gpm_cfg: GpmConfig,
    /// Bases, created on the first task.
    pub gpm: Option<Gpm>,
    /// Bytes the bases may take ([`Gpm::max_bytes`]; `None`: unlimited).
    pub bases_budget: Option<u64>,
    f_old: Vec<B::Buf>,
    tasks_seen: usize,
}

impl<B: Backend> BackendBecame<B> {
    /// BECAME on `backend` with stage 2 using stage 1's schedule (without the best-validation restore).
    pub fn new(backend: B, stage1: TrainConfig, gpm_cfg: GpmConfig) -> Self {
        let stage2 = TrainConfig { restore_best: false, ..stage1.clone() };
        Self { backend, stage1, stage2, gpm_cfg, gpm: None, bases_budget: None, f_old: Vec::new(), tasks_seen: 0 }
    }

    /// Number of tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }

    /// The accumulated Fisher, downloaded and flat in [`Model::flat_params`] order (empty before the first task).
    pub fn f_old(&self) -> Result<Vec<f32>> {
        let mut flat = Vec::new();
        for f in &self.f_old {
            flat.extend(self.backend.download(f)?);
        }
        Ok(flat)
    }

    fn projection(&self, gpm: &Gpm, mlp: &ResidentMlp<B>) -> Result<Projection<B>> {
        let mut proj = Projection::none(mlp.trunk_len());
        for (&layer, basis) in gpm.layers.iter().zip(&gpm.bases) {
            if basis.ncols() == 0 {
                continue;
            }
            let prepared = Some(self.backend.basis(basis)?);
            match layer {
                LayerRef::Trunk(i) => {
                    let slot = mlp.trunk_index.iter().position(|&t| t == i).ok_or_else(|| {
                        Error::Config(format!("GPM projects trunk layer {i}, which the backend MLP does not have"))
                    })?;
                    proj.trunk[slot] = prepared;
                }
                LayerRef::Head(_) => proj.head = prepared,
            }
        }
        Ok(proj)
    }
}

impl<B: Backend> Method for BackendBecame<B> {
    /// `gpm+became@<backend>` (e.g. `gpm+became@cuda`).
    fn name(&self) -> String {
        format!("gpm+became@{}", self.backend.name())
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let mut gpm = match self.gpm.take() {
            Some(g) => g,
            None => Gpm::for_model(model, self.gpm_cfg.clone())?,
        };
        let result = self.update(&mut gpm, model, task, ctx);
        self.gpm = Some(gpm);
        result
    }

    fn bytes_kept(&self) -> usize {
        self.gpm.as_ref().map_or(0, Gpm::bytes) + self.f_old.iter().map(|f| 4 * self.backend.len(f)).sum::<usize>()
    }
}

impl<B: Backend> BackendBecame<B> {
    fn update(
        &mut self,
        gpm: &mut Gpm,
        model: &mut Model,
        task: &TaskData<'_>,
        ctx: &mut LearnContext<'_>,
    ) -> Result<TaskReport> {
        let b = &self.backend;
        let first = self.tasks_seen == 0;
        let mut mlp = ResidentMlp::upload(b, model)?;
        if !first && self.f_old.len() != mlp.weights.len() {
            return Err(shape_err("resident F_old buffers", mlp.weights.len(), self.f_old.len()));
        }
        let t0 = Instant::now();
        let proj = if first { Projection::none(mlp.trunk_len()) } else { self.projection(gpm, &mlp)? };
        let log1 = train_resident(b, &mut mlp, task, &self.stage1, &proj, ctx, "stage1")?;
        let mut report =
            TaskReport { task_id: task.task_id, stages: vec![("stage1".into(), log1)], ..Default::default() };
        report.timings.push(("stage1".into(), t0.elapsed().as_secs_f64()));
        let none = Projection::none(mlp.trunk_len());
        if first {
            let t0 = Instant::now();
            self.f_old = mlp.fisher(b, task)?;
            report.timings.push(("fisher".into(), t0.elapsed().as_secs_f64()));
        } else {
            let theta_gp = mlp.snapshot(b)?;
            let t0 = Instant::now();
            let stage2 = TrainConfig { restore_best: false, ..self.stage2.clone() };
            let log2 = train_resident(b, &mut mlp, task, &stage2, &none, ctx, "stage2")?;
            report.stages.push(("stage2".into(), log2));
            report.timings.push(("stage2".into(), t0.elapsed().as_secs_f64()));

            let t0 = Instant::now();
            let f_cur = mlp.fisher(b, task)?;
            let t_fisher_cur = t0.elapsed().as_secs_f64();

            let t0 = Instant::now();
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for p in 0..mlp.weights.len() {
                let (n, d) = b.became_terms(&f_cur[p], &self.f_old[p], &theta_gp[p], &mlp.weights[p])?;
                num += n;
                den += d;
            }
            let alpha = alpha_from_terms(num, den)?;
            for (w, gp) in mlp.weights.iter_mut().zip(&theta_gp) {
                // θ* = (1 − α) θ_GP + α θ̂ (θ̂ = the weights after stage 2).
                let mut merged = b.zeros(b.len(w))?;
                b.interpolate(gp, w, alpha, &mut merged)?;
                *w = merged;
            }
            report.timings.push(("merge".into(), t0.elapsed().as_secs_f64()));

            let t0 = Instant::now();
            let f_merged = mlp.fisher(b, task)?;
            for (acc, f) in self.f_old.iter_mut().zip(&f_merged) {
                b.axpy(1.0, f, acc)?;
            }
            report.timings.push(("fisher".into(), t_fisher_cur + t0.elapsed().as_secs_f64()));
            tracing::info!(task = task.task_id, alpha, backend = b.name(), "BECAME merge");
            report.alpha = Some(alpha);
        }
        // θ* comes back; the basis update (representations + SVD) runs on the host, from θ*.
        model.set_flat_params(&mlp.flat_params(b)?)?;
        let (t_basis, updates) =
            crate::method::update_bases(gpm, self.bases_budget, model, task, self.tasks_seen, ctx)?;
        report.timings.push(("basis".into(), t_basis));
        report.basis_sizes = gpm.basis_sizes();
        report.basis_energy_lost = updates.iter().map(|u| u.energy_lost).collect();
        self.tasks_seen += 1;
        report.bytes_kept = self.bytes_kept() + gpm.bytes();
        Ok(report)
    }
}
