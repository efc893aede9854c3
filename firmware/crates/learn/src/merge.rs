//! Closed-form merges of flat parameter vectors.

use edgelearn_core::error::{Error, Result, shape_err};

#[cfg(feature = "baselines")]
pub mod average;
pub mod fisher_weighted;
#[cfg(feature = "baselines")]
pub mod holistic;
#[cfg(feature = "baselines")]
pub mod magmax;
#[cfg(feature = "baselines")]
pub mod pam;
#[cfg(feature = "baselines")]
pub mod trm;

/// BECAME's merge coefficient, one scalar for the whole model:
///
/// `α = Σₚ F_cur,p Δₚ² / Σₚ (F_cur,p + F_old,p) Δₚ²`, `Δ = θ̂ − θ_GP`,
///
/// summed over every parameter (heads included); `α = 0` when the denominator is 0 (e.g. `Δ = 0`).
/// Accumulates in f64. The result lies in `[0, 1]` for non-negative Fishers.
pub fn became_alpha(f_cur: &[f32], f_old: &[f32], theta_gp: &[f32], theta_hat: &[f32]) -> Result<f64> {
    let (num, den) = became_alpha_terms(f_cur, f_old, theta_gp, theta_hat)?;
    alpha_from_terms(num, den)
}

/// The numerator `Σₚ F_cur,p Δₚ²` and denominator `Σₚ (F_cur,p + F_old,p) Δₚ²` of [`became_alpha`] over one slice
/// of the parameters, in f64 (a model held in several buffers sums them, then calls [`alpha_from_terms`]).
pub(crate) fn became_alpha_terms(
    f_cur: &[f32],
    f_old: &[f32],
    theta_gp: &[f32],
    theta_hat: &[f32],
) -> Result<(f64, f64)> {
    let n = theta_gp.len();
    for (name, v) in [("F_cur", f_cur.len()), ("F_old", f_old.len()), ("θ̂", theta_hat.len())] {
        if v != n {
            return Err(shape_err(&format!("BECAME α: {name}"), n, v));
        }
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for i in 0..n {
        let (fc, fo) = (f64::from(f_cur[i]), f64::from(f_old[i]));
        if fc < 0.0 || fo < 0.0 || !fc.is_finite() || !fo.is_finite() {
            return Err(Error::NonFinite(format!("Fisher entry {i} is negative or not finite")));
        }
        let d = f64::from(theta_hat[i]) - f64::from(theta_gp[i]);
        let d2 = d * d;
        num += fc * d2;
        den += (fc + fo) * d2;
    }
    Ok((num, den))
}

/// `α = num / den` clamped to `[0, 1]`, `0` when `den = 0`; an error when either sum is not finite.
pub(crate) fn alpha_from_terms(num: f64, den: f64) -> Result<f64> {
    if !den.is_finite() || !num.is_finite() {
        return Err(Error::NonFinite("BECAME α".into()));
    }
    Ok(if den > 0.0 { (num / den).clamp(0.0, 1.0) } else { 0.0 })
}

/// Linear interpolation of two parameter vectors: `θ* = (1 − α) θ_a + α θ_b`.
pub fn interpolate(theta_a: &[f32], theta_b: &[f32], alpha: f64) -> Result<Vec<f32>> {
    if theta_a.len() != theta_b.len() {
        return Err(shape_err("interpolate", theta_a.len(), theta_b.len()));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::Config(format!("interpolation weight {alpha} outside [0, 1]")));
    }
    Ok(theta_a
        .iter()
        .zip(theta_b)
        .map(|(&a, &b)| ((1.0 - alpha) * f64::from(a) + alpha * f64::from(b)) as f32)
        .collect())
}

/// `acc += x`, element-wise (Fisher accumulation `F_old ← F_old + F`).
pub fn add_assign(acc: &mut [f32], x: &[f32]) -> Result<()> {
    if acc.len() != x.len() {
        return Err(shape_err("add_assign", acc.len(), x.len()));
    }
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_matches_hand_computation() {
        // Δ = [1, 2, 0]; num = 1·1 + 3·4 = 13; den = (1+1)·1 + (3+1)·4 = 18.
        let a = became_alpha(&[1.0, 3.0, 5.0], &[1.0, 1.0, 9.0], &[0.0, 0.0, 1.0], &[1.0, 2.0, 1.0]).unwrap();
        assert!((a - 13.0 / 18.0).abs() < 1e-12, "{a}");
    }

    #[test]
    fn alpha_is_zero_without_change_and_in_unit_interval() {
        assert_eq!(became_alpha(&[1.0, 2.0], &[3.0, 4.0], &[0.5, 0.5], &[0.5, 0.5]).unwrap(), 0.0);
        assert_eq!(became_alpha(&[0.0], &[0.0], &[0.0], &[1.0]).unwrap(), 0.0);
        assert_eq!(became_alpha(&[2.0], &[0.0], &[0.0], &[1.0]).unwrap(), 1.0);
        assert_eq!(became_alpha(&[0.0], &[2.0], &[0.0], &[1.0]).unwrap(), 0.0);
        assert!(became_alpha(&[-1.0], &[0.0], &[0.0], &[1.0]).is_err());
        assert!(became_alpha(&[1.0], &[0.0, 1.0], &[0.0], &[1.0]).is_err());
    }

    #[test]
    fn alpha_is_one_global_scalar_not_per_layer() {
        // Two "layers": per-layer ratios would be 1/2 and 9/10; the global one mixes them by Δ²-weighted Fisher.
        let a = became_alpha(&[1.0, 9.0], &[1.0, 1.0], &[0.0, 0.0], &[1.0, 1.0]).unwrap();
        assert!((a - 10.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn interpolation_endpoints() {
        let a = [1.0, -2.0];
        let b = [3.0, 4.0];
        assert_eq!(interpolate(&a, &b, 0.0).unwrap(), a.to_vec());
        assert_eq!(interpolate(&a, &b, 1.0).unwrap(), b.to_vec());
        assert_eq!(interpolate(&a, &b, 0.5).unwrap(), vec![2.0, 1.0]);
        assert!(interpolate(&a, &b, 1.5).is_err());
    }
}
