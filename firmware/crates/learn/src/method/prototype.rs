//! Prototype heads over the frozen trunk, the no-training baselines of class-incremental learning on the device:
//! nearest class mean (NCM, as in iCaRL, Rebuffi et al., CVPR 2017) and streaming linear discriminant analysis
//! (SLDA, Hayes & Kanan, CVPR-W 2020, "Lifelong Machine Learning with Deep Streaming Linear Discriminant
//! Analysis"). Neither stores a sample nor trains anything: both keep running statistics of the features
//! `z = φ(x)`, the trunk's output (the input of the model's head), and the trunk is never changed.
//!
//! Both classifiers are linear in `z`, so each task ends by writing them **into the head**, and the ordinary
//! evaluation (`Model::forward`, argmax) scores them unchanged:
//! - NCM: `argmin_c ‖z − μ_c‖² = argmax_c (μ_cᵀz − ½‖μ_c‖²)`, so `w_c = μ_c`, `b_c = −½‖μ_c‖²` ([`ncm_head`]).
//! - SLDA: `argmax_c (μ_cᵀΛz − ½ μ_cᵀΛμ_c)` with the shrinkage-regularised precision
//!   `Λ = ((1−ε)Σ + εI)⁻¹`, ε = [`SLDA_SHRINKAGE`] as in the authors' code, so `w_c = Λμ_c`,
//!   `b_c = −½ μ_cᵀΛμ_c` ([`slda_head`]). `Λμ_c` comes from a Cholesky solve (faer), never an explicit inverse.
//!   With OAS (`slda-oas`, the `+oas` class-incremental option; [`Shrinkage::Oas`]) the fixed ε gives way to
//!   `Λ = ((1−ρ)Σ + ρμI)⁻¹`, `μ = tr(Σ)/p`, ρ from Σ's trace, its squared Frobenius norm and its sample count
//!   ([`oas_shrinkage`], Chen et al. 2010): a function of the running statistics alone, so it stays streaming.
//! - RanDumb (`randumb<D>`, Prabhu et al. 2024): the same SLDA head, with OAS, over `D` random Fourier features
//!   of the standardised raw input ([`edgelearn_core::nn::RandomFourier`]), which replace the model's trunk on the first
//!   task ([`randumb_model`]). Their standardisation and γ come from the first task's samples (all a board has
//!   then), `W` and `b` from one seed drawn from the run's random stream.
//!
//! Choices the papers leave open or that the device forces:
//! - *Features* are the trunk's output in evaluation mode, in batches of [`FEATURE_BATCH`] (the evaluation batch of
//!   `host simulate`). A LeNet's batch norms use batch statistics, so its features depend on the batch a sample is
//!   in, in training here as in evaluation; an MLP's do not.
//! - *NCM on raw features.* iCaRL L2-normalises the features (and the means) before NCM; `z/‖z‖` is not linear in
//!   `z`, so it cannot live in a linear head. This NCM is Euclidean on the raw features.
//! - *SLDA's covariance* follows the paper's streaming update sample by sample, exactly ([`SharedCovariance`]):
//!   the weight `t/(t+1)` uses `t`, the count of every sample seen (all classes, all tasks), and a class's first
//!   sample is measured against the mean's initial value 0, as in the authors' `fit`. A task is absorbed in
//!   batches (one GEMM per batch) that give the same Σ as one sample at a time (tested).
//! - *Statistics* (means, counts, Σ) are f64; the head they are written to is f32.
//! - *The head.* The head of the task is replaced by a Linear of the same shape **with** a bias (parameter names
//!   `head.{h}.weight`, `head.{h}.bias`, as [`Model::new`] names them): a bias-free head gains `classes` parameters.
//!   Classes of the head not seen yet get a zero weight row and the bias [`UNSEEN_CLASS_BIAS`], a finite large
//!   negative, so that they never win (a growing head, `Model::grow_head`, has no such rows).
//! - *Multi-head streams*: means per `(head, class)`; one covariance for every head (one feature space).
//! - *Validation split*: unused (nothing is tuned). *Replay* ([`LearnContext::replay`]): ignored; these methods
//!   are the baseline that stores nothing.
//! - *State*: the store holds SLDA statistics ([`edgelearn_store::SldaState`], the stored form of [`SldaStats`],
//!   which BECAME's `slda` option keeps and restores). These standalone baselines keep class means per head (NCM
//!   with no Σ) and do not export them: [`Method::export_state`] refuses with a typed error once anything is kept
//!   (`host_only_state`); they are for host-side comparison. RanDumb's features would need only their seed, γ and
//!   standardisation (counted in [`Method::bytes_kept`]), not their `D × d` matrix.

use std::time::Instant;

use faer::linalg::solvers::Solve;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Ix2, s};
use rand::Rng;

use super::{LearnContext, Method, MethodState, TaskReport, host_only_state, import_nothing};
use crate::budget::{Footprint, StepPlan};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{
    Flatten, Layer, Linear, Mode, Model, RandomFeatures, RandomFourier, Relu, batch_tensor, rbf_input_stats,
};

/// SLDA's shrinkage ε in `Λ = ((1−ε)Σ + εI)⁻¹` (10⁻⁴, the authors' default).
pub const SLDA_SHRINKAGE: f64 = 1e-4;

/// How SLDA regularises its shared covariance Σ before inverting it.
///
/// Both forms give `Σ_reg = αΣ + βI` with `α, β ≥ 0`, `β > 0` ([`Shrinkage::coefficients`]), and the SLDA
/// head uses `Λ = Σ_reg⁻¹`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shrinkage {
    /// A fixed ε (Hayes & Kanan's code): `Σ_reg = (1−ε)Σ + εI`, `0 < ε ≤ 1`.
    Fixed(f64),
    /// Oracle approximating shrinkage (Chen, Wiesel, Eldar & Hero 2010, "Shrinkage Algorithms for MMSE
    /// Covariance Estimation", as scikit-learn's `oas` computes it): `Σ_reg = (1−ρ)Σ + ρμI` with `μ = tr(Σ)/p`
    /// and ρ from Σ and the number of samples it was estimated from ([`SharedCovariance::oas_shrinkage`]). It
    /// needs only Σ itself (its trace and squared Frobenius norm) and the count `t`, so it stays streaming.
    Oas,
}

impl Default for Shrinkage {
    /// [`Shrinkage::Fixed`] with [`SLDA_SHRINKAGE`].
    fn default() -> Self {
        Shrinkage::Fixed(SLDA_SHRINKAGE)
    }
}

impl Shrinkage {
    /// Check the parameter: a fixed ε must lie in `(0, 1]` ([`Error::Config`] otherwise).
    pub fn validate(self) -> Result<Self> {
        if let Shrinkage::Fixed(eps) = self {
            check_shrinkage(eps)?;
        }
        Ok(self)
    }

    /// `(α, β)` of `Σ_reg = αΣ + βI` for the covariance `cov`: `(1−ε, ε)` for a fixed ε; `(1−ρ, ρμ)` for OAS
    /// ([`SharedCovariance::oas_shrinkage`]). When OAS finds no spread at all (`μ = 0`: Σ = 0, e.g. one sample
    /// per class), its target `μI` is 0 and nothing can be inverted: the fixed [`SLDA_SHRINKAGE`] is used instead.
    pub fn coefficients(self, cov: &SharedCovariance) -> Result<(f64, f64)> {
        match self {
            Shrinkage::Fixed(eps) => {
                check_shrinkage(eps)?;
                Ok((1.0 - eps, eps))
            }
            Shrinkage::Oas => {
                let (rho, mu) = cov.oas_shrinkage()?;
                if mu > 0.0 && rho * mu > 0.0 {
                    Ok((1.0 - rho, rho * mu))
                } else {
                    Ok((1.0 - SLDA_SHRINKAGE, SLDA_SHRINKAGE))
                }
            }
        }
    }
}

/// OAS shrinkage of a `p × p` covariance `s` estimated from `n` samples (Chen et al. 2010, eq. 23, in
/// scikit-learn's form): with `μ = tr(S)/p` and `a = (1/p²) Σ_ij S_ij²` (the mean of S's squared entries),
///
/// `ρ = min(1, (a + μ²) / ((n + 1)(a − μ²/p)))`, and `ρ = 1` when the denominator is 0;
///
/// the shrunk covariance is `(1−ρ)S + ρμI`. Returns `(ρ, μ)`. Errors on a non-square or empty `s`, a non-finite
/// entry, or `n = 0`.
pub fn oas_shrinkage(s: &ArrayView2<'_, f64>, n: u64) -> Result<(f64, f64)> {
    let p = s.nrows();
    if p == 0 || s.ncols() != p {
        return Err(shape_err("OAS: covariance", "(p, p), p ≥ 1", s.dim()));
    }
    if n == 0 {
        return Err(Error::Empty("OAS: a covariance of 0 samples".into()));
    }
    if s.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("OAS: covariance".into()));
    }
    let pf = p as f64;
    let mu = s.diag().sum() / pf;
    let a = s.iter().map(|v| v * v).sum::<f64>() / (pf * pf);
    let num = a + mu * mu;
    let den = (n as f64 + 1.0) * (a - mu * mu / pf);
    let rho = if den == 0.0 { 1.0 } else { (num / den).min(1.0) };
    Ok((rho, mu))
}

/// The bias `b_c` of a head row whose class has no sample yet (its weight row is 0): a finite large negative,
/// so that `w_cᵀz + b_c = −10⁹` never wins an argmax and stays finite for code that checks finiteness.
pub const UNSEEN_CLASS_BIAS: f32 = -1e9;

/// Samples per trunk pass when computing features `z = φ(x)` (the evaluation batch of `host simulate`).
pub const FEATURE_BATCH: usize = 256;

/// Which prototype classifier is written into the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrototypeRule {
    /// Nearest class mean: `ŷ = argmin_c ‖z − μ_c‖²` ([`ncm_head`]).
    Ncm,
    /// Streaming LDA: `ŷ = argmax_c (μ_cᵀΛz − ½ μ_cᵀΛμ_c)`, `Λ = ((1−ε)Σ + εI)⁻¹` ([`slda_head`]).
    Slda,
}

/// Batch boundaries `[(start, end))` over `n` items, at most `batch` each, never leaving a last batch of one item
/// behind another batch (batch norms need two values per channel): it joins the batch before.
fn batch_ranges(n: usize, batch: usize) -> Vec<(usize, usize)> {
    let batch = batch.max(2);
    let mut out = Vec::with_capacity(n.div_ceil(batch));
    let mut start = 0;
    while start < n {
        let mut end = (start + batch).min(n);
        if n - end == 1 {
            end = n;
        }
        out.push((start, end));
        start = end;
    }
    out
}

/// The features `z = φ(x)` of a batch `x (n, input_len)`: the trunk's output in evaluation mode, the input of the
/// model's heads, `(n, d)`. Errors on a wrong input width, a trunk whose output is not `(n, d)`, or a non-finite
/// feature. Leaves the trunk's cached activations in place (call [`Model::clear_cache`] when done).
pub fn trunk_features(model: &mut Model, x: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    if x.ncols() != model.input_len() {
        return Err(shape_err("prototype features: model input", model.input_len(), x.ncols()));
    }
    let mut h = batch_tensor(x, &model.input_shape)?;
    for layer in &mut model.trunk {
        h = layer.forward(h, Mode::Eval)?;
    }
    let z = h.into_dimensionality::<Ix2>().map_err(|e| shape_err("prototype features", "(batch, d)", e))?;
    if let Some(i) = z.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "trunk feature {} of sample {}",
            i % z.ncols().max(1),
            i / z.ncols().max(1)
        )));
    }
    Ok(z)
}

/// Running class means of one head's classes, in f64: for each sample `(z, y)`,
/// `μ_y ← μ_y + (z − μ_y)/(n_y + 1)`, `n_y ← n_y + 1` (so `μ_y` is the mean of the `n_y` samples of class `y`).
/// A class without samples has `n_y = 0` and `μ_y = 0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassMeans {
    /// `μ_c`, one row per class, `(classes, d)`.
    pub mean: Array2<f64>,
    /// `n_c`, samples seen per class.
    pub count: Vec<u64>,
}

