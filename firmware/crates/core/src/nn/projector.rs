//! Removing the component of row vectors that lies in a subspace: the arithmetic of gradient projection.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result, shape_err};
use crate::nn::gemm::{gemm, matmul};

/// Projects row vectors of length `d` onto the orthogonal complement of `span(M)`, `M` a `d × k` orthonormal
/// basis: `x ↦ x − (x M) Mᵀ` (GPM's `G − G M Mᵀ` applied to each row).
///
/// When the basis holds more than half of `d`, the complement `Q` (`d × (d − k)`, orthonormal, `QQᵀ = I − MMᵀ`)
/// is kept too and `x ↦ (x Q) Qᵀ` is used instead, which costs `2·rows·d·(d − k)` rather than `2·rows·d·k`.
/// Both give the same result up to rounding.
#[derive(Debug, Clone)]
pub struct Projector {
    basis: Array2<f32>,
    complement: Option<Array2<f32>>,
}

impl Projector {
    /// Build from an orthonormal basis `d × k` (`k ≤ d`). Computes the complement when `k > d/2`.
    pub fn new(basis: Array2<f32>) -> Result<Self> {
        let (d, k) = basis.dim();
        if k > d {
            return Err(shape_err("projector basis", format!("at most {d} columns"), k));
        }
        if basis.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("projector basis".into()));
        }
        let complement = if 2 * k > d { Some(orthonormal_complement(&basis.view())?) } else { None };
        Ok(Self { basis, complement })
    }

    /// Vector length `d`.
    pub fn dim(&self) -> usize {
        self.basis.nrows()
    }

    /// Number of basis vectors `k`.
    pub fn rank(&self) -> usize {
        self.basis.ncols()
    }

    /// The basis `M`.
    pub fn basis(&self) -> &Array2<f32> {
        &self.basis
    }

    /// Floating-point operations [`Projector::project_rows`] costs for `rows` rows.
    pub fn cost(&self, rows: usize) -> usize {
        let k = self.complement.as_ref().map_or(self.rank(), Array2::ncols);
        2 * rows * self.dim() * k
    }

    /// `x − (x M) Mᵀ` for every row of `x` (`rows × d`).
    pub fn project_rows(&self, x: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.dim() {
            return Err(shape_err("projector input width", self.dim(), x.ncols()));
        }
        Ok(match &self.complement {
            Some(q) => matmul(&matmul(x, &q.view())?.view(), &q.t())?,
            None if self.rank() == 0 => x.to_owned(),
            None => {
                let mut out = x.to_owned();
                let c = matmul(x, &self.basis.view())?;
                gemm(-1.0, &c.view(), &self.basis.t(), 1.0, &mut out.view_mut())?;
                out
            }
        })
    }
}

/// An orthonormal basis of the orthogonal complement of `span(M)` (`d × (d − k)`), from the full SVD of `M`.
pub fn orthonormal_complement(m: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let (d, k) = m.dim();
    let mat = faer::Mat::<f64>::from_fn(d, k, |i, j| f64::from(m[[i, j]]));
    let svd = mat.svd().map_err(|e| Error::Numerical(format!("SVD for complement basis: {e:?}")))?;
    let u = svd.U();
    Ok(Array2::from_shape_fn((d, d - k), |(i, j)| u[(i, k + j)] as f32))
}
