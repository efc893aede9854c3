//! MagMax (Marczak et al., ECCV 2024): per parameter, the task-vector entry of largest magnitude.

use edgelearn_core::error::{Error, Result, shape_err};

/// MagMax's default scaling of the merged task vector.
pub const MAGMAX_LAMBDA: f64 = 0.5;

/// Fold one more task vector `τ_t = θ̂_t − θ₀` into the running max-magnitude vector, per parameter:
///
/// `τ_max,p ← τ_t,p` if `|τ_t,p| > |τ_max,p|`, else unchanged (ties keep the earlier entry),
///
/// so that after `t` tasks `τ_max,p = τ_k,p` with `k = argmax_k |τ_k,p|`: one vector, whatever the number of tasks.
pub fn fold_max_magnitude(tau_max: &mut [f32], theta0: &[f32], theta_new: &[f32]) -> Result<()> {
    let n = tau_max.len();
    for (name, v) in [("θ₀", theta0.len()), ("θ̂", theta_new.len())] {
        if v != n {
            return Err(shape_err(&format!("MagMax {name}"), n, v));
        }
    }
    for p in 0..n {
        let tau = theta_new[p] - theta0[p];
        if tau.abs() > tau_max[p].abs() {
            tau_max[p] = tau;
        }
    }
    Ok(())
}

/// MagMax's merged model: `θ* = θ₀ + λ τ_max` (λ = [`MAGMAX_LAMBDA`] in the paper; the tunable variant picks λ).
pub fn magmax_merge(theta0: &[f32], tau_max: &[f32], lambda: f64) -> Result<Vec<f32>> {
    if theta0.len() != tau_max.len() {
        return Err(shape_err("MagMax τ_max", theta0.len(), tau_max.len()));
    }
    if !lambda.is_finite() || lambda < 0.0 {
        return Err(Error::Config(format!("MagMax λ {lambda} must be finite and ≥ 0")));
    }
    Ok(theta0.iter().zip(tau_max).map(|(&b, &t)| (f64::from(b) + lambda * f64::from(t)) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_largest_magnitude_with_sign() {
        let theta0 = [1.0f32, 1.0, 1.0];
        let mut tau = vec![0.0f32; 3];
        fold_max_magnitude(&mut tau, &theta0, &[3.0, 0.5, 1.0]).unwrap(); // τ₁ = [2, −0.5, 0]
        fold_max_magnitude(&mut tau, &theta0, &[0.0, 2.0, -2.0]).unwrap(); // τ₂ = [−1, 1, −3]
        assert_eq!(tau, vec![2.0, 1.0, -3.0]);
        // Tie: |−2| = |2| keeps the earlier +2.
        fold_max_magnitude(&mut tau, &theta0, &[-1.0, 1.0, 1.0]).unwrap();
        assert_eq!(tau[0], 2.0);
        assert_eq!(magmax_merge(&theta0, &tau, 0.5).unwrap(), vec![2.0, 1.5, -0.5]);
        assert!(magmax_merge(&theta0, &tau, -1.0).is_err());
        assert!(fold_max_magnitude(&mut tau, &theta0[..2], &[0.0; 3]).is_err());
    }
}
