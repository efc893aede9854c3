//! Gradient Projection Memory (Saha et al., ICLR 2021): per-layer bases of the input space old tasks use, built
//! from representation matrices by SVD, and the projected SGD that keeps new learning out of them.
//!
//! Follows the authors' code exactly: the first task keeps the `k` leading left singular vectors with
//! `cumsum(σ²)/Σσ² < ε` (strict); later tasks add leading singular vectors of the residual `R̂ = R − MMᵀR` while
//! the captured energy is `< ε`; a basis never exceeds `d_in` columns; a layer with nothing to add is skipped.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2, s};
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Layer, Mode, Model, Projector};
use edgelearn_core::train::GradHook;
use edgelearn_store::{BasisState, LayerSlot, to_u32};

/// A layer with a weight that GPM can project: a trunk position or a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerRef {
    /// `model.trunk[i]` (a Linear or Conv2d).
    Trunk(usize),
    /// `model.heads[h]`.
    Head(usize),
}

impl LayerRef {
    /// The stored form of this layer reference (the state file's [`LayerSlot`]).
    pub fn to_slot(self) -> Result<LayerSlot> {
        Ok(match self {
            Self::Trunk(i) => LayerSlot::Trunk(to_u32(i, "trunk index")?),
            Self::Head(h) => LayerSlot::Head(to_u32(h, "head index")?),
        })
    }

    /// The layer reference a stored [`LayerSlot`] names.
    pub fn from_slot(slot: LayerSlot) -> Self {
        match slot {
            LayerSlot::Trunk(i) => Self::Trunk(i as usize),
            LayerSlot::Head(h) => Self::Head(h as usize),
        }
    }
}

/// GPM settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpmConfig {
    /// Energy threshold ε per projected layer for the first task (one value = the same for all layers).
    pub thresholds: Vec<f64>,
    /// Added to every threshold per task index (conv nets: 0.003; MLPs: 0).
    pub threshold_increment: f64,
    /// Number of random training samples in a representation matrix (300 for the MLPs, 125 for conv nets).
    pub samples: usize,
    /// Project the head(s) too (single-head runs); multi-head runs leave heads free.
    pub project_heads: bool,
}

impl GpmConfig {
    /// ε for projected layer `layer` when learning task `task` (0-based): `ε_l + increment · task`.
    pub fn threshold(&self, layer: usize, task: usize) -> f64 {
        let base = match self.thresholds.len() {
            0 => 0.97,
            1 => self.thresholds[0],
            _ => self.thresholds[layer.min(self.thresholds.len() - 1)],
        };
        base + self.threshold_increment * task as f64
    }
}

/// What one basis update did to one layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BasisUpdate {
    /// Basis size before.
    pub before: usize,
    /// Basis size after.
    pub after: usize,
    /// Energy share of the representation captured by the basis after the update.
    pub captured: f64,
    /// Directions GPM's threshold asked for that the bases budget dropped ([`Gpm::max_bytes`]).
    #[serde(default)]
    pub dropped: usize,
    /// Energy share of the representation those dropped directions held (`captured` is that much lower than
    /// the threshold rule would have made it).
    #[serde(default)]
    pub energy_lost: f64,
}

/// The per-layer bases of the input spaces of all tasks learned so far.
#[derive(Debug, Clone)]
pub struct Gpm {
    /// Settings.
    pub cfg: GpmConfig,
    /// Projected layers in model order.
    pub layers: Vec<LayerRef>,
    /// One orthonormal basis `d_in × k` per projected layer.
    pub bases: Vec<Array2<f32>>,
    /// Budget of all bases together, in bytes of f32 (`None`: unlimited). An update whose new directions would
    /// not fit keeps, across all layers, the directions of highest energy share that fit (each layer's kept
    /// directions stay a leading prefix of its singular vectors) and reports the energy share it dropped per
    /// layer ([`BasisUpdate::energy_lost`], and a `tracing` warning). Existing directions are never removed.
    pub max_bytes: Option<u64>,
}

/// Number of leading singular values to keep on the first task: how many `j` have
/// `Σ_{i≤j} σᵢ² / Σ σ² < ε` (strictly below, as `np.sum(np.cumsum(ratio) < ε)`).
pub fn energy_rank(sval_sq: &[f64], eps: f64) -> usize {
    let total: f64 = sval_sq.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut acc = 0.0;
    sval_sq
        .iter()
        .filter(|&&s2| {
            acc += s2 / total;
            acc < eps
        })
        .count()
}

