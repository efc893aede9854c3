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

/// `(Σ v, Σ v x̂)` of one channel over the batch.
type ChannelSums = (f64, f64);

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
        let (dx, sums) = self.through_batch_statistics(grad, None, "grad")?;
        for (ch, (sg, sgx)) in sums.into_iter().enumerate() {
            self.bias.grad[ch] += sg as f32;
            self.weight.grad[ch] += sgx as f32;
        }
        Ok(dx)
    }

    /// Forward-mode tangent of the last forward pass, for an input tangent `ẋ` and parameter tangents `γ̇`, `β̇`:
    ///
    /// `ẏ = γ̇ x̂ + γ/√(σ²+ε) · (ẋ − mean(ẋ) − x̂·mean(x̂ ẋ)) + β̇` (means per channel over the batch),
    ///
    /// the derivative of `γ (x − μ)/√(σ² + ε) + β` with the batch statistics μ, σ² moving with `x`. `dx = None`
    /// is `ẋ = 0`.
    pub fn tangent(&self, dx: Option<ArrayD<f32>>, dgamma: &[f32], dbeta: &[f32]) -> Result<ArrayD<f32>> {
        let c = self.features();
        if dgamma.len() != c || dbeta.len() != c {
            return Err(shape_err("BatchNorm parameter tangent", c, dgamma.len().min(dbeta.len())));
        }
        let cache = self.cache.as_ref().ok_or_else(|| Error::Config("BatchNorm::tangent before forward".into()))?;
        let dx = dx.unwrap_or_else(|| ArrayD::zeros(cache.xhat.raw_dim()));
        Ok(self.through_batch_statistics(dx, Some((dgamma, dbeta)), "tangent")?.0)
    }

    /// The map backward and the tangent share (the input Jacobian of batch normalisation is self-adjoint): per
    /// channel over the batch, `v ← γ/√(σ²+ε) · (v − mean(v) − x̂·mean(v x̂)) + a x̂ + b`, with `(a, b)` per channel
    /// from `affine` (zero when `None`). Also returns `(Σ v, Σ v x̂)` per channel, taken before the update.
    fn through_batch_statistics(
        &self,
        v: ArrayD<f32>,
        affine: Option<(&[f32], &[f32])>,
        what: &str,
    ) -> Result<(ArrayD<f32>, Vec<ChannelSums>)> {
        self.check_params()?;
        let cache = self.cache.as_ref().ok_or_else(|| Error::Config(format!("BatchNorm {what} before forward")))?;
        if v.shape() != cache.xhat.shape() {
            return Err(shape_err(&format!("BatchNorm {what}"), cache.xhat.shape(), v.shape()));
        }
        let (n, c, s) = self.layout(v.shape())?;
        let m = (n * s) as f64;
        let mut v = ops::standard(v);
        let vs = v.as_slice_mut().expect("standard layout is contiguous");
        let xh = cache.xhat.as_slice().expect("x̂ is kept in standard layout");
        let mut sums = Vec::with_capacity(c);
        for ch in 0..c {
            let runs = (0..n).map(|b| (b * c + ch) * s);
            let (mut sv, mut svx) = (0.0f64, 0.0f64);
            for o in runs.clone() {
                sv += lane_sum(&vs[o..o + s], &xh[o..o + s], |v, _| v);
                svx += lane_sum(&vs[o..o + s], &xh[o..o + s], |v, x| v * x);
            }
            sums.push((sv, svx));
            let (mv, mvx) = ((sv / m) as f32, (svx / m) as f32);
            let scale = self.weight.value[ch] * cache.inv_std[ch];
            let centred = |v: f32, x: f32| scale * (v - mv - x * mvx);
            for o in runs {
                let lane = vs[o..o + s].iter_mut().zip(&xh[o..o + s]);
                match affine {
                    None => lane.for_each(|(vv, &xv)| *vv = centred(*vv, xv)),
                    Some((a, b)) => lane.for_each(|(vv, &xv)| *vv = centred(*vv, xv) + a[ch] * xv + b[ch]),
                }
            }
        }
        Ok((v, sums))
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
