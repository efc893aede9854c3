//! Batch normalisation with batch statistics only (no running statistics).

use ndarray::{Array1, ArrayD};

use super::ops;
use super::param::Param;
use crate::error::{Error, Result, shape_err};

/// Variance floor added before the square root (PyTorch's default).
pub const BATCH_NORM_EPS: f32 = 1e-5;

/// Batch normalisation over channels of `(N, C, H, W)` input or features of `(N, F)` input:
/// `y = γ·(x − μ)/√(σ² + ε) + β` with the mean `μ` and **biased** variance `σ²` of the current batch per channel
/// (over `N·H·W` values), `ε = 1e-5`.
///
/// Batch statistics are used in both [`super::Mode::Train`] and [`super::Mode::Eval`] — PyTorch's
/// `BatchNorm{1,2}d(track_running_stats=False)`, as in the GPM/BECAME conv nets. Consequently, like PyTorch, a
/// batch with a single value per channel (`N·H·W = 1`) is rejected: its normalised output would not depend on
/// the input.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// Scale γ, shape `(C,)`, initialised to 1.
    pub weight: Param,
    /// Shift β, shape `(C,)`, initialised to 0.
    pub bias: Param,
    cache: Option<Cache>,
}

#[derive(Debug, Clone)]
struct Cache {
    /// Normalised input x̂ in standard layout, same shape as the input.
    xhat: ArrayD<f32>,
    /// `1/√(σ² + ε)` per channel.
    inv_std: Vec<f32>,
}

impl BatchNorm {
    /// Batch norm over `features` channels with γ = 1, β = 0.
    pub fn new(prefix: &str, features: usize) -> Self {
        Self {
            weight: Param::new(format!("{prefix}.weight"), Array1::<f32>::ones(features).into_dyn()),
            bias: Param::new(format!("{prefix}.bias"), Array1::<f32>::zeros(features).into_dyn()),
            cache: None,
        }
    }

    /// Build from given affine parameters (e.g. loaded from ONNX); `weight` and `bias` are `(C,)`.
    pub fn from_weights(prefix: &str, weight: Array1<f32>, bias: Array1<f32>) -> Result<Self> {
        if weight.len() != bias.len() {
            return Err(shape_err("BatchNorm::from_weights bias", weight.len(), bias.len()));
        }
        Ok(Self {
            weight: Param::new(format!("{prefix}.weight"), weight.into_dyn()),
            bias: Param::new(format!("{prefix}.bias"), bias.into_dyn()),
            cache: None,
        })
    }

    /// Number of normalised channels / features.
    pub fn features(&self) -> usize {
        self.weight.value.len()
    }

    fn check_params(&self) -> Result<()> {
        let c = self.features();
        for p in [&self.weight, &self.bias] {
            if p.value.shape() != [c] || p.grad.shape() != [c] {
                return Err(shape_err("BatchNorm parameter", [c], p.value.shape()));
            }
        }
        Ok(())
    }

    /// `(batch, channels, spatial)` view of an input shape, or an error.
    fn layout(&self, shape: &[usize]) -> Result<(usize, usize, usize)> {
        let c = self.features();
        let (n, ch, s) = match shape {
            [n, f] => (*n, *f, 1),
            [n, ch, h, w] => (*n, *ch, h * w),
            _ => return Err(shape_err("BatchNorm input", "(batch, features) or (batch, channels, h, w)", shape)),
        };
        if ch != c {
            return Err(shape_err("BatchNorm channels", c, ch));
        }
        Ok((n, ch, s))
    }

