//! Softmax cross-entropy.

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{Error, Result, shape_err};

/// Mean softmax cross-entropy of `logits (batch, classes)` against integer `labels`, and its gradient
/// with respect to the logits: `L = −(1/B) Σᵢ log softmax(zᵢ)[yᵢ]`, `∂L/∂z = (softmax(z) − onehot(y)) / B`.
pub fn softmax_cross_entropy(logits: &ArrayView2<'_, f32>, labels: &[usize]) -> Result<(f32, Array2<f32>)> {
    softmax_cross_entropy_over(logits, labels, None)
}

/// [`softmax_cross_entropy`] restricted to the classes with `active[c] == true` (the "labels trick" of
/// class-incremental learning: the loss of a task is taken over the classes its data contains only):
/// `L = −(1/B) Σᵢ log( exp(z_{i,yᵢ}) / Σ_{c active} exp(z_{i,c}) )`; `∂L/∂z_{i,c} = 0` for every inactive `c`, so
/// the head rows of classes outside the set receive no gradient. `None` (or all true) is the plain loss. Every
/// label must be an active class.
pub fn softmax_cross_entropy_over(
    logits: &ArrayView2<'_, f32>,
    labels: &[usize],
    active: Option<&[bool]>,
) -> Result<(f32, Array2<f32>)> {
    let (b, c) = logits.dim();
    if labels.len() != b {
        return Err(shape_err("cross-entropy labels", b, labels.len()));
    }
    if b == 0 {
        return Err(Error::Empty("cross-entropy batch".into()));
    }
    if let Some(a) = active
        && a.len() != c
    {
        return Err(shape_err("cross-entropy class mask", c, a.len()));
    }
    let on = |j: usize| active.is_none_or(|a| a[j]);
    let mut grad = Array2::<f32>::zeros((b, c));
    let mut loss = 0.0f64;
    for (i, (row, &y)) in logits.axis_iter(Axis(0)).zip(labels).enumerate() {
        if y >= c || !on(y) {
            return Err(Error::LabelOutOfRange { label: y, classes: c });
        }
        let m = row.iter().enumerate().filter(|&(j, _)| on(j)).fold(f32::NEG_INFINITY, |a, (_, &v)| a.max(v));
        let mut sum = 0.0f32;
        for (j, &v) in row.iter().enumerate() {
            if on(j) {
                let e = (v - m).exp();
                grad[[i, j]] = e;
                sum += e;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn masked_loss_ignores_inactive_classes() {
        let z = array![[1.0f32, 5.0, 2.0, -1.0], [0.5, 9.0, 0.0, 3.0]];
        let active = [true, false, true, false];
        let (l, g) = softmax_cross_entropy_over(&z.view(), &[0, 2], Some(&active)).unwrap();
        // The same as the plain loss on the active columns only.
        let sub = array![[1.0f32, 2.0], [0.5, 0.0]];
        let (l2, g2) = softmax_cross_entropy(&sub.view(), &[0, 1]).unwrap();
        assert!((l - l2).abs() < 1e-6, "{l} vs {l2}");
        for i in 0..2 {
            assert_eq!(g[[i, 1]], 0.0);
            assert_eq!(g[[i, 3]], 0.0);
            assert!((g[[i, 0]] - g2[[i, 0]]).abs() < 1e-6 && (g[[i, 2]] - g2[[i, 1]]).abs() < 1e-6);
        }
        // No mask and an all-true mask are the plain loss, bit for bit.
        let all = [true; 4];
        let (a, ga) = softmax_cross_entropy_over(&z.view(), &[1, 3], Some(&all)).unwrap();
        let (p, gp) = softmax_cross_entropy(&z.view(), &[1, 3]).unwrap();
        assert_eq!((a, ga), (p, gp));
        // A label outside the active set, or a mask of the wrong width, is refused.
        assert!(softmax_cross_entropy_over(&z.view(), &[1, 0], Some(&active)).is_err());
        assert!(softmax_cross_entropy_over(&z.view(), &[0, 0], Some(&[true; 3])).is_err());
    }
}
