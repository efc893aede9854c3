//! Compute backends for the operations that dominate a task update: GEMM and its transposes, im2col, ReLU and its
//! gradient, the GPM projection `G − G M Mᵀ`, the Fisher accumulation `F += |b|·g²` and BECAME's merge.
//!
//! [`Backend`] is the interface; [`CpuBackend`] implements it with the crate's own kernels (ndarray's GEMM,
//! [`edgelearn_core::nn::ops::im2col`], [`edgelearn_core::nn::Projector`], [`crate::merge`]) and is always there. [`CudaBackend`] runs
//! the same operations on an NVIDIA GPU through `cudarc` (cuBLAS for GEMM, small kernels compiled with NVRTC when
//! the backend is created) when the crate is built with the `cuda` feature (`cuda-11040` for JetPack 5); without
//! it, [`CudaBackend`] is a stand-in whose constructor returns [`Error::BackendUnavailable`] ("not compiled with
//! CUDA support"), so code and tests name both backends the same way (candle's pattern).
//!
//! Buffers ([`Backend::Buf`]) live where the backend computes: `Vec<f32>` on the CPU, device memory on the GPU.
//!
//! **One training loop.** The learner's loop (`edgelearn_core::train`, every [`crate::method::Method`], the field
//! included) is the only one: [`install`] puts the chosen backend behind [`edgelearn_core::nn::gemm::gemm`] as the
//! process's GEMM device ([`edgelearn_core::nn::offload`]), so every product of at least [`OFFLOAD_MIN_MACS`]
//! multiply-adds — layers forward and backward, GPM's projection, the Fisher's passes — runs on the GPU, and
//! everything else stays on the CPU. With the CPU selected nothing is installed and every result is the CPU's, bit
//! for bit.
//!
//! The backend is chosen at run time with [`BackendKind`] (`--backend auto|cpu|cuda` on the command line):
//! [`select`] with [`BackendKind::Auto`] uses CUDA when it was compiled in and the CUDA libraries and a GPU are
//! present, and otherwise falls back to the CPU with a log line; it never panics on a machine without CUDA.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ndarray::Array2;

use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::ops::Window2d;

mod cpu;
#[cfg(any(feature = "cuda-12020", feature = "cuda-11040"))]
mod cuda;
#[cfg(not(any(feature = "cuda-12020", feature = "cuda-11040")))]
mod cuda_stub;

#[cfg(test)]
pub(crate) mod tests;

pub use cpu::CpuBackend;
#[cfg(any(feature = "cuda-12020", feature = "cuda-11040"))]
pub use cuda::CudaBackend;
#[cfg(not(any(feature = "cuda-12020", feature = "cuda-11040")))]
pub use cuda_stub::CudaBackend;
pub use edgelearn_core::nn::offload::Gemm;

/// True when this build contains the CUDA backend (the `cuda`, `cuda-12020` or `cuda-11040` feature).
pub const CUDA_COMPILED: bool = cfg!(any(feature = "cuda-12020", feature = "cuda-11040"));

/// The operations of a task update, on buffers resident where the backend computes.
///
/// Every operation checks buffer lengths and returns [`Error::Shape`] rather than touching memory it does not own;
/// device failures come back as [`Error::Backend`].
pub trait Backend {
    /// A buffer of `f32` resident on the backend (host memory for the CPU, device memory for CUDA).
    type Buf;
    /// A GPM basis prepared for [`Backend::project_rows`].
    type Basis;

    /// Short name for logs and reports (`cpu`, `cuda`).
    fn name(&self) -> &'static str;
    /// Copy host data into a new buffer.
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    /// Copy a buffer back to the host.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// A new buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// Number of `f32` in a buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// `dst ← src` (same lengths).
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// `C ← α·op(A)·op(B) + β·C` ([`Gemm`]).
    fn gemm(&self, g: Gemm, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf) -> Result<()>;
    /// `x ← max(x, 0)` element-wise (NaN stays NaN).
    fn relu(&self, x: &mut Self::Buf) -> Result<()>;
    /// `g ← g · [y > 0]` element-wise, `y` the ReLU's output (positive exactly where its input was).
    fn relu_backward(&self, y: &Self::Buf, g: &mut Self::Buf) -> Result<()>;
    /// im2col of `x (n, c, h, w)` into `out (n·out_h·out_w, c·kh·kw)`, rows and columns ordered as
    /// [`edgelearn_core::nn::ops::im2col`] orders them (zero padding materialised).
    fn im2col(&self, x: &Self::Buf, shape: [usize; 4], win: Window2d, out: &mut Self::Buf) -> Result<()>;
    /// Prepare an orthonormal basis `M (d×k)` for [`Backend::project_rows`].
    fn basis(&self, m: &Array2<f32>) -> Result<Self::Basis>;
    /// GPM's projection of each row of `x (rows×d)` onto the complement of the basis: `X ← X − X M Mᵀ`
    /// (for a weight gradient `G (out×d_in)`, Saha et al.'s `G − G M Mᵀ`).
    fn project_rows(&self, basis: &Self::Basis, x: &mut Self::Buf) -> Result<()>;
    /// `y ← y + a·x` (the SGD step `θ ← θ − η g` with `a = −η`).
    fn axpy(&self, a: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `x ← s·x`.
    fn scale(&self, s: f32, x: &mut Self::Buf) -> Result<()>;
    /// The Fisher accumulation of one batch: `F ← F + w·g²` element-wise, `w` the batch length (the estimator
    /// `F = (1/N) Σ_b |b|·(∇θ L_b)²` of [`crate::fisher::diagonal_fisher`] once scaled by `1/N`).
    fn fisher_accumulate(&self, grad: &Self::Buf, weight: f32, fisher: &mut Self::Buf) -> Result<()>;
    /// The two sums of BECAME's α over one buffer, in f64: `(Σ F_cur Δ², Σ (F_cur + F_old) Δ²)`, `Δ = θ̂ − θ_GP`
    /// (α = num/den over all buffers, [`crate::merge::became_alpha`]). An error for a negative or non-finite Fisher.
    fn became_terms(
        &self,
        f_cur: &Self::Buf,
        f_old: &Self::Buf,
        theta_gp: &Self::Buf,
        theta_hat: &Self::Buf,
    ) -> Result<(f64, f64)>;
    /// BECAME's merge `out ← (1 − α)·a + α·b` (computed in f64 per element, as [`crate::merge::interpolate`]).
    fn interpolate(&self, a: &Self::Buf, b: &Self::Buf, alpha: f64, out: &mut Self::Buf) -> Result<()>;
}

/// Which backend to run on (`--backend auto|cpu|cuda`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// CUDA when compiled in and usable on this machine, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA; an error when it is not compiled in or not usable.
    Cuda,
}