impl ClassMeans {
    /// `classes` empty classes (`μ_c = 0`, `n_c = 0`) over `d` features.
    pub fn new(classes: usize, d: usize) -> Self {
        Self { mean: Array2::zeros((classes, d)), count: vec![0; classes] }
    }

    /// Number of classes (rows of `μ`).
    pub fn classes(&self) -> usize {
        self.count.len()
    }

    /// Feature width `d`.
    pub fn dim(&self) -> usize {
        self.mean.ncols()
    }

    /// Add empty classes up to `classes` (`μ_c = 0`, `n_c = 0` for the new ones; the old ones unchanged). Fewer
    /// classes than now is an [`Error::Config`] (heads never shrink).
    pub fn grow(&mut self, classes: usize) -> Result<()> {
        let now = self.classes();
        if classes < now {
            return Err(Error::Config(format!("class means hold {now} classes; they cannot shrink to {classes}")));
        }
        if classes > now {
            let mut mean = Array2::zeros((classes, self.dim()));
            mean.slice_mut(s![..now, ..]).assign(&self.mean);
            self.mean = mean;
            self.count.resize(classes, 0);
        }
        Ok(())
    }

    /// Bytes kept: `8·classes·d` (μ) + `8·classes` (n).
    pub fn bytes(&self) -> usize {
        8 * (self.mean.len() + self.count.len())
    }

    fn check(&self, d: usize, y: &[usize]) -> Result<()> {
        if d != self.dim() {
            return Err(shape_err("class means: feature width", self.dim(), d));
        }
        match y.iter().find(|&&c| c >= self.classes()) {
            Some(&label) => Err(Error::LabelOutOfRange { label, classes: self.classes() }),
            None => Ok(()),
        }
    }

    /// One sample `(z, y)`: returns `d = z − μ_y` with `μ_y` before the update, then
    /// `μ_y ← μ_y + d/(n_y + 1)`, `n_y ← n_y + 1`. Errors (nothing changed) on a wrong width or a label
    /// `y ≥ classes`.
    pub fn update(&mut self, z: &ArrayView1<'_, f64>, y: usize) -> Result<Array1<f64>> {
        self.check(z.len(), &[y])?;
        let d = z - &self.mean.row(y);
        let n = self.count[y] as f64;
        self.mean.row_mut(y).scaled_add(1.0 / (n + 1.0), &d);
        self.count[y] += 1;
        Ok(d)
    }

    /// Samples `(z_i, y_i)` in order, exactly as [`ClassMeans::update`] one at a time; returns the deviations
    /// `D (n, d)`, row `i` = `z_i − μ_{y_i}` just before sample `i`'s own update. Errors (nothing changed) on a
    /// width or label mismatch.
    pub fn absorb(&mut self, z: &ArrayView2<'_, f32>, y: &[usize]) -> Result<Array2<f64>> {
        if z.nrows() != y.len() {
            return Err(shape_err("class means: samples vs labels", z.nrows(), y.len()));
        }
        self.check(z.ncols(), y)?;
        let mut dev = Array2::<f64>::zeros(z.dim());
        for ((zi, &c), mut di) in z.outer_iter().zip(y).zip(dev.outer_iter_mut()) {
            let inv = 1.0 / (self.count[c] as f64 + 1.0);
            let mut mu = self.mean.row_mut(c);
            for ((dv, m), &zv) in di.iter_mut().zip(mu.iter_mut()).zip(zi) {
                *dv = f64::from(zv) - *m;
                *m += *dv * inv;
            }
            self.count[c] += 1;
        }
        Ok(dev)
    }
}

/// SLDA's shared covariance Σ (f64, `d × d`), updated one sample `(z_t, y_t)` at a time as in Hayes & Kanan:
///
/// `Σ_{t+1} = (t·Σ_t + t/(t+1) · (z_t − μ_{y_t})(z_t − μ_{y_t})ᵀ) / (t+1)`,
///
/// with `μ_{y_t}` the class mean before sample `t`'s own update and `t` the number of samples seen before it (every
/// class, every task). `Σ_0 = 0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedCovariance {
    /// Σ, `(d, d)`.
    pub sigma: Array2<f64>,
    /// `t`, samples absorbed so far.
    pub updates: u64,
}

impl SharedCovariance {
    /// `Σ = 0`, `t = 0` over `d` features.
    pub fn new(d: usize) -> Self {
        Self { sigma: Array2::zeros((d, d)), updates: 0 }
    }

    /// Feature width `d`.
    pub fn dim(&self) -> usize {
        self.sigma.nrows()
    }

    /// Bytes kept: `8·d²` (Σ) + 8 (t).
    pub fn bytes(&self) -> usize {
        8 * (self.sigma.len() + 1)
    }

    /// The reference streaming step, one sample, in the paper's order: with `d = z − μ_y` (μ before the
    /// update), `Σ ← (t·Σ + t/(t+1)·d dᵀ)/(t+1)`, then `μ_y ← μ_y + d/(n_y+1)` ([`ClassMeans::update`]),
    /// `t ← t + 1`. Errors (nothing changed) on a width or label mismatch.
    pub fn update_one(&mut self, means: &mut ClassMeans, z: &ArrayView1<'_, f64>, y: usize) -> Result<()> {
        if means.dim() != self.dim() {
            return Err(shape_err("SLDA covariance vs means", self.dim(), means.dim()));
        }
        let d = means.update(z, y)?;
        let t = self.updates as f64;
        let outer = d.view().insert_axis(Axis(1)).dot(&d.view().insert_axis(Axis(0)));
        self.sigma = (&self.sigma * t + &outer * (t / (t + 1.0))) / (t + 1.0);
        self.updates += 1;
        Ok(())
    }

    /// Add the deviations `D (n, d)` of `n` consecutive samples ([`ClassMeans::absorb`]), the same Σ as `n` calls
    /// of [`SharedCovariance::update_one`]: unrolling the recursion,
    ///
    /// `Σ_{t+n} = (t·Σ_t + Σ_{i<n} (t+i)/(t+i+1) · d_i d_iᵀ) / (t+n) = (t·Σ_t + Dᵀ diag(ω) D)/(t+n)`,
    /// `ω_i = (t+i)/(t+i+1)`,
    ///
    /// computed as one GEMM. Errors (nothing changed) on a width mismatch or a non-finite deviation.
    pub fn add_deviations(&mut self, dev: &ArrayView2<'_, f64>) -> Result<()> {
        if dev.ncols() != self.dim() {
            return Err(shape_err("SLDA covariance: deviation width", self.dim(), dev.ncols()));
        }
        if dev.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("SLDA covariance update".into()));
        }
        let n = dev.nrows() as u64;
        if n == 0 {
            return Ok(());
        }
        let t = self.updates as f64;
        let total = t + n as f64;
        let mut weighted = dev.to_owned();
        for (i, mut row) in weighted.outer_iter_mut().enumerate() {
            let ti = t + i as f64;
            row *= ti / (ti + 1.0);
        }
        general_mat_mul(1.0 / total, &weighted.t(), dev, t / total, &mut self.sigma);
        self.updates += n;
        Ok(())
    }

    /// `Λ·R` for the columns of `rhs (d, k)`, `Λ = ((1−ε)Σ + εI)⁻¹`, by a Cholesky factorisation of
    /// `(1−ε)Σ + εI` (symmetric positive definite for `0 < ε ≤ 1`; its lower triangle is read). Errors on
    /// `ε ∉ (0, 1]`, a width mismatch or a failed factorisation.
    pub fn precision_times(&self, shrinkage: f64, rhs: &ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        check_shrinkage(shrinkage)?;
        self.regularised_solve(1.0 - shrinkage, shrinkage, rhs)
    }

    /// OAS's `(ρ, μ)` for this Σ, estimated from the `t` samples it has absorbed ([`oas_shrinkage`], applied to
    /// the pooled within-class covariance with `n = t`). Errors before the first sample.
    pub fn oas_shrinkage(&self) -> Result<(f64, f64)> {
        oas_shrinkage(&self.sigma.view(), self.updates)
    }

    /// `Λ·R` with `Λ = Σ_reg⁻¹` under `shrinkage` (`Σ_reg = αΣ + βI`, [`Shrinkage::coefficients`]), by a
    /// Cholesky solve. Errors as [`SharedCovariance::precision_times`], and for OAS before the first sample.
    pub fn precision_times_with(&self, shrinkage: Shrinkage, rhs: &ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        let (alpha, beta) = shrinkage.coefficients(self)?;
        self.regularised_solve(alpha, beta, rhs)
    }

    /// `(αΣ + βI)⁻¹ R` by a Cholesky factorisation (lower triangle read).
    fn regularised_solve(&self, alpha: f64, beta: f64, rhs: &ArrayView2<'_, f64>) -> Result<Array2<f64>> {
        let d = self.dim();
        if rhs.nrows() != d {
            return Err(shape_err("SLDA precision: right-hand side rows", d, rhs.nrows()));
        }
        if !(alpha.is_finite() && beta.is_finite() && alpha >= 0.0 && beta > 0.0) {
            return Err(Error::Numerical(format!("SLDA regularisation αΣ + βI with α = {alpha}, β = {beta}")));
        }
        let a = faer::Mat::<f64>::from_fn(d, d, |i, j| alpha * self.sigma[[i, j]] + if i == j { beta } else { 0.0 });
        let llt = a
            .llt(faer::Side::Lower)
            .map_err(|e| Error::Numerical(format!("Cholesky of SLDA's αΣ + βI, d = {d}: {e:?}")))?;
        let b = faer::Mat::<f64>::from_fn(d, rhs.ncols(), |i, j| rhs[[i, j]]);
        let x = llt.solve(&b);
        Ok(Array2::from_shape_fn((d, rhs.ncols()), |(i, j)| x[(i, j)]))
    }
}

fn check_shrinkage(eps: f64) -> Result<()> {
    if eps.is_finite() && eps > 0.0 && eps <= 1.0 {
        Ok(())
    } else {
        Err(Error::Config(format!("SLDA shrinkage ε must be in (0, 1], got {eps}")))
    }
}

/// Cast a head to f32, refusing values that overflow.
fn head_f32(w: &Array2<f64>, b: &Array1<f64>) -> Result<(Array2<f32>, Array1<f32>)> {
    let (w, b) = (w.mapv(|v| v as f32), b.mapv(|v| v as f32));
    if w.iter().chain(b.iter()).any(|v| !v.is_finite()) {
        return Err(Error::NonFinite("prototype head (f32 overflow)".into()));
    }
    Ok((w, b))
}

/// The NCM head: `w_c = μ_c`, `b_c = −½‖μ_c‖²` for every class with samples, so that
/// `argmax_c (w_cᵀz + b_c) = argmin_c ‖z − μ_c‖²`; `w_c = 0`, `b_c =` [`UNSEEN_CLASS_BIAS`] for the others.
pub fn ncm_head(means: &ClassMeans) -> Result<(Array2<f32>, Array1<f32>)> {
    prototype_head(means, means.mean.clone())
}

/// The head of a prototype rule with weights `w` (one row per class): `b_c = −½ μ_cᵀ w_c` for every class with
/// samples; `w_c = 0`, `b_c =` [`UNSEEN_CLASS_BIAS`] for the others.
fn prototype_head(means: &ClassMeans, mut w: Array2<f64>) -> Result<(Array2<f32>, Array1<f32>)> {
    let mut b = Array1::<f64>::zeros(means.classes());
    for (c, (mut row, bias)) in w.outer_iter_mut().zip(b.iter_mut()).enumerate() {
        if means.count[c] == 0 {
            row.fill(0.0);
            *bias = f64::from(UNSEEN_CLASS_BIAS);
        } else {
            *bias = -0.5 * means.mean.row(c).dot(&row);
        }
    }
    head_f32(&w, &b)
}

/// The SLDA head: `w_c = Λμ_c`, `b_c = −½ μ_cᵀΛμ_c` with `Λ = ((1−ε)Σ + εI)⁻¹` (all classes in one Cholesky
/// solve, [`SharedCovariance::precision_times`]), for every class with samples; `w_c = 0`,
/// `b_c =` [`UNSEEN_CLASS_BIAS`] for the others.
pub fn slda_head(means: &ClassMeans, cov: &SharedCovariance, shrinkage: f64) -> Result<(Array2<f32>, Array1<f32>)> {
    if means.dim() != cov.dim() {
        return Err(shape_err("SLDA head: means vs covariance", cov.dim(), means.dim()));
    }
    let lam_mu = cov.precision_times(shrinkage, &means.mean.t())?; // (d, classes)
    prototype_head(means, lam_mu.reversed_axes())
}

