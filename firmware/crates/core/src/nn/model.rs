//! A trunk of layers followed by one or more linear heads (single-head or task-incremental multi-head).

use ndarray::{Array1, Array2, ArrayD, ArrayView2, Ix1, IxDyn, s};

use super::layer::Layer;
use super::linear::Linear;
use super::loss::{argmax_rows, softmax_cross_entropy_over};
use super::mode::Mode;
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
    ///
    /// Nothing reads the gradient of the model's input, so the pass stops at the first trunk layer that has
    /// parameters and asks it for its parameter gradients only ([`Layer::backward_params_only`]): for the
    /// first Linear of an MLP that skips `δ·W`, a quarter to a third of the GEMM work of a training step.
    pub fn backward(&mut self, grad_logits: Array2<f32>, head: usize) -> Result<()> {
        self.check_head(head)?;
        let first = self.trunk.iter().position(|l| !l.params().is_empty());
        let Some(first) = first else {
            return self.heads[head].backward_params_only(grad_logits.into_dyn());
        };
        let mut g = self.heads[head].backward(grad_logits.into_dyn())?;
        for layer in self.trunk[first + 1..].iter_mut().rev() {
            g = layer.backward(g)?;
        }
        self.trunk[first].backward_params_only(g)
    }

    /// One forward + backward on a labelled batch; returns the mean cross-entropy. Gradients accumulate.
    pub fn loss_and_grad(&mut self, x: &ArrayView2<'_, f32>, labels: &[usize], head: usize) -> Result<f32> {
        self.loss_and_grad_over(x, labels, head, None)
    }

    /// [`Model::loss_and_grad`] with the loss over the `active` classes only
    /// ([`crate::nn::softmax_cross_entropy_over`], the labels trick); `None` is the plain loss.
    pub fn loss_and_grad_over(
        &mut self,
        x: &ArrayView2<'_, f32>,
        labels: &[usize],
        head: usize,
        active: Option<&[bool]>,
    ) -> Result<f32> {
        let logits = self.forward(x, head, Mode::Train)?;
        let (loss, grad) = softmax_cross_entropy_over(&logits.view(), labels, active)?;
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

    /// Grow head `head` to `outputs` classes (class-incremental learning): new output rows of the weight (and
    /// entries of the bias) start at exactly zero, so the new classes' logits are 0 until they are trained; the
    /// old rows keep their values bit for bit. The head's cached activations and projector are dropped.
    ///
    /// Returns how the flat parameter vector changed, for resizing flat per-parameter state (Fisher, anchors)
    /// with [`ParamGrowth::resize`]. `outputs` equal to the current size is a no-op (an identity growth); a smaller
    /// one is an [`Error::Config`] (heads never shrink) and leaves the model unchanged.
    pub fn grow_head(&mut self, head: usize, outputs: usize) -> Result<ParamGrowth> {
        self.check_head(head)?;
        let old = &self.heads[head];
        let current = old.out_features();
        if outputs < current {
            return Err(Error::Config(format!("head {head} has {current} outputs; it cannot shrink to {outputs}")));
        }
        let before = self.param_infos();
        if outputs == current {
            return ParamGrowth::between(&before, &before);
        }
        let mut w = Array2::<f32>::zeros((outputs, old.in_features()));
        w.slice_mut(s![..current, ..]).assign(&old.w());
        let b = match &old.bias {
            Some(p) => {
                let mut b = Array1::<f32>::zeros(outputs);
                let v = p.value.view().into_dimensionality::<Ix1>().map_err(|e| shape_err("head bias", "1-D", e))?;
                b.slice_mut(s![..current]).assign(&v);
                Some(b)
            }
            None => None,
        };
        self.heads[head] = Linear::from_weights(&format!("head.{head}"), w, b)?;
        self.rename_params();
        ParamGrowth::between(&before, &self.param_infos())
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

/// How the flat parameter vector changed when a head grew ([`Model::grow_head`]).
///
/// Every parameter keeps its old values as a **prefix** of its new values (rows are appended to `(out, in)`
/// weights and entries to `(out,)` biases, both row-major), so any flat per-parameter vector (a Fisher, an anchor
/// θ_old, a gradient accumulator) is carried over by [`ParamGrowth::resize`]: old entries move to their new
/// offsets, new entries take a fill value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGrowth {
    /// `(old_offset, old_len, new_offset, new_len)` of each parameter, in [`Model::params`] order.
    pub segments: Vec<(usize, usize, usize, usize)>,
    /// Length of the flat vector before.
    pub old_len: usize,
    /// Length of the flat vector after.
    pub new_len: usize,
}

impl ParamGrowth {
    /// The growth from layout `before` to layout `after`: same parameters (by name, in order), each at least as
    /// long as before.
    pub fn between(before: &[ParamInfo], after: &[ParamInfo]) -> Result<Self> {
        if before.len() != after.len() {
            return Err(shape_err("parameter growth: tensors", before.len(), after.len()));
        }
        let len = |p: &ParamInfo| p.shape.iter().product::<usize>();
        let mut segments = Vec::with_capacity(before.len());
        for (b, a) in before.iter().zip(after) {
            let (lb, la) = (len(b), len(a));
            let rows_appended = b.shape.len() == a.shape.len()
                && !b.shape.is_empty()
                && b.shape[1..] == a.shape[1..]
                && a.shape[0] >= b.shape[0];
            if b.name != a.name || !rows_appended {
                return Err(shape_err(&format!("parameter growth of {}", b.name), &b.shape, &a.shape));
            }
            segments.push((b.offset, lb, a.offset, la));
        }
        let old_len = before.last().map_or(0, |p| p.offset + len(p));
        let new_len = after.last().map_or(0, |p| p.offset + len(p));
        Ok(Self { segments, old_len, new_len })
    }

    /// True when nothing grew.
    pub fn is_identity(&self) -> bool {
        self.old_len == self.new_len
    }

    /// Carry a flat per-parameter vector over: every old entry to its new offset, `fill` for the new entries.
    /// Errors when `old` does not have the old length.
    pub fn resize<T: Copy>(&self, old: &[T], fill: T) -> Result<Vec<T>> {
        if old.len() != self.old_len {
            return Err(shape_err("parameter growth: flat vector", self.old_len, old.len()));
        }
        let mut out = vec![fill; self.new_len];
        for &(ob, ol, nb, _) in &self.segments {
            out[nb..nb + ol].copy_from_slice(&old[ob..ob + ol]);
        }
        Ok(out)
    }

    /// For each entry of the new vector, whether it is new (true) or carried over (false).
    pub fn new_entries(&self) -> Vec<bool> {
        let mut out = vec![true; self.new_len];
        for &(_, ol, nb, _) in &self.segments {
            out[nb..nb + ol].iter_mut().for_each(|v| *v = false);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::zoo;
    use rand::Rng;

    #[test]
    fn growing_a_head_keeps_old_logits_and_adds_zero_rows() {
        for bias in [false, true] {
            let mut rng = crate::seeded_rng(1);
            let mut model = zoo::mlp(5, &[4], &[2], bias, &mut rng).unwrap();
            let x = Array2::from_shape_fn((3, 5), |_| rng.random_range(-1.0f32..1.0));
            let before = model.forward(&x.view(), 0, Mode::Eval).unwrap();
            let flat_before = model.flat_params();
            let growth = model.grow_head(0, 5).unwrap();
            assert_eq!(model.head_outputs(0).unwrap(), 5);
            let after = model.forward(&x.view(), 0, Mode::Eval).unwrap();
            for r in 0..3 {
                for c in 0..2 {
                    assert_eq!(after[[r, c]].to_bits(), before[[r, c]].to_bits(), "old logit changed");
                }
                for c in 2..5 {
                    assert_eq!(after[[r, c]], 0.0, "new class logit must start at 0");
                }
            }
            // The resize map carries every old parameter to its new place; new ones are the zeros of the model.
            let flat_after = model.flat_params();
            assert_eq!(growth.resize(&flat_before, 0.0).unwrap(), flat_after);
            let new = growth.new_entries();
            assert_eq!(new.iter().filter(|&&b| b).count(), 3 * 4 + if bias { 3 } else { 0 });
            assert_eq!(growth.new_len, model.num_params());
            let names: Vec<String> = model.params().iter().map(|p| p.name.clone()).collect();
            assert!(names.contains(&"head.0.weight".to_string()));
            assert!(growth.resize(&flat_after, 0.0).is_err(), "wrong length must be refused");
        }
    }

    #[test]
    fn heads_never_shrink_and_same_size_is_identity() {
        let mut model = zoo::mlp(3, &[2], &[3, 2], true, &mut crate::seeded_rng(2)).unwrap();
        let flat = model.flat_params();
        assert!(matches!(model.grow_head(0, 2), Err(Error::Config(_))));
        assert_eq!(model.flat_params(), flat);
        assert!(model.grow_head(0, 3).unwrap().is_identity());
        assert!(matches!(model.grow_head(7, 9), Err(Error::UnknownHead { .. })));
        // Growing head 0 of a multi-head model moves head 1's parameters: the map follows them.
        let g = model.grow_head(0, 4).unwrap();
        assert_eq!(g.resize(&flat, -1.0).unwrap(), {
            let mut v = model.flat_params();
            for (x, new) in v.iter_mut().zip(g.new_entries()) {
                if new {
                    *x = -1.0;
                }
            }
            v
        });
    }
}
