//! The CPU backend: the crate's own kernels behind [`Backend`].

use std::sync::Arc;

use edgelearn_core::nn::gemm::gemm_on_cpu_buffers;
use edgelearn_core::nn::offload::Offload;
use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewMut1};

use super::{Backend, Gemm, check_same};
use crate::merge::{became_alpha_terms, interpolate};
use edgelearn_core::error::{Result, shape_err};
use edgelearn_core::nn::Projector;
use edgelearn_core::nn::activation::{relu, relu_grad};
use edgelearn_core::nn::ops::{Window2d, im2col_into};

/// The CPU backend (the firmware's GEMM on the board's compute threads), always available.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend.
    pub fn new() -> Self {
        Self
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Basis = Arc<Projector>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        check_same("backend copy", dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    /// [`edgelearn_core::nn::gemm::gemm_on_cpu_buffers`] (transposes are views, nothing is copied).
    fn gemm(&self, g: Gemm, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<()> {
        Offload::gemm(self, g, a, b, c)
    }

    fn relu(&self, x: &mut Vec<f32>) -> Result<()> {
        x.iter_mut().for_each(|v| *v = relu(*v));
        Ok(())
    }

    fn relu_backward(&self, y: &Vec<f32>, g: &mut Vec<f32>) -> Result<()> {
        check_same("ReLU backward", y.len(), g.len())?;
        g.iter_mut().zip(y).for_each(|(g, &y)| *g = relu_grad(*g, y > 0.0));
        Ok(())
    }

    /// [`edgelearn_core::nn::ops::im2col_into`], writing into `out`'s allocation.
    fn im2col(&self, x: &Vec<f32>, shape: [usize; 4], win: Window2d, out: &mut Vec<f32>) -> Result<()> {
        let [n, c, h, w] = shape;
        let xv = ArrayView4::from_shape((n, c, h, w), x.as_slice()).map_err(|e| shape_err("im2col input", shape, e))?;
        let (oh, ow) = win.out_size(h, w)?;
        check_same("im2col output", n * oh * ow * c * win.kh * win.kw, out.len())?;
        let cols = im2col_into(&xv, win, std::mem::take(out))?;
        *out = cols.into_raw_vec_and_offset().0;
        Ok(())
    }

    /// A [`Projector`] (which switches to the orthonormal complement when the basis holds more than half of `d`).
    fn basis(&self, m: &Array2<f32>) -> Result<Arc<Projector>> {
        Projector::new(m.clone()).map(Arc::new)
    }

    fn project_rows(&self, basis: &Arc<Projector>, x: &mut Vec<f32>) -> Result<()> {
        let d = basis.dim();
        if d == 0 || !x.len().is_multiple_of(d) {
            return Err(shape_err("projection rows", format!("a multiple of {d}"), x.len()));
        }
        if basis.rank() == 0 {
            return Ok(());
        }
        let xv = ArrayView2::from_shape((x.len() / d, d), x.as_slice()).map_err(|e| shape_err("projection", d, e))?;
        let projected = basis.project_rows(&xv)?;
        x.iter_mut().zip(projected.iter()).for_each(|(dst, &src)| *dst = src);
        Ok(())
    }

    fn axpy(&self, a: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        check_same("axpy", y.len(), x.len())?;
        ArrayViewMut1::from(y.as_mut_slice()).scaled_add(a, &ndarray::ArrayView1::from(x.as_slice()));
        Ok(())
    }

    fn scale(&self, s: f32, x: &mut Vec<f32>) -> Result<()> {
        x.iter_mut().for_each(|v| *v *= s);
        Ok(())
    }

    fn fisher_accumulate(&self, grad: &Vec<f32>, weight: f32, fisher: &mut Vec<f32>) -> Result<()> {
        check_same("Fisher accumulation", fisher.len(), grad.len())?;
        fisher.iter_mut().zip(grad).for_each(|(f, &g)| *f += weight * g * g);
        Ok(())
    }

    /// [`crate::merge::became_alpha`]'s sums.
    fn became_terms(
        &self,
        f_cur: &Vec<f32>,
        f_old: &Vec<f32>,
        theta_gp: &Vec<f32>,
        theta_hat: &Vec<f32>,
    ) -> Result<(f64, f64)> {
        became_alpha_terms(f_cur, f_old, theta_gp, theta_hat)
    }

    /// [`crate::merge::interpolate`].
    fn interpolate(&self, a: &Vec<f32>, b: &Vec<f32>, alpha: f64, out: &mut Vec<f32>) -> Result<()> {
        check_same("interpolation output", a.len(), out.len())?;
        *out = interpolate(a, b, alpha)?;
        Ok(())
    }
}

/// The CPU as a GEMM device: what [`super::install`] never installs (the CPU needs no device), and what the tests
/// install to check that every product of a whole task update reaches the device it is given.
impl Offload for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn gemm(&self, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        gemm_on_cpu_buffers(g, a, b, c)
    }
}