/// The SLDA head under `shrinkage` ([`Shrinkage`]): `w_c = Λμ_c`, `b_c = −½ μ_cᵀΛμ_c` with `Λ = (αΣ + βI)⁻¹`
/// ([`Shrinkage::coefficients`]; `(1−ε, ε)` is [`slda_head`], `(1−ρ, ρμ)` is OAS), for every class with samples;
/// `w_c = 0`, `b_c =` [`UNSEEN_CLASS_BIAS`] for the others.
pub fn slda_head_with(
    means: &ClassMeans,
    cov: &SharedCovariance,
    shrinkage: Shrinkage,
) -> Result<(Array2<f32>, Array1<f32>)> {
    if means.dim() != cov.dim() {
        return Err(shape_err("SLDA head: means vs covariance", cov.dim(), means.dim()));
    }
    let lam_mu = cov.precision_times_with(shrinkage, &means.mean.t())?; // (d, classes)
    prototype_head(means, lam_mu.reversed_axes())
}

/// Absorb the features `z = φ(x)` of `samples` (the trunk as it is now, in batches of [`FEATURE_BATCH`]) into
/// the running class means ([`ClassMeans::absorb`]) and, when given, SLDA's covariance
/// ([`SharedCovariance::add_deviations`]). Returns the seconds spent on features and on the statistics. On an
/// error the statistics may hold part of the samples: callers work on copies and commit on success.
pub fn absorb_task(
    model: &mut Model,
    samples: &edgelearn_core::data::Samples,
    means: &mut ClassMeans,
    mut cov: Option<&mut SharedCovariance>,
) -> Result<(f64, f64)> {
    let (mut t_features, mut t_fit) = (0.0, 0.0);
    let fitted = (|| -> Result<()> {
        for (start, end) in batch_ranges(samples.len(), FEATURE_BATCH) {
            let t0 = Instant::now();
            let z = trunk_features(model, &samples.x.slice(s![start..end, ..]))?;
            let t1 = Instant::now();
            t_features += (t1 - t0).as_secs_f64();
            let dev = means.absorb(&z.view(), &samples.y[start..end])?;
            if let Some(c) = cov.as_deref_mut() {
                c.add_deviations(&dev.view())?;
            }
            t_fit += t1.elapsed().as_secs_f64();
        }
        Ok(())
    })();
    model.clear_cache();
    fitted?;
    Ok((t_features, t_fit))
}

/// SLDA's statistics kept beside a **trained** trunk (the `slda` class-incremental option of GPM,
/// [`super::class_il::ClassIl::slda_head`]): the class means and the shared covariance of the features each class
/// had when its task ended. GPM keeps old inputs' features (their span is protected), so an old class's statistics
/// stay close to what the current trunk gives it.
///
/// The model answers with the SLDA head, but training never sees it: its rows (`Λμ_c`, large where Σ is thin)
/// would dominate the logits of any loss over old classes and tear the trunk. The method trains with its own
/// head, kept here between tasks ([`SldaStats::train_head`]) and swapped in before each task's training.
#[derive(Debug, Clone, PartialEq)]
pub struct SldaStats {
    /// Class means of the head's classes.
    pub means: ClassMeans,
    /// The shared covariance.
    pub cov: SharedCovariance,
    /// The trained head (weight, bias) as training left it, swapped in for the next task's training.
    pub train_head: Option<(Array2<f32>, Array1<f32>)>,
}

impl SldaStats {
    /// Bytes kept (means, counts, Σ in f64; the trained head in f32).
    pub fn bytes(&self) -> usize {
        self.means.bytes() + self.cov.bytes() + self.train_head.as_ref().map_or(0, |(w, b)| 4 * (w.len() + b.len()))
    }

    /// The SLDA head of these statistics under `shrinkage` ([`slda_head_with`]): the fixed ε or OAS, whose ρ
    /// comes from Σ and its sample count alone, so every holder of the statistics (the field, a fleet) can use
    /// either.
    pub fn head(&self, shrinkage: Shrinkage) -> Result<(Array2<f32>, Array1<f32>)> {
        slda_head_with(&self.means, &self.cov, shrinkage)
    }