    /// Normalise `x` (`(N, F)` or `(N, C, H, W)`) with its own batch statistics, then scale and shift.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.check_params()?;
        let (n, c, s) = self.layout(x.shape())?;
        let m = n * s;
        if m < 2 {
            return Err(Error::Config(format!(
                "BatchNorm uses batch statistics and needs more than one value per channel, got input {:?}",
                x.shape()
            )));
        }
        let mut x = ops::standard(x);
        let mut y = ArrayD::<f32>::zeros(x.raw_dim());
        let gamma = self.weight.value.iter().copied().collect::<Vec<_>>();
        let beta = self.bias.value.iter().copied().collect::<Vec<_>>();
        let xs = x.as_slice_mut().expect("standard layout is contiguous");
        let ys = y.as_slice_mut().expect("a new array is contiguous");
        let mut inv_std = vec![0.0f32; c];
        // Channel `ch` of sample `b` is the contiguous run [(b·c + ch)·s, (b·c + ch + 1)·s).
        for (ch, inv) in inv_std.iter_mut().enumerate() {
            let runs = (0..n).map(|b| (b * c + ch) * s);
            let sum: f64 = runs.clone().map(|o| lane_sum(&xs[o..o + s], &xs[o..o + s], |v, _| v)).sum();
            let mean = (sum / m as f64) as f32;
            let sq: f64 =
                runs.clone().map(|o| lane_sum(&xs[o..o + s], &xs[o..o + s], |v, _| (v - mean) * (v - mean))).sum();
            let var = sq / m as f64;
            let is = (1.0 / (var + f64::from(BATCH_NORM_EPS)).sqrt()) as f32;
            *inv = is;
            let (g, b) = (gamma[ch], beta[ch]);
            for o in runs {
                for (xv, yv) in xs[o..o + s].iter_mut().zip(&mut ys[o..o + s]) {
                    let h = (*xv - mean) * is;
                    *xv = h; // x̂, kept for backward
                    *yv = g * h + b;
                }
            }
        }
        self.cache = Some(Cache { xhat: x, inv_std });
        Ok(y)
    }

    /// Accumulate `dγ += Σ g·x̂`, `dβ += Σ g` and return
    /// `dx = γ/√(σ²+ε) · (g − mean(g) − x̂·mean(g·x̂))` (means per channel over the batch).
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.check_params()?;
        let cache = self.cache.as_ref().ok_or_else(|| Error::Config("BatchNorm::backward before forward".into()))?;
        if grad.shape() != cache.xhat.shape() {
            return Err(shape_err("BatchNorm grad", cache.xhat.shape(), grad.shape()));
        }
        let (n, c, s) = self.layout(grad.shape())?;
        let m = (n * s) as f64;
        let mut g = ops::standard(grad);
        let gs = g.as_slice_mut().expect("standard layout is contiguous");
        let xh = cache.xhat.as_slice().expect("x̂ is kept in standard layout");
        for ch in 0..c {
            let runs = (0..n).map(|b| (b * c + ch) * s);
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for o in runs.clone() {
                sg += lane_sum(&gs[o..o + s], &xh[o..o + s], |g, _| g);
                sgx += lane_sum(&gs[o..o + s], &xh[o..o + s], |g, x| g * x);
            }
            self.bias.grad[ch] += sg as f32;
            self.weight.grad[ch] += sgx as f32;
            let (mg, mgx) = ((sg / m) as f32, (sgx / m) as f32);
            let scale = self.weight.value[ch] * cache.inv_std[ch];
            for o in runs {
                for (gv, &xv) in gs[o..o + s].iter_mut().zip(&xh[o..o + s]) {
                    *gv = scale * (*gv - mg - xv * mgx);
                }
            }
        }
        Ok(g)
    }

    /// Forward-mode tangent of the last forward pass, for an input tangent `ẋ` and parameter tangents `γ̇`, `β̇`:
    ///
    /// `ẏ = γ̇ x̂ + γ/√(σ²+ε) · (ẋ − mean(ẋ) − x̂·mean(x̂ ẋ)) + β̇` (means per channel over the batch),
    ///
    /// the derivative of `γ (x − μ)/√(σ² + ε) + β` with the batch statistics μ, σ² moving with `x`. `dx = None`
    /// is `ẋ = 0`.
    pub fn tangent(&self, dx: Option<ArrayD<f32>>, dgamma: &[f32], dbeta: &[f32]) -> Result<ArrayD<f32>> {
        self.check_params()?;
        let cache = self.cache.as_ref().ok_or_else(|| Error::Config("BatchNorm::tangent before forward".into()))?;
        let dx = dx.unwrap_or_else(|| ArrayD::zeros(cache.xhat.raw_dim()));
        if dx.shape() != cache.xhat.shape() {
            return Err(shape_err("BatchNorm tangent", cache.xhat.shape(), dx.shape()));
        }
        let (n, c, s) = self.layout(dx.shape())?;
        if dgamma.len() != c || dbeta.len() != c {
            return Err(shape_err("BatchNorm parameter tangent", c, dgamma.len().min(dbeta.len())));
        }
        let m = (n * s) as f64;
        let mut d = ops::standard(dx);
        let ds = d.as_slice_mut().expect("standard layout is contiguous");
        let xh = cache.xhat.as_slice().expect("x̂ is kept in standard layout");
        for ch in 0..c {
            let runs = (0..n).map(|b| (b * c + ch) * s);
            let (mut sd, mut sdx) = (0.0f64, 0.0f64);
            for o in runs.clone() {
                sd += lane_sum(&ds[o..o + s], &xh[o..o + s], |d, _| d);
                sdx += lane_sum(&ds[o..o + s], &xh[o..o + s], |d, x| d * x);
            }
            let (md, mdx) = ((sd / m) as f32, (sdx / m) as f32);
            let scale = self.weight.value[ch] * cache.inv_std[ch];
            let (dg, db) = (dgamma[ch], dbeta[ch]);
            for o in runs {
                for (dv, &xv) in ds[o..o + s].iter_mut().zip(&xh[o..o + s]) {
                    *dv = dg * xv + scale * (*dv - md - xv * mdx) + db;
                }
            }
        }
        Ok(d)
    }

    /// Parameters in order (weight, bias).
    pub fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }

    /// Mutable parameters in order (weight, bias).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight, &mut self.bias]
    }

    /// Drop cached activations.
    pub fn clear_cache(&mut self) {
        self.cache = None;
    }
}

/// `Σ f(aᵢ, bᵢ)` over two equal-length runs, accumulated in 8 independent f32 lanes (so it vectorises) and
/// returned in f64. Runs are at most one feature map long, so the f32 partial sums stay accurate.
#[inline]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)
}
