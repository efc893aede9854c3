//! Ready-made networks used by the benchmarks (GPM/BECAME papers' MLPs, a LeNet-style CNN).

use rand::Rng;

use super::activation::Relu;
use super::conv::Conv2d;
use super::flatten::Flatten;
use super::layer::Layer;
use super::linear::Linear;
use super::model::Model;
use super::norm::BatchNorm;
use super::ops::window_out_len;
use super::pool::MaxPool2d;
use crate::error::{Error, Result};

/// An MLP `input → hidden[0] → … → heads`, ReLU after every hidden layer.
///
/// `heads` lists the output width of each head (one entry = single-head). `bias = false` gives GPM's
/// bias-free PMNIST network.
pub fn mlp(input: usize, hidden: &[usize], heads: &[usize], bias: bool, rng: &mut impl Rng) -> Result<Model> {
    if input == 0 || hidden.contains(&0) || heads.is_empty() || heads.contains(&0) {
        return Err(Error::Config(format!("bad MLP widths: input {input}, hidden {hidden:?}, heads {heads:?}")));
    }
    let mut trunk = Vec::new();
    let mut width = input;
    for (i, &h) in hidden.iter().enumerate() {
        trunk.push(Layer::Linear(Linear::new(&format!("trunk.{}", 2 * i), width, h, bias, rng)));
        trunk.push(Layer::Relu(Relu::default()));
        width = h;
    }
    let heads =
        heads.iter().enumerate().map(|(i, &c)| Linear::new(&format!("head.{i}"), width, c, bias, rng)).collect();
    Model::new(vec![input], trunk, heads)
}

/// Channels of LeNet's two convolutions (as in the GPM/BECAME conv nets).
pub const LENET_CHANNELS: [usize; 2] = [20, 50];
/// LeNet's convolution kernel size.
pub const LENET_KERNEL: usize = 5;

/// A LeNet-style CNN for `input = [channels, rows, cols]` images (flat samples are read in C order):
///
/// ```text
/// Conv(c→20, 5×5, no bias) → BatchNorm → ReLU → MaxPool(2)
/// → Conv(20→50, 5×5, no bias) → BatchNorm → ReLU → MaxPool(2)
/// → Flatten → Linear(50·h·w → hidden, no bias) → ReLU → heads (Linear, no bias)
/// ```
///
/// Batch norms use batch statistics only (`track_running_stats=False`); there is no dropout. The first
/// convolution skips its (unused) input gradient ([`Conv2d::skip_input_grad`]). For 28×28 input the
/// flattened width is 50·4·4 = 800; `hidden = 500` gives the GPM-style `800 → 500` layer. Trunk layer indices
/// (and parameter names `trunk.{i}.*`): 0 conv, 1 bn, 2 relu, 3 pool, 4 conv, 5 bn, 6 relu, 7 pool, 8 flatten,
/// 9 linear, 10 relu. Errors (no panic) on zero sizes or an image smaller than 16×16, where the second
/// convolution would not fit.
pub fn lenet(input: [usize; 3], hidden: usize, heads: &[usize], rng: &mut impl Rng) -> Result<Model> {
    let [c, rows, cols] = input;
    if c == 0 || hidden == 0 || heads.is_empty() || heads.contains(&0) {
        return Err(Error::Config(format!("bad LeNet sizes: input {input:?}, hidden {hidden}, heads {heads:?}")));
    }
    let [c1, c2] = LENET_CHANNELS;
    let k = LENET_KERNEL;
    // conv (k, stride 1, no padding) then 2×2/2 pooling, twice.
    let stage = |n: usize| window_out_len(n, k, 1, 0).and_then(|n| window_out_len(n, 2, 2, 0));
    let (Some(h), Some(w)) = (stage(rows).and_then(stage), stage(cols).and_then(stage)) else {
        return Err(Error::Config(format!(
            "LeNet needs images of at least 16x16 (two 5x5 convolutions and 2x2 poolings), got {rows}x{cols}"
        )));
    };
    let flat = c2 * h * w;
    let mut conv1 = Conv2d::new("trunk.0", c, c1, k, 1, 0, false, rng)?;
    conv1.skip_input_grad = true; // nothing reads the gradient of the image
    let trunk = vec![
        Layer::Conv2d(conv1),
        Layer::BatchNorm(BatchNorm::new("trunk.1", c1)),
        Layer::Relu(Relu::default()),
        Layer::MaxPool2d(MaxPool2d::new(2, 2)?),
        Layer::Conv2d(Conv2d::new("trunk.4", c1, c2, k, 1, 0, false, rng)?),
        Layer::BatchNorm(BatchNorm::new("trunk.5", c2)),
        Layer::Relu(Relu::default()),
        Layer::MaxPool2d(MaxPool2d::new(2, 2)?),
        Layer::Flatten(Flatten::default()),
        Layer::Linear(Linear::new("trunk.9", flat, hidden, false, rng)),
        Layer::Relu(Relu::default()),
    ];
    let heads =
        heads.iter().enumerate().map(|(i, &n)| Linear::new(&format!("head.{i}"), hidden, n, false, rng)).collect();
    Model::new(input.to_vec(), trunk, heads)
}