    /// The stored form ([`edgelearn_store::SldaState`]).
    pub fn to_state(&self) -> Result<edgelearn_store::SldaState> {
        let dim = u32::try_from(self.means.dim()).map_err(|_| Error::Config("SLDA feature width over u32".into()))?;
        let (train_weight, train_bias) = match &self.train_head {
            Some((w, b)) => (w.iter().copied().collect(), b.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        Ok(edgelearn_store::SldaState {
            dim,
            means: self.means.mean.iter().copied().collect(),
            counts: self.means.count.clone(),
            sigma: self.cov.sigma.iter().copied().collect(),
            updates: self.cov.updates,
            train_weight,
            train_bias,
        })
    }

    /// From the stored form; errors on inconsistent lengths or non-finite values, and when the feature width is
    /// not `d` (the model's head input).
    pub fn from_state(st: &edgelearn_store::SldaState, d: usize) -> Result<Self> {
        st.validate()?;
        if st.dim as usize != d {
            return Err(shape_err("stored SLDA statistics vs head input", d, st.dim));
        }
        let classes = st.counts.len();
        let mean = Array2::from_shape_vec((classes, d), st.means.clone()).map_err(|e| shape_err("SLDA means", d, e))?;
        let sigma = Array2::from_shape_vec((d, d), st.sigma.clone()).map_err(|e| shape_err("SLDA Σ", d, e))?;
        let train_head = if st.train_bias.is_empty() {
            None
        } else {
            let w = Array2::from_shape_vec((st.train_bias.len(), d), st.train_weight.clone())
                .map_err(|e| shape_err("SLDA trained head", d, e))?;
            Some((w, Array1::from(st.train_bias.clone())))
        };
        Ok(Self {
            means: ClassMeans { mean, count: st.counts.clone() },
            cov: SharedCovariance { sigma, updates: st.updates },
            train_head,
        })
    }

    /// Put the trained head back into head `h` for training: its rows over the first rows of the head as it is
    /// now (the head may have grown since; grown rows stay at zero). Errors when the head is narrower than the
    /// kept one or its input width differs.
    pub fn swap_in_train_head(&self, model: &mut Model, h: usize) -> Result<()> {
        let Some((w, b)) = &self.train_head else { return Ok(()) };
        let heads = model.heads.len();
        let lin = model.heads.get(h).ok_or(Error::UnknownHead { head: h, heads })?;
        let (rows, d) = (lin.out_features(), lin.in_features());
        if w.ncols() != d || w.nrows() > rows || b.len() != w.nrows() {
            return Err(shape_err("kept training head vs model head", (rows, d), w.dim()));
        }
        let mut nw = Array2::<f32>::zeros((rows, d));
        nw.slice_mut(s![..w.nrows(), ..]).assign(w);
        let mut nb = Array1::<f32>::zeros(rows);
        nb.slice_mut(s![..b.len()]).assign(b);
        model.heads[h] = Linear::from_weights(&format!("head.{h}"), nw, Some(nb))?;
        Ok(())
    }
}

/// Class means of the features of `samples` at the trunk as it is now, over `classes` classes (a class without
/// samples has `n_c = 0`). Errors on a label `≥ classes`, a wrong width or a non-finite feature.
pub fn feature_means(model: &mut Model, samples: &edgelearn_core::data::Samples, classes: usize) -> Result<ClassMeans> {
    samples.check_labels(classes)?;
    let mut means = ClassMeans::new(classes, model.heads.first().map_or(0, Linear::in_features));
    absorb_task(model, samples, &mut means, None)?;
    Ok(means)
}

/// Drift compensation of the stored class means with the exemplar memory (after semantic drift compensation, Yu et
/// al., CVPR 2020, which estimates the drift from the new task's data; here it is measured on the stored samples
/// of the class itself): `μ_c ← μ_c + (m_c^after − m_c^before)` for every class `c` that has stored samples in
/// both, `m_c` the mean feature of class `c`'s stored samples before and after the task's training. Σ is left as
/// it is. Returns the number of classes moved. Errors (nothing changed) on a width mismatch or `before` and
/// `after` over different class counts.
pub fn compensate_drift(stats: &mut SldaStats, before: &ClassMeans, after: &ClassMeans) -> Result<usize> {
    if before.dim() != stats.means.dim() || after.dim() != stats.means.dim() {
        return Err(shape_err("drift compensation: feature width", stats.means.dim(), before.dim().min(after.dim())));
    }
    if before.classes() != after.classes() {
        return Err(shape_err("drift compensation: classes", before.classes(), after.classes()));
    }
    // Classes the statistics do not hold yet (the head grew for this task) have nothing to move.
    let mut moved = 0;
    for c in 0..before.classes().min(stats.means.classes()) {
        if before.count[c] > 0 && after.count[c] > 0 && stats.means.count[c] > 0 {
            let shift = &after.mean.row(c) - &before.mean.row(c);
            stats.means.mean.row_mut(c).scaled_add(1.0, &shift);
            moved += 1;
        }
    }
    Ok(moved)
}

/// Semantic drift compensation without stored samples (Yu et al., CVPR 2020, eq. 7–8): the drift of an old
/// class's mean is estimated from the current task's samples embedded by the trunk before the task (`z_before`)
/// and after it (`z_after`), weighted by their closeness to that mean:
///
/// `δ_i = z_i^after − z_i^before`, `w_i^c = exp(−‖z_i^before − μ_c‖² / (2σ_c²))`,
/// `Δ_c = Σ_i w_i^c δ_i / Σ_i w_i^c`, `μ_c ← μ_c + Δ_c`,
///
/// for every class `c` the statistics hold samples of and that is not among `labels` (the task's own classes are
/// absorbed afresh). The bandwidth σ_c² is the mean of `‖z_i^before − μ_c‖²` over the samples (a scale-free
/// choice: the paper's σ = 0.3 is for L2-normalised embeddings, and nothing here is tuned on test data). Σ is left
/// as it is. Returns the number of classes moved; errors (nothing changed) on mismatched shapes.
pub fn compensate_drift_from_task(
    stats: &mut SldaStats,
    z_before: &ArrayView2<'_, f32>,
    z_after: &ArrayView2<'_, f32>,
    labels: &[usize],
) -> Result<usize> {
    let d = stats.means.dim();
    if z_before.ncols() != d || z_after.dim() != z_before.dim() || labels.len() != z_before.nrows() {
        return Err(shape_err("drift compensation: task features", (labels.len(), d), z_after.dim()));
    }
    if labels.is_empty() {
        return Ok(0);
    }
    let before = z_before.mapv(f64::from);
    let delta = z_after.mapv(f64::from) - &before;
    let mut moved = 0;
    for c in 0..stats.means.classes() {
        if stats.means.count[c] == 0 || labels.contains(&c) {
            continue;
        }
        // Each class's weights use its own (not yet moved) mean, so the classes can be moved one after another.
        let mu = stats.means.mean.row(c);
        let d2: Vec<f64> =
            before.rows().into_iter().map(|z| z.iter().zip(mu).map(|(a, b)| (a - b) * (a - b)).sum()).collect();
        let sigma2 = d2.iter().sum::<f64>() / d2.len() as f64;
        if sigma2.is_nan() || sigma2 <= 0.0 || !sigma2.is_finite() {
            continue;
        }
        // exp(−(d² − min d²)/(2σ²)): the same weights up to a common factor, without underflow.
        let min = d2.iter().copied().fold(f64::INFINITY, f64::min);
        let w: Vec<f64> = d2.iter().map(|&x| (-(x - min) / (2.0 * sigma2)).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut shift = ndarray::Array1::<f64>::zeros(d);
        for (wi, row) in w.iter().zip(delta.rows()) {
            shift.scaled_add(wi / total, &row);
        }
        stats.means.mean.row_mut(c).scaled_add(1.0, &shift);
        moved += 1;
    }
    Ok(moved)
}

/// Bytes [`SldaStats`] keeps for `classes` classes over `d` features: means and counts `8·classes·(d+1)`, Σ and
/// `t` `8·(d²+1)`, the trained head `4·classes·(d+1)`.
pub fn slda_bytes(classes: u64, d: u64) -> u64 {
    8 * classes * (d + 1) + 8 * (d * d + 1) + 4 * classes * (d + 1)
}

/// [`slda_bytes`] for head 0 of `model` when `on` (the `slda` option), else 0.
pub fn slda_bytes_for(model: &Model, on: bool) -> u64 {
    match model.heads.first() {
        Some(h) if on => slda_bytes(h.out_features() as u64, h.in_features() as u64),
        _ => 0,
    }
}

/// The width `M` of RanPAC's expansion when the trunk ends with it (`[RandomFeatures(d → M), Relu]`,
/// [`ensure_random_features`]), else `None`.
pub fn random_features_width(model: &Model) -> Option<usize> {
    match model.trunk.as_slice() {
        [.., Layer::RandomFeatures(r), Layer::Relu(_)] => Some(r.out_features()),
        _ => None,
    }
}

/// RanPAC's expansion (McDonnell et al., NeurIPS 2023, eq. 5: `h = ReLU(z Wᵀ)`, `W` a frozen Gaussian `M × d`)
/// between the trunk and the heads: appends `[RandomFeatures(d → m), Relu]` to the trunk ([`RandomFeatures::new`],
/// a function of `d` and `m` alone) and replaces every head by a fresh Linear over the `m` features (PyTorch's
/// initialisation from a ChaCha8 seeded with [`edgelearn_core::nn::RANDOM_FEATURES_SEED`]; a bias when the old head had
/// one). A linear classifier over `h` (the SLDA head, the trained head) then separates classes a linear
/// classifier over `z` cannot. Must run before a method keeps anything per parameter (the heads change shape).
/// Returns whether the model changed: a trunk that already ends with the expansion at width `m` is left alone;
/// one of another width, `m == 0` or heads of different input widths are an [`Error::Config`].
pub fn ensure_random_features(model: &mut Model, m: usize) -> Result<bool> {
    match random_features_width(model) {
        Some(w) if w == m => return Ok(false),
        Some(w) => {
            return Err(Error::Config(format!("the trunk already ends with random features of width {w}, not {m}")));
        }
        None if m == 0 => return Err(Error::Config("random features of width 0".into())),
        None => {}
    }
    let d = model.heads.first().map_or(0, Linear::in_features);
    if model.heads.iter().any(|h| h.in_features() != d) {
        return Err(Error::Config("random features need heads of one input width".into()));
    }
    let mut rng =
        <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(edgelearn_core::nn::RANDOM_FEATURES_SEED);
    let heads = model
        .heads
        .iter()
        .enumerate()
        .map(|(h, old)| Linear::new(&format!("head.{h}"), m, old.out_features(), old.bias.is_some(), &mut rng))
        .collect::<Vec<_>>();
    let mut trunk = model.trunk.clone();
    trunk.push(Layer::RandomFeatures(RandomFeatures::new(d, m)));
    trunk.push(Layer::Relu(Relu::default()));
    *model = Model::new(model.input_shape.clone(), trunk, heads)?;
    Ok(true)
}

/// The widest random-feature expansion `rp<M>` accepts (its SLDA covariance alone is `8·M²` bytes: 512 MiB).
pub const MAX_RANDOM_FEATURES: u32 = 8192;

/// The width `M` of an `rp<M>` method option (`rp2048` → 2048); [`Error::Config`] unless `1 ≤ M ≤`
/// [`MAX_RANDOM_FEATURES`].
pub fn parse_random_features(token: &str) -> Result<u32> {
    token.strip_prefix("rp").and_then(|m| m.parse::<u32>().ok()).filter(|&m| random_features_width_ok(m)).ok_or_else(
        || Error::Config(format!("method option {token:?}: rp<M> with M a width of 1 to {MAX_RANDOM_FEATURES}")),
    )
}

/// Whether `m` is a width `rp<M>` accepts: `1 ≤ m ≤` [`MAX_RANDOM_FEATURES`].
fn random_features_width_ok(m: u32) -> bool {
    (1..=MAX_RANDOM_FEATURES).contains(&m)
}

/// `model` as a method with the expansion of width `m` ([`ensure_random_features`]) will use it: a copy with the
/// expansion when `model` does not end with it yet (footprints computed before the first task), otherwise
/// `model` itself.
pub fn shaped_with_random_features(model: &Model, m: Option<u32>) -> Result<std::borrow::Cow<'_, Model>> {
    match m {
        Some(m) if random_features_width(model) != Some(m as usize) => {
            let mut copy = model.clone();
            ensure_random_features(&mut copy, m as usize)?;
            Ok(std::borrow::Cow::Owned(copy))
        }
        _ => Ok(std::borrow::Cow::Borrowed(model)),
    }
}

/// Give head `h` a zero bias if it has none (the SLDA head needs one). Called before a method keeps anything per
/// parameter, so that the parameter list does not change afterwards. Returns whether a bias was added.
pub fn ensure_head_bias(model: &mut Model, h: usize) -> Result<bool> {
    let heads = model.heads.len();
    let lin = model.heads.get(h).ok_or(Error::UnknownHead { head: h, heads })?;
    if lin.bias.is_some() {
        return Ok(false);
    }
    let w = lin.w().to_owned();
    let b = Array1::zeros(w.nrows());
    model.heads[h] = Linear::from_weights(&format!("head.{h}"), w, Some(b))?;
    Ok(true)
}

/// After a task: absorb its training samples' features at the trunk as it is now into `stats` (created on the
/// first call), keep the trained head ([`SldaStats::train_head`]), then write head `task.head` as the SLDA head of
/// every class seen under `shrinkage` ([`slda_head_with`]; the head gains a bias when it had none). Nothing
/// changes unless every step succeeds. Returns the seconds spent.
pub fn slda_refit(
    model: &mut Model,
    task: &TaskData<'_>,
    stats: &mut Option<SldaStats>,
    shrinkage: Shrinkage,
) -> Result<f64> {
    let t0 = Instant::now();
    let h = task.head;
    let classes = model.head_outputs(h)?;
    task.train.check_labels(classes)?;
    let d = model.heads[h].in_features();
    let mut work = stats.clone().unwrap_or_else(|| SldaStats {
        means: ClassMeans::new(classes, d),
        cov: SharedCovariance::new(d),
        train_head: None,
    });
    if work.means.dim() != d || work.cov.dim() != d {
        return Err(shape_err("SLDA statistics vs head input", work.means.dim(), d));
    }
    work.means.grow(classes)?;
    absorb_task(model, task.train, &mut work.means, Some(&mut work.cov))?;
    let lin = &model.heads[h];
    let bias = lin.bias.as_ref().map_or_else(|| Array1::zeros(classes), |p| p.value.iter().copied().collect());
    work.train_head = Some((lin.w().to_owned(), bias));
    let (w, b) = work.head(shrinkage)?;
    model.heads[h] = Linear::from_weights(&format!("head.{h}"), w, Some(b))?;
    *stats = Some(work);
    Ok(t0.elapsed().as_secs_f64())
}

/// Where RanDumb's input standardisation and γ come from ([`rbf_input_stats`]).
///
/// Measured on split-mnist-ci, seed 0, `D` = 2048 (docs/results.md): pooled statistics of the first task 95.98 %
/// (scikit-learn's pipeline on MNIST with one mean and std for every pixel: 96.00 %); per-pixel statistics 93.02 %
/// from every task's samples (scikit-learn: 93.00 %) and 75.33 % from the first task's only, whose near-constant
/// border pixels blow up later classes' strokes.
#[derive(Debug, Clone, PartialEq)]
pub enum InputStats {
    /// From the method's first task's training samples: all a board has when it builds the features (later
    /// classes' samples have not arrived yet). Per feature or one pooled mean and std for all.
    FirstTask {
        /// Per-feature statistics (`StandardScaler`); else pooled over every feature, i.e. `γ = 1/(d·Var x)` on
        /// the raw input.
        per_feature: bool,
    },
    /// Given from outside (host only: e.g. from every task's training samples, as an offline pipeline
    /// standardises): per-feature mean and standard deviation, and γ.
    Given {
        /// `m_j`.
        mean: Vec<f32>,
        /// `s_j > 0`.
        std: Vec<f32>,
        /// γ.
        gamma: f64,
        /// Whether they are per feature (for the method's name).
        per_feature: bool,
    },
}

impl InputStats {
    /// Whether the statistics are per feature.
    pub fn per_feature(&self) -> bool {
        match self {
            InputStats::FirstTask { per_feature } | InputStats::Given { per_feature, .. } => *per_feature,
        }
    }
}

/// RanDumb's representation (Prabhu et al. 2024): `D` random Fourier features of the standardised raw input
/// ([`RandomFourier`]) replace the model's trunk before the first task; the prototype head is fitted over them.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFourierSpec {
    /// `D`, 1 to [`MAX_RANDOM_FEATURES`].
    pub width: u32,
    /// The standardisation's source.
    pub stats: InputStats,
}

/// The width `D` of RanDumb's features when the model's trunk is RanDumb's (`[Flatten, RandomFourier]`), else
/// `None`.
pub fn random_fourier_width(model: &Model) -> Option<usize> {
    match model.trunk.as_slice() {
        [Layer::Flatten(_), Layer::RandomFourier(r)] => Some(r.out_features()),
        _ => None,
    }
}

/// `model` with its trunk replaced by RanDumb's: `[Flatten, RandomFourier(d → D)]` over the raw input (the
/// trunk's layers and parameters are gone), and every head replaced by a zero Linear with a bias over the `D`
/// features. `x` (the samples the standardisation is fitted on, with [`InputStats::FirstTask`]) and `seed` (the
/// draw of `W` and `b`) as [`RandomFourier::new`]. Errors on a width outside `1..=`[`MAX_RANDOM_FEATURES`],
/// given statistics of another input width, or no samples.
pub fn randumb_model(model: &Model, spec: &RandomFourierSpec, x: &ArrayView2<'_, f32>, seed: u64) -> Result<Model> {
    if !random_features_width_ok(spec.width) {
        return Err(Error::Config(format!("RanDumb features of width {}: 1 to {MAX_RANDOM_FEATURES}", spec.width)));
    }
    let d = model.input_len();
    let (mean, std, gamma) = match &spec.stats {
        InputStats::FirstTask { per_feature } => {
            if x.ncols() != d {
                return Err(shape_err("RanDumb: samples vs model input", d, x.ncols()));
            }
            rbf_input_stats(x, *per_feature)?
        }
        InputStats::Given { mean, std, gamma, .. } => (mean.clone(), std.clone(), *gamma),
    };
    if mean.len() != d {
        return Err(shape_err("RanDumb: standardisation vs model input", d, mean.len()));
    }
    let m = spec.width as usize;
    let rf = RandomFourier::new(mean, std, gamma, m, seed)?;
    let heads = zero_heads(model, m)?;
    Model::new(model.input_shape.clone(), vec![Layer::Flatten(Flatten::default()), Layer::RandomFourier(rf)], heads)
}

/// One zero Linear with a zero bias over `width` features for each head of `model`, with its number of outputs:
/// the heads of a model whose trunk a prototype method replaced ([`randumb_model`], [`input_model`]).
fn zero_heads(model: &Model, width: usize) -> Result<Vec<Linear>> {
    model
        .heads
        .iter()
        .enumerate()
        .map(|(h, old)| {
            let k = old.out_features();
            Linear::from_weights(&format!("head.{h}"), Array2::zeros((k, width)), Some(Array1::zeros(k)))
        })
        .collect()
}

/// Whether `model` is a head over its own input: the trunk is `[Flatten]` and every head reads the whole input.
pub fn is_input_model(model: &Model) -> bool {
    matches!(model.trunk.as_slice(), [Layer::Flatten(_)])
        && model.heads.iter().all(|h| h.in_features() == model.input_len())
}

/// `model` with its trunk dropped: `[Flatten]` over the input (`d = input_len` values), every head replaced by a
/// zero Linear with a bias over the `d` values (`φ(x) = x`; the prototype head is then fitted over the input).
pub fn input_model(model: &Model) -> Result<Model> {
    let heads = zero_heads(model, model.input_len())?;
    Model::new(model.input_shape.clone(), vec![Layer::Flatten(Flatten::default())], heads)
}

/// A prototype head over the frozen trunk, NCM or SLDA ([`PrototypeRule`]); see the module documentation.
///
/// Each task: `z = φ(x)` for the task's training samples, the running statistics absorb them
/// ([`ClassMeans::absorb`], and for SLDA [`SharedCovariance::add_deviations`]), and the task's head is rewritten
/// with [`ncm_head`] or [`slda_head`]. Nothing is committed (statistics, head) unless the whole task succeeds.
#[derive(Debug, Clone)]
pub struct Prototype {
    /// The classifier.
    pub rule: PrototypeRule,
    /// SLDA's shrinkage, a fixed ε or OAS (unused by NCM).
    pub shrinkage: Shrinkage,
    /// Class means per head (`None` for heads no task has used).
    means: Vec<Option<ClassMeans>>,
    /// SLDA's covariance, shared by every head.
    cov: Option<SharedCovariance>,
    tasks_seen: usize,
    /// RanPAC's expansion of width `M` before the head (`ncm+rp<M>`, `slda+rp<M>`), added on the first task.
    random_features: Option<u32>,
    /// RanDumb's representation (`randumb<D>`): the trunk replaced by random Fourier features of the raw input on
    /// the first task.
    random_fourier: Option<RandomFourierSpec>,
    /// Bytes a state needs for RanDumb's features once built (seed, γ, standardisation; [`RandomFourier`]).
    fourier_bytes: usize,
    /// The head over the model's input itself (`+input`): the trunk dropped on the first task ([`input_model`]).
    over_input: bool,
}

impl Prototype {
    /// A prototype head with `rule` (SLDA's ε = [`SLDA_SHRINKAGE`]).
    pub fn new(rule: PrototypeRule) -> Self {
        Self {
            rule,
            shrinkage: Shrinkage::default(),
            means: Vec::new(),
            cov: None,
            tasks_seen: 0,
            random_features: None,
            random_fourier: None,
            fourier_bytes: 0,
            over_input: false,
        }
    }

