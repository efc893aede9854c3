//! The closed set of layer kinds the learner trains, exports and projects.

use ndarray::ArrayD;

use super::activation::Relu;
use super::linear::Linear;
use super::param::Param;
use crate::error::Result;

/// Whether a forward pass is for training (dropout active, caches kept) or evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: dropout samples masks; batch statistics are used by batch norm.
    Train,
    /// Evaluation: dropout is the identity; batch norm still uses batch statistics (no running stats).
    Eval,
}

/// One layer of a [`super::model::Model`].
///
/// An enum rather than trait objects: GPM, ONNX export and the state store all need to know what each layer is.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Fully connected.
    Linear(Linear),
    /// Rectified linear unit.
    Relu(Relu),
}

impl Layer {
    /// Forward pass on a batch (first axis is the batch).
    pub fn forward(&mut self, x: ArrayD<f32>, mode: Mode) -> Result<ArrayD<f32>> {
        let _ = mode;
        match self {
            Layer::Linear(l) => l.forward(x),
            Layer::Relu(l) => l.forward(x),
        }
    }

    /// Backward pass: accumulates parameter gradients, returns the gradient of the input.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        match self {
            Layer::Linear(l) => l.backward(grad),
            Layer::Relu(l) => l.backward(grad),
        }
    }

    /// Trainable parameters of this layer.
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Layer::Linear(l) => l.params(),
            Layer::Relu(_) => vec![],
        }
    }

    /// Mutable trainable parameters of this layer.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Layer::Linear(l) => l.params_mut(),
            Layer::Relu(_) => vec![],
        }
    }

    /// Drop activations cached for backward.
    pub fn clear_cache(&mut self) {
        match self {
            Layer::Linear(l) => l.clear_cache(),
            Layer::Relu(l) => l.clear_cache(),
        }
    }

    /// Short kind name (used in reports and errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "Linear",
            Layer::Relu(_) => "Relu",
        }
    }
}
