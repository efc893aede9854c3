//! 2-D convolution (NCHW) via im2col + GEMM.

use std::sync::Arc;

use crate::nn::gemm::gemm;
use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView2, Axis, Ix4, s};
use rand::Rng;

use super::ops::{self, Window2d};
use super::param::Param;
use super::projector::Projector;
use crate::error::{Error, Result, shape_err};

/// 2-D convolution over NCHW input with weight `(out, in, kh, kw)` (PyTorch layout), an optional bias
/// `(out,)`, one stride for both spatial axes and symmetric zero padding.
///
/// The forward pass unfolds the input into a patch matrix ([`ops::im2col`]) and multiplies it with the
/// flattened weight; the patch matrix of the last forward pass is kept for backward and for GPM
/// ([`Conv2d::cached_patches`]).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Weight, shape `(out_channels, in_channels, kh, kw)`.
    pub weight: Param,
    /// Optional bias, shape `(out_channels,)`.
    pub bias: Option<Param>,
    /// Gradient projection (GPM): when set, the flattened weight gradient `(out, in·kh·kw)` loses its component
    /// in the projector's subspace of patch space, `G ← G − G M Mᵀ` (as for [`super::Linear`]).
    pub projector: Option<Arc<Projector>>,
    /// Skip the input gradient in [`Conv2d::backward`] (which then returns zeros of the input's shape). Set on
    /// the first layer of a network, whose input gradient nobody reads ([`super::zoo::lenet`] does): it saves a
    /// GEMM and a col2im per batch. Parameter gradients are unaffected. Default `false`.
    pub skip_input_grad: bool,
    dims: [usize; 4],
    stride: usize,
    padding: usize,
    patches: Option<Array2<f32>>,
    input_dim: Option<(usize, usize, usize, usize)>,
}

