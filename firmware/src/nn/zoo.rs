//! Ready-made networks used by the benchmarks (GPM/BECAME papers' MLPs, a LeNet-style CNN).

use rand::Rng;

use super::activation::Relu;
use super::layer::Layer;
use super::linear::Linear;
use super::model::Model;
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
    let heads = heads.iter().enumerate().map(|(i, &c)| Linear::new(&format!("head.{i}"), width, c, bias, rng)).collect();
    Model::new(vec![input], trunk, heads)
}
