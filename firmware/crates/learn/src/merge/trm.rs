//! The closed-form pieces of TRM's merge (trajectory-regularised merging): the trajectory subspace and the
//! logit gradients of its three objectives. The optimisation that uses them is [`crate::method::Trm`].

use edgelearn_core::error::{Error, Result, shape_err};

/// Directions shorter than this share of the longest one are dropped from the trajectory basis (numerically
/// dependent on the earlier ones).
pub const TRM_BASIS_RTOL: f64 = 1e-6;

/// An orthonormal basis of `span{d_1, …, d_K}` by modified Gram–Schmidt in f64, in the given order:
///
/// `b_k = r_k / ‖r_k‖`, `r_k = d_k − Σ_{j<k} ⟨d_k, b_j⟩ b_j`,
///
/// dropping `d_k` when `‖r_k‖ ≤ TRM_BASIS_RTOL · max_j ‖d_j‖` (it adds no new direction). Returns the basis vectors
/// (each of the common length).
pub fn trajectory_basis(dirs: &[Vec<f32>]) -> Result<Vec<Vec<f64>>> {
    let Some(n) = dirs.first().map(Vec::len) else { return Ok(Vec::new()) };
    let mut longest = 0.0f64;
    for d in dirs {
        if d.len() != n {
            return Err(shape_err("TRM trajectory direction", n, d.len()));
        }
        if d.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("TRM trajectory direction".into()));
        }
        longest = longest.max(d.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt());
    }
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for d in dirs {
        let mut r: Vec<f64> = d.iter().map(|&v| f64::from(v)).collect();
        for b in &basis {
            let dot: f64 = r.iter().zip(b).map(|(x, y)| x * y).sum();
            r.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > TRM_BASIS_RTOL * longest && norm > 0.0 {
            r.iter_mut().for_each(|x| *x /= norm);
            basis.push(r);
        }
    }
    Ok(basis)
}

/// The coordinates of a parameter-space vector in the basis: `c_k = ⟨b_k, v⟩` (the gradient in the subspace,
/// `∇_c L = Bᵀ ∇_θ L`, and the coordinates of a point's offset).
pub fn coordinates(basis: &[Vec<f64>], v: &[f32]) -> Result<Vec<f64>> {
    basis
        .iter()
        .map(|b| {
            if b.len() != v.len() {
                return Err(shape_err("TRM coordinates", b.len(), v.len()));
            }
            Ok(b.iter().zip(v).map(|(x, &y)| x * f64::from(y)).sum())
        })
        .collect()
}

/// The point `θ(c) = θ_{t−1} + B c`.
pub fn point(theta_prev: &[f32], basis: &[Vec<f64>], c: &[f64]) -> Result<Vec<f32>> {
    if basis.len() != c.len() {
        return Err(shape_err("TRM coefficients", basis.len(), c.len()));
    }
    let mut out: Vec<f64> = theta_prev.iter().map(|&v| f64::from(v)).collect();
    for (b, &ck) in basis.iter().zip(c) {
        if b.len() != out.len() {
            return Err(shape_err("TRM basis vector", out.len(), b.len()));
        }
        out.iter_mut().zip(b).for_each(|(o, x)| *o += ck * x);
    }
    Ok(out.into_iter().map(|v| v as f32).collect())
}

fn softmax(z: &[f32]) -> Vec<f64> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = z.iter().map(|&v| f64::from(v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Prediction consistency, per sample: the gradient of `KL(p_old ‖ softmax(z))` with respect to the logits `z`,
/// `∂/∂z = softmax(z) − p_old`, with `p_old` the previous merged model's prediction on the same input.
pub fn consistency_logit_grad(z: &[f32], p_old: &[f32]) -> Result<Vec<f32>> {
    if z.len() != p_old.len() {
        return Err(shape_err("TRM consistency", z.len(), p_old.len()));
    }
    Ok(softmax(z).iter().zip(p_old).map(|(p, &q)| (p - f64::from(q)) as f32).collect())
}

/// Gradient responsiveness, per sample: the gradient of the negative predictive entropy `−H(softmax(z))` with
/// respect to `z`, `∂(−H)/∂z_i = p_i (log p_i + H)`. Minimising `−H` keeps the merged model's softmax away from
/// saturation, where the cross-entropy gradient `p − y` of the next task's first steps would vanish.
pub fn responsiveness_logit_grad(z: &[f32]) -> Vec<f32> {
    let p = softmax(z);
    let h: f64 = -p.iter().filter(|&&v| v > 0.0).map(|&v| v * v.ln()).sum::<f64>();
    p.iter().map(|&v| if v > 0.0 { (v * (v.ln() + h)) as f32 } else { 0.0 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_is_orthonormal_and_drops_dependent_directions() {
        // d₂ = 2 d₁ adds nothing; d₃ = [1, 0, 2] − its part along b₁ = [0.6, 0.8, 0] (0.6) = [0.64, −0.48, 2].
        let b = trajectory_basis(&[vec![3.0, 4.0, 0.0], vec![6.0, 8.0, 0.0], vec![1.0, 0.0, 2.0]]).unwrap();
        assert_eq!(b.len(), 2);
        for (x, e) in b[0].iter().zip([0.6, 0.8, 0.0]) {
            assert!((x - e).abs() < 1e-12);
        }
        let n = (0.64f64 * 0.64 + 0.48 * 0.48 + 4.0).sqrt();
        for (x, e) in b[1].iter().zip([0.64 / n, -0.48 / n, 2.0 / n]) {
            assert!((x - e).abs() < 1e-12, "{:?}", b[1]);
        }
        let c = coordinates(&b, &[3.0, 4.0, 0.0]).unwrap();
        assert!((c[0] - 5.0).abs() < 1e-12 && c[1].abs() < 1e-12);
        assert_eq!(point(&[1.0, 1.0, 1.0], &b, &[5.0, 0.0]).unwrap(), vec![4.0, 5.0, 1.0]);
        assert!(trajectory_basis(&[vec![1.0], vec![1.0, 2.0]]).is_err());
    }

    #[test]
    fn logit_gradients_by_hand() {
        // z = 0: p = [½, ½]; p_old = [0.8, 0.2] → p − p_old = [−0.3, 0.3]; −H is flat at the uniform point.
        let g = consistency_logit_grad(&[0.0, 0.0], &[0.8, 0.2]).unwrap();
        assert!((g[0] + 0.3).abs() < 1e-6 && (g[1] - 0.3).abs() < 1e-6);
        assert!(responsiveness_logit_grad(&[0.0, 0.0]).iter().all(|v| v.abs() < 1e-7));
        // z = [ln 3, 0]: p = [¾, ¼], H = 0.562335; ∂/∂z₀ = ¾(ln ¾ + H) = 0.205940 pushes z₀ down (toward uniform).
        let g = responsiveness_logit_grad(&[3f32.ln(), 0.0]);
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((f64::from(g[0]) - 0.75 * (0.75f64.ln() + h)).abs() < 1e-6 && g[0] > 0.2, "{g:?}");
        assert!((g[0] + g[1]).abs() < 1e-6);
        assert!(consistency_logit_grad(&[0.0], &[0.5, 0.5]).is_err());
    }
}
