//! A fixed random projection `y = x Rᵀ`, the expansion layer of RanPAC (McDonnell et al., "RanPAC: Random
//! Projections and Pre-trained Models for Continual Learning", NeurIPS 2023, eq. 5: `h = φ(x Wᵀ)` with a frozen
//! Gaussian `W` of `M ≫ d` rows, then a linear classifier over `h`).
//!
//! The layer has no parameters: nothing trains it, no method keeps anything for it (GPM, Fisher and the merges see
//! only [`super::Model::params`]), and gradients pass through it to the trunk below. Its matrix is a function of
//! its two widths alone ([`RandomFeatures::new`]): a state file does not store it, a model rebuilt after a power
//! cut gets the same matrix bit for bit, and the ONNX export writes it as a constant.

use ndarray::{Array2, ArrayD, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Result, shape_err};

/// The seed of every random projection, mixed with the two widths ([`RandomFeatures::new`]).
pub const RANDOM_FEATURES_SEED: u64 = 0x5241_4E50_4143_0001;

/// A frozen Gaussian projection from `in_features` to `out_features` (no bias); see the module documentation.
#[derive(Debug, Clone)]
pub struct RandomFeatures {
    weight: Array2<f32>,
    input_seen: bool,
}

impl RandomFeatures {
    /// The projection `R` of shape `(out, in)`, entries `N(0, 1/in)` drawn from ChaCha8 seeded with
    /// [`RANDOM_FEATURES_SEED`] `⊕ (in << 32) ⊕ out`, row by row: the same widths give the same matrix on every
    /// platform and every run. The `1/in` variance keeps the outputs at the scale of the inputs (RanPAC draws
    /// `N(0, 1)`; a scale does not change the classifier over `φ(xRᵀ)` for a ReLU `φ`, only SLDA's shrinkage, which
    /// is relative to the features' scale).
    pub fn new(in_features: usize, out_features: usize) -> Self {
        let seed = RANDOM_FEATURES_SEED ^ ((in_features as u64) << 32) ^ out_features as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = 1.0 / (in_features.max(1) as f32).sqrt();
        let weight =
            Array2::from_shape_simple_fn((out_features, in_features), || scale * rng.sample::<f32, _>(StandardNormal));
        Self { weight, input_seen: false }
    }

    /// Input width `d`.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }

    /// Output width `M`.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// The matrix `R`, `(out, in)`.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// `y = x Rᵀ` for `x` of shape `(batch, in)`.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFeatures input", "(batch, in)", e))?;
        if x.ncols() != self.in_features() {
            return Err(shape_err("RandomFeatures input width", self.in_features(), x.ncols()));
        }
        self.input_seen = true;
        Ok(crate::nn::ops::matmul_nt(&x.view(), &self.weight.view())?.into_dyn())
    }

    /// `dx = δ R` (the layer is linear and keeps no input).
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        if !self.input_seen {
            return Err(crate::Error::Config("RandomFeatures::backward before forward".into()));
        }
        let g = grad.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFeatures grad", "(batch, out)", e))?;
        if g.ncols() != self.out_features() {
            return Err(shape_err("RandomFeatures grad width", self.out_features(), g.ncols()));
        }
        Ok(crate::nn::gemm::matmul(&g.view(), &self.weight.view())?.into_dyn())
    }

    /// Forward-mode tangent, `ẏ = ẋ Rᵀ` (the layer is linear and has no parameters).
    pub fn tangent(&self, dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let dx = dx.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFeatures tangent", "(batch, in)", e))?;
        if dx.ncols() != self.in_features() {
            return Err(shape_err("RandomFeatures tangent width", self.in_features(), dx.ncols()));
        }
        Ok(crate::nn::ops::matmul_nt(&dx.view(), &self.weight.view())?.into_dyn())
    }

    /// Forget the last forward pass.
    pub fn clear_cache(&mut self) {
        self.input_seen = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn same_widths_same_matrix_and_others_differ() {
        let a = RandomFeatures::new(16, 64);
        let b = RandomFeatures::new(16, 64);
        assert_eq!(a.weight(), b.weight());
        let c = RandomFeatures::new(16, 65);
        assert_ne!(a.weight().row(0), c.weight().row(0));
        // N(0, 1/16): the sample variance of 1024 draws is near 1/16.
        let var = a.weight().mapv(|v| v * v).mean().unwrap();
        assert!((var - 1.0 / 16.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn forward_and_backward_are_the_matrix_and_its_transpose() {
        let mut rf = RandomFeatures::new(3, 4);
        let x = array![[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]];
        let y = rf.forward(x.clone().into_dyn()).unwrap().into_dimensionality::<Ix2>().unwrap();
        let want = x.dot(&rf.weight().t());
        assert!((&y - &want).iter().all(|d| d.abs() < 1e-6));
        let g = array![[1.0f32, 0.0, 0.0, -1.0], [0.0, 2.0, 0.0, 0.0]];
        let dx = rf.backward(g.clone().into_dyn()).unwrap().into_dimensionality::<Ix2>().unwrap();
        let want = g.dot(rf.weight());
        assert!((&dx - &want).iter().all(|d| d.abs() < 1e-6));
    }

    #[test]
    fn wrong_width_is_a_typed_error() {
        let mut rf = RandomFeatures::new(3, 4);
        assert!(rf.forward(Array2::<f32>::zeros((2, 5)).into_dyn()).is_err());
        assert!(rf.backward(Array2::<f32>::zeros((2, 4)).into_dyn()).is_err(), "backward before forward");
    }
}