    /// RanDumb (Prabhu et al. 2024, arXiv 2402.08823): streaming LDA with OAS shrinkage over `d_out` random
    /// Fourier features of the standardised raw input, `z(x) = √(2/D)·cos(W x̃ + b)`, `W ~ N(0, 2γI)`,
    /// `b ~ U(0, 2π)`, `γ = 1/(d·Var(x̃))` ([`RandomFourier`], [`rbf_input_stats`]); the model's trunk is replaced
    /// on the first task ([`randumb_model`]), `W` and `b` drawn from a seed taken from the run's random stream.
    /// [`Error::Config`] unless `1 ≤ D ≤` [`MAX_RANDOM_FEATURES`].
    pub fn randumb(d_out: u32, stats: InputStats) -> Result<Self> {
        if !random_features_width_ok(d_out) {
            return Err(Error::Config(format!("RanDumb features of width {d_out}: 1 to {MAX_RANDOM_FEATURES}")));
        }
        let mut m = Self::slda();
        m.shrinkage = Shrinkage::Oas;
        m.random_fourier = Some(RandomFourierSpec { width: d_out, stats });
        Ok(m)
    }

    /// The same method with OAS shrinkage (`slda-oas`): `Λ = ((1−ρ)Σ + ρμI)⁻¹` ([`Shrinkage::Oas`]).
    pub fn with_oas(mut self) -> Self {
        self.shrinkage = Shrinkage::Oas;
        self
    }

    /// Nearest class mean: `ŷ = argmin_c ‖φ(x) − μ_c‖²`.
    pub fn ncm() -> Self {
        Self::new(PrototypeRule::Ncm)
    }

    /// Streaming LDA: `ŷ = argmax_c (μ_cᵀΛφ(x) − ½ μ_cᵀΛμ_c)`, `Λ = ((1−ε)Σ + εI)⁻¹`, ε = [`SLDA_SHRINKAGE`].
    pub fn slda() -> Self {
        Self::new(PrototypeRule::Slda)
    }

    /// The same method with SLDA's ε in `Λ = ((1−ε)Σ + εI)⁻¹` set to `shrinkage`; [`Error::Config`] unless
    /// `0 < ε ≤ 1`.
    pub fn with_shrinkage(mut self, shrinkage: f64) -> Result<Self> {
        check_shrinkage(shrinkage)?;
        self.shrinkage = Shrinkage::Fixed(shrinkage);
        Ok(self)
    }

    /// The same method over RanPAC's expansion of width `m` (`h = ReLU(z Wᵀ)`, [`ensure_random_features`], added
    /// before the first task): RanPAC without training when the trunk is frozen or random. [`Error::Config`]
    /// unless `1 ≤ m ≤` [`MAX_RANDOM_FEATURES`].
    pub fn with_random_features(mut self, m: u32) -> Result<Self> {
        if !random_features_width_ok(m) {
            return Err(Error::Config(format!("random features of width {m}: 1 to {MAX_RANDOM_FEATURES}")));
        }
        self.random_features = Some(m);
        Ok(self)
    }

    /// The same method over the model's input itself (`+input`, [`input_model`]): on a model cut behind a frozen
    /// prefix, the head over the prefix's features with no trainable layer between; on a plain model, over the
    /// raw input. The peer that asks what the trainable layers add to the features they are given.
    pub fn over_input(mut self) -> Self {
        self.over_input = true;
        self
    }

    /// The class means `μ_c`, `n_c` of head `head` (`None` before a task used it).
    pub fn means(&self, head: usize) -> Option<&ClassMeans> {
        self.means.get(head).and_then(Option::as_ref)
    }

    /// SLDA's shared covariance Σ (`None` for NCM and before the first task).
    pub fn covariance(&self) -> Option<&SharedCovariance> {
        self.cov.as_ref()
    }

    /// Number of tasks learned so far.
    pub fn tasks_seen(&self) -> usize {
        self.tasks_seen
    }
}

impl Method for Prototype {
    /// `ncm`, `slda` or `slda-oas`, then `+rp<M>` with RanPAC's expansion; RanDumb (SLDA with OAS over random
    /// Fourier features) is `randumb<D>`, with `+pixel` for per-feature statistics and `+all` for given ones
    /// (other rules over those features `<rule>+rff<D>`).
    fn name(&self) -> String {
        let rule = match (self.rule, self.shrinkage) {
            (PrototypeRule::Ncm, _) => "ncm",
            (PrototypeRule::Slda, Shrinkage::Oas) => "slda-oas",
            (PrototypeRule::Slda, Shrinkage::Fixed(_)) => "slda",
        };
        if let Some(spec) = &self.random_fourier {
            let pixel = if spec.stats.per_feature() { "+pixel" } else { "" };
            let all = if matches!(spec.stats, InputStats::Given { .. }) { "+all" } else { "" };
            let global = format!("{pixel}{all}");
            return if rule == "slda-oas" {
                format!("randumb{}{global}", spec.width)
            } else {
                format!("{rule}+rff{}{global}", spec.width)
            };
        }
        match (self.random_features, self.over_input) {
            (Some(m), _) => format!("{rule}+rp{m}"),
            (None, true) => format!("{rule}+input"),
            (None, false) => rule.into(),
        }
    }

    fn learn_task(&mut self, model: &mut Model, task: &TaskData<'_>, ctx: &mut LearnContext<'_>) -> Result<TaskReport> {
        let name = self.name();
        let h = task.head;
        let classes = model.head_outputs(h)?;
        if task.train.is_empty() {
            return Err(Error::Empty(format!("{name}: task {} has no training samples", task.task_id)));
        }
        if task.train.x.nrows() != task.train.y.len() {
            return Err(shape_err("samples: rows vs labels", task.train.x.nrows(), task.train.y.len()));
        }
        task.train.check_labels(classes)?;
        if self.over_input && !is_input_model(model) {
            if self.tasks_seen > 0 {
                return Err(Error::Config(format!("{name}: the model gained a trunk after task 1")));
            }
            *model = input_model(model)?;
        }
        if let Some(m) = self.random_features {
            ensure_random_features(model, m as usize)?;
        }
        if let Some(spec) = &self.random_fourier
            && random_fourier_width(model) != Some(spec.width as usize)
        {
            if self.tasks_seen > 0 {
                return Err(Error::Config(format!("{name}: the model lost RanDumb's features after task 1")));
            }
            let seed: u64 = ctx.rng.random();
            *model = randumb_model(model, spec, &task.train.x.view(), seed)?;
            if let Some(Layer::RandomFourier(r)) = model.trunk.last() {
                self.fourier_bytes = r.stored_bytes();
            }
        }
        let d = model.heads[h].in_features();
        // Working copies, committed only when the whole task succeeded.
        let mut means = self.means(h).cloned().unwrap_or_else(|| ClassMeans::new(classes, d));
        if means.dim() != d {
            return Err(shape_err(&format!("{name}: class means vs head {h} input"), means.dim(), d));
        }
        means.grow(classes)?;
        let mut cov = match self.rule {
            PrototypeRule::Ncm => None,
            PrototypeRule::Slda => Some(self.cov.clone().unwrap_or_else(|| SharedCovariance::new(d))),
        };
        if let Some(c) = &cov
            && c.dim() != d
        {
            return Err(shape_err(&format!("{name}: covariance vs head {h} input"), c.dim(), d));
        }
        let (t_features, t_fit) = absorb_task(model, task.train, &mut means, cov.as_mut())?;
        let t2 = Instant::now();
        let (w, b) = match &cov {
            None => ncm_head(&means)?,
            Some(c) => slda_head_with(&means, c, self.shrinkage)?,
        };
        let head = Linear::from_weights(&format!("head.{h}"), w, Some(b))?;
        model.heads[h] = head;
        if self.means.len() <= h {
            self.means.resize(h + 1, None);
        }
        self.means[h] = Some(means);
        self.cov = cov;
        self.tasks_seen += 1;
        Ok(TaskReport {
            task_id: task.task_id,
            timings: vec![
                ("features".into(), t_features),
                ("fit".into(), t_fit),
                ("head".into(), t2.elapsed().as_secs_f64()),
            ],
            bytes_kept: self.bytes_kept(),
            ..TaskReport::default()
        })
    }

    /// Means and counts of every head (`8·classes·(d+1)` each), plus SLDA's Σ and `t` (`8·(d² + 1)`), plus
    /// what rebuilds RanDumb's features (seed, γ, standardisation; not the `D × d` matrix, a function of those).
    fn bytes_kept(&self) -> usize {
        self.means.iter().flatten().map(ClassMeans::bytes).sum::<usize>()
            + self.cov.as_ref().map_or(0, SharedCovariance::bytes)
            + self.fourier_bytes
    }

