//! A device for the large matrix products: when one is installed, every [`crate::nn::gemm::gemm`] of at least
//! its `min_macs` multiply-adds runs there, whoever calls it — the forward and backward passes of every layer,
//! GPM's projection, the Fisher estimator's passes, the LDA head's statistics — so every method, the field
//! included, uses it with no second copy of the training loop (NVBLAS's pattern: level-3 BLAS routed to the GPU
//! above a size, everything else on the CPU).
//!
//! The firmware's CUDA backend is such a device (`edgelearn_learn::backend::install`). Nothing is installed by
//! default, and then nothing changes: the CPU computes every product, bit for bit as before. The setting is one
//! per process, as the compute threads are ([`crate::threads`]).

use std::sync::{Arc, RwLock};

use crate::error::{Error, Result, shape_err};

/// One row-major single-precision GEMM: `C (m×n) ← α·op(A)·op(B) + β·C`, with `op(A)` of shape `m×k` (`A` stored
/// `k×m` when `trans_a`) and `op(B)` of shape `k×n` (`B` stored `n×k` when `trans_b`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// Use `Aᵀ` (A stored `k×m`).
    pub trans_a: bool,
    /// Use `Bᵀ` (B stored `n×k`).
    pub trans_b: bool,
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old `C` (0: overwrite).
    pub beta: f32,
}

impl Gemm {
    /// `C = op(A)·op(B)` (α = 1, β = 0).
    pub fn new(trans_a: bool, trans_b: bool, m: usize, n: usize, k: usize) -> Self {
        Self { trans_a, trans_b, m, n, k, alpha: 1.0, beta: 0.0 }
    }

    /// The same with `α` and `β`.
    pub fn scaled(self, alpha: f32, beta: f32) -> Self {
        Self { alpha, beta, ..self }
    }

    /// Stored shapes of `A`, `B` and `C` (rows, columns).
    pub fn shapes(&self) -> [(usize, usize); 3] {
        let a = if self.trans_a { (self.k, self.m) } else { (self.m, self.k) };
        let b = if self.trans_b { (self.n, self.k) } else { (self.k, self.n) };
        [a, b, (self.m, self.n)]
    }

    /// Multiply-adds of the product (saturating).
    pub fn macs(&self) -> usize {
        self.m.saturating_mul(self.n).saturating_mul(self.k)
    }

    /// An error unless the buffers have exactly the lengths of [`Gemm::shapes`].
    pub fn check(&self, a: usize, b: usize, c: usize) -> Result<()> {
        for ((name, (r, cols)), got) in ["A", "B", "C"].iter().zip(self.shapes()).zip([a, b, c]) {
            if r.checked_mul(cols) != Some(got) {
                return Err(shape_err(&format!("GEMM operand {name}"), (r, cols), got));
            }
        }
        Ok(())
    }
}

/// A device that computes [`Gemm`]s on contiguous row-major host buffers (it copies them in and the result out).
///
/// Implementations must be usable from several threads at once (the Fisher estimator runs batches in parallel):
/// serialise inside when the device needs it.
pub trait Offload: Send + Sync {
    /// Short name for logs (`cuda`).
    fn name(&self) -> &'static str;
    /// `c ← α·op(a)·op(b) + β·c` (lengths as [`Gemm::check`] demands; with `β = 0`, `c` is not read).
    fn gemm(&self, g: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()>;
}

/// The installed device and the smallest product it takes.
#[derive(Clone)]
pub struct Installed {
    /// The device.
    pub device: Arc<dyn Offload>,
    /// Products with fewer multiply-adds stay on the CPU (copying them to a device costs more than it saves).
    pub min_macs: usize,
}

static OFFLOAD: RwLock<Option<Installed>> = RwLock::new(None);

/// Install `device` for every product of at least `min_macs` multiply-adds, or remove it (`None`: the CPU
/// computes everything).
pub fn set_offload(device: Option<Arc<dyn Offload>>, min_macs: usize) -> Result<()> {
    let mut slot = OFFLOAD.write().map_err(|_| Error::Config("GEMM offload lock poisoned".into()))?;
    *slot = device.map(|device| Installed { device, min_macs });
    Ok(())
}

/// The installed device, if any.
pub fn offload() -> Option<Installed> {
    OFFLOAD.read().ok().and_then(|slot| slot.clone())
}

/// The name of the installed device, `cpu` when none is.
pub fn offload_name() -> &'static str {
    offload().map_or("cpu", |o| o.device.name())
}
