//! Small dense kernels shared by the layers (one place to swap in a faster GEMM or another backend).

use ndarray::{Array2, ArrayView2};

/// `a · bᵀ` for `a (m, k)`, `b (n, k)`.
pub fn matmul_nt(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Array2<f32> {
    a.dot(&b.t())
}

/// `aᵀ · b` for `a (k, m)`, `b (k, n)`.
pub fn matmul_tn(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> Array2<f32> {
    a.t().dot(b)
}
