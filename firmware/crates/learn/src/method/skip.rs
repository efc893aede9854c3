//! The features entering the trunk's fully connected layers carried beside them to the head (`+id`, issue 30).
//! Let `x` be the input of the trunk's first Linear (the model's input on a model cut behind a frozen prefix or on
//! an MLP; the flattened convolutional features on a CNN). Every Linear from there on is widened so that its
//! first `d = dim x` outputs copy `x`: `[x ‖ h_k] = ReLU([[I, 0], [0, W_k]] [x ‖ h_{k−1}] + [0 ‖ b_k])` (the first
//! layer `[I; W_1] x`), and the head reads `[x ‖ h_L]`. Where `x` is non-negative (after a ReLU and pooling, as in
//! every model this project ships) the ReLU leaves it exactly: the head sees the features the training-free peers
//! use *and* the trained ones, and the identity blocks train under the same projection as the rest. A negative
//! value of `x` (normalised pixels into an MLP) reaches the head as 0.
//!
//! The widening is a function of the model's shape alone and is applied before the method's first task, as
//! RanPAC's expansion is ([`super::prototype::ensure_random_features`]); the ONNX the board exports is still a
//! plain chain of Gemm and ReLU nodes.

use ndarray::{Array1, Array2, s};

use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::{Layer, Linear, Model};

/// Whether parameters of the shapes `shape_of(name)` (a stored layout) are those of `plain` (the model as it
/// was loaded) widened by [`ensure_identity_skip`]: the weight of its first trunk Linear has as many more rows as
/// that Linear has inputs.
pub fn identity_skip_of(plain: &Model, shape_of: impl Fn(&str) -> Option<Vec<u32>>) -> bool {
    let Some((i, lin)) = first_linear(plain) else { return false };
    let widened = (lin.out_features() + lin.in_features()) as u32;
    shape_of(&format!("trunk.{i}.weight")).is_some_and(|s| s.first() == Some(&widened))
}

fn first_linear(model: &Model) -> Option<(usize, &Linear)> {
    model.trunk.iter().enumerate().find_map(|(i, l)| match l {
        Layer::Linear(lin) => Some((i, lin)),
        _ => None,
    })
}

/// Widen every Linear of the trunk from the first one on, and every head, so that the first Linear's input
/// reaches the heads beside the trunk's features (the module's equation). From the first Linear on the trunk must
/// hold Linear, ReLU and Dropout layers only, each Linear followed by a ReLU (else [`Error::Config`], nothing
/// changed); a trunk without a Linear is left as it is (its heads read its features already). The trained
/// weights are kept in their blocks, the new blocks are the identity and zeros, the heads' new columns zero: the
/// model computes exactly what it did (when `x` is non-negative). Not idempotent: the method calls it once,
/// before its first task ([`super::class_il::ClassIl::prepare_model`]); a reloaded state says whether it ran
/// ([`identity_skip_of`]).
pub fn ensure_identity_skip(model: &mut Model) -> Result<()> {
    let Some((first, lin)) = first_linear(model) else { return Ok(()) };
    let d = lin.in_features();
    let tail = &model.trunk[first..];
    let ok = tail.iter().all(|l| matches!(l, Layer::Linear(_) | Layer::Relu(_) | Layer::Dropout(_)))
        && tail
            .iter()
            .enumerate()
            .all(|(i, l)| !matches!(l, Layer::Linear(_)) || matches!(tail.get(i + 1), Some(Layer::Relu(_))));
    if !ok {
        return Err(Error::Config(
            "+id carries the features beside the trunk's fully connected layers: from its first Linear on, Linear + ReLU layers only".into(),
        ));
    }
    let mut carried = 0; // width of the carried input at the current layer's input (0 before the first Linear)
    let mut trunk = model.trunk.clone();
    for layer in &mut trunk[first..] {
        if let Layer::Linear(lin) = layer {
            let (h, inp) = (lin.out_features(), lin.in_features());
            let mut w = Array2::<f32>::zeros((d + h, carried + inp));
            if carried == 0 {
                w.slice_mut(s![..d, ..]).assign(&Array2::eye(d));
            } else {
                w.slice_mut(s![..d, ..d]).assign(&Array2::eye(d));
            }
            w.slice_mut(s![d.., carried..]).assign(&lin.w());
            let b = lin.bias.as_ref().map(|p| {
                let mut b = Array1::<f32>::zeros(d + h);
                b.slice_mut(s![d..]).assign(&Array1::from_iter(p.value.iter().copied()));
                b
            });
            *lin = Linear::from_weights("skip", w, b)?;
            carried = d;
        }
    }
    let heads = model
        .heads
        .iter()
        .enumerate()
        .map(|(i, old)| {
            let mut w = Array2::<f32>::zeros((old.out_features(), d + old.in_features()));
            w.slice_mut(s![.., d..]).assign(&old.w());
            let b = old.bias.as_ref().map(|p| Array1::from_iter(p.value.iter().copied()));
            Linear::from_weights(&format!("head.{i}"), w, b)
        })
        .collect::<Result<Vec<_>>>()?;
    *model = Model::new(model.input_shape.clone(), trunk, heads)?;
    Ok(())
}

#[cfg(test)]
mod tests;