/// Thin SVD in f64: left singular vectors (`d × min(d, n)`) and squared singular values, descending.
pub fn left_singular(r: &ArrayView2<'_, f32>) -> Result<(Array2<f64>, Vec<f64>)> {
    let (d, n) = r.dim();
    let mat = faer::Mat::<f64>::from_fn(d, n, |i, j| f64::from(r[[i, j]]));
    let svd = mat.thin_svd().map_err(|e| Error::Numerical(format!("SVD of a {d}×{n} representation: {e:?}")))?;
    let u = svd.U();
    let sv = svd.S().column_vector();
    let k = d.min(n);
    Ok((Array2::from_shape_fn((d, k), |(i, j)| u[(i, j)]), (0..k).map(|i| sv[i] * sv[i]).collect()))
}

/// First-task basis: `M = U[:, :k]` with `k` = [`energy_rank`] of `R`'s spectrum at threshold `eps`.
///
/// Returns the basis and the captured energy share.
pub fn first_basis(r: &ArrayView2<'_, f32>, eps: f64) -> Result<(Array2<f32>, f64)> {
    let c = first_candidates(r, eps)?;
    Ok((c.assemble(c.shares.len()), c.captured_full))
}

/// One layer's basis update before the bases budget is applied: the basis it starts from, the directions the
/// threshold rule would add (in the order of decreasing energy) with the energy share of each, and the captured
/// share if all of them are kept.
#[derive(Debug, Clone)]
struct Candidates {
    base: Array2<f32>,
    dirs: Array2<f64>,
    shares: Vec<f64>,
    captured_full: f64,
}

impl Candidates {
    /// The basis with the first `keep` candidate directions appended.
    fn assemble(&self, keep: usize) -> Array2<f32> {
        if keep == 0 {
            return self.base.clone();
        }
        let (d, k0) = self.base.dim();
        let mut out = Array2::<f32>::zeros((d, k0 + keep));
        out.slice_mut(s![.., ..k0]).assign(&self.base);
        out.slice_mut(s![.., k0..]).assign(&self.dirs.slice(s![.., ..keep]).mapv(|v| v as f32));
        out
    }

    /// Energy share held by the candidates from `keep` on (what keeping only `keep` loses).
    fn lost_after(&self, keep: usize) -> f64 {
        self.shares[keep..].iter().sum()
    }
}

fn first_candidates(r: &ArrayView2<'_, f32>, eps: f64) -> Result<Candidates> {
    let (u, s2) = left_singular(r)?;
    let k = energy_rank(&s2, eps);
    let total: f64 = s2.iter().sum();
    let shares: Vec<f64> = if total > 0.0 { s2[..k].iter().map(|v| v / total).collect() } else { Vec::new() };
    let captured_full = if total > 0.0 { s2[..k].iter().sum::<f64>() / total } else { 0.0 };
    let k = shares.len();
    Ok(Candidates { base: Array2::zeros((r.nrows(), 0)), dirs: u.slice(s![.., ..k]).to_owned(), shares, captured_full })
}

/// Later-task update: `R̂ = R − M Mᵀ R`; captured = (‖R‖² − ‖R̂‖²)/‖R‖²; append leading left singular vectors of
/// `R̂` one at a time while captured `< eps` (each adds `σ̂ᵢ²/‖R‖²`); cap at `d_in` columns.
///
/// Returns the new basis (unchanged when nothing is added) and the captured share.
pub fn extend_basis(m: &Array2<f32>, r: &ArrayView2<'_, f32>, eps: f64) -> Result<(Array2<f32>, f64)> {
    let c = extend_candidates(m, r, eps)?;
    Ok((c.assemble(c.shares.len()), c.captured_full))
}