/// LeNet without batch norm, with biases: a CNN whose output for a sample does not depend on the rest of its
/// batch, so its convolutional trunk can serve as a frozen feature extractor sample by sample (the pre-trained
/// base that ships as ONNX, `models/`):
///
/// ```text
/// Conv(c→20, 5×5) → ReLU → MaxPool(2) → Conv(20→50, 5×5) → ReLU → MaxPool(2)
/// → Flatten → Linear(50·h·w → hidden) → ReLU → heads (Linear)
/// ```
///
/// Trunk layer indices: 0 conv, 1 relu, 2 pool, 3 conv, 4 relu, 5 pool, 6 flatten, 7 linear, 8 relu. Same size
/// checks as [`lenet`].
pub fn cnn(input: [usize; 3], hidden: usize, heads: &[usize], rng: &mut impl Rng) -> Result<Model> {
    let [c, rows, cols] = input;
    if c == 0 || hidden == 0 || heads.is_empty() || heads.contains(&0) {
        return Err(Error::Config(format!("bad CNN sizes: input {input:?}, hidden {hidden}, heads {heads:?}")));
    }
    let [c1, c2] = LENET_CHANNELS;
    let k = LENET_KERNEL;
    let stage = |n: usize| window_out_len(n, k, 1, 0).and_then(|n| window_out_len(n, 2, 2, 0));
    let (Some(h), Some(w)) = (stage(rows).and_then(stage), stage(cols).and_then(stage)) else {
        return Err(Error::Config(format!(
            "the CNN needs images of at least 16x16 (two 5x5 convolutions and 2x2 poolings), got {rows}x{cols}"
        )));
    };
    let mut conv1 = Conv2d::new("trunk.0", c, c1, k, 1, 0, true, rng)?;
    conv1.skip_input_grad = true; // nothing reads the gradient of the image
    let trunk = vec![
        Layer::Conv2d(conv1),
        Layer::Relu(Relu::default()),
        Layer::MaxPool2d(MaxPool2d::new(2, 2)?),
        Layer::Conv2d(Conv2d::new("trunk.3", c1, c2, k, 1, 0, true, rng)?),
        Layer::Relu(Relu::default()),
        Layer::MaxPool2d(MaxPool2d::new(2, 2)?),
        Layer::Flatten(Flatten::default()),
        Layer::Linear(Linear::new("trunk.7", c2 * h * w, hidden, true, rng)),
        Layer::Relu(Relu::default()),
    ];
    let heads =
        heads.iter().enumerate().map(|(i, &n)| Linear::new(&format!("head.{i}"), hidden, n, true, rng)).collect();
    Model::new(input.to_vec(), trunk, heads)
}