impl Conv2d {
    /// A `kernel × kernel` convolution with PyTorch's default initialisation: weight and bias drawn from
    /// `U(−1/√fan_in, 1/√fan_in)` with `fan_in = in_ch·kernel²`. Errors on zero channels, kernel or stride.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        check_geometry(in_ch, out_ch, kernel, kernel, stride)?;
        let bound = 1.0 / ((in_ch * kernel * kernel) as f32).sqrt();
        let w = Array4::from_shape_fn((out_ch, in_ch, kernel, kernel), |_| rng.random_range(-bound..=bound));
        let b = bias.then(|| Array1::from_shape_fn(out_ch, |_| rng.random_range(-bound..=bound)));
        Self::from_weights(prefix, w, b, stride, padding)
    }

    /// Build from given weights (e.g. loaded from ONNX); `weight` is `(out, in, kh, kw)`, `bias` `(out,)`.
    pub fn from_weights(
        prefix: &str,
        weight: Array4<f32>,
        bias: Option<Array1<f32>>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (o, i, kh, kw) = weight.dim();
        check_geometry(i, o, kh, kw, stride)?;
        if let Some(b) = &bias
            && b.len() != o
        {
            return Err(shape_err("Conv2d::from_weights bias", o, b.len()));
        }
        Ok(Self {
            weight: Param::new(format!("{prefix}.weight"), ops::standard(weight).into_dyn()),
            bias: bias.map(|b| Param::new(format!("{prefix}.bias"), b.into_dyn())),
            projector: None,
            skip_input_grad: false,
            dims: [o, i, kh, kw],
            stride,
            padding,
            patches: None,
            input_dim: None,
        })
    }

    /// Number of input channels.
    pub fn in_channels(&self) -> usize {
        self.dims[1]
    }

    /// Number of output channels (filters).
    pub fn out_channels(&self) -> usize {
        self.dims[0]
    }

    /// Kernel size `(kh, kw)`.
    pub fn kernel_size(&self) -> (usize, usize) {
        (self.dims[2], self.dims[3])
    }

    /// Stride (both spatial axes).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Zero padding on every side.
    pub fn padding(&self) -> usize {
        self.padding
    }

    /// Length of one patch (row of [`Conv2d::cached_patches`]): `in·kh·kw`.
    pub fn patch_len(&self) -> usize {
        self.dims[1] * self.dims[2] * self.dims[3]
    }

    /// The sliding-window geometry of this convolution.
    pub fn window(&self) -> Window2d {
        Window2d { kh: self.dims[2], kw: self.dims[3], stride: self.stride, padding: self.padding }
    }

    /// Spatial output size `(out_h, out_w)` for an `h × w` input; an error when the kernel does not fit.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.window().out_size(h, w)
    }

    /// The weight flattened to `(out, in·kh·kw)` (columns in the order of [`ops::im2col`]'s columns).
    pub fn weight_matrix(&self) -> Result<ArrayView2<'_, f32>> {
        self.check_weight()?;
        self.weight
            .value
            .view()
            .into_shape_with_order((self.dims[0], self.patch_len()))
            .map_err(|e| shape_err("Conv2d weight (standard layout)", self.dims, e))
    }

    /// The im2col patch matrix of the last forward pass, shape `(batch·out_h·out_w, in·kh·kw)`.
    ///
    /// Row `(b·out_h + oy)·out_w + ox` is the (zero-padded) input window that produced output position
    /// `(oy, ox)` of sample `b`; column `(c·kh + ky)·kw + kx` is input channel `c` at kernel offset `(ky, kx)`.
    /// See [`ops::im2col`].
    pub fn cached_patches(&self) -> Option<&Array2<f32>> {
        self.patches.as_ref()
    }

    fn check_weight(&self) -> Result<()> {
        if self.weight.value.shape() != self.dims || self.weight.grad.shape() != self.dims {
            return Err(shape_err("Conv2d weight/grad", self.dims, self.weight.value.shape()));
        }
        if let Some(b) = &self.bias
            && (b.value.shape() != [self.dims[0]] || b.grad.shape() != [self.dims[0]])
        {
            return Err(shape_err("Conv2d bias/grad", self.dims[0], b.value.shape()));
        }
        Ok(())
    }

    /// Convolve `x (batch, in, h, w)` to `(batch, out, out_h, out_w)`.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.into_dimensionality::<Ix4>().map_err(|e| shape_err("Conv2d input", "(batch, in, h, w)", e))?;
        let (n, c, h, w) = x.dim();
        if c != self.in_channels() {
            return Err(shape_err("Conv2d input channels", self.in_channels(), c));
        }
        let (oh, ow) = self.output_size(h, w)?;
        // Recycle the previous patch matrix's allocation (forward runs once per batch with the same shapes).
        let buf = self.patches.take().map(|p| p.into_raw_vec_and_offset().0).unwrap_or_default();
        self.input_dim = None;
        let patches = ops::im2col_into(&x.view(), self.window(), buf)?;
        let wm = self.weight_matrix()?;
        let y = ops::matmul_nt(&patches.view(), &wm)?; // (n·oh·ow, out)
        let bias: Vec<f32> = match &self.bias {
            Some(b) => b.value.iter().copied().collect(),
            None => vec![0.0; self.out_channels()],
        };
        let y = rows_to_nchw(y, n, oh, ow, &bias)?;
        self.patches = Some(patches);
        self.input_dim = Some((n, c, h, w));
        Ok(y)
    }

    /// Forward-mode tangent of the last forward pass, for an input tangent `ẋ` and parameter tangents `Ẇ` (the
    /// weight's values flat in `(out, in, kh, kw)` order, as [`super::Model::flat_params`] lists them) and `ḃ`:
    /// the convolution is bilinear in input and weight, so
    ///
    /// `ẏ = conv(ẋ, W) + conv(x, Ẇ) + ḃ = im2col(ẋ) Wᵀ + P Ẇᵀ + ḃ` (`P` = the cached patches of `x`).
    /// `dx = None` is `ẋ = 0` (the first layer), which skips `im2col(ẋ) Wᵀ`.
    pub fn tangent(&self, dx: Option<ArrayD<f32>>, dw: &[f32], db: Option<&[f32]>) -> Result<ArrayD<f32>> {
        self.check_weight()?;
        let (Some(patches), Some((n, c, h, w))) = (self.patches.as_ref(), self.input_dim) else {
            return Err(Error::Config("Conv2d::tangent before forward".into()));
        };
        let out = self.out_channels();
        let dwm = ArrayView2::from_shape((out, self.patch_len()), dw)
            .map_err(|_| shape_err("Conv2d weight tangent", self.dims, dw.len()))?;
        let bias = match db {
            Some(b) if b.len() == out => b.to_vec(),
            Some(b) => return Err(shape_err("Conv2d bias tangent", out, b.len())),
            None => vec![0.0; out],
        };
        let (oh, ow) = self.output_size(h, w)?;
        let mut y = match dx {
            Some(dx) => {
                let dx =
                    dx.into_dimensionality::<Ix4>().map_err(|e| shape_err("Conv2d tangent", "(batch, in, h, w)", e))?;
                if dx.dim() != (n, c, h, w) {
                    return Err(shape_err("Conv2d tangent", (n, c, h, w), dx.dim()));
                }
                let dpatches = ops::im2col_into(&dx.view(), self.window(), Vec::new())?;
                ops::matmul_nt(&dpatches.view(), &self.weight_matrix()?)?
            }
            None => Array2::zeros((patches.nrows(), out)),
        };
        gemm(1.0, &patches.view(), &dwm.t(), 1.0, &mut y.view_mut())?;
        rows_to_nchw(y, n, oh, ow, &bias)
    }

    /// Accumulate `dW += Gᵀ P`, `db += Σ G` (with `G` the output gradient as `(batch·out_h·out_w, out)` and
    /// `P` the cached patches) and return `dx = col2im(G W)`.
    ///
    /// With a projector, `dW += (Gᵀ P)(I − M Mᵀ)` on the flattened weight; the cheaper side is projected (the
    /// patches when they have fewer rows than there are filters, otherwise `Gᵀ P`). Both are exact. The bias
    /// and input gradients are not projected.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let g = grad.into_dimensionality::<Ix4>().map_err(|e| shape_err("Conv2d grad", "(batch, out, oh, ow)", e))?;
        let (Some(p), Some((n, c, h, w))) = (self.patches.as_ref(), self.input_dim) else {
            return Err(Error::Config("Conv2d::backward before forward".into()));
        };
        let (oh, ow) = self.output_size(h, w)?;
        let out = self.out_channels();
        if g.dim() != (n, out, oh, ow) {
            return Err(shape_err("Conv2d grad", (n, out, oh, ow), g.dim()));
        }
        self.check_weight()?;
        // (n, out, oh, ow) → (n·oh·ow, out), the row order of the patches.
        let g = ops::standard(g);
        let gs = g.as_slice().expect("standard layout is contiguous");
        let mut gt = vec![0.0f32; gs.len()];
        let per = out * oh * ow;
        crate::threads::for_each_chunk(&mut gt, per, |s, dst| {
            transpose_into(&gs[s * per..(s + 1) * per], dst, out, oh * ow);
            Ok(())
        })?;
        let g = Array2::from_shape_vec((n * oh * ow, out), gt)
            .map_err(|e| shape_err("Conv2d grad", (n * oh * ow, out), e))?;
        let k = self.patch_len();
        let mut wgrad = self
            .weight
            .grad
            .view_mut()
            .into_shape_with_order((out, k))
            .map_err(|e| shape_err("Conv2d weight grad (standard layout)", self.dims, e))?;
        match &self.projector {
            // dW += Gᵀ P, accumulated in place.
            None => gemm(1.0, &g.t(), &p.view(), 1.0, &mut wgrad)?,
            Some(m) if p.nrows() < out => gemm(1.0, &g.t(), &m.project_rows(&p.view())?.view(), 1.0, &mut wgrad)?,
            Some(m) => wgrad += &m.project_rows(&ops::matmul_tn(&g.view(), &p.view())?.view())?,
        }
        if let Some(b) = &mut self.bias {
            b.grad += &g.sum_axis(Axis(0)).into_dyn();
        }
        if self.skip_input_grad {
            return Ok(ArrayD::zeros(ndarray::IxDyn(&[n, c, h, w])));
        }
        let wm = self
            .weight
            .value
            .view()
            .into_shape_with_order((out, k))
            .map_err(|e| shape_err("Conv2d weight (standard layout)", self.dims, e))?;
        // dx = col2im(G W), one sample at a time (on the board's threads) so the patch-shaped intermediate stays
        // in cache.
        let ohw = oh * ow;
        let win = self.window();
        let mut dx = vec![0.0f32; n * c * h * w];
        crate::threads::for_each_chunk(&mut dx, c * h * w, |b, dxb| {
            let mut dp = Array2::<f32>::zeros((ohw, k));
            gemm(1.0, &g.slice(s![b * ohw..(b + 1) * ohw, ..]), &wm, 0.0, &mut dp.view_mut())?;
            let dps = dp.as_slice().expect("a new array is contiguous");
            ops::col2im_add_sample(dps, (c, h, w), (oh, ow), win, dxb);
            Ok(())
        })?;
        let dx = Array4::from_shape_vec((n, c, h, w), dx).map_err(|e| shape_err("Conv2d dx", (n, c, h, w), e))?;
        Ok(dx.into_dyn())
    }

    /// Parameters in order (weight, bias).
    pub fn params(&self) -> Vec<&Param> {
        std::iter::once(&self.weight).chain(self.bias.as_ref()).collect()
    }

    /// Mutable parameters in order (weight, bias).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut()).collect()
    }

    /// Drop cached activations (the patch matrix).
    pub fn clear_cache(&mut self) {
        self.patches = None;
        self.input_dim = None;
    }
}