    /// No training: one feature pass in batches of [`FEATURE_BATCH`]. Kept (the `fisher` line): means and counts
    /// for every output of every head, plus SLDA's Σ, as they are after the task. Workspace on top of the pass:
    /// the deviations of a batch (f64), working copies of the means and Σ, and for SLDA the Cholesky factor and
    /// `Λμ` (f64); the new head (f32). A bias-free head gains its bias (`params`).
    fn footprint(&self, model: &Model) -> Result<Footprint> {
        let shaped;
        let model = match &self.random_fourier {
            // Before the first task: a model of RanDumb's shape (any standardisation and seed, the sizes matter).
            Some(spec) if random_fourier_width(model) != Some(spec.width as usize) => {
                let d = model.input_len();
                let unit = RandomFourierSpec {
                    width: spec.width,
                    stats: InputStats::Given { mean: vec![0.0; d], std: vec![1.0; d], gamma: 1.0, per_feature: false },
                };
                shaped = randumb_model(model, &unit, &Array2::<f32>::zeros((0, d)).view(), 0)?;
                &shaped
            }
            _ if self.over_input && !is_input_model(model) => {
                shaped = input_model(model)?;
                &shaped
            }
            _ => model,
        };
        let model = &*shaped_with_random_features(model, self.random_features)?;
        let d = model.heads.iter().map(Linear::in_features).max().unwrap_or(0) as u64;
        let outputs: u64 = model.heads.iter().map(|hd| hd.out_features() as u64).sum();
        let widest = model.heads.iter().map(|hd| hd.out_features() as u64).max().unwrap_or(0);
        let means = 8 * outputs * (d + 1);
        let cov = if self.rule == PrototypeRule::Slda { 8 * (d * d + 1) } else { 0 };
        let plan = StepPlan { batch_size: FEATURE_BATCH, kept_bytes: means + cov, ..StepPlan::default() };
        let mut fp = Footprint::estimate(model, &plan)?;
        let batch = 8 * FEATURE_BATCH as u64 * d;
        let copies = 8 * widest * (d + 1) + cov;
        let solve = if self.rule == PrototypeRule::Slda { 8 * d * d + 2 * 8 * d * widest } else { 0 };
        let head = 4 * widest * (d + 1);
        fp.workspace = fp.workspace.saturating_add(batch + copies + solve + head);
        let missing_bias: u64 =
            model.heads.iter().filter(|hd| hd.bias.is_none()).map(|hd| hd.out_features() as u64).sum();
        fp.params = fp.params.saturating_add(4 * missing_bias);
        Ok(fp)
    }

    /// Nothing before the first task; afterwards a typed error: this baseline does not export its per-head means
    /// and Σ (BECAME's `slda` option is the one that stores SLDA statistics, as [`edgelearn_store::SldaState`]).
    fn export_state(&self) -> Result<MethodState> {
        if self.bytes_kept() > 0 {
            return Err(host_only_state(&self.name(), self.bytes_kept()));
        }
        Ok(MethodState::default())
    }

    /// Only an empty state (no task, no bases, no Fisher) is accepted.
    fn import_state(&mut self, _model: &Model, state: MethodState) -> Result<()> {
        import_nothing(&self.name(), &state)
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use edgelearn_core::data::Samples;
    use edgelearn_core::nn::argmax_rows;

    /// A model whose trunk is empty (features = inputs) with one bias-free head of `classes` outputs over `d`.
    fn identity_model(d: usize, classes: usize) -> Model {
        let head = Linear::from_weights("head.0", Array2::zeros((classes, d)), None).unwrap();
        Model::new(vec![d], Vec::new(), vec![head]).unwrap()
    }

    fn learn(method: &mut Prototype, model: &mut Model, train: &Samples, task_id: usize) -> Result<TaskReport> {
        let mut rng = edgelearn_core::seeded_rng(0);
        let mut progress = edgelearn_core::train::Silent;
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut progress, replay: None };
        let val = Samples::new(Array2::zeros((0, train.features())), Vec::new()).unwrap();
        method.learn_task(model, &TaskData { task_id, head: 0, train, val: &val }, &mut ctx)
    }

    /// RanPAC without training (`slda+rp<M>`): over the 2-D input, XOR's two diagonals share one covariance and
    /// SLDA is at chance; over 256 random ReLU features of it (`|w·z|` tells the diagonals apart) it separates
    /// them. The expansion is added on the first task, the footprint counts it before, bad widths are typed.
    #[test]
    fn slda_over_random_features_separates_what_slda_cannot() {
        let xor =
            |n, seed| blobs(&[(0, [-2.0, -2.0]), (0, [2.0, 2.0]), (1, [2.0, -2.0]), (1, [-2.0, 2.0])], n, 0.8, seed);
        let (train, test) = (xor(40, 11), xor(40, 12));
        let accuracy = |model: &mut Model| {
            let pred = model.predict(&test.x.view(), 0).unwrap();
            pred.iter().zip(&test.y).filter(|(p, y)| p == y).count() as f64 / test.len() as f64
        };
        let (mut plain_model, mut rp_model) = (identity_model(2, 2), identity_model(2, 2));
        let mut plain = Prototype::slda();
        let mut rp = Prototype::slda().with_random_features(256).unwrap();
        assert_eq!(rp.name(), "slda+rp256");
        assert_eq!(Prototype::ncm().with_random_features(8).unwrap().name(), "ncm+rp8");
        for bad in [0, MAX_RANDOM_FEATURES + 1] {
            assert!(matches!(Prototype::slda().with_random_features(bad), Err(Error::Config(_))), "width {bad}");
        }
        let fp = rp.footprint(&rp_model).unwrap();
        assert!(fp.fisher >= 8 * 256 * 256, "the footprint counts Σ over the 256 features before the first task");
        assert_eq!(random_features_width(&rp_model), None, "the footprint does not touch the model");
        learn(&mut plain, &mut plain_model, &train, 0).unwrap();
        learn(&mut rp, &mut rp_model, &train, 0).unwrap();
        assert_eq!(random_features_width(&rp_model), Some(256));
        assert_eq!(rp.covariance().unwrap().dim(), 256);
        let (a_plain, a_rp) = (accuracy(&mut plain_model), accuracy(&mut rp_model));
        assert!(a_plain < 0.75, "SLDA over XOR's two inputs: {a_plain}");
        assert!(a_rp > 0.9, "SLDA over 256 random features: {a_rp}");
    }

    /// `n` points per class around `centres` (uniform noise of half-width `spread`).
    fn blobs(centres: &[(usize, [f32; 2])], n: usize, spread: f32, seed: u64) -> Samples {
        let mut rng = edgelearn_core::seeded_rng(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            for &(c, [a, b]) in centres {
                x.push(a + rng.random_range(-spread..spread));
                x.push(b + rng.random_range(-spread..spread));
                y.push(c);
            }
        }
        Samples::new(Array2::from_shape_vec((y.len(), 2), x).unwrap(), y).unwrap()
    }

    fn grid() -> Array2<f32> {
        Array2::from_shape_fn((121, 2), |(i, j)| if j == 0 { (i / 11) as f32 - 3.0 } else { (i % 11) as f32 - 3.0 })
    }

    #[test]
    fn ncm_picks_the_nearest_mean() {
        let mut model = identity_model(2, 3);
        let mut m = Prototype::ncm();
        let train = blobs(&[(0, [0.0, 0.0]), (1, [4.0, 0.0]), (2, [0.0, 4.0])], 20, 1.0, 1);
        let report = learn(&mut m, &mut model, &train, 0).unwrap();
        let means = m.means(0).unwrap().clone();
        assert_eq!(means.count, vec![20, 20, 20]);
        for c in 0..3 {
            let idx: Vec<usize> = (0..train.len()).filter(|&i| train.y[i] == c).collect();
            let direct = train.select(&idx).x.mapv(f64::from).mean_axis(Axis(0)).unwrap();
            for (a, b) in direct.iter().zip(means.mean.row(c)) {
                assert!((a - b).abs() < 1e-12, "running mean {b} vs direct {a}");
            }
        }
        assert_eq!(report.bytes_kept, 8 * (3 * 2 + 3));
        assert!(model.heads[0].bias.is_some(), "the bias-free head got a bias");
        let names: Vec<String> = model.params().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, vec!["head.0.weight", "head.0.bias"]);
        let x = grid();
        let pred = model.predict(&x.view(), 0).unwrap();
        for (row, p) in x.outer_iter().zip(pred) {
            let dist =
                |c: usize| row.iter().zip(means.mean.row(c)).map(|(&a, &b)| (f64::from(a) - b).powi(2)).sum::<f64>();
            let best = (0..3).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap();
            assert!(
                p == best || (dist(p) - dist(best)).abs() < 1e-4,
                "{row} → {p}, nearest mean is {best} ({} vs {})",
                dist(p),
                dist(best)
            );
        }
    }

    #[test]
    fn slda_batched_update_equals_streaming() {
        let (d, classes) = (3, 4);
        let mut rng = edgelearn_core::seeded_rng(7);
        let mut batched = (ClassMeans::new(classes, d), SharedCovariance::new(d));
        let mut stream = batched.clone();
        // Two tasks, absorbed in uneven batches; the second continues the global count t.
        for (n, chunks) in [(37usize, [5usize, 13, 19]), (23, [1, 2, 20])] {
            let z = Array2::from_shape_fn((n, d), |_| rng.random_range(-2.0f32..3.0));
            let y: Vec<usize> = (0..n).map(|_| rng.random_range(0..classes)).collect();
            let mut start = 0;
            for len in chunks {
                let (zc, yc) = (z.slice(s![start..start + len, ..]), &y[start..start + len]);
                let dev = batched.0.absorb(&zc, yc).unwrap();
                batched.1.add_deviations(&dev.view()).unwrap();
                start += len;
            }
            for (zi, &yi) in z.outer_iter().zip(&y) {
                stream.1.update_one(&mut stream.0, &zi.mapv(f64::from).view(), yi).unwrap();
            }
        }
        assert_eq!(batched.1.updates, 60);
        assert_eq!(batched.0.count, stream.0.count);
        for (a, b) in batched.0.mean.iter().zip(&stream.0.mean) {
            assert!((a - b).abs() < 1e-12);
        }
        for (a, b) in batched.1.sigma.iter().zip(&stream.1.sigma) {
            assert!((a - b).abs() < 1e-12 * (1.0 + b.abs()), "batched Σ {a} vs streaming {b}");
        }
        // The streaming formula by hand for the first two samples: Σ₁ = 0, Σ₂ = ½·½·d dᵀ with d = z₂ − μ_y(before).
        let mut pair = (ClassMeans::new(1, 1), SharedCovariance::new(1));
        let dev = pair.0.absorb(&Array2::from_shape_vec((2, 1), vec![1.0f32, 3.0]).unwrap().view(), &[0, 0]).unwrap();
        pair.1.add_deviations(&dev.view()).unwrap();
        assert_eq!(pair.0.mean[[0, 0]], 2.0);
        assert!((pair.1.sigma[[0, 0]] - 0.25 * 4.0).abs() < 1e-15);
    }

    /// Λ by the 2×2 adjugate, independent of the Cholesky route.
    fn lambda_2x2(sigma: &Array2<f64>, eps: f64) -> [[f64; 2]; 2] {
        let a = |i: usize, j: usize| (1.0 - eps) * sigma[[i, j]] + if i == j { eps } else { 0.0 };
        let det = a(0, 0) * a(1, 1) - a(0, 1) * a(1, 0);
        [[a(1, 1) / det, -a(0, 1) / det], [-a(1, 0) / det, a(0, 0) / det]]
    }

    #[test]
    fn the_head_reproduces_both_classifiers() {
        // Elongated classes: SLDA's shared covariance matters, NCM's Euclidean distance does not see it.
        let train = {
            let mut rng = edgelearn_core::seeded_rng(3);
            let mut x = Vec::new();
            let mut y = Vec::new();
            for i in 0..60 {
                let c = i % 3;
                let t: f32 = rng.random_range(-3.0..3.0);
                let e: f32 = rng.random_range(-0.3..0.3);
                let centre = [[0.0f32, 0.0], [1.5, 1.0], [-1.0, 2.0]][c];
                x.extend([centre[0] + t + e, centre[1] + 0.5 * t - e]);
                y.push(c);
            }
            Samples::new(Array2::from_shape_vec((60, 2), x).unwrap(), y).unwrap()
        };
        let x = grid();
        for rule in [PrototypeRule::Ncm, PrototypeRule::Slda] {
            let mut model = identity_model(2, 3);
            let mut m = Prototype::new(rule);
            learn(&mut m, &mut model, &train, 0).unwrap();
            let mu = &m.means(0).unwrap().mean;
            let logits = model.forward(&x.view(), 0, Mode::Eval).unwrap();
            for (row, l) in x.outer_iter().zip(logits.outer_iter()) {
                let z = [f64::from(row[0]), f64::from(row[1])];
                // Discriminant in its quadratic form: −½ (z − μ_c)ᵀ Λ (z − μ_c) (Λ = I for NCM) differs from the
                // head's logit by −½ zᵀΛz, the same for every class.
                let lam = match rule {
                    PrototypeRule::Ncm => [[1.0, 0.0], [0.0, 1.0]],
                    PrototypeRule::Slda => lambda_2x2(&m.covariance().unwrap().sigma, SLDA_SHRINKAGE),
                };
                let quad = |v: [f64; 2]| {
                    v[0] * (lam[0][0] * v[0] + lam[0][1] * v[1]) + v[1] * (lam[1][0] * v[0] + lam[1][1] * v[1])
                };
                let g: Vec<f64> = (0..3).map(|c| -0.5 * quad([z[0] - mu[[c, 0]], z[1] - mu[[c, 1]]])).collect();
                for c in 0..3 {
                    let expected = g[c] + 0.5 * quad(z);
                    assert!(
                        (f64::from(l[c]) - expected).abs() < 1e-3 * (1.0 + expected.abs()),
                        "{rule:?}: logit {} vs discriminant {expected} at {row}",
                        l[c]
                    );
                }
                let best = (0..3).max_by(|&a, &b| g[a].total_cmp(&g[b])).unwrap();
                let got = argmax_rows(&l.insert_axis(Axis(0)))[0];
                assert!(got == best || (g[got] - g[best]).abs() < 1e-3, "{rule:?} at {row}: {got} vs {best}");
            }
        }
    }

