//! Fully connected layer `y = x Wᵀ + b`.

use crate::nn::gemm::gemm;
use ndarray::{Array1, Array2, ArrayD, Axis, Ix2};
use rand::Rng;

use super::param::Param;
use super::projector::Projector;
use crate::error::{Result, shape_err};

/// Fully connected layer with weight `(out, in)` (PyTorch layout) and an optional bias.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight, shape `(out_features, in_features)`.
    pub weight: Param,
    /// Optional bias, shape `(out_features,)`.
    pub bias: Option<Param>,
    input: Option<Array2<f32>>,
    /// Gradient projection (GPM): when set, the weight gradient loses its component in the projector's
    /// subspace, `G ← G − G M Mᵀ`.
    pub projector: Option<std::sync::Arc<Projector>>,
}

impl Linear {
    /// PyTorch's default initialisation: `U(-1/√in, 1/√in)` for weight and bias.
    pub fn new(prefix: &str, in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let w = Array2::from_shape_fn((out_features, in_features), |_| rng.random_range(-bound..=bound));
        let b = bias.then(|| {
            let b = Array1::from_shape_fn(out_features, |_| rng.random_range(-bound..=bound));
            Param::new(format!("{prefix}.bias"), b.into_dyn())
        });
        Self { weight: Param::new(format!("{prefix}.weight"), w.into_dyn()), bias: b, input: None, projector: None }
    }

    /// Build from given weights (e.g. loaded from ONNX); `weight` is `(out, in)`.
    pub fn from_weights(prefix: &str, weight: Array2<f32>, bias: Option<Array1<f32>>) -> Result<Self> {
        if let Some(b) = &bias
            && b.len() != weight.nrows()
        {
            return Err(shape_err("Linear::from_weights bias", weight.nrows(), b.len()));
        }
        Ok(Self {
            weight: Param::new(format!("{prefix}.weight"), weight.into_dyn()),
            bias: bias.map(|b| Param::new(format!("{prefix}.bias"), b.into_dyn())),
            input: None,
            projector: None,
        })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.value.shape()[1]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.value.shape()[0]
    }

    /// The weight as a 2-D view.
    pub fn w(&self) -> ndarray::ArrayView2<'_, f32> {
        self.weight.value.view().into_dimensionality::<Ix2>().expect("Linear weight is 2-D by construction")
    }

    /// Input of the last forward pass `(batch, in)`, kept for backward and for GPM representations.
    pub fn cached_input(&self) -> Option<&Array2<f32>> {
        self.input.as_ref()
    }

    /// `y = x Wᵀ + b` for `x` of shape `(batch, in)`.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.into_dimensionality::<Ix2>().map_err(|e| shape_err("Linear input", "(batch, in)", e))?;
        if x.ncols() != self.in_features() {
            return Err(shape_err("Linear input width", self.in_features(), x.ncols()));
        }
        let mut y = crate::nn::ops::matmul_nt(&x.view(), &self.w())?;
        if let Some(b) = &self.bias {
            y += &b.value.view().into_dimensionality::<ndarray::Ix1>().expect("bias is 1-D");
        }
        self.input = Some(x);
        Ok(y.into_dyn())
    }

    /// Accumulate `dW += δᵀ x`, `db += Σ δ` and return `dx = δ W`.
    ///
    /// With a projector, `dW += (δᵀ x)(I − M Mᵀ)`. Since `δᵀ x (I − M Mᵀ) = δᵀ (x − x M Mᵀ)`, the cheaper side is
    /// projected: the inputs when the batch is smaller than the output width (GPM's batch 10 vs 100 units),
    /// otherwise the gradient rows. Both are exact.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let g = self.accumulate_param_grads(grad)?;
        Ok(crate::nn::gemm::matmul(&g.view(), &self.w())?.into_dyn())
    }

    /// [`Linear::backward`] without the input gradient `δ W` (for the first layer of a model, whose input
    /// gradient nothing reads).
    pub fn backward_params_only(&mut self, grad: ArrayD<f32>) -> Result<()> {
        self.accumulate_param_grads(grad).map(drop)
    }

    /// `dW += δᵀ x` (projected as in [`Linear::backward`]) and `db += Σ δ`, written straight into the gradient
    /// buffers (no temporary `(out, in)` matrix unless the gradient side is projected); returns `δ` as 2-D.
    fn accumulate_param_grads(&mut self, grad: ArrayD<f32>) -> Result<Array2<f32>> {
        let g = grad.into_dimensionality::<Ix2>().map_err(|e| shape_err("Linear grad", "(batch, out)", e))?;
        let x = self.input.as_ref().ok_or_else(|| crate::Error::Config("Linear::backward before forward".into()))?;
        if g.nrows() != x.nrows() || g.ncols() != self.out_features() {
            return Err(shape_err("Linear grad", (x.nrows(), self.out_features()), g.dim()));
        }
        let mut wg = self.weight.grad.view_mut().into_dimensionality::<Ix2>().expect("2-D");
        match &self.projector {
            None => gemm(1.0, &g.t(), &x.view(), 1.0, &mut wg)?,
            Some(p) if x.nrows() < g.ncols() => gemm(1.0, &g.t(), &p.project_rows(&x.view())?.view(), 1.0, &mut wg)?,
            Some(p) => wg += &p.project_rows(&crate::nn::ops::matmul_tn(&g.view(), &x.view())?.view())?,
        }
        if let Some(b) = &mut self.bias {
            b.grad += &g.sum_axis(Axis(0)).into_dyn();
        }
        Ok(g)
    }

    /// Forward-mode tangent of the last forward pass, for an input tangent `ẋ (batch, in)` and parameter tangents
    /// `Ẇ (out, in)` (flat, row-major, as [`super::Model::flat_params`] lists it), `ḃ (out,)`: `ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ` (the product rule on `y = x Wᵀ + b`). `dx = None` is
    /// `ẋ = 0` (the input does not move: the first layer), which skips the `ẋ Wᵀ` product.
    pub fn tangent(&self, dx: Option<ArrayD<f32>>, dw: &[f32], db: Option<&[f32]>) -> Result<ArrayD<f32>> {
        let x = self.input.as_ref().ok_or_else(|| crate::Error::Config("Linear::tangent before forward".into()))?;
        let shape = (self.out_features(), self.in_features());
        let dw = ndarray::ArrayView2::from_shape(shape, dw).map_err(|_| shape_err("Linear Ẇ", shape, dw.len()))?;
        let mut y = match dx {
            Some(dx) => {
                let dx = dx.into_dimensionality::<Ix2>().map_err(|e| shape_err("Linear tangent", "(batch, in)", e))?;
                if dx.dim() != x.dim() {
                    return Err(shape_err("Linear tangent", x.dim(), dx.dim()));
                }
                crate::nn::ops::matmul_nt(&dx.view(), &self.w())?
            }
            None => Array2::zeros((x.nrows(), self.out_features())),
        };
        gemm(1.0, &x.view(), &dw.t(), 1.0, &mut y.view_mut())?;
        match db {
            Some(b) if b.len() == self.out_features() => y += &ndarray::ArrayView1::from(b),
            Some(b) => return Err(shape_err("Linear ḃ", self.out_features(), b.len())),
            None => {}
        }
        Ok(y.into_dyn())
    }

    /// Parameters in order (weight, bias).
    pub fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight).chain(self.bias.as_ref()).collect()
    }

    /// Mutable parameters in order (weight, bias).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }

    /// Drop cached activations.
    pub fn clear_cache(&mut self) {
        self.input = None;
    }
}
