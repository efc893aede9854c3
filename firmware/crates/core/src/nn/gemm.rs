//! Single-precision GEMM, `C ← α·A·B + β·C`, on strided ndarray views (a transpose is a view, never a copy), with
//! the board's compute threads ([`crate::threads`]).
//!
//! Three well-kept kernels can run it ([`Kernel`]); the firmware uses [`KERNEL`], chosen by `host bench gemm`
//! on the shapes a task update runs (docs/benchmarks.md, "GEMM"). All three have NEON kernels on aarch64.
//! Threads split the output into blocks and never the inner dimension, so every `C[i, j]` is the same sum in
//! the same order for any thread count (tested below; the determinism tests of the Fisher and BECAME cover the
//! whole update).

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::error::{Result, shape_err};
use crate::nn::offload::{self, Gemm, Offload};

/// A GEMM implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `matrixmultiply` through ndarray's `general_mat_mul` (AVX2/FMA or NEON micro-kernels; one thread here: its
    /// threading is a process-wide environment variable read once).
    Matrixmultiply,
    /// The `gemm` crate (AVX2/FMA, AVX-512 with its `x86-v4` feature, NEON), threads through rayon.
    Gemm,
    /// faer's `matmul` (its own x86 kernels with AVX-512, `gemm` elsewhere), threads through rayon.
    Faer,
}

impl Kernel {
    /// Every kernel, in the order the benchmark reports them.
    pub const ALL: [Kernel; 3] = [Kernel::Matrixmultiply, Kernel::Gemm, Kernel::Faer];

    /// The kernel's name (the crate's).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Matrixmultiply => "matrixmultiply",
            Kernel::Gemm => "gemm",
            Kernel::Faer => "faer",
        }
    }

    /// Whether the kernel uses more than one thread when asked to.
    pub fn threaded(self) -> bool {
        !matches!(self, Kernel::Matrixmultiply)
    }
}

/// The kernel the firmware uses.
pub const KERNEL: Kernel = Kernel::Faer;

/// Products smaller than this many multiply-adds run on one thread: below it, splitting costs more than it
/// saves (docs/benchmarks.md, "GEMM": faer on 2 threads loses at 64×256×256, 64×800×100 and 64×50×500, i.e. up
/// to 5 M multiply-adds, and gains from 64×784×256, 13 M, up).
pub const PARALLEL_MIN_MACS: usize = 1 << 23;

/// Products with fewer output elements than this run on one thread whatever their size: the threads split the
/// output, never the inner dimension (that keeps the sums' order), so a small output leaves them nothing to share
/// (the CNN's first weight gradient, 20×25 outputs over 36 864 patches, is slower on 2 threads than on 1).
pub const PARALLEL_MIN_OUTPUTS: usize = 4096;

/// `C ← α·A·B + β·C`: on the installed device ([`crate::nn::offload`]) when there is one and the product has at
/// least its `min_macs` multiply-adds, otherwise [`gemm_on_cpu`]. With `β = 0`, `C` is not read (NaN in it does
/// not propagate).
pub fn gemm(
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) -> Result<()> {
    if let Some(o) = offload::offload() {
        let g = Gemm { trans_a: false, trans_b: false, m: a.nrows(), n: b.ncols(), k: a.ncols(), alpha, beta };
        if g.m > 0 && g.n > 0 && g.k > 0 && g.macs() >= o.min_macs {
            return gemm_offloaded(&*o.device, alpha, a, b, beta, c);
        }
    }
    gemm_on_cpu(alpha, a, b, beta, c)
}

/// `C ← α·A·B + β·C` with [`KERNEL`] on [`crate::threads::threads`] threads (what [`gemm()`] does with no device
/// installed; the CPU backend's GEMM).
pub fn gemm_on_cpu(
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let threads = threads_for(a.nrows(), a.ncols(), b.ncols(), crate::threads::threads());
    gemm_with(KERNEL, threads, alpha, a, b, beta, c)
}

