//! A trunk of layers followed by one or more linear heads (single-head or task-incremental multi-head).

use ndarray::{Array2, ArrayD, ArrayView2, IxDyn};

use super::layer::{Layer, Mode};
use super::linear::Linear;
use super::loss::{argmax_rows, softmax_cross_entropy};
use super::param::{Param, ParamInfo};
use crate::error::{Error, Result, shape_err};

/// A network: shared trunk, then one linear head per task (multi-head) or a single head.
#[derive(Debug, Clone)]
pub struct Model {
    /// Per-sample input shape, e.g. `[784]` or `[1, 28, 28]`.
    pub input_shape: Vec<usize>,
    /// Shared layers.
    pub trunk: Vec<Layer>,
    /// Output heads; a single-head model has exactly one.
    pub heads: Vec<Linear>,
}

impl Model {
    /// Assemble a model; parameter names are assigned from positions (`trunk.{i}.*`, `head.{h}.*`).
    pub fn new(input_shape: Vec<usize>, trunk: Vec<Layer>, heads: Vec<Linear>) -> Result<Self> {
        if heads.is_empty() {
            return Err(Error::Config("a model needs at least one head".into()));
        }
        let mut m = Self { input_shape, trunk, heads };
        m.rename_params();
        Ok(m)
    }

    fn rename_params(&mut self) {
        for (i, layer) in self.trunk.iter_mut().enumerate() {
            for p in layer.params_mut() {
                let suffix = p.name.rsplit('.').next().unwrap_or("param").to_string();
                p.name = format!("trunk.{i}.{suffix}");
            }
        }
        for (h, head) in self.heads.iter_mut().enumerate() {
            for p in head.params_mut() {
                let suffix = p.name.rsplit('.').next().unwrap_or("param").to_string();
                p.name = format!("head.{h}.{suffix}");
            }
        }
    }

    /// Number of scalars in one input sample.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Number of outputs of head `h`.
    pub fn head_outputs(&self, h: usize) -> Result<usize> {
        self.heads.get(h).map(Linear::out_features).ok_or(Error::UnknownHead { head: h, heads: self.heads.len() })
    }

    fn check_head(&self, head: usize) -> Result<()> {
        if head >= self.heads.len() {
            return Err(Error::UnknownHead { head, heads: self.heads.len() });
        }
        Ok(())
    }

    /// Forward a batch of flat samples `x (batch, input_len)` through the trunk and head `head`; returns logits.
    pub fn forward(&mut self, x: &ArrayView2<'_, f32>, head: usize, mode: Mode) -> Result<Array2<f32>> {
        self.check_head(head)?;
        if x.ncols() != self.input_len() {
            return Err(shape_err("model input", self.input_len(), x.ncols()));
        }
        let mut h = batch_tensor(x, &self.input_shape)?;
        for layer in &mut self.trunk {
            h = layer.forward(h, mode)?;
        }
        let out = self.heads[head].forward(h)?;
        out.into_dimensionality().map_err(|e| shape_err("model output", "(batch, classes)", e))
    }

    /// Backward from `grad_logits` through head `head` and the trunk, accumulating parameter gradients.
    pub fn backward(&mut self, grad_logits: Array2<f32>, head: usize) -> Result<()> {
        self.check_head(head)?;
        let mut g = self.heads[head].backward(grad_logits.into_dyn())?;
        for layer in self.trunk.iter_mut().rev() {
            g = layer.backward(g)?;
        }
        Ok(())
    }

    /// One forward + backward on a labelled batch; returns the mean cross-entropy. Gradients accumulate.
    pub fn loss_and_grad(&mut self, x: &ArrayView2<'_, f32>, labels: &[usize], head: usize) -> Result<f32> {
        let logits = self.forward(x, head, Mode::Train)?;
        let (loss, grad) = softmax_cross_entropy(&logits.view(), labels)?;
        self.backward(grad, head)?;
        Ok(loss)
    }

    /// Predicted classes for a batch (evaluation mode).
    pub fn predict(&mut self, x: &ArrayView2<'_, f32>, head: usize) -> Result<Vec<usize>> {
        let logits = self.forward(x, head, Mode::Eval)?;
        Ok(argmax_rows(&logits.view()))
    }

    /// All parameters, trunk first then heads, in a stable order.
    pub fn params(&self) -> Vec<&Param> {
        self.trunk.iter().flat_map(Layer::params).chain(self.heads.iter().flat_map(Linear::params)).collect()
    }

    /// All parameters, mutable, same order as [`Model::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.trunk
            .iter_mut()
            .flat_map(Layer::params_mut)
            .chain(self.heads.iter_mut().flat_map(Linear::params_mut))
            .collect()
    }

    /// Names, shapes and flat offsets of all parameters.
    pub fn param_infos(&self) -> Vec<ParamInfo> {
        let mut offset = 0;
        self.params()
            .into_iter()
            .map(|p| {
                let info = ParamInfo { name: p.name.clone(), shape: p.value.shape().to_vec(), offset };
                offset += p.len();
                info
            })
            .collect()
    }

    /// Total number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// All parameter values concatenated in [`Model::params`] order.
    pub fn flat_params(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.num_params());
        for p in self.params() {
            v.extend(p.value.iter().copied());
        }
        v
    }

    /// All gradients concatenated in [`Model::params`] order.
    pub fn flat_grads(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.num_params());
        for p in self.params() {
            v.extend(p.grad.iter().copied());
        }
        v
    }

    /// Overwrite all parameter values from a flat vector (the inverse of [`Model::flat_params`]).
    pub fn set_flat_params(&mut self, flat: &[f32]) -> Result<()> {
        let n = self.num_params();
        if flat.len() != n {
            return Err(shape_err("flat parameters", n, flat.len()));
        }
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("flat parameter {i}")));
        }
        let mut off = 0;
        for p in self.params_mut() {
            let len = p.len();
            for (dst, src) in p.value.iter_mut().zip(&flat[off..off + len]) {
                *dst = *src;
            }
            off += len;
        }
        Ok(())
    }

    /// Zero every gradient.
    pub fn zero_grad(&mut self) {
        for p in self.params_mut() {
            p.zero_grad();
        }
    }

    /// Drop every cached activation (frees the training workspace).
    pub fn clear_cache(&mut self) {
        for l in &mut self.trunk {
            l.clear_cache();
        }
        for h in &mut self.heads {
            h.clear_cache();
        }
    }
}

/// Reshape helper: view a flat batch as the model's input tensor.
pub fn batch_tensor(x: &ArrayView2<'_, f32>, input_shape: &[usize]) -> Result<ArrayD<f32>> {
    let mut shape = vec![x.nrows()];
    shape.extend_from_slice(input_shape);
    x.to_owned().into_shape_with_order(IxDyn(&shape)).map_err(|e| shape_err("batch tensor", &shape, e))
}