impl BackendKind {
    /// Every kind, in command-line order.
    pub const ALL: [BackendKind; 3] = [BackendKind::Auto, BackendKind::Cpu, BackendKind::Cuda];

    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::Config(format!("unknown backend '{s}' (expected auto, cpu or cuda)")))
    }
}

/// A backend chosen at run time by [`select`].
#[derive(Debug)]
pub enum Selected {
    /// The CPU backend.
    Cpu(CpuBackend),
    /// The CUDA backend (only ever constructed when it is compiled in and a GPU answered).
    Cuda(CudaBackend),
}

impl Selected {
    /// The backend's name (`cpu` or `cuda`).
    pub fn name(&self) -> &'static str {
        match self {
            Selected::Cpu(b) => b.name(),
            Selected::Cuda(b) => b.name(),
        }
    }
}

/// Whether the CUDA backend can be created on this machine, and if not, why (checked without panicking: the
/// driver, cuBLAS and NVRTC libraries are probed before anything calls into them).
pub fn cuda_status() -> std::result::Result<(), String> {
    CudaBackend::available()
}

/// Create the backend `kind` asks for.
///
/// * [`BackendKind::Cpu`]: the CPU backend.
/// * [`BackendKind::Cuda`]: the CUDA backend on GPU 0, or [`Error::BackendUnavailable`] when it is not compiled in,
///   the CUDA libraries are missing or no GPU answers.
/// * [`BackendKind::Auto`]: CUDA when that works, otherwise the CPU, with an `info` log line saying why.
pub fn select(kind: BackendKind) -> Result<Selected> {
    match kind {
        BackendKind::Cpu => Ok(Selected::Cpu(CpuBackend::new())),
        BackendKind::Cuda => CudaBackend::new(0).map(Selected::Cuda),
        BackendKind::Auto => match CudaBackend::new(0) {
            Ok(b) => {
                tracing::info!(backend = "cuda", "compute backend: CUDA");
                Ok(Selected::Cuda(b))
            }
            Err(e) => {
                tracing::info!(backend = "cpu", reason = %e, "compute backend: CUDA not usable, falling back to the CPU");
                Ok(Selected::Cpu(CpuBackend::new()))
            }
        },
    }
}

/// Products smaller than this (multiply-adds) stay on the CPU when a GPU is installed: copying the operands over
/// PCIe (or through a Jetson's shared memory with a launch each way) costs more than the CPU spends on them.
pub const OFFLOAD_MIN_MACS: usize = 1 << 20;

/// Select the backend `kind` asks for ([`select`]) and make it the process's GEMM device: CUDA is installed behind
/// [`edgelearn_core::nn::gemm::gemm`] for products of at least [`OFFLOAD_MIN_MACS`]; the CPU removes any device.
/// Returns the name of what runs the products (`cpu`, `cuda`).
pub fn install(kind: BackendKind) -> Result<&'static str> {
    match select(kind)? {
        Selected::Cpu(_) => {
            edgelearn_core::nn::offload::set_offload(None, 0)?;
            Ok("cpu")
        }
        Selected::Cuda(b) => {
            let name = b.name();
            edgelearn_core::nn::offload::set_offload(Some(Arc::new(b)), OFFLOAD_MIN_MACS)?;
            Ok(name)
        }
    }
}

/// The name of what runs the large products now: `cuda` after [`install`] put the GPU there, otherwise `cpu`.
pub fn installed() -> &'static str {
    edgelearn_core::nn::offload::offload_name()
}

/// An error unless two buffer lengths agree.
pub(crate) fn check_same(context: &str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(edgelearn_core::error::shape_err(context, expected, got));
    }
    Ok(())
}