/// [`gemm_on_cpu`] on row-major buffers described by `g` (a transposed operand is a view of its storage, nothing is
/// copied): what a [`Offload`] device computing on the CPU does with the buffers it is given.
pub fn gemm_on_cpu_buffers(g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    g.check(a.len(), b.len(), c.len())?;
    let [sa, sb, _] = g.shapes();
    let view = |data, (r, cols): (usize, usize), transpose: bool| -> Result<ArrayView2<'_, f32>> {
        let v = ArrayView2::from_shape((r, cols), data).map_err(|e| shape_err("GEMM operand", (r, cols), e))?;
        Ok(if transpose { v.reversed_axes() } else { v })
    };
    let mut cv = ArrayViewMut2::from_shape((g.m, g.n), c).map_err(|e| shape_err("GEMM operand C", (g.m, g.n), e))?;
    gemm_on_cpu(g.alpha, &view(a, sa, g.trans_a)?, &view(b, sb, g.trans_b)?, g.beta, &mut cv)
}

/// A row-major buffer holding `v` or its transpose, without a copy when `v` is contiguous either way.
fn row_major<'a>(v: &ArrayView2<'a, f32>) -> (std::borrow::Cow<'a, [f32]>, bool) {
    if let Some(s) = v.to_slice() {
        return (std::borrow::Cow::Borrowed(s), false);
    }
    if let Some(s) = (*v).reversed_axes().to_slice() {
        return (std::borrow::Cow::Borrowed(s), true);
    }
    (std::borrow::Cow::Owned(v.iter().copied().collect()), false)
}

/// `(m, k, n)` of `C (m×n) ← A (m×k) · B (k×n)`, or a shape error.
fn dims(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>, c: &ArrayViewMut2<'_, f32>) -> Result<(usize, usize, usize)> {
    let (m, k) = a.dim();
    let n = b.ncols();
    if b.nrows() != k || c.dim() != (m, n) {
        return Err(shape_err("GEMM operands (A: m×k, B: k×n, C: m×n)", (m, k, n), (b.dim(), c.dim())));
    }
    Ok((m, k, n))
}

/// [`gemm`] on `device`: operands passed as row-major buffers (a transposed view as its storage with the transpose
/// flag), `C` written back in place.
fn gemm_offloaded(
    device: &dyn Offload,
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let (m, k, n) = dims(a, b, c)?;
    let (ab, trans_a) = row_major(a);
    let (bb, trans_b) = row_major(b);
    let g = Gemm { trans_a, trans_b, m, n, k, alpha, beta };
    if let Some(cs) = c.as_slice_mut() {
        return device.gemm(g, &ab, &bb, cs);
    }
    let mut tmp: Vec<f32> = if beta == 0.0 { vec![0.0; m * n] } else { c.iter().copied().collect() };
    device.gemm(g, &ab, &bb, &mut tmp)?;
    c.iter_mut().zip(tmp).for_each(|(dst, v)| *dst = v);
    Ok(())
}

/// The threads [`gemm()`] gives an `m×k · k×n` product when `threads` are available: one below
/// [`PARALLEL_MIN_MACS`] or [`PARALLEL_MIN_OUTPUTS`], all of them otherwise.
pub fn threads_for(m: usize, k: usize, n: usize, threads: usize) -> usize {
    if m * n * k < PARALLEL_MIN_MACS || m * n < PARALLEL_MIN_OUTPUTS { 1 } else { threads.max(1) }
}

/// `A·B` as a new array, with [`gemm()`].
pub fn matmul(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm(1.0, a, b, 0.0, &mut c.view_mut())?;
    Ok(c)
}

