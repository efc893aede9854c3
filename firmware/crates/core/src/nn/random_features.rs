//! A fixed random projection `y = x Rᵀ`, the expansion layer of RanPAC (McDonnell et al., "RanPAC: Random
//! Projections and Pre-trained Models for Continual Learning", NeurIPS 2023, eq. 5: `h = φ(x Wᵀ)` with a frozen
//! Gaussian `W` of `M ≫ d` rows, then a linear classifier over `h`).
//!
//! The layer has no parameters: nothing trains it, no method keeps anything for it (GPM, Fisher and the merges see
//! only [`super::Model::params`]), and gradients pass through it to the trunk below. Its matrix is a function of
//! its two widths alone ([`RandomFeatures::new`]): a state file does not store it, a model rebuilt after a power
//! cut gets the same matrix bit for bit, and the ONNX export writes it as a constant.

use ndarray::{Array2, ArrayD, ArrayView2, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Result, shape_err};

/// The seed of every random projection, mixed with the two widths ([`RandomFeatures::new`]).
pub const RANDOM_FEATURES_SEED: u64 = 0x5241_4E50_4143_0001;

/// A frozen Gaussian projection from `in_features` to `out_features` (no bias); see the module documentation.
#[derive(Debug, Clone)]
pub struct RandomFeatures {
    weight: Array2<f32>,
    input_seen: bool,
}

impl RandomFeatures {
    /// The projection `R` of shape `(out, in)`, entries `N(0, 1/in)` drawn from ChaCha8 seeded with
    /// [`RANDOM_FEATURES_SEED`] `⊕ (in << 32) ⊕ out`, row by row: the same widths give the same matrix on every
    /// platform and every run. The `1/in` variance keeps the outputs at the scale of the inputs (RanPAC draws
    /// `N(0, 1)`; a scale does not change the classifier over `φ(xRᵀ)` for a ReLU `φ`, only SLDA's shrinkage, which
    /// is relative to the features' scale).
    pub fn new(in_features: usize, out_features: usize) -> Self {
        let seed = RANDOM_FEATURES_SEED ^ ((in_features as u64) << 32) ^ out_features as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = 1.0 / (in_features.max(1) as f32).sqrt();
        let weight =
            Array2::from_shape_simple_fn((out_features, in_features), || scale * rng.sample::<f32, _>(StandardNormal));
        Self { weight, input_seen: false }
    }

    /// Input width `d`.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }

    /// Output width `M`.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// The matrix `R`, `(out, in)`.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// `y = x Rᵀ` for `x` of shape `(batch, in)`.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFeatures input", "(batch, in)", e))?;
        if x.ncols() != self.in_features() {
            return Err(shape_err("RandomFeatures input width", self.in_features(), x.ncols()));
        }
        self.input_seen = true;
        Ok(crate::nn::ops::matmul_nt(&x.view(), &self.weight.view())?.into_dyn())
    }

    /// `dx = δ R` (the layer is linear and keeps no input).
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        if !self.input_seen {
            return Err(crate::Error::Config("RandomFeatures::backward before forward".into()));
        }
        let g = grad.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFeatures grad", "(batch, out)", e))?;
        if g.ncols() != self.out_features() {
            return Err(shape_err("RandomFeatures grad width", self.out_features(), g.ncols()));
        }
        Ok(crate::nn::gemm::matmul(&g.view(), &self.weight.view())?.into_dyn())
    }

    /// Forward-mode tangent, `ẏ = ẋ Rᵀ` (the layer is linear and has no parameters).
    pub fn tangent(&self, dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let dx = dx.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFeatures tangent", "(batch, in)", e))?;
        if dx.ncols() != self.in_features() {
            return Err(shape_err("RandomFeatures tangent width", self.in_features(), dx.ncols()));
        }
        Ok(crate::nn::ops::matmul_nt(&dx.view(), &self.weight.view())?.into_dyn())
    }

    /// Forget the last forward pass.
    pub fn clear_cache(&mut self) {
        self.input_seen = false;
    }
}

