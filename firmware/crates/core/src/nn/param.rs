//! Named trainable tensors and the flat view that Fisher, merges and GPM work on.

use ndarray::ArrayD;

/// One trainable tensor with its gradient accumulator.
#[derive(Debug, Clone)]
pub struct Param {
    /// Stable name, e.g. `trunk.0.weight` or `head.1.bias`.
    pub name: String,
    /// Current value.
    pub value: ArrayD<f32>,
    /// Gradient accumulated by the last backward pass(es); same shape as `value`.
    pub grad: ArrayD<f32>,
}

impl Param {
    /// A parameter with a zero gradient of matching shape.
    pub fn new(name: impl Into<String>, value: ArrayD<f32>) -> Self {
        let grad = ArrayD::zeros(value.raw_dim());
        Self { name: name.into(), value, grad }
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for a zero-sized tensor.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Reset the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }
}

/// Name, shape and offset of one parameter inside the flat vector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamInfo {
    /// Parameter name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Offset of its first scalar in the flat vector.
    pub offset: usize,
}