/// `C ← α·A·B + β·C` with the given kernel on exactly `threads` threads (the benchmark's entry; the firmware
/// calls [`gemm()`]).
pub fn gemm_with(
    kernel: Kernel,
    threads: usize,
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) -> Result<()> {
    let (m, k, n) = dims(a, b, c)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.mapv_inplace(|v| v * beta);
        }
        return Ok(());
    }
    let threads = threads.max(1);
    match kernel {
        // matrixmultiply does not read C when β = 0.
        Kernel::Matrixmultiply => general_mat_mul(alpha, a, b, beta, c),
        Kernel::Gemm => {
            let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
            let run = |c: &mut ArrayViewMut2<'_, f32>| {
                let (cs, as_, bs) = (c.strides().to_vec(), a.strides(), b.strides());
                // SAFETY: the three views are valid for their shapes and strides (checked above: A m×k, B k×n,
                // C m×n), C is uniquely borrowed, and gemm reads/writes exactly those elements.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        cs[1],
                        cs[0],
                        beta != 0.0,
                        a.as_ptr(),
                        as_[1],
                        as_[0],
                        b.as_ptr(),
                        bs[1],
                        bs[0],
                        beta,
                        alpha,
                        false,
                        false,
                        false,
                        par,
                    )
                }
            };
            in_pool(threads, || run(c))?;
        }
        Kernel::Faer => {
            let par = if threads > 1 { faer::Par::rayon(threads) } else { faer::Par::Seq };
            let accum = if beta == 0.0 {
                faer::Accum::Replace
            } else {
                if beta != 1.0 {
                    c.mapv_inplace(|v| v * beta);
                }
                faer::Accum::Add
            };
            let (cs, as_, bs) = (c.strides().to_vec(), a.strides(), b.strides());
            // SAFETY: as for gemm above: valid views of the checked shapes, C uniquely borrowed.
            let (av, bv, cv) = unsafe {
                (
                    faer::MatRef::from_raw_parts(a.as_ptr(), m, k, as_[0], as_[1]),
                    faer::MatRef::from_raw_parts(b.as_ptr(), k, n, bs[0], bs[1]),
                    faer::MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, cs[0], cs[1]),
                )
            };
            in_pool(threads, || faer::linalg::matmul::matmul(cv, accum, av, bv, alpha, par))?;
        }
    }
    Ok(())
}