/// Random Fourier features of a Gaussian (RBF) kernel over the standardised raw input, the representation of
/// RanDumb (Prabhu et al., "RanDumb: a simple approach that questions the efficacy of continual representation
/// learning", arXiv 2402.08823, 2024; Rahimi & Recht 2007):
///
/// `z(x) = √(2/D) · cos(W x̃ + b)`, `x̃_j = (x_j − m_j)/s_j`, `W_ij ~ N(0, 2γ)`, `b_i ~ U(0, 2π)`,
///
/// so that `E[z(x)ᵀz(x')] = exp(−γ‖x̃ − x̃'‖²)`. `W` and `b` are drawn as scikit-learn's `RBFSampler` draws them
/// (`random_weights_ = √(2γ)·N(0, 1)`, `random_offset_ ~ U(0, 2π)`), here from ChaCha8 seeded with one `u64`
/// ([`RandomFourier::new`]): the layer is a function of its seed, the standardisation `(m, s)`, γ and `D`, and a
/// state needs to keep only those, not the `D × d` matrix. The standardisation is folded into the matrix and the
/// offset at construction (`W' = W diag(1/s)`, `b' = b − W'm`), so a forward pass is one GEMM and a cosine.
///
/// No parameters: nothing trains it (gradients pass through to the input, `∂z/∂x = −√(2/D) sin(W'x + b') W'`).
#[derive(Debug, Clone)]
pub struct RandomFourier {
    seed: u64,
    gamma: f64,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `W' = W diag(1/s)`, `(D, d)`.
    weight: Array2<f32>,
    /// `b' = b − W'm`, `(D,)`.
    offset: ndarray::Array1<f32>,
    /// The pre-activation `W'x + b'` of the last forward pass (for backward and tangents).
    pre: Option<Array2<f32>>,
}

/// Standardisation statistics and γ of RanDumb's input, from samples `x (n, d)`.
///
/// Per feature (`per_feature`), as scikit-learn's `StandardScaler` and `RBFSampler(gamma='scale')` compute them:
/// `m_j` the mean and `s_j` the population standard deviation of feature `j` (a feature whose `s_j < 10·ε_f64`
/// gets `s_j = 1`, as `_handle_zeros_in_scale` does), and `γ = 1/(d · Var(x̃))` with `Var(x̃)` the variance of
/// every entry of the standardised samples (1 when every feature varies).
///
/// Pooled (`!per_feature`): one mean `m` and one standard deviation `s` over every entry, the same for every
/// feature, and `γ = 1/d`. The kernel `exp(−γ‖x̃ − x̃'‖²) = exp(−‖x − x'‖²/(d·Var(x)))` is then RBFSampler's
/// `gamma='scale'` on the raw input: no feature is scaled by a spread measured on few classes.
///
/// Computed in f64. Errors on no samples, no features or a non-finite value.
pub fn rbf_input_stats(x: &ArrayView2<'_, f32>, per_feature: bool) -> Result<(Vec<f32>, Vec<f32>, f64)> {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Err(crate::Error::Empty(format!("RBF input statistics of {n} samples × {d} features")));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(crate::Error::NonFinite("RBF input statistics".into()));
    }
    let nf = n as f64;
    if !per_feature {
        let total = nf * d as f64;
        let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / total;
        let var = x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / total;
        let sd = if var.sqrt() < 10.0 * f64::EPSILON { 1.0 } else { var.sqrt() };
        return Ok((vec![m as f32; d], vec![sd as f32; d], 1.0 / d as f64));
    }
    let mut mean = vec![0.0f64; d];
    for row in x.outer_iter() {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= nf);
    let mut var = vec![0.0f64; d];
    for row in x.outer_iter() {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    let std: Vec<f64> = var
        .iter()
        .map(|v| {
            let s = (v / nf).sqrt();
            if s < 10.0 * f64::EPSILON { 1.0 } else { s }
        })
        .collect();
    // Var(x̃) over all n·d entries: E[x̃²] − E[x̃]²; per feature E[x̃_j] = 0 and E[x̃_j²] = var_j/s_j².
    let second: f64 = var.iter().zip(&std).map(|(v, s)| v / nf / (s * s)).sum::<f64>() / d as f64;
    let gamma = if second > 0.0 { 1.0 / (d as f64 * second) } else { 1.0 / d as f64 };
    Ok((mean.iter().map(|&m| m as f32).collect(), std.iter().map(|&s| s as f32).collect(), gamma))
}

