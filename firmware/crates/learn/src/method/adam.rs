//! Adam as a gradient hook on the shared training loop: Adam-NSCL's optimiser and Holistic merging's source of
//! second-moment statistics.
//!
//! [`edgelearn_core::train::train`] steps plain SGD, `θ ← θ − η g`, with η from the stream's validation-driven schedule.
//! [`AdamHook`] rewrites each gradient into Adam's update direction before that step, so the training loop, its
//! schedule (which then decays Adam's learning rate) and its best-validation restore are shared with every other
//! method. The training stage must run with momentum 0 ([`adam_stage_config`]).

use ndarray::{Array2, ArrayD};

use crate::gpm::{FreezeVectors, LayerRef};
use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{Layer, Model, Param, Projector};
use edgelearn_core::train::{GradHook, TrainConfig};

/// Adam's β₁ (PyTorch default, as in the Adam-NSCL code).
pub const ADAM_BETA1: f32 = 0.9;
/// Adam's β₂.
pub const ADAM_BETA2: f32 = 0.999;
/// Adam's ε, added to `√v`.
pub const ADAM_EPS: f32 = 1e-8;

/// `cfg` with momentum off: the momentum lives in [`AdamHook`], the training loop's SGD step only applies it.
pub fn adam_stage_config(cfg: &TrainConfig, lr: f32) -> TrainConfig {
    TrainConfig { lr, momentum: 0.0, ..cfg.clone() }
}

/// Adam's moments for every parameter of a model, in [`Model::params`] order.
#[derive(Debug, Clone, Default)]
pub struct AdamMoments {
    /// First moments `m`.
    pub m: Vec<ArrayD<f32>>,
    /// Second moments `v` (exponential average of `g²`).
    pub v: Vec<ArrayD<f32>>,
    /// Steps taken.
    pub step: i32,
}

impl AdamMoments {
    /// Advance the moments with the gradients stored in `model` and replace each gradient by Adam's direction
    /// (Kingma & Ba, 2015, in the form of PyTorch's and the Adam-NSCL code):
    ///
    /// `m ← β₁ m + (1 − β₁) g`, `v ← β₂ v + (1 − β₂) g²`,
    /// `d = (√(1 − β₂ᵗ) / (1 − β₁ᵗ)) · m / (√v + ε)`,
    ///
    /// so that the loop's step `θ ← θ − η d` is Adam's step with learning rate η.
    pub fn direction(&mut self, model: &mut Model) -> Result<()> {
        let mut params = model.params_mut();
        let fresh =
            self.m.len() != params.len() || self.m.iter().zip(params.iter()).any(|(m, p)| m.shape() != p.value.shape());
        if fresh {
            self.m = params.iter().map(|p| ArrayD::zeros(p.value.raw_dim())).collect();
            self.v = self.m.clone();
            self.step = 0;
        }
        self.step = self.step.saturating_add(1);
        let bc1 = 1.0 - ADAM_BETA1.powi(self.step);
        let bc2 = 1.0 - ADAM_BETA2.powi(self.step);
        let scale = bc2.sqrt() / bc1;
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            ndarray::Zip::from(&mut p.grad).and(m).and(v).for_each(|g, m, v| {
                *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * *g;
                *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * *g * *g;
                *g = scale * *m / (v.sqrt() + ADAM_EPS);
            });
        }
        Ok(())
    }

    /// The second moments as one flat vector in [`Model::flat_params`] order (empty before the first step).
    pub fn flat_second_moment(&self) -> Vec<f32> {
        self.v.iter().flat_map(|v| v.iter().copied()).collect()
    }
}

/// The weight of a projected layer, mutable.
pub(crate) fn weight_param_mut(model: &mut Model, l: LayerRef) -> Result<&mut Param> {
    let heads = model.heads.len();
    match l {
        LayerRef::Trunk(i) => match model.trunk.get_mut(i) {
            Some(Layer::Linear(x)) => Ok(&mut x.weight),
            Some(Layer::Conv2d(c)) => Ok(&mut c.weight),
            _ => Err(Error::Config(format!("trunk layer {i} has no projectable weight"))),
        },
        LayerRef::Head(h) => model.heads.get_mut(h).map(|x| &mut x.weight).ok_or(Error::UnknownHead { head: h, heads }),
    }
}

/// Adam-NSCL's projection of one layer's update (`out × d_in`, a Conv2d's weight viewed as `out × in·kh·kw`):
///
/// `Δ ← Δ · U₀U₀ᵀ / ‖U₀U₀ᵀ‖_F = Δ · U₀U₀ᵀ / √k₀`,
///
/// with `U₀` (`d_in × k₀`) the approximate null space, applied as `Δ − (Δ M) Mᵀ` with `M` the orthonormal rest of
/// the eigenbasis (`projector` holds `M`). The normalisation by the Frobenius norm of the transform is the authors'
/// code's (`transform / torch.norm(transform)`). With `k₀ = 0` the update is zero.
pub fn project_update(update: &mut ArrayD<f32>, projector: &Projector) -> Result<()> {
    let d = projector.dim();
    let k0 = d - projector.rank();
    if k0 == 0 {
        update.fill(0.0);
        return Ok(());
    }
    if !update.len().is_multiple_of(d.max(1)) {
        return Err(shape_err("Adam-NSCL update", format!("a multiple of {d}"), update.len()));
    }
    let rows = update.len() / d;
    let flat: Vec<f32> = update.iter().copied().collect();
    let m = Array2::from_shape_vec((rows, d), flat).map_err(|e| shape_err("Adam-NSCL update", (rows, d), e))?;
    let projected = projector.project_rows(&m.view())?;
    let norm = 1.0 / (k0 as f32).sqrt();
    update.iter_mut().zip(projected.iter()).for_each(|(u, p)| *u = p * norm);
    Ok(())
}