/// Run `f` inside the shared pool of `threads` threads (directly when one thread is asked for).
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    if threads <= 1 {
        return Ok(f());
    }
    Ok(crate::threads::pool(threads)?.install(f))
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ShapeBuilder};
    use rand::Rng;

    use super::*;

    fn random(r: usize, c: usize, seed: u64) -> Array2<f32> {
        let mut rng = crate::seeded_rng(seed);
        Array2::from_shape_fn((r, c), |_| rng.random_range(-1.0f32..1.0))
    }

    /// f64 reference product.
    fn reference(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Array2<f64> {
        a.mapv(f64::from).dot(&b.mapv(f64::from))
    }

    /// Every kernel matches the f64 product on plain, transposed and column-major operands, with α and β.
    #[test]
    fn every_kernel_computes_alpha_ab_plus_beta_c_on_any_layout() {
        for kernel in Kernel::ALL {
            for &(m, k, n) in &[(1, 1, 1), (7, 5, 3), (64, 130, 33), (100, 64, 300)] {
                let a = random(m, k, 1);
                let bt = random(n, k, 2); // B given transposed
                let b = bt.t();
                let c0 = random(m, n, 3);
                let a_cm = {
                    let mut x = Array2::zeros((m, k).f());
                    x.assign(&a);
                    x
                };
                let want = reference(&a.view(), &b) * 0.5 + c0.mapv(f64::from) * 2.0;
                for av in [a.view(), a_cm.view()] {
                    for threads in [1, 3] {
                        let mut c = c0.clone();
                        gemm_with(kernel, threads, 0.5, &av, &b, 2.0, &mut c.view_mut()).unwrap();
                        let err = (&c.mapv(f64::from) - &want).iter().fold(0.0f64, |e, v| e.max(v.abs()));
                        assert!(err < 1e-4 * (k as f64), "{kernel:?} {m}x{k}x{n} threads {threads}: error {err}");
                    }
                }
            }
        }
    }

    /// β = 0 overwrites C without reading it; k = 0 scales C; wrong shapes are a typed error.
    #[test]
    fn beta_zero_ignores_nan_and_shapes_are_checked() {
        for kernel in Kernel::ALL {
            let a = random(8, 4, 4);
            let b = random(4, 6, 5);
            let mut c = Array2::from_elem((8, 6), f32::NAN);
            gemm_with(kernel, 2, 1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut()).unwrap();
            assert!(c.iter().all(|v| v.is_finite()), "{kernel:?}");
            let mut c = Array2::from_elem((8, 6), 3.0f32);
            let empty = Array2::<f32>::zeros((8, 0));
            gemm_with(kernel, 1, 1.0, &empty.view(), &Array2::zeros((0, 6)).view(), 0.5, &mut c.view_mut()).unwrap();
            assert!(c.iter().all(|&v| v == 1.5));
            let mut bad = Array2::zeros((8, 5));
            assert!(gemm_with(kernel, 1, 1.0, &a.view(), &b.view(), 0.0, &mut bad.view_mut()).is_err());
        }
    }

    /// A device that computes on the CPU from the buffers it is given (the plumbing's test double).
    struct RowMajorCpu;

    impl Offload for RowMajorCpu {
        fn name(&self) -> &'static str {
            "test"
        }
        fn gemm(&self, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
            gemm_on_cpu_buffers(g, a, b, c)
        }
    }

    /// Operands reach a device as row-major buffers whatever their layout — plain, transposed (passed as storage
    /// with the flag, no copy) or strided (copied) — and a strided C is written back; the product is the CPU's.
    #[test]
    fn offloaded_products_take_any_layout() {
        let a = random(9, 14, 1);
        let b = random(14, 6, 2);
        let bt = random(6, 14, 3);
        let wide = random(9, 28, 4);
        let c0 = random(9, 6, 5);
        let strided_a = wide.slice(ndarray::s![.., ..;2]);
        for (av, bv) in [(a.view(), b.view()), (a.view(), bt.t()), (strided_a, b.view())] {
            let mut want = c0.clone();
            gemm_on_cpu(0.5, &av, &bv, 2.0, &mut want.view_mut()).unwrap();
            let mut got = c0.clone();
            gemm_offloaded(&RowMajorCpu, 0.5, &av, &bv, 2.0, &mut got.view_mut()).unwrap();
            let err = (&got - &want).iter().fold(0.0f32, |e, v| e.max(v.abs()));
            assert!(err < 1e-5, "error {err}");
            // C as a transposed (non-row-major) view: written back through a temporary.
            let mut got_t = Array2::from_shape_vec((6, 9), c0.t().iter().copied().collect()).unwrap();
            let mut cview = got_t.view_mut().reversed_axes();
            assert!(cview.as_slice_mut().is_none(), "C must not be row-major here");
            gemm_offloaded(&RowMajorCpu, 0.5, &av, &bv, 2.0, &mut cview).unwrap();
            let err = (&got_t.t() - &want).iter().fold(0.0f32, |e, v| e.max(v.abs()));
            assert!(err < 1e-5, "strided C: error {err}");
        }
        let mut bad = Array2::zeros((9, 5));
        assert!(gemm_offloaded(&RowMajorCpu, 1.0, &a.view(), &b.view(), 0.0, &mut bad.view_mut()).is_err());
    }

    /// The thread count changes no bit of the product, at shapes large enough to be split (the task update's).
    #[test]
    fn gemm_is_bit_identical_for_any_thread_count() {
        for kernel in Kernel::ALL {
            for &(m, k, n, ta) in
                &[(64, 784, 256, false), (256, 64, 784, true), (1024, 100, 50, false), (50, 1024, 200, true)]
            {
                let a = if ta { random(k, m, 6).reversed_axes() } else { random(m, k, 6) };
                let b = random(k, n, 7);
                let run = |t: usize| {
                    let mut c = Array2::zeros((m, n));
                    gemm_with(kernel, t, 1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut()).unwrap();
                    c
                };
                let one = run(1);
                for t in [2, 3, 4] {
                    assert!(
                        run(t).iter().zip(&one).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{kernel:?} {m}x{k}x{n} t={t}"
                    );
                }
            }
        }
    }
}