fn extend_candidates(m: &Array2<f32>, r: &ArrayView2<'_, f32>, eps: f64) -> Result<Candidates> {
    let d = r.nrows();
    if m.nrows() != d {
        return Err(edgelearn_core::error::shape_err("GPM basis rows", d, m.nrows()));
    }
    let none =
        |captured_full| Candidates { base: m.clone(), dirs: Array2::zeros((d, 0)), shares: Vec::new(), captured_full };
    let total: f64 = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    if total <= 0.0 {
        return Ok(none(0.0));
    }
    let residual = if m.ncols() == 0 { r.to_owned() } else { r.to_owned() - m.dot(&m.t().dot(r)) };
    let (u, s2) = left_singular(&residual.view())?;
    let hat: f64 = s2.iter().sum();
    let mut captured = (total - hat) / total;
    let mut add = 0;
    for v in &s2 {
        if captured < eps {
            captured += v / total;
            add += 1;
        } else {
            break;
        }
    }
    if add == 0 {
        return Ok(none(captured));
    }
    let keep_new = add.min(d - m.ncols().min(d));
    let shares = s2[..keep_new].iter().map(|v| v / total).collect();
    Ok(Candidates { base: m.clone(), dirs: u.slice(s![.., ..keep_new]).to_owned(), shares, captured_full: captured })
}

impl Gpm {
    /// The stored form of every basis (the state file's [`BasisState`]s), layer by layer.
    pub fn to_states(&self) -> Result<Vec<BasisState>> {
        self.layers.iter().zip(&self.bases).map(|(&l, b)| BasisState::from_array(l.to_slot()?, b)).collect()
    }

    /// Put stored bases back into this instance, created for the same model ([`Gpm::for_model`]): layers must
    /// match one to one and every basis must have the layer's input dimension.
    pub fn restore_states(&mut self, stored: &[BasisState]) -> Result<()> {
        if stored.len() != self.layers.len() {
            return Err(shape_err("stored GPM bases", self.layers.len(), stored.len()));
        }
        let mut bases = Vec::with_capacity(stored.len());
        for (s, (&l, cur)) in stored.iter().zip(self.layers.iter().zip(&self.bases)) {
            if LayerRef::from_slot(s.layer) != l {
                return Err(shape_err("stored GPM layer", l, LayerRef::from_slot(s.layer)));
            }
            if s.rows as usize != cur.nrows() {
                return Err(shape_err("stored GPM basis rows", cur.nrows(), s.rows));
            }
            bases.push(s.to_array()?);
        }
        self.bases = bases;
        Ok(())
    }
}