/// Adam as a [`GradHook`]: per-parameter learning-rate multipliers, optional freezing of 1-D parameters (GPM's
/// rule for tasks after the first) and optional Adam-NSCL projection of the weight updates of some layers.
pub struct AdamHook {
    /// The moments (a fresh optimiser per training stage, as Adam-NSCL resets its optimiser per task).
    pub moments: AdamMoments,
    /// Multiplier of the stage's learning rate per parameter, [`Model::params`] order (empty: all 1).
    pub lr_mult: Vec<f32>,
    /// Freeze 1-D parameters ([`FreezeVectors`]) before Adam sees them.
    pub freeze: Option<FreezeVectors>,
    /// Layers whose update is projected, with the projector holding the complement of their null space.
    pub projections: Vec<(LayerRef, std::sync::Arc<Projector>)>,
}

impl AdamHook {
    /// Plain Adam.
    pub fn new() -> Self {
        Self { moments: AdamMoments::default(), lr_mult: Vec::new(), freeze: None, projections: Vec::new() }
    }
}

impl Default for AdamHook {
    fn default() -> Self {
        Self::new()
    }
}

impl GradHook for AdamHook {
    fn after_backward(&mut self, model: &mut Model, task: &TaskData<'_>) -> Result<()> {
        if let Some(f) = &mut self.freeze {
            f.after_backward(model, task)?;
        }
        self.moments.direction(model)?;
        if let Some(f) = &mut self.freeze {
            f.after_backward(model, task)?;
        }
        for (l, proj) in &self.projections {
            project_update(&mut weight_param_mut(model, *l)?.grad, proj)?;
        }
        if !self.lr_mult.is_empty() {
            let mut params = model.params_mut();
            if params.len() != self.lr_mult.len() {
                return Err(shape_err("Adam learning-rate multipliers", params.len(), self.lr_mult.len()));
            }
            for (p, &k) in params.iter_mut().zip(&self.lr_mult) {
                if k != 1.0 {
                    p.grad.mapv_inplace(|g| g * k);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelearn_core::nn::zoo;

    #[test]
    fn first_adam_step_is_the_sign_of_the_gradient() {
        // t = 1: m = 0.1 g, v = 0.001 g², d = (√0.001 / 0.1) · 0.1 g / (√0.001 |g| + ε) ≈ sign(g).
        let mut model = zoo::mlp(2, &[], &[2], false, &mut edgelearn_core::seeded_rng(0)).unwrap();
        let grads = [0.5f32, -2.0, 0.0, 4.0];
        for (p, g) in model.params_mut()[0].grad.iter_mut().zip(grads) {
            *p = g;
        }
        let mut adam = AdamMoments::default();
        adam.direction(&mut model).unwrap();
        let d: Vec<f32> = model.params()[0].grad.iter().copied().collect();
        for (di, g) in d.iter().zip(grads) {
            let expect = if g == 0.0 { 0.0 } else { g.signum() };
            assert!((di - expect).abs() < 1e-4, "{d:?}");
        }
        // Step 2 with the same gradient: m = 0.19 g, v = 0.001999 g²; bias-corrected it is the sign again.
        for (p, g) in model.params_mut()[0].grad.iter_mut().zip(grads) {
            *p = g;
        }
        adam.direction(&mut model).unwrap();
        assert!((model.params()[0].grad.iter().next().copied().unwrap() - 1.0).abs() < 1e-4);
        let v = adam.flat_second_moment();
        assert!((v[1] - 0.001999 * 4.0).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn projected_update_lies_in_the_null_space_scaled_by_its_dimension() {
        // d = 3, range M = e₀: null space U₀ = [e₁, e₂], k₀ = 2; Δ = [[1, 2, 3]] → [[0, 2, 3]] / √2.
        let m = Array2::from_shape_vec((3, 1), vec![1.0f32, 0.0, 0.0]).unwrap();
        let proj = Projector::new(m).unwrap();
        let mut u = ArrayD::from_shape_vec(vec![1, 3], vec![1.0f32, 2.0, 3.0]).unwrap();
        project_update(&mut u, &proj).unwrap();
        let s = 2f32.sqrt();
        let got: Vec<f32> = u.iter().copied().collect();
        for (g, e) in got.iter().zip([0.0, 2.0 / s, 3.0 / s]) {
            assert!((g - e).abs() < 1e-6, "{got:?}");
        }
        // A full range leaves no null space: the update vanishes.
        let full = Projector::new(Array2::eye(3)).unwrap();
        project_update(&mut u, &full).unwrap();
        assert!(u.iter().all(|v| *v == 0.0));
    }
}