    #[test]
    fn slda_refit_on_a_fixed_trunk_is_the_slda_method() {
        let first = blobs(&[(0, [0.0, 0.0]), (1, [4.0, 0.0])], 15, 1.0, 4);
        let second = blobs(&[(2, [0.0, 4.0]), (3, [4.0, 4.0])], 15, 1.0, 5);
        let val = Samples::new(Array2::zeros((0, 2)), Vec::new()).unwrap();
        let (mut by_method, mut by_refit) = (identity_model(2, 2), identity_model(2, 2));
        let mut m = Prototype::slda();
        let mut stats = None;
        for (i, train) in [&first, &second].into_iter().enumerate() {
            if i == 1 {
                let g = by_method.grow_head(0, 4).unwrap();
                m.params_grown(&g).unwrap();
                by_refit.grow_head(0, 4).unwrap();
            }
            learn(&mut m, &mut by_method, train, i).unwrap();
            let task = TaskData { task_id: i, head: 0, train, val: &val };
            slda_refit(&mut by_refit, &task, &mut stats, Shrinkage::default()).unwrap();
        }
        let st = stats.as_ref().unwrap();
        assert_eq!(st.means.count, vec![15, 15, 15, 15]);
        assert_eq!(Some(&st.means), m.means(0));
        assert_eq!(Some(&st.cov), m.covariance());
        assert_eq!(by_refit.heads[0].w(), by_method.heads[0].w());
        // A label outside the head: typed error, statistics and head unchanged.
        let bad = blobs(&[(7, [0.0, 0.0])], 3, 1.0, 6);
        let before = (stats.clone(), by_refit.heads[0].w().to_owned());
        let task = TaskData { task_id: 2, head: 0, train: &bad, val: &val };
        assert!(slda_refit(&mut by_refit, &task, &mut stats, Shrinkage::default()).is_err());
        assert_eq!((stats, by_refit.heads[0].w().to_owned()), before);
    }

    #[test]
    fn drift_compensation_moves_only_classes_with_stored_samples() {
        let mut stats = SldaStats { means: ClassMeans::new(3, 2), cov: SharedCovariance::new(2), train_head: None };
        stats.means.count = vec![5, 5, 0];
        stats.means.mean = Array2::from_shape_vec((3, 2), vec![1.0, 1.0, 2.0, 2.0, 0.0, 0.0]).unwrap();
        let mut before = ClassMeans::new(3, 2);
        let mut after = ClassMeans::new(3, 2);
        // Class 0 stored, drifted by (+1, −2); class 1 has no stored sample; class 2 was never learned.
        before.absorb(&Array2::from_shape_vec((1, 2), vec![0.0f32, 0.0]).unwrap().view(), &[0]).unwrap();
        after.absorb(&Array2::from_shape_vec((1, 2), vec![1.0f32, -2.0]).unwrap().view(), &[0]).unwrap();
        before.absorb(&Array2::from_shape_vec((1, 2), vec![0.0f32, 0.0]).unwrap().view(), &[2]).unwrap();
        after.absorb(&Array2::from_shape_vec((1, 2), vec![5.0f32, 5.0]).unwrap().view(), &[2]).unwrap();
        assert_eq!(compensate_drift(&mut stats, &before, &after).unwrap(), 1);
        assert_eq!(stats.means.mean.row(0).to_vec(), vec![2.0, -1.0]);
        assert_eq!(stats.means.mean.row(1).to_vec(), vec![2.0, 2.0]);
        assert_eq!(stats.means.mean.row(2).to_vec(), vec![0.0, 0.0]);
        let narrow = ClassMeans::new(3, 1);
        assert!(compensate_drift(&mut stats, &narrow, &after).is_err());
    }

    /// SDC without stored samples: an old class's mean moves by the displacement of the task samples near it
    /// (Gaussian weights), the task's own classes and never-learned classes stay; a uniform drift moves every old
    /// mean by exactly that drift.
    #[test]
    fn drift_from_the_task_moves_old_means_by_the_nearby_displacement() {
        let mut stats = SldaStats { means: ClassMeans::new(4, 2), cov: SharedCovariance::new(2), train_head: None };
        stats.means.count = vec![5, 5, 5, 0];
        stats.means.mean = Array2::from_shape_vec((4, 2), vec![0.0, 0.0, 10.0, 0.0, 3.0, 3.0, 0.0, 0.0]).unwrap();
        // Two samples of class 2 (the task's class): one next to class 0 moving by (+1, 0), one next to class 1
        // moving by (0, −1).
        let before = Array2::from_shape_vec((2, 2), vec![0.5f32, 0.0, 9.5, 0.0]).unwrap();
        let after = Array2::from_shape_vec((2, 2), vec![1.5f32, 0.0, 9.5, -1.0]).unwrap();
        let moved = compensate_drift_from_task(&mut stats, &before.view(), &after.view(), &[2, 2]).unwrap();
        assert_eq!(moved, 2);
        let (m0, m1) = (stats.means.mean.row(0).to_vec(), stats.means.mean.row(1).to_vec());
        // Each follows its neighbour more than the far sample: a weighted mean of (+1, 0) and (0, −1).
        assert!(m0[0] > 0.5 && m0[0] < 1.0 && (m0[0] - m0[1] - 1.0).abs() < 1e-9, "class 0: {m0:?}");
        assert!(m1[1] < -0.5 && m1[1] > -1.0 && (m1[0] - 10.0 - m1[1] - 1.0).abs() < 1e-9, "class 1: {m1:?}");
        assert_eq!(stats.means.mean.row(2).to_vec(), vec![3.0, 3.0], "the task's own class is absorbed afresh");
        assert_eq!(stats.means.mean.row(3).to_vec(), vec![0.0, 0.0], "a class never learned does not move");
        // A uniform drift moves every old class by exactly it.
        let shifted = before.mapv(|v| v + 2.0);
        compensate_drift_from_task(&mut stats, &before.view(), &shifted.view(), &[2, 2]).unwrap();
        assert!((stats.means.mean[[1, 0]] - (m1[0] + 2.0)).abs() < 1e-9);
        let wrong = Array2::<f32>::zeros((2, 3));
        assert!(compensate_drift_from_task(&mut stats, &wrong.view(), &wrong.view(), &[2, 2]).is_err());
    }

    #[test]
    fn growing_classes_keeps_old_decisions() {
        let first = blobs(&[(0, [0.0, 0.0]), (1, [4.0, 0.0])], 15, 1.0, 4);
        let second = blobs(&[(2, [0.0, 4.0]), (3, [4.0, 4.0])], 15, 1.0, 5);
        let probe = blobs(&[(0, [0.0, 0.0]), (1, [4.0, 0.0])], 10, 0.5, 6);
        for rule in [PrototypeRule::Ncm, PrototypeRule::Slda] {
            let mut model = identity_model(2, 2);
            let mut m = Prototype::new(rule);
            learn(&mut m, &mut model, &first, 0).unwrap();
            let before = model.forward(&probe.x.view(), 0, Mode::Eval).unwrap();
            let growth = model.grow_head(0, 4).unwrap();
            m.params_grown(&growth).unwrap();
            learn(&mut m, &mut model, &second, 1).unwrap();
            let after = model.forward(&probe.x.view(), 0, Mode::Eval).unwrap();
            assert_eq!(m.means(0).unwrap().count, vec![15, 15, 15, 15]);
            // Old classes keep winning on their own samples.
            assert_eq!(argmax_rows(&before.view()), probe.y);
            assert_eq!(argmax_rows(&after.view()), probe.y, "{rule:?}");
            if rule == PrototypeRule::Ncm {
                // NCM's old rows do not move at all.
                assert_eq!(after.slice(s![.., ..2]), before, "NCM's old logits changed");
            }
        }
        // A full-width head: the classes not seen yet never win.
        let mut model = identity_model(2, 4);
        let mut m = Prototype::slda();
        learn(&mut m, &mut model, &first, 0).unwrap();
        let b = model.heads[0].bias.as_ref().unwrap().value.clone();
        assert_eq!(b[[2]], UNSEEN_CLASS_BIAS);
        assert!(model.predict(&grid().view(), 0).unwrap().iter().all(|&p| p < 2));
    }

    #[test]
    fn bad_input_changes_nothing() {
        let mut model = identity_model(2, 2);
        let flat = model.flat_params();
        let mut m = Prototype::slda();
        let bad = Samples::new(Array2::zeros((3, 2)), vec![0, 1, 2]).unwrap();
        assert!(matches!(learn(&mut m, &mut model, &bad, 0), Err(Error::LabelOutOfRange { label: 2, .. })));
        let nan = Samples { x: Array2::from_elem((2, 2), f32::NAN), y: vec![0, 1] };
        assert!(matches!(learn(&mut m, &mut model, &nan, 0), Err(Error::NonFinite(_))));
        let wide = Samples::new(Array2::zeros((2, 3)), vec![0, 1]).unwrap();
        assert!(matches!(learn(&mut m, &mut model, &wide, 0), Err(Error::Shape { .. })));
        let empty = Samples::new(Array2::zeros((0, 2)), Vec::new()).unwrap();
        assert!(matches!(learn(&mut m, &mut model, &empty, 0), Err(Error::Empty(_))));
        assert_eq!((m.bytes_kept(), m.tasks_seen()), (0, 0));
        assert_eq!(model.flat_params(), flat);
        assert!(m.export_state().is_ok());
        assert!(matches!(Prototype::slda().with_shrinkage(0.0), Err(Error::Config(_))));
        learn(&mut m, &mut model, &blobs(&[(0, [0.0, 0.0]), (1, [1.0, 1.0])], 3, 0.5, 8), 0).unwrap();
        assert!(matches!(m.export_state(), Err(Error::Config(_))));
        assert_eq!(m.bytes_kept(), 8 * (2 * 3) + 8 * (4 + 1));
    }

    /// OAS by hand on S = [[2, 1], [1, 4]]: μ = tr(S)/p = 3, a = (4 + 1 + 1 + 16)/4 = 5.5, so
    /// ρ = (a + μ²)/((n + 1)(a − μ²/p)) = 14.5/((n + 1)·1): 0.145 for n = 99, capped at 1 for n = 9.
    #[test]
    fn oas_shrinkage_by_hand() {
        let s = ndarray::array![[2.0, 1.0], [1.0, 4.0]];
        let (rho, mu) = oas_shrinkage(&s.view(), 99).unwrap();
        assert!((rho - 0.145).abs() < 1e-15 && mu == 3.0, "ρ {rho}, μ {mu}");
        assert_eq!(oas_shrinkage(&s.view(), 9).unwrap().0, 1.0);
        // No spread at all: the denominator is 0 and ρ = 1 (scikit-learn's rule).
        assert_eq!(oas_shrinkage(&Array2::zeros((2, 2)).view(), 5).unwrap(), (1.0, 0.0));
        assert!(matches!(oas_shrinkage(&s.view(), 0), Err(Error::Empty(_))));
        assert!(oas_shrinkage(&Array2::zeros((2, 3)).view(), 5).is_err());
        assert!(oas_shrinkage(&ndarray::array![[f64::NAN]].view(), 5).is_err());
        // Through the shared covariance: n is the count of samples absorbed.
        let cov = SharedCovariance { sigma: s, updates: 99 };
        let (alpha, beta) = Shrinkage::Oas.coefficients(&cov).unwrap();
        assert!((alpha - 0.855).abs() < 1e-15 && (beta - 0.435).abs() < 1e-14, "α {alpha}, β {beta}");
        assert_eq!(Shrinkage::Fixed(0.25).coefficients(&cov).unwrap(), (0.75, 0.25));
        assert!(Shrinkage::Fixed(0.0).validate().is_err());
        // Σ = 0: OAS has nothing to shrink towards, the fixed ε steps in.
        let flat = SharedCovariance { sigma: Array2::zeros((2, 2)), updates: 4 };
        assert_eq!(Shrinkage::Oas.coefficients(&flat).unwrap(), (1.0 - SLDA_SHRINKAGE, SLDA_SHRINKAGE));
        assert!(Shrinkage::Oas.coefficients(&SharedCovariance::new(2)).is_err(), "no sample yet");
    }

