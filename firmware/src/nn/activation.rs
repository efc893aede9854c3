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
        x.mapv_inplace(|v| if v > 0.0 { v } else { 0.0 });
        Ok(x)
    }

    /// Pass the gradient where the input was positive.
    pub fn backward(&mut self, mut grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mask = self.mask.as_ref().ok_or_else(|| crate::Error::Config("Relu::backward before forward".into()))?;
        if mask.shape() != grad.shape() {
            return Err(shape_err("Relu grad", mask.shape(), grad.shape()));
        }
        ndarray::Zip::from(&mut grad).and(mask).for_each(|g, &m| {
            if !m {
                *g = 0.0
            }
        });
        Ok(grad)
    }

    /// Drop cached activations.
    pub fn clear_cache(&mut self) {
        self.mask = None;
    }
}
