//! The closed set of layer kinds the learner trains, exports and projects.

use ndarray::ArrayD;

use super::activation::Relu;
use super::conv::Conv2d;
use super::dropout::Dropout;
use super::flatten::Flatten;
use super::linear::Linear;
use super::mode::Mode;
use super::norm::BatchNorm;
use super::param::Param;
use super::pool::MaxPool2d;
use super::random_features::{RandomFeatures, RandomFourier};
use crate::error::Result;

/// One layer of a [`super::model::Model`].
///
/// An enum rather than trait objects: GPM, ONNX export and the state store all need to know what each layer is.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Fully connected.
    Linear(Linear),
    /// Rectified linear unit.
    Relu(Relu),
    /// 2-D convolution (NCHW).
    Conv2d(Conv2d),
    /// 2-D max pooling (NCHW).
    MaxPool2d(MaxPool2d),
    /// Batch normalisation with batch statistics (2-D or 4-D input).
    BatchNorm(BatchNorm),
    /// Inverted dropout (active in [`Mode::Train`] only).
    Dropout(Dropout),
    /// Flatten all non-batch axes.
    Flatten(Flatten),
    /// A fixed random projection (no parameters; RanPAC's expansion before the head).
    RandomFeatures(RandomFeatures),
    /// Random Fourier features of the standardised input (no parameters; RanDumb's representation).
    RandomFourier(RandomFourier),
}

impl Layer {
    /// Forward pass on a batch (first axis is the batch).
    pub fn forward(&mut self, x: ArrayD<f32>, mode: Mode) -> Result<ArrayD<f32>> {
        match self {
            Layer::Linear(l) => l.forward(x),
            Layer::Relu(l) => l.forward(x),
            Layer::Conv2d(l) => l.forward(x),
            Layer::MaxPool2d(l) => l.forward(x),
            Layer::BatchNorm(l) => l.forward(x),
            Layer::Dropout(l) => l.forward(x, mode),
            Layer::Flatten(l) => l.forward(x),
            Layer::RandomFeatures(l) => l.forward(x),
            Layer::RandomFourier(l) => l.forward(x),
        }
    }

    /// Backward pass: accumulates parameter gradients, returns the gradient of the input.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        match self {
            Layer::Linear(l) => l.backward(grad),
            Layer::Relu(l) => l.backward(grad),
            Layer::Conv2d(l) => l.backward(grad),
            Layer::MaxPool2d(l) => l.backward(grad),
            Layer::BatchNorm(l) => l.backward(grad),
            Layer::Dropout(l) => l.backward(grad),
            Layer::Flatten(l) => l.backward(grad),
            Layer::RandomFeatures(l) => l.backward(grad),
            Layer::RandomFourier(l) => l.backward(grad),
        }
    }

    /// Backward pass when nothing needs the input gradient (the model's first layer with parameters): only the
    /// parameter gradients are accumulated. Linear and Conv2d skip computing `δ·W` / col2im altogether.
    pub fn backward_params_only(&mut self, grad: ArrayD<f32>) -> Result<()> {
        match self {
            Layer::Linear(l) => l.backward_params_only(grad),
            Layer::Conv2d(l) => {
                let skip = std::mem::replace(&mut l.skip_input_grad, true);
                let r = l.backward(grad).map(drop);
                l.skip_input_grad = skip;
                r
            }
            other => other.backward(grad).map(drop),
        }
    }

    /// Trainable parameters of this layer.
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Layer::Linear(l) => l.params(),
            Layer::Conv2d(l) => l.params(),
            Layer::BatchNorm(l) => l.params(),
            Layer::Relu(_)
            | Layer::MaxPool2d(_)
            | Layer::Dropout(_)
            | Layer::Flatten(_)
            | Layer::RandomFeatures(_)
            | Layer::RandomFourier(_) => {
                vec![]
            }
        }
    }

    /// Mutable trainable parameters of this layer.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Layer::Linear(l) => l.params_mut(),
            Layer::Conv2d(l) => l.params_mut(),
            Layer::BatchNorm(l) => l.params_mut(),
            Layer::Relu(_)
            | Layer::MaxPool2d(_)
            | Layer::Dropout(_)
            | Layer::Flatten(_)
            | Layer::RandomFeatures(_)
            | Layer::RandomFourier(_) => {
                vec![]
            }
        }
    }

    /// Drop activations cached for backward.
    pub fn clear_cache(&mut self) {
        match self {
            Layer::Linear(l) => l.clear_cache(),
            Layer::Relu(l) => l.clear_cache(),
            Layer::Conv2d(l) => l.clear_cache(),
            Layer::MaxPool2d(l) => l.clear_cache(),
            Layer::BatchNorm(l) => l.clear_cache(),
            Layer::Dropout(l) => l.clear_cache(),
            Layer::Flatten(l) => l.clear_cache(),
            Layer::RandomFeatures(l) => l.clear_cache(),
            Layer::RandomFourier(l) => l.clear_cache(),
        }
    }

    /// Short kind name (used in reports and errors).
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "Linear",
            Layer::Relu(_) => "Relu",
            Layer::Conv2d(_) => "Conv2d",
            Layer::MaxPool2d(_) => "MaxPool2d",
            Layer::BatchNorm(_) => "BatchNorm",
            Layer::Dropout(_) => "Dropout",
            Layer::Flatten(_) => "Flatten",
            Layer::RandomFeatures(_) => "RandomFeatures",
            Layer::RandomFourier(_) => "RandomFourier",
        }
    }
}