impl RandomFourier {
    /// `D = out_features` features of inputs of width `d = mean.len()`, standardised by `mean` and `std`, with
    /// kernel width `gamma`; `W` (row by row, `D × d`, entries `√(2γ)·N(0, 1)`) then `b` (`U(0, 2π)`) drawn from
    /// ChaCha8 seeded with `seed`. Errors ([`crate::Error::Config`]) on `D = 0`, `d = 0`, `mean` and `std` of
    /// different lengths, a non-positive or non-finite `std` entry or `gamma`.
    pub fn new(mean: Vec<f32>, std: Vec<f32>, gamma: f64, out_features: usize, seed: u64) -> Result<Self> {
        let d = mean.len();
        if d == 0 || out_features == 0 || std.len() != d {
            return Err(crate::Error::Config(format!(
                "random Fourier features: {out_features} features of {d} inputs ({} standard deviations)",
                std.len()
            )));
        }
        if !(gamma.is_finite() && gamma > 0.0)
            || std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || mean.iter().any(|m| !m.is_finite())
        {
            return Err(crate::Error::Config(format!(
                "random Fourier features: γ = {gamma} and the standardisation must be finite and positive"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w_scale = (2.0 * gamma).sqrt();
        let mut weight = Array2::<f32>::zeros((out_features, d));
        for mut row in weight.outer_iter_mut() {
            for (w, s) in row.iter_mut().zip(&std) {
                let g: f64 = rng.sample(StandardNormal);
                *w = (w_scale * g / f64::from(*s)) as f32;
            }
        }
        let two_pi = 2.0 * std::f64::consts::PI;
        let offset = ndarray::Array1::from_shape_fn(out_features, |i| {
            let b = rng.random_range(0.0..two_pi);
            let wm: f64 = weight.row(i).iter().zip(&mean).map(|(&w, &m)| f64::from(w) * f64::from(m)).sum();
            (b - wm) as f32
        });
        Ok(Self { seed, gamma, mean, std, weight, offset, pre: None })
    }

    /// Input width `d`.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }

    /// Output width `D`.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }

    /// The seed `W` and `b` were drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The kernel width γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// The standardisation `(m, s)`.
    pub fn standardisation(&self) -> (&[f32], &[f32]) {
        (&self.mean, &self.std)
    }

    /// Values the layer holds in memory to run: `W'` (`D·d`) and `b'` (`D`).
    pub fn constant_len(&self) -> usize {
        self.weight.len() + self.offset.len()
    }

    /// Bytes a state needs to rebuild the layer bit for bit: the seed and γ (8 each), `m` and `s` (`4·d` each).
    pub fn stored_bytes(&self) -> usize {
        16 + 8 * self.in_features()
    }

    /// `z = √(2/D)·cos(W'x + b')` for `x` of shape `(batch, d)`.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFourier input", "(batch, in)", e))?;
        if x.ncols() != self.in_features() {
            return Err(shape_err("RandomFourier input width", self.in_features(), x.ncols()));
        }
        let mut pre = crate::nn::ops::matmul_nt(&x.view(), &self.weight.view())?;
        pre += &self.offset;
        let scale = self.scale();
        let z = pre.mapv(|v| scale * v.cos());
        self.pre = Some(pre);
        Ok(z.into_dyn())
    }

    fn scale(&self) -> f32 {
        (2.0 / self.out_features() as f32).sqrt()
    }

    /// `−√(2/D)·sin(pre)`, the derivative of the output with respect to the pre-activation.
    fn slope(&self) -> Result<Array2<f32>> {
        let pre =
            self.pre.as_ref().ok_or_else(|| crate::Error::Config("RandomFourier: backward before forward".into()))?;
        let scale = self.scale();
        Ok(pre.mapv(|v| -scale * v.sin()))
    }

    /// `dx = (δ ⊙ −√(2/D) sin(W'x + b')) W'`.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let g = grad.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFourier grad", "(batch, out)", e))?;
        let slope = self.slope()?;
        if g.dim() != slope.dim() {
            return Err(shape_err("RandomFourier grad", slope.dim(), g.dim()));
        }
        let dy = g * slope;
        Ok(crate::nn::gemm::matmul(&dy.view(), &self.weight.view())?.into_dyn())
    }

    /// Forward-mode tangent after a forward pass: `ż = −√(2/D) sin(W'x + b') ⊙ (ẋ W'ᵀ)`.
    pub fn tangent(&self, dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let dx = dx.into_dimensionality::<Ix2>().map_err(|e| shape_err("RandomFourier tangent", "(batch, in)", e))?;
        if dx.ncols() != self.in_features() {
            return Err(shape_err("RandomFourier tangent width", self.in_features(), dx.ncols()));
        }
        let slope = self.slope()?;
        let dy = crate::nn::ops::matmul_nt(&dx.view(), &self.weight.view())?;
        if dy.dim() != slope.dim() {
            return Err(shape_err("RandomFourier tangent", slope.dim(), dy.dim()));
        }
        Ok((dy * slope).into_dyn())
    }

    /// Forget the last forward pass.
    pub fn clear_cache(&mut self) {
        self.pre = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn same_widths_same_matrix_and_others_differ() {
        let a = RandomFeatures::new(16, 64);
        let b = RandomFeatures::new(16, 64);
        assert_eq!(a.weight(), b.weight());
        let c = RandomFeatures::new(16, 65);
        assert_ne!(a.weight().row(0), c.weight().row(0));
        // N(0, 1/16): the sample variance of 1024 draws is near 1/16.
        let var = a.weight().mapv(|v| v * v).mean().unwrap();
        assert!((var - 1.0 / 16.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn forward_and_backward_are_the_matrix_and_its_transpose() {
        let mut rf = RandomFeatures::new(3, 4);
        let x = array![[1.0f32, 2.0, 3.0], [0.5, -1.0, 0.0]];
        let y = rf.forward(x.clone().into_dyn()).unwrap().into_dimensionality::<Ix2>().unwrap();
        let want = x.dot(&rf.weight().t());
        assert!((&y - &want).iter().all(|d| d.abs() < 1e-6));
        let g = array![[1.0f32, 0.0, 0.0, -1.0], [0.0, 2.0, 0.0, 0.0]];
        let dx = rf.backward(g.clone().into_dyn()).unwrap().into_dimensionality::<Ix2>().unwrap();
        let want = g.dot(rf.weight());
        assert!((&dx - &want).iter().all(|d| d.abs() < 1e-6));
    }

    /// The statistics as scikit-learn computes them, by hand: column 0 = [1, 3] (m 2, s 1), column 1 constant
    /// (s → 1); standardised entries [−1, 1, 0, 0] have variance ½, so γ = 1/(2·½) = 1.
    #[test]
    fn rbf_statistics_follow_standard_scaler_and_scale() {
        let x = array![[1.0f32, 5.0], [3.0, 5.0]];
        let (m, s, gamma) = rbf_input_stats(&x.view(), true).unwrap();
        assert_eq!((m, s), (vec![2.0, 5.0], vec![1.0, 1.0]));
        assert!((gamma - 1.0).abs() < 1e-12, "γ {gamma}");
        // Pooled: entries [1, 5, 3, 5] have mean 3.5 and variance (6.25 + 2.25 + 0.25 + 2.25)/4 = 2.75; γ = 1/d.
        let (m, s, gamma) = rbf_input_stats(&x.view(), false).unwrap();
        assert_eq!(m, vec![3.5, 3.5]);
        assert!(s.iter().all(|&v| (v - 2.75f32.sqrt()).abs() < 1e-6) && gamma == 0.5, "{s:?} {gamma}");
        assert!(rbf_input_stats(&Array2::<f32>::zeros((0, 3)).view(), true).is_err());
        assert!(rbf_input_stats(&array![[f32::NAN]].view(), false).is_err());
    }

    /// `z(x)ᵀz(x')` approximates the RBF kernel `exp(−γ‖x̃ − x̃'‖²)` (Rahimi & Recht), the seed fixes the layer,
    /// the standardisation is folded in, and backward is the derivative (central differences).
    #[test]
    fn random_fourier_features_approximate_the_rbf_kernel() {
        let (mean, std) = (vec![1.0f32, -2.0, 0.5], vec![2.0f32, 0.5, 1.0]);
        let gamma = 0.3;
        let mut rf = RandomFourier::new(mean.clone(), std.clone(), gamma, 8192, 7).unwrap();
        assert_eq!(rf.weight, RandomFourier::new(mean.clone(), std.clone(), gamma, 8192, 7).unwrap().weight);
        assert_ne!(rf.weight, RandomFourier::new(mean.clone(), std.clone(), gamma, 8192, 8).unwrap().weight);
        let x = array![[1.0f32, -2.0, 0.5], [2.0, -1.5, 1.5], [-1.0, -2.0, 0.0]];
        let z = rf.forward(x.clone().into_dyn()).unwrap().into_dimensionality::<Ix2>().unwrap();
        for (a, b) in [(0, 1), (0, 2), (1, 2), (1, 1)] {
            let dist: f64 = (0..3).map(|j| f64::from((x[[a, j]] - x[[b, j]]) / std[j]).powi(2)).sum();
            let k = (-gamma * dist).exp();
            let dot: f64 = z.row(a).iter().zip(z.row(b)).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum();
            assert!((dot - k).abs() < 0.05, "z({a})·z({b}) = {dot}, kernel {k}");
        }
        assert_eq!(rf.constant_len(), 8192 * 4);
        assert_eq!(rf.stored_bytes(), 16 + 24);
        // Backward against central differences of Σ r ⊙ z.
        let mut small = RandomFourier::new(mean, std, gamma, 5, 3).unwrap();
        let r = array![[0.3f32, -1.0, 0.5, 2.0, -0.2]];
        let x0 = array![[0.4f32, -1.0, 2.0]];
        small.forward(x0.clone().into_dyn()).unwrap();
        let dx = small.backward(r.clone().into_dyn()).unwrap();
        for j in 0..3 {
            let f = |h: f32| {
                let mut xp = x0.clone();
                xp[[0, j]] += h;
                let z = small.clone().forward(xp.into_dyn()).unwrap();
                z.iter().zip(r.iter()).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()
            };
            let num = (f(1e-2) - f(-1e-2)) / 2e-2;
            assert!((num - f64::from(dx[[0, j]])).abs() < 1e-3, "dx[{j}] {} vs {num}", dx[[0, j]]);
        }
        assert!(RandomFourier::new(vec![0.0], vec![0.0], 1.0, 4, 0).is_err());
        assert!(RandomFourier::new(vec![0.0], vec![1.0], 1.0, 0, 0).is_err());
        assert!(small.forward(Array2::<f32>::zeros((1, 4)).into_dyn()).is_err());
    }

    #[test]
    fn wrong_width_is_a_typed_error() {
        let mut rf = RandomFeatures::new(3, 4);
        assert!(rf.forward(Array2::<f32>::zeros((2, 5)).into_dyn()).is_err());
        assert!(rf.backward(Array2::<f32>::zeros((2, 4)).into_dyn()).is_err(), "backward before forward");
    }
}
