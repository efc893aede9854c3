//! Softmax cross-entropy.

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{Error, Result, shape_err};

/// Mean softmax cross-entropy of `logits (batch, classes)` against integer `labels`, and its gradient
/// with respect to the logits: `L = −(1/B) Σᵢ log softmax(zᵢ)[yᵢ]`, `∂L/∂z = (softmax(z) − onehot(y)) / B`.
pub fn softmax_cross_entropy(logits: &ArrayView2<'_, f32>, labels: &[usize]) -> Result<(f32, Array2<f32>)> {
    let (b, c) = logits.dim();
    if labels.len() != b {
        return Err(shape_err("cross-entropy labels", b, labels.len()));
    }
    if b == 0 {
        return Err(Error::Empty("cross-entropy batch".into()));
    }
    let mut grad = Array2::<f32>::zeros((b, c));
    let mut loss = 0.0f64;
    for (i, (row, &y)) in logits.axis_iter(Axis(0)).zip(labels).enumerate() {
        if y >= c {
            return Err(Error::LabelOutOfRange { label: y, classes: c });
        }
        let m = row.fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let mut sum = 0.0f32;
        for (j, &v) in row.iter().enumerate() {
            let e = (v - m).exp();
            grad[[i, j]] = e;
            sum += e;
        }
        loss += f64::from(sum.ln() + m - row[y]);
        let inv = 1.0 / (sum * b as f32);
        grad.row_mut(i).mapv_inplace(|e| e * inv);
        grad[[i, y]] -= 1.0 / b as f32;
    }
    let loss = (loss / b as f64) as f32;
    if !loss.is_finite() {
        return Err(Error::NonFinite("cross-entropy loss".into()));
    }
    Ok((loss, grad))
}

/// Row-wise argmax (first maximum wins, like PyTorch).
pub fn argmax_rows(logits: &ArrayView2<'_, f32>) -> Vec<usize> {
    logits
        .axis_iter(Axis(0))
        .map(|r| {
            let mut best = 0;
            for (j, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}
