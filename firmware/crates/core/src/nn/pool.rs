//! 2-D max pooling (NCHW).

use ndarray::{Array4, ArrayD, Ix4};

use super::ops::{self, Window2d};
use crate::error::{Error, Result, shape_err};

/// Max pooling over `kernel × kernel` windows with the given stride, no padding, floor output size (PyTorch's
/// `MaxPool2d(kernel, stride)`). Ties go to the first maximum in row-major window order; a window containing
/// a NaN yields NaN, as in PyTorch. The argmax of every output is kept for backward.
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    kernel: usize,
    stride: usize,
    argmax: Option<Vec<usize>>,
    input_dim: Option<(usize, usize, usize, usize)>,
}

impl MaxPool2d {
    /// A pooling layer; errors on a zero kernel or stride.
    pub fn new(kernel: usize, stride: usize) -> Result<Self> {
        if kernel == 0 || stride == 0 {
            return Err(Error::Config(format!("MaxPool2d needs kernel and stride >= 1, got {kernel} and {stride}")));
        }
        Ok(Self { kernel, stride, argmax: None, input_dim: None })
    }

    /// Kernel size (square).
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    fn window(&self) -> Window2d {
        Window2d { kh: self.kernel, kw: self.kernel, stride: self.stride, padding: 0 }
    }

    /// Spatial output size `(⌊(h−k)/s⌋+1, ⌊(w−k)/s⌋+1)`; an error when the input is smaller than the kernel.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.window().out_size(h, w)
    }

    /// Pool `x (batch, c, h, w)` to `(batch, c, out_h, out_w)`.
    pub fn forward(&mut self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let x = x.into_dimensionality::<Ix4>().map_err(|e| shape_err("MaxPool2d input", "(batch, c, h, w)", e))?;
        let (n, c, h, w) = x.dim();
        let (oh, ow) = self.output_size(h, w)?;
        let x = ops::standard(x);
        let xs = x.as_slice().expect("standard layout is contiguous");
        let (k, s) = (self.kernel, self.stride);
        let mut out = vec![0.0f32; n * c * oh * ow];
        let mut arg = vec![0usize; n * c * oh * ow];
        let geo = Geometry { k, s, w, oh, ow };
        for (plane, (out, arg)) in out.chunks_exact_mut(oh * ow).zip(arg.chunks_exact_mut(oh * ow)).enumerate() {
            let base = plane * h * w;
            // Constant kernel sizes get fully unrolled windows.
            match k {
                2 => pool_plane::<2>(xs, base, geo, out, arg),
                3 => pool_plane::<3>(xs, base, geo, out, arg),
                _ => pool_plane::<0>(xs, base, geo, out, arg),
            }
        }
        let y = Array4::from_shape_vec((n, c, oh, ow), out)
            .map_err(|e| shape_err("MaxPool2d output", (n, c, oh, ow), e))?;
        self.argmax = Some(arg);
        self.input_dim = Some((n, c, h, w));
        Ok(y.into_dyn())
    }

    /// Route each output gradient to the input position that was the maximum.
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let (Some(arg), Some((n, c, h, w))) = (self.argmax.as_ref(), self.input_dim) else {
            return Err(Error::Config("MaxPool2d::backward before forward".into()));
        };
        let (oh, ow) = self.output_size(h, w)?;
        if grad.shape() != [n, c, oh, ow] {
            return Err(shape_err("MaxPool2d grad", (n, c, oh, ow), grad.shape()));
        }
        let grad = ops::standard(grad); // a flat slice: iterating an `IxDyn` array element-wise is slow
        let gs = grad.as_slice().expect("standard layout is contiguous");
        let mut dx = vec![0.0f32; n * c * h * w];
        for (&i, &g) in arg.iter().zip(gs) {
            dx[i] += g;
        }
        let dx = Array4::from_shape_vec((n, c, h, w), dx).map_err(|e| shape_err("MaxPool2d dx", (n, c, h, w), e))?;
        Ok(dx.into_dyn())
    }

    /// Forward-mode tangent of the last forward pass: each output takes the input tangent at its window's argmax,
    /// `ẏ_o = ẋ_{a(o)}` (away from ties the max is locally the selection of its argmax).
    pub fn tangent(&self, dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let (Some(arg), Some((n, c, h, w))) = (self.argmax.as_ref(), self.input_dim) else {
            return Err(Error::Config("MaxPool2d::tangent before forward".into()));
        };
        if dx.shape() != [n, c, h, w] {
            return Err(shape_err("MaxPool2d tangent", (n, c, h, w), dx.shape()));
        }
        let (oh, ow) = self.output_size(h, w)?;
        let dx = ops::standard(dx);
        let xs = dx.as_slice().expect("standard layout is contiguous");
        let out: Vec<f32> = arg.iter().map(|&i| xs[i]).collect();
        let y = Array4::from_shape_vec((n, c, oh, ow), out)
            .map_err(|e| shape_err("MaxPool2d tangent", (n, c, oh, ow), e))?;
        Ok(y.into_dyn())
    }

    /// Drop cached argmax positions.
    pub fn clear_cache(&mut self) {
        self.argmax = None;
        self.input_dim = None;
    }
}

#[derive(Clone, Copy)]
struct Geometry {
    k: usize,
    s: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

/// Max and argmax of every window of one `h × w` plane starting at `xs[base]`; `K` is the kernel size when it is
/// a compile-time constant, 0 otherwise.
///
/// Branch-free: with random data the "is this larger" branch mispredicts about half the time, which made a naive
/// loop cost several nanoseconds per input element.
#[inline(always)]
fn pool_plane<const K: usize>(xs: &[f32], base: usize, g: Geometry, out: &mut [f32], arg: &mut [usize]) {
    let k = if K == 0 { g.k } else { K };
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let first = base + oy * g.s * g.w + ox * g.s;
            let (mut bv, mut best, mut nan) = (f32::NEG_INFINITY, first, false);
            for ky in 0..k {
                let row = first + ky * g.w;
                for (kx, &v) in xs[row..row + k].iter().enumerate() {
                    let take = usize::from(v > bv).wrapping_neg(); // all ones when v is the new maximum
                    best ^= (best ^ (row + kx)) & take;
                    bv = bv.max(v);
                    nan |= v.is_nan();
                }
            }
            out[oy * g.ow + ox] = if nan { f32::NAN } else { bv };
            arg[oy * g.ow + ox] = best;
        }
    }
}
