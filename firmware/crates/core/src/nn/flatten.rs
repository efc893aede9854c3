//! Flatten every axis after the batch axis.

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result, shape_err};

/// `(N, d₁, …, dₖ) → (N, d₁·…·dₖ)` in C order (PyTorch's `Flatten()`); backward reshapes back.
#[derive(Debug, Clone, Default)]
pub struct Flatten {
    shape: Option<Vec<usize>>,
}

impl Flatten {
    /// Flatten `x`; a 1-D `(N,)` input becomes `(N, 1)`. Errors on a 0-D input.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let shape = x.shape().to_vec();
        let Some((&n, rest)) = shape.split_first() else {
            return Err(shape_err("Flatten input", "(batch, ...)", shape));
        };
        let width = rest.iter().product::<usize>();
        let y = x.into_shape_clone(IxDyn(&[n, width])).map_err(|e| shape_err("Flatten", (n, width), e))?;
        self.shape = Some(shape);
        Ok(y)
    }

    /// Reshape the gradient `(N, prod)` back to the input shape.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let shape = self.shape.as_ref().ok_or_else(|| Error::Config("Flatten::backward before forward".into()))?;
        let n = shape.first().copied().unwrap_or(0);
        let width = shape.iter().skip(1).product::<usize>();
        if grad.shape() != [n, width] {
            return Err(shape_err("Flatten grad", (n, width), grad.shape()));
        }
        grad.into_shape_clone(IxDyn(shape)).map_err(|e| shape_err("Flatten grad", shape, e))
    }

    /// Forward-mode tangent of the last forward pass: `ẋ` reshaped as the input was.
    pub fn tangent(&self, dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let shape = self.shape.as_ref().ok_or_else(|| Error::Config("Flatten::tangent before forward".into()))?;
        if dx.shape() != shape.as_slice() {
            return Err(shape_err("Flatten tangent", shape, dx.shape()));
        }
        Flatten::default().forward(dx)
    }

    /// Drop the cached input shape.
    pub fn clear_cache(&mut self) {
        self.shape = None;
    }
}