    /// ρ against scikit-learn 1.9.1 on a 30 × 3 sample, produced with
    /// `python3 -c "import numpy as np; from sklearn.covariance import oas;
    /// X = np.array([[i%7, (i*3)%5 + 0.5*(i%7), (i*i)%11] for i in range(30)], float); print(oas(X))"`
    /// (`oas` takes the samples and uses their biased empirical covariance, the one computed here).
    #[test]
    fn oas_shrinkage_matches_scikit_learn() {
        const SKLEARN_RHO: f64 = 0.478_285_926_550_105_54;
        const SKLEARN_SHRUNK_00: f64 = 4.498_001_905_406_927;
        const SKLEARN_SHRUNK_01: f64 = 0.992_705_945_314_382_2;
        const SKLEARN_SHRUNK_22: f64 = 6.336_174_490_862_054;
        let n = 30;
        let x = Array2::from_shape_fn((n, 3), |(i, j)| match j {
            0 => (i % 7) as f64,
            1 => ((i * 3) % 5) as f64 + 0.5 * (i % 7) as f64,
            _ => ((i * i) % 11) as f64,
        });
        let centred = &x - &x.mean_axis(Axis(0)).unwrap();
        let s = centred.t().dot(&centred) / n as f64;
        let (rho, mu) = oas_shrinkage(&s.view(), n as u64).unwrap();
        assert!((rho - SKLEARN_RHO).abs() < 1e-12, "ρ {rho} vs scikit-learn {SKLEARN_RHO}");
        let shrunk = |i: usize, j: usize| (1.0 - rho) * s[[i, j]] + if i == j { rho * mu } else { 0.0 };
        for (got, want) in
            [(shrunk(0, 0), SKLEARN_SHRUNK_00), (shrunk(0, 1), SKLEARN_SHRUNK_01), (shrunk(2, 2), SKLEARN_SHRUNK_22)]
        {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    /// `slda-oas` writes the LDA head of `Λ = ((1−ρ)Σ + ρμI)⁻¹`, ρ from Σ and the samples absorbed.
    #[test]
    fn slda_oas_head_uses_the_oas_precision() {
        // Spread 3 along the first axis, 0.3 along the second: Σ far from a multiple of I, so 0 < ρ < 1.
        let train = {
            let mut rng = edgelearn_core::seeded_rng(21);
            let centres = [[0.0f32, 0.0], [2.0, 1.0], [-1.0, 2.0]];
            let x: Vec<f32> = (0..60)
                .flat_map(|i| {
                    let c = centres[i % 3];
                    [c[0] + 3.0 * rng.random_range(-1.0f32..1.0), c[1] + 0.3 * rng.random_range(-1.0f32..1.0)]
                })
                .collect();
            Samples::new(Array2::from_shape_vec((60, 2), x).unwrap(), (0..60).map(|i| i % 3).collect()).unwrap()
        };
        let mut model = identity_model(2, 3);
        let mut m = Prototype::slda().with_oas();
        assert_eq!(m.name(), "slda-oas");
        learn(&mut m, &mut model, &train, 0).unwrap();
        let cov = m.covariance().unwrap();
        assert_eq!(cov.updates, 60);
        let (rho, mu) = cov.oas_shrinkage().unwrap();
        assert!(rho > 0.0 && rho < 1.0, "ρ {rho}");
        let reg = |i: usize, j: usize| (1.0 - rho) * cov.sigma[[i, j]] + if i == j { rho * mu } else { 0.0 };
        let det = reg(0, 0) * reg(1, 1) - reg(0, 1) * reg(1, 0);
        let lam = [[reg(1, 1) / det, -reg(0, 1) / det], [-reg(1, 0) / det, reg(0, 0) / det]];
        let mu_c = &m.means(0).unwrap().mean;
        let w = model.heads[0].w();
        for c in 0..3 {
            for i in 0..2 {
                let want = lam[i][0] * mu_c[[c, 0]] + lam[i][1] * mu_c[[c, 1]];
                assert!((f64::from(w[[c, i]]) - want).abs() < 1e-4 * (1.0 + want.abs()), "w[{c}][{i}]");
            }
        }
        // The fixed ε gives another head on the same statistics.
        let mut fixed_model = identity_model(2, 3);
        learn(&mut Prototype::slda(), &mut fixed_model, &train, 0).unwrap();
        assert_ne!(fixed_model.heads[0].w(), model.heads[0].w());
    }

    /// `+input`: a trunk that throws the input away (a zero 2 → 1 layer) leaves SLDA at chance; the same head
    /// over the input itself separates the blobs. The trunk is dropped on the first task, the footprint counts
    /// the input's width before it, and a second task reuses the input model.
    #[test]
    fn slda_over_input_drops_the_trunk() {
        let two = |seed| blobs(&[(0, [-2.0, 0.0]), (1, [2.0, 0.0]), (2, [0.0, 2.0])], 30, 0.5, seed);
        let (train, test) = (two(41), two(42));
        let accuracy = |model: &mut Model| {
            let pred = model.predict(&test.x.view(), 0).unwrap();
            pred.iter().zip(&test.y).filter(|(p, y)| p == y).count() as f64 / test.len() as f64
        };
        let lossy = || {
            let mut rng = edgelearn_core::seeded_rng(1);
            let mut l = Linear::new("trunk.0", 2, 1, true, &mut rng);
            l.weight.value.fill(0.0);
            let head = Linear::new("head.0", 1, 3, true, &mut rng);
            Model::new(vec![2], vec![Layer::Linear(l)], vec![head]).unwrap()
        };
        let mut plain = lossy();
        learn(&mut Prototype::slda().with_oas(), &mut plain, &train, 0).unwrap();
        assert!(accuracy(&mut plain) < 0.5, "over the lossy trunk: {}", accuracy(&mut plain));
        let mut model = lossy();
        let mut m = Prototype::slda().with_oas().over_input();
        assert_eq!(m.name(), "slda-oas+input");
        assert_eq!(m.footprint(&model).unwrap().fisher, 8 * 3 * 3 + 8 * 5, "means and Σ over the 2 inputs");
        learn(&mut m, &mut model, &train, 0).unwrap();
        assert!(is_input_model(&model) && model.num_params() == 3 * 2 + 3);
        assert!(accuracy(&mut model) > 0.95, "over the input: {}", accuracy(&mut model));
        learn(&mut m, &mut model, &two(43), 1).unwrap();
        assert!(is_input_model(&model));
    }

    /// RanDumb over XOR: the raw 2-D input defeats LDA, its random Fourier features do not. The trunk is
    /// replaced on the first task by `[Flatten, RandomFourier]` fitted on that task's samples, the seed comes
    /// from the run's random stream (another stream, another matrix), and later tasks reuse it.
    #[test]
    fn randumb_replaces_the_trunk_and_separates_xor() {
        let xor =
            |seed| blobs(&[(0, [-2.0, -2.0]), (0, [2.0, 2.0]), (1, [2.0, -2.0]), (1, [-2.0, 2.0])], 40, 0.8, seed);
        let (train, test) = (xor(31), xor(32));
        let mut rng = edgelearn_core::seeded_rng(1);
        let mut model = edgelearn_core::nn::zoo::mlp(2, &[5], &[2], false, &mut rng).unwrap();
        let mut m = Prototype::randumb(256, InputStats::FirstTask { per_feature: true }).unwrap();
        assert_eq!(m.name(), "randumb256+pixel");
        assert!(m.footprint(&model).unwrap().fisher >= 8 * 256 * 256, "Σ over the 256 features counted before");
        learn(&mut m, &mut model, &train, 0).unwrap();
        assert_eq!(random_fourier_width(&model), Some(256));
        assert_eq!(model.num_params(), 2 * 256 + 2, "only the head has parameters");
        let pred = model.predict(&test.x.view(), 0).unwrap();
        let acc = pred.iter().zip(&test.y).filter(|(p, y)| p == y).count() as f64 / test.len() as f64;
        assert!(acc > 0.9, "RanDumb on XOR: {acc}");
        let Some(Layer::RandomFourier(rf)) = model.trunk.last() else { panic!("no RandomFourier layer") };
        let (mean, std) = (rf.standardisation().0.to_vec(), rf.standardisation().1.to_vec());
        let direct = train.x.mean_axis(Axis(0)).unwrap();
        assert!((mean[0] - direct[0]).abs() < 1e-5 && std[0] > 1.0, "fitted on the first task");
        let seed = rf.seed();
        assert_eq!(m.bytes_kept(), 8 * 2 * 257 + 8 * (256 * 256 + 1) + 16 + 8 * 2);
        // A second task keeps the features; its own statistics would have differed.
        let second = blobs(&[(0, [5.0, 5.0]), (1, [-5.0, 5.0])], 10, 0.5, 33);
        learn(&mut m, &mut model, &second, 1).unwrap();
        let Some(Layer::RandomFourier(rf2)) = model.trunk.last() else { panic!("no RandomFourier layer") };
        assert_eq!((rf2.seed(), rf2.standardisation().0[0]), (seed, mean[0]));
        assert!(matches!(m.export_state(), Err(Error::Config(_))), "host-only state");
        // Given statistics: the name says so; a wrong width is a typed error.
        let given = InputStats::Given { mean: vec![0.0; 3], std: vec![1.0; 3], gamma: 1.0, per_feature: false };
        let mut g = Prototype::randumb(16, given).unwrap();
        assert_eq!(g.name(), "randumb16+all");
        let mut m2 = edgelearn_core::nn::zoo::mlp(2, &[5], &[2], false, &mut rng).unwrap();
        assert!(matches!(learn(&mut g, &mut m2, &train, 0), Err(Error::Shape { .. })));
        assert!(matches!(Prototype::randumb(0, InputStats::FirstTask { per_feature: false }), Err(Error::Config(_))));
    }

    #[test]
    fn batches_never_leave_a_single_sample_behind() {
        assert_eq!(batch_ranges(5, 2), vec![(0, 2), (2, 5)]);
        assert_eq!(batch_ranges(4, 2), vec![(0, 2), (2, 4)]);
        assert_eq!(batch_ranges(1, 256), vec![(0, 1)]);
        assert_eq!(batch_ranges(513, 256), vec![(0, 256), (256, 513)]);
        assert!(batch_ranges(0, 8).is_empty());
    }

    #[test]
    fn features_are_the_heads_input_and_the_footprint_counts_what_is_kept() {
        let mut rng = edgelearn_core::seeded_rng(9);
        let mut model = edgelearn_core::nn::zoo::mlp(6, &[5, 4], &[3], false, &mut rng).unwrap();
        let x = Array2::from_shape_fn((7, 6), |_| rng.random_range(-1.0f32..1.0));
        let z = trunk_features(&mut model, &x.view()).unwrap();
        model.forward(&x.view(), 0, Mode::Eval).unwrap();
        assert_eq!(model.heads[0].cached_input().unwrap(), &z);
        let fp = Prototype::slda().footprint(&model).unwrap();
        assert_eq!(fp.fisher, 8 * 3 * (4 + 1) + 8 * (16 + 1));
        let ncm = Prototype::ncm().footprint(&model).unwrap();
        assert_eq!(ncm.fisher, 8 * 3 * (4 + 1));
        assert_eq!(ncm.params, 4 * (model.num_params() as u64 + 3));
    }
}