fn check_geometry(in_ch: usize, out_ch: usize, kh: usize, kw: usize, stride: usize) -> Result<()> {
    if in_ch == 0 || out_ch == 0 || kh == 0 || kw == 0 || stride == 0 {
        return Err(Error::Config(format!(
            "Conv2d needs non-zero channels, kernel and stride: in {in_ch}, out {out_ch}, kernel {kh}x{kw}, stride {stride}"
        )));
    }
    Ok(())
}

/// The GEMM output `(n·oh·ow, out)` as `(n, out, oh, ow)`: a per-sample transpose on the board's threads, with
/// `bias[o]` added to channel `o` on the way.
fn rows_to_nchw(y: Array2<f32>, n: usize, oh: usize, ow: usize, bias: &[f32]) -> Result<ArrayD<f32>> {
    let out = bias.len();
    let y = ops::standard(y);
    let ys = y.as_slice().expect("standard layout is contiguous");
    let mut o = vec![0.0f32; n * out * oh * ow];
    let per = out * oh * ow;
    crate::threads::for_each_chunk(&mut o, per, |s, dst| {
        transpose_into(&ys[s * per..(s + 1) * per], dst, oh * ow, out);
        for (plane, &b) in dst.chunks_exact_mut(oh * ow).zip(bias) {
            if b != 0.0 {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
        Ok(())
    })?;
    Ok(Array4::from_shape_vec((n, out, oh, ow), o)
        .map_err(|e| shape_err("Conv2d output", (n, out, oh, ow), e))?
        .into_dyn())
}

/// Write the transpose of the row-major `rows × cols` matrix `src` into `dst` (row-major `cols × rows`).
fn transpose_into(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    const T: usize = 16; // tile edge: both sides stay in cache
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::Rng;

    use crate::nn::{Mode, softmax_cross_entropy, zoo};

    /// The CNN's forward and backward (im2col, the per-sample transposes and col2im on the board's threads, GEMMs
    /// split over the output) give the same bits on one thread and on several. The setting is process-wide;
    /// other tests running meanwhile see the same results whatever it is, which is the property under test.
    #[test]
    fn lenet_step_is_bit_identical_for_any_thread_count() {
        let mut rng = crate::seeded_rng(5);
        let x = Array2::from_shape_fn((64, 28 * 28), |_| rng.random_range(-1.0f32..1.0));
        let y: Vec<usize> = (0..64).map(|i| i % 3).collect();
        let step = |threads: usize| {
            crate::threads::set_threads(threads);
            let mut model = zoo::lenet([1, 28, 28], 100, &[3], &mut crate::seeded_rng(9)).unwrap();
            let logits = model.forward(&x.view(), 0, Mode::Train).unwrap();
            let (_, grad) = softmax_cross_entropy(&logits.view(), &y).unwrap();
            model.backward(grad, 0).unwrap();
            crate::threads::set_threads(1);
            (logits, model.flat_grads())
        };
        let (l1, g1) = step(1);
        assert!(g1.iter().any(|&g| g != 0.0));
        for t in [2, 3] {
            let (l, g) = step(t);
            assert!(l.iter().zip(&l1).all(|(a, b)| a.to_bits() == b.to_bits()), "logits differ on {t} threads");
            assert!(g.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits()), "gradients differ on {t} threads");
        }
    }
}
