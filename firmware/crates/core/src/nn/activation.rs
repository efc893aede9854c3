//! ReLU.

use ndarray::ArrayD;

use crate::error::{Result, shape_err};

/// Rectified linear unit; keeps the sign mask of its last input for backward.
#[derive(Debug, Clone, Default)]
pub struct Relu {
    mask: Option<ArrayD<bool>>,
}

impl Relu {
    /// `max(x, 0)`.
    pub fn forward(&mut self, mut x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.mask = Some(x.mapv(|v| v > 0.0));
        // NaN stays NaN (it must not be hidden as 0); everything else is max(x, 0).
        x.mapv_inplace(relu);
        Ok(x)
    }

    /// Pass the gradient where the input was positive.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.tangent(grad)
    }

    /// Forward-mode tangent of the last forward pass, `ẏ = ẋ ⊙ 1[x > 0]`: the same diagonal map as backward
    /// (a diagonal Jacobian is its own transpose).
    pub fn tangent(&self, mut dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mask = self.mask.as_ref().ok_or_else(|| crate::Error::Config("Relu before forward".into()))?;
        if mask.shape() != dx.shape() {
            return Err(shape_err("Relu grad/tangent", mask.shape(), dx.shape()));
        }
        // Branch-free: random masks make an `if` mispredict about half the time.
        ndarray::Zip::from(&mut dx).and(mask).for_each(|g, &m| *g = relu_grad(*g, m));
        Ok(dx)
    }

    /// Drop cached activations.
    pub fn clear_cache(&mut self) {
        self.mask = None;
    }
}

/// `max(v, 0)`, with NaN kept as NaN (it must not be hidden as 0). The one definition of the forward pass, shared
/// with the CPU compute backend (`edgelearn_learn::backend`).
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// The gradient through ReLU: `g` where the input was positive (`positive`), else `g · 0` (so NaN propagates).
/// Branch-free: random masks make an `if` mispredict about half the time.
#[inline(always)]
pub fn relu_grad(g: f32, positive: bool) -> f32 {
    g * f32::from(u8::from(positive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_not_hidden_and_backward_masks() {
        let mut r = Relu::default();
        let y = r.forward(ndarray::arr1(&[-1.0f32, 0.5, f32::NAN]).into_dyn()).unwrap();
        assert_eq!(y[0], 0.0);
        assert_eq!(y[1], 0.5);
        assert!(y[2].is_nan());
        let g = r.backward(ndarray::arr1(&[3.0f32, 3.0, 3.0]).into_dyn()).unwrap();
        assert_eq!(g.as_slice().unwrap(), &[0.0, 3.0, 0.0]);
    }
}
