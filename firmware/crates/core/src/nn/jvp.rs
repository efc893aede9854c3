//! Forward-mode differentiation: the Jacobian-vector product of a model's logits with respect to its parameters,
//! `J_θ f(x; θ) · τ`, the directional derivative of the logits along a parameter direction τ.
//!
//! [`jvp`] runs the ordinary forward pass at θ and, beside every activation `h`, its tangent `ḣ` (forward mode,
//! e.g. Baydin et al., "Automatic differentiation in machine learning: a survey", JMLR 2018, §3.1), with each
//! layer's own derivative:
//!
//! | layer | forward | tangent |
//! |---|---|---|
//! | Linear | `y = x Wᵀ + b` | `ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ` |
//! | Conv2d | `y = conv(x, W) + b` | `ẏ = conv(ẋ, W) + conv(x, Ẇ) + ḃ` |
//! | ReLU | `y = max(x, 0)` | `ẏ = ẋ ⊙ 1[x > 0]` |
//! | MaxPool2d | `y_o = x_{a(o)}` | `ẏ_o = ẋ_{a(o)}` (`a` = the window's argmax) |
//! | BatchNorm | `y = γ x̂ + β` | `ẏ = γ̇ x̂ + γ/σ (ẋ − mean ẋ − x̂ mean(x̂ ẋ)) + β̇` |
//! | Dropout, Flatten, RandomFeatures | linear, no parameters | the same linear map on `ẋ` |
//!
//! The input does not move (`ẋ = 0` at the model's input), so the first layer's `ẋ`-term is skipped. The result
//! is exact up to float rounding, wherever the network is differentiable (ReLU and max-pool kinks are measure
//! zero), unlike a finite difference, whose error depends on its step. The layers keep their forward caches, so
//! a backward pass at θ (the gradient `J_θᵀ δ`) can follow directly, as tangent-space fine-tuning needs.

use ndarray::{Array2, ArrayD, ArrayView2};

use super::layer::Layer;
use super::linear::Linear;
use super::mode::Mode;
use super::model::{Model, batch_tensor};
use crate::error::{Error, Result, shape_err};

/// The logits and their Jacobian-vector product, `(f(x; θ), J_θ f(x; θ) · τ)`, for a batch of flat samples
/// `x (batch, input_len)` through the trunk and head `head`, and a direction `tau` over all parameters in
/// [`Model::flat_params`] order (entries of other heads do not affect this head's logits). See the module
/// documentation for each layer's tangent. The layers' forward caches are those of `f(x; θ)`.
pub fn jvp(
    model: &mut Model,
    x: &ArrayView2<'_, f32>,
    head: usize,
    tau: &[f32],
    mode: Mode,
) -> Result<(Array2<f32>, Array2<f32>)> {
    let n = model.num_params();
    if tau.len() != n {
        return Err(shape_err("JVP direction τ", n, tau.len()));
    }
    if let Some(i) = tau.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("JVP direction τ, entry {i}")));
    }
    model.head_outputs(head)?;
    if x.ncols() != model.input_len() {
        return Err(shape_err("model input", model.input_len(), x.ncols()));
    }
    let mut off = 0;
    let mut h = batch_tensor(x, &model.input_shape)?;
    // `None` while the tangent is still zero (below the first layer with parameters).
    let mut dh: Option<ArrayD<f32>> = None;
    for layer in &mut model.trunk {
        let dp = split(layer.params().iter().map(|p| p.len()), tau, &mut off)?;
        h = layer.forward(h, mode)?;
        dh = tangent(layer, dh, &dp)?;
    }
    off += model.heads[..head].iter().flat_map(Linear::params).map(|p| p.len()).sum::<usize>();
    let lin = &mut model.heads[head];
    let dp = split(lin.params().iter().map(|p| p.len()), tau, &mut off)?;
    let y = lin.forward(h)?;
    let dy = lin.tangent(dh, dp[0], dp.get(1).copied())?;
    let y = y.into_dimensionality().map_err(|e| shape_err("model output", "(batch, classes)", e))?;
    let dy = dy.into_dimensionality().map_err(|e| shape_err("JVP output", "(batch, classes)", e))?;
    Ok((y, dy))
}

/// The next parameters' slices of `tau`, from `*off`: one per length in `lens`, in the parameters' own (row-major)
/// order, borrowed, not copied.
fn split<'t>(lens: impl Iterator<Item = usize>, tau: &'t [f32], off: &mut usize) -> Result<Vec<&'t [f32]>> {
    lens.map(|len| {
        let part = tau.get(*off..*off + len).ok_or_else(|| shape_err("JVP direction τ", *off + len, tau.len()))?;
        *off += len;
        Ok(part)
    })
    .collect()
}

/// The tangent of one layer's output after its forward pass, from its input tangent (`None` = zero) and its
/// parameter tangents (in [`Layer::params`] order). Stays `None` through parameter-free layers.
fn tangent(layer: &Layer, dx: Option<ArrayD<f32>>, dp: &[&[f32]]) -> Result<Option<ArrayD<f32>>> {
    let dy = match (layer, dx) {
        (Layer::Linear(l), dx) => l.tangent(dx, dp[0], dp.get(1).copied())?,
        (Layer::Conv2d(c), dx) => c.tangent(dx, dp[0], dp.get(1).copied())?,
        (Layer::BatchNorm(b), dx) => b.tangent(dx, dp[0], dp[1])?,
        (_, None) => return Ok(None),
        (Layer::Relu(r), Some(dx)) => r.tangent(dx)?,
        (Layer::MaxPool2d(p), Some(dx)) => p.tangent(dx)?,
        (Layer::Dropout(d), Some(dx)) => d.tangent(dx)?,
        (Layer::Flatten(f), Some(dx)) => f.tangent(dx)?,
        (Layer::RandomFeatures(r), Some(dx)) => r.tangent(dx)?,
        (Layer::RandomFourier(r), Some(dx)) => r.tangent(dx)?,
    };
    Ok(Some(dy))
}