impl Gpm {
    /// GPM over every Linear/Conv2d of the trunk, plus the heads when `cfg.project_heads`.
    pub fn for_model(model: &Model, cfg: GpmConfig) -> Result<Self> {
        let mut layers: Vec<LayerRef> = model
            .trunk
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, Layer::Linear(_) | Layer::Conv2d(_)))
            .map(|(i, _)| LayerRef::Trunk(i))
            .collect();
        if cfg.project_heads {
            if model.heads.len() != 1 {
                return Err(Error::Config("projecting heads needs a single-head model".into()));
            }
            layers.push(LayerRef::Head(0));
        }
        let bases = layers.iter().map(|&l| Ok(Array2::zeros((input_dim(model, l)?, 0)))).collect::<Result<_>>()?;
        Ok(Self { cfg, layers, bases, max_bytes: None })
    }

    /// Basis size per projected layer.
    pub fn basis_sizes(&self) -> Vec<usize> {
        self.bases.iter().map(Array2::ncols).collect()
    }

    /// Bytes of all bases stored as f32.
    pub fn bytes(&self) -> usize {
        self.bases.iter().map(|b| b.len() * 4).sum()
    }

    /// Representation matrices (`d_in × columns`) of every projected layer from `cfg.samples` random training
    /// samples of the task: a Linear's inputs as columns, a Conv2d's im2col patches as columns.
    pub fn representations(
        &self,
        model: &mut Model,
        task: &TaskData<'_>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Array2<f32>>> {
        let n = self.cfg.samples.min(task.train.len());
        if n == 0 {
            return Err(Error::Empty("GPM representation: no training samples".into()));
        }
        let idx = sample(rng, task.train.len(), n).into_vec();
        let batch: Samples = task.train.select(&idx);
        model.forward(&batch.x.view(), task.head, Mode::Eval)?;
        let reps = self
            .layers
            .iter()
            .map(|&l| {
                let rows = layer_input(model, l)?;
                Ok(rows.t().to_owned())
            })
            .collect::<Result<Vec<_>>>();
        model.clear_cache();
        reps
    }

    /// Update every basis from the representations of task `task` (0-based), within [`Gpm::max_bytes`].
    ///
    /// Without a budget (or when everything fits) this is exactly GPM's rule ([`first_basis`] / [`extend_basis`]).
    /// Otherwise see [`Gpm::max_bytes`]. Nothing changes when an error is returned.
    pub fn update(&mut self, reps: &[Array2<f32>], task: usize) -> Result<Vec<BasisUpdate>> {
        if reps.len() != self.bases.len() {
            return Err(edgelearn_core::error::shape_err("GPM representations", self.bases.len(), reps.len()));
        }
        let cands = reps
            .iter()
            .enumerate()
            .map(|(l, r)| {
                let eps = self.cfg.threshold(l, task);
                if task == 0 {
                    first_candidates(&r.view(), eps)
                } else {
                    extend_candidates(&self.bases[l], &r.view(), eps)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let keep = self.allocate(&cands);
        let mut out = Vec::with_capacity(reps.len());
        for (l, (c, &k)) in cands.iter().zip(&keep).enumerate() {
            let before = self.bases[l].ncols();
            let lost = c.lost_after(k);
            self.bases[l] = c.assemble(k);
            let update = BasisUpdate {
                before,
                after: self.bases[l].ncols(),
                captured: c.captured_full - lost,
                dropped: c.shares.len() - k,
                energy_lost: lost,
            };
            if update.dropped > 0 {
                tracing::warn!(
                    layer = l,
                    task,
                    dropped = update.dropped,
                    energy_lost = lost,
                    kept = update.after,
                    budget = self.max_bytes,
                    "GPM basis trimmed to the bases budget: highest-energy directions kept"
                );
            }
            out.push(update);
        }
        Ok(out)
    }

    /// How many candidate directions of each layer to keep within [`Gpm::max_bytes`]: greedily, the direction
    /// with the highest energy share among every layer's next one, while it fits; a layer whose next direction
    /// does not fit is closed (its kept directions stay a prefix).
    fn allocate(&self, cands: &[Candidates]) -> Vec<usize> {
        let full: Vec<usize> = cands.iter().map(|c| c.shares.len()).collect();
        let Some(cap) = self.max_bytes else { return full };
        let cost = |c: &Candidates| 4 * c.base.nrows() as u64;
        let base: u64 = cands.iter().map(|c| 4 * c.base.len() as u64).sum();
        let all: u64 = cands.iter().map(|c| cost(c) * c.shares.len() as u64).sum();
        if base.saturating_add(all) <= cap {
            return full;
        }
        let mut left = cap.saturating_sub(base);
        let mut keep = vec![0usize; cands.len()];
        let mut open: Vec<bool> = full.iter().map(|&n| n > 0).collect();
        loop {
            let next = (0..cands.len())
                .filter(|&l| open[l])
                .max_by(|&a, &b| cands[a].shares[keep[a]].total_cmp(&cands[b].shares[keep[b]]).then(b.cmp(&a)));
            let Some(l) = next else { break };
            if cost(&cands[l]) <= left {
                left -= cost(&cands[l]);
                keep[l] += 1;
                open[l] = keep[l] < full[l];
            } else {
                open[l] = false;
            }
        }
        keep
    }

    /// Install projectors on the projected layers so their weight gradients lose their component in the bases.
    pub fn attach(&self, model: &mut Model) -> Result<()> {
        for (&l, basis) in self.layers.iter().zip(&self.bases) {
            let p = (basis.ncols() > 0).then(|| Projector::new(basis.clone()).map(Arc::new)).transpose()?;
            set_projector(model, l, p)?;
        }
        Ok(())
    }

    /// Remove all projectors (training is unconstrained again).
    pub fn detach(&self, model: &mut Model) -> Result<()> {
        for &l in &self.layers {
            set_projector(model, l, None)?;
        }
        Ok(())
    }
}

pub(crate) fn input_dim(model: &Model, l: LayerRef) -> Result<usize> {
    match l {
        LayerRef::Trunk(i) => match model.trunk.get(i) {
            Some(Layer::Linear(x)) => Ok(x.in_features()),
            Some(Layer::Conv2d(c)) => Ok(c.patch_len()),
            _ => Err(Error::Config(format!("trunk layer {i} has no projectable weight"))),
        },
        LayerRef::Head(h) => {
            model.heads.get(h).map(|x| x.in_features()).ok_or(Error::UnknownHead { head: h, heads: model.heads.len() })
        }
    }
}

pub(crate) fn layer_input(model: &Model, l: LayerRef) -> Result<ArrayView2<'_, f32>> {
    let missing = || Error::Config("GPM: layer input not cached (forward first)".into());
    match l {
        LayerRef::Trunk(i) => match model.trunk.get(i) {
            Some(Layer::Linear(x)) => x.cached_input().map(|a| a.view()).ok_or_else(missing),
            Some(Layer::Conv2d(c)) => c.cached_patches().map(|a| a.view()).ok_or_else(missing),
            _ => Err(Error::Config(format!("trunk layer {i} has no projectable weight"))),
        },
        LayerRef::Head(h) => model.heads.get(h).and_then(|x| x.cached_input()).map(|a| a.view()).ok_or_else(missing),
    }
}

fn set_projector(model: &mut Model, l: LayerRef, p: Option<Arc<Projector>>) -> Result<()> {
    match l {
        LayerRef::Trunk(i) => match model.trunk.get_mut(i) {
            Some(Layer::Linear(x)) => x.projector = p,
            Some(Layer::Conv2d(c)) => c.projector = p,
            _ => return Err(Error::Config(format!("trunk layer {i} has no projectable weight"))),
        },
        LayerRef::Head(h) => {
            let heads = model.heads.len();
            model.heads.get_mut(h).ok_or(Error::UnknownHead { head: h, heads })?.projector = p;
        }
    }
    Ok(())
}

/// GPM's treatment of 1-D parameters for tasks after the first: their gradients are zeroed (biases and
/// normalisation affine parameters of the trunk, and of the head when heads are projected), exactly as the
/// reference code's `params.grad.data.fill_(0)`.
#[derive(Debug, Clone, Copy)]
pub struct FreezeVectors {
    /// Also freeze the heads' biases (single-head runs).
    pub heads: bool,
}

impl GradHook for FreezeVectors {
    fn after_backward(&mut self, model: &mut Model, _: &TaskData<'_>) -> Result<()> {
        for layer in &mut model.trunk {
            for p in layer.params_mut() {
                if p.value.ndim() == 1 {
                    p.zero_grad();
                }
            }
        }
        if self.heads {
            for p in model.heads.iter_mut().flat_map(|h| h.params_mut()) {
                if p.value.ndim() == 1 {
                    p.zero_grad();
                }
            }
        }
        Ok(())
    }
}

/// Captured energy share of `r` by the basis `m`: `‖MᵀR‖² / ‖R‖²` (diagnostics and tests).
pub fn captured_energy(m: &Array2<f32>, r: &ArrayView2<'_, f32>) -> f64 {
    let total: f64 = r.iter().map(|&v| f64::from(v).powi(2)).sum();
    if total == 0.0 || m.ncols() == 0 {
        return 0.0;
    }
    let proj = m.t().dot(r);
    proj.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / total
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::Rng;

    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = edgelearn_core::seeded_rng(seed);
        Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0..1.0))
    }

    fn gram_is_identity(m: &Array2<f32>) -> bool {
        let g = m.t().dot(m);
        g.indexed_iter().all(|((i, j), &v)| (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4)
    }

    #[test]
    fn energy_threshold_is_strict() {
        // Ratios 0.5, 0.25, 0.25 → cumsum 0.5, 0.75, 1.0. At ε = 0.75 a `≤` would keep 2; GPM keeps 1.
        assert_eq!(energy_rank(&[2.0, 1.0, 1.0], 0.75), 1);
        assert_eq!(energy_rank(&[2.0, 1.0, 1.0], 0.7500001), 2);
        assert_eq!(energy_rank(&[2.0, 1.0, 1.0], 1.0), 2);
        assert_eq!(energy_rank(&[0.0, 0.0], 0.9), 0);
    }

    #[test]
    fn first_basis_is_orthonormal_and_captures_below_threshold() {
        let r = random(12, 40, 1);
        let (m, captured) = first_basis(&r.view(), 0.9).unwrap();
        assert!(m.ncols() > 0 && m.ncols() < 12);
        assert!(gram_is_identity(&m));
        assert!(captured < 0.9);
        assert!((captured_energy(&m, &r.view()) - captured).abs() < 1e-4);
    }

    #[test]
    fn extension_adds_orthogonal_directions_and_never_exceeds_d_in() {
        let r1 = random(8, 30, 2);
        let (m, _) = first_basis(&r1.view(), 0.5).unwrap();
        let r2 = random(8, 30, 3);
        let (m2, captured) = extend_basis(&m, &r2.view(), 0.95).unwrap();
        assert!(m2.ncols() > m.ncols());
        assert!(gram_is_identity(&m2), "extended basis must stay orthonormal");
        assert!(captured >= 0.95 || m2.ncols() == 8);
        // Asking for everything, many times, never goes past d_in.
        let mut b = m2;
        for seed in 10..15 {
            b = extend_basis(&b, &random(8, 30, seed).view(), 0.999_999).unwrap().0;
            assert!(b.ncols() <= 8);
        }
        assert_eq!(b.ncols(), 8);
    }

    #[test]
    fn layer_already_covered_is_skipped() {
        let r = random(6, 20, 4);
        let (m, _) = first_basis(&r.view(), 0.999_999).unwrap();
        // The same representation again is (almost) fully captured: nothing is added.
        let (m2, captured) = extend_basis(&m, &r.view(), 0.9).unwrap();
        assert_eq!(m2.ncols(), m.ncols());
        assert!(captured >= 0.9);
    }

    #[test]
    fn thresholds_rise_per_task() {
        let cfg = GpmConfig { thresholds: vec![0.97], threshold_increment: 0.003, samples: 125, project_heads: false };
        assert!((cfg.threshold(0, 0) - 0.97).abs() < 1e-12);
        assert!((cfg.threshold(3, 2) - 0.976).abs() < 1e-12);
        let cfg = GpmConfig {
            thresholds: vec![0.95, 0.99, 0.99],
            threshold_increment: 0.0,
            samples: 300,
            project_heads: true,
        };
        assert_eq!(cfg.threshold(0, 5), 0.95);
        assert_eq!(cfg.threshold(2, 5), 0.99);
    }

    #[test]
    fn projected_linear_gradient_is_orthogonal_to_basis_on_both_paths() {
        use edgelearn_core::nn::Linear;
        let mut rng = edgelearn_core::seeded_rng(5);
        let (m, _) = first_basis(&random(16, 40, 6).view(), 0.8).unwrap();
        for (batch, out) in [(3usize, 10usize), (20, 4)] {
            // batch < out projects the inputs; batch ≥ out projects the gradient rows.
            let mut lin = Linear::new("l", 16, out, false, &mut rng);
            lin.projector = Some(Arc::new(Projector::new(m.clone()).unwrap()));
            let x = random(batch, 16, 7);
            lin.forward(x.clone().into_dyn()).unwrap();
            let delta = random(batch, out, 8);
            lin.backward(delta.clone().into_dyn()).unwrap();
            let g = lin.weight.grad.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
            let gm = g.dot(&m);
            assert!(gm.iter().all(|v| v.abs() < 1e-4), "projected gradient has a component in the basis");
            let full = delta.t().dot(&x);
            let expect = &full - &full.dot(&m).dot(&m.t());
            assert!((&g - &expect).iter().all(|v| v.abs() < 1e-4), "G − G M Mᵀ mismatch");
        }
    }

    #[test]
    fn complement_form_equals_direct_form() {
        let (m, _) = first_basis(&random(10, 40, 9).view(), 0.99).unwrap();
        assert!(m.ncols() > 5, "need a basis over half of d for the complement path");
        let p = Projector::new(m.clone()).unwrap();
        let x = random(7, 10, 10);
        let direct = &x - &x.dot(&m).dot(&m.t());
        let got = p.project_rows(&x.view()).unwrap();
        assert!((&got - &direct).iter().all(|v| v.abs() < 1e-4));
    }

    /// The stored form round-trips, and a stored basis of another layer width is refused.
    #[test]
    fn bases_to_states_and_back() {
        let mut rng = edgelearn_core::seeded_rng(1);
        let model = edgelearn_core::nn::zoo::mlp(6, &[5], &[2, 2], true, &mut rng).unwrap();
        let gpm = Gpm::for_model(
            &model,
            GpmConfig { thresholds: vec![0.9], threshold_increment: 0.0, samples: 10, project_heads: false },
        )
        .unwrap();
        let mut stored = gpm.to_states().unwrap();
        stored[0].cols = 1;
        stored[0].data = (0..stored[0].rows).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        let mut gpm2 = gpm.clone();
        gpm2.restore_states(&stored).unwrap();
        assert_eq!(gpm2.basis_sizes()[0], 1);
        stored[0].rows += 1;
        assert!(gpm2.restore_states(&stored).is_err());
    }
}
