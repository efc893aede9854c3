//! P&M, perturb-and-merge: the closed-form merge weight from per-task optima and Fishers.

use edgelearn_core::error::{Error, Result, shape_err};

/// P&M's merge coefficient for task `t`, with `Δ = θ̂_t − θ_{t−1}` (θ_{t−1} the previous merged model):
///
/// `α* = Σ_p [F_t,p Δ_p² + Δ_p (S_p − F_old,p θ_{t−1,p})] / Σ_p (F_old,p + F_t,p) Δ_p²`,
///
/// the minimiser over α of the quadratic (diagonal-Fisher) loss `Σ_{k≤t} Σ_p F_k,p (θ_{t−1,p} + αΔ_p − θ̂_k,p)²`,
/// where `F_old = Σ_{k<t} F_k` and `S = Σ_{k<t} F_k ⊙ θ̂_k` summarise the old optima in two vectors. When every old
/// optimum sits at `θ_{t−1}` (`S = F_old ⊙ θ_{t−1}`) it reduces to BECAME's ratio
/// `Σ F_t Δ² / Σ (F_old + F_t) Δ²`. Clamped to `[0, 1]`; 0 when `Δ = 0`. Accumulates in f64.
pub fn pam_alpha(f_cur: &[f32], f_old: &[f32], s_old: &[f64], theta_prev: &[f32], theta_hat: &[f32]) -> Result<f64> {
    let n = theta_prev.len();
    for (name, v) in [("F_t", f_cur.len()), ("F_old", f_old.len()), ("S", s_old.len()), ("θ̂", theta_hat.len())] {
        if v != n {
            return Err(shape_err(&format!("P&M α: {name}"), n, v));
        }
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for p in 0..n {
        let (fc, fo) = (f64::from(f_cur[p]), f64::from(f_old[p]));
        if fc < 0.0 || fo < 0.0 || !fc.is_finite() || !fo.is_finite() {
            return Err(Error::NonFinite(format!("P&M α: Fisher entry {p} is negative or not finite")));
        }
        let prev = f64::from(theta_prev[p]);
        let d = f64::from(theta_hat[p]) - prev;
        num += fc * d * d + d * (s_old[p] - fo * prev);
        den += (fc + fo) * d * d;
    }
    if !num.is_finite() || !den.is_finite() {
        return Err(Error::NonFinite("P&M α".into()));
    }
    Ok(if den > 0.0 { (num / den).clamp(0.0, 1.0) } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::became_alpha;

    #[test]
    fn hand_example_and_reduction_to_became() {
        // One parameter: old optimum θ̂₁ = 2 with F₁ = 1, previous merged θ₁ = 0, new θ̂₂ = 4 with F₂ = 3.
        // Minimise 1·(4α − 2)² + 3·(4α − 4)²: α = (1·2·4 + 3·4·4)/((1 + 3)·16) = 56/64.
        let a = pam_alpha(&[3.0], &[1.0], &[2.0], &[0.0], &[4.0]).unwrap();
        assert!((a - 56.0 / 64.0).abs() < 1e-12, "{a}");
        // Old optima at θ_{t−1}: S = F_old ⊙ θ_{t−1} → BECAME's ratio.
        let (fc, fo, prev, hat) = ([1.0f32, 3.0, 5.0], [1.0f32, 1.0, 9.0], [0.5f32, -1.0, 1.0], [1.0f32, 2.0, 1.0]);
        let s: Vec<f64> = fo.iter().zip(&prev).map(|(&f, &t)| f64::from(f) * f64::from(t)).collect();
        let a = pam_alpha(&fc, &fo, &s, &prev, &hat).unwrap();
        let b = became_alpha(&fc, &fo, &prev, &hat).unwrap();
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        assert_eq!(pam_alpha(&[1.0], &[1.0], &[0.0], &[1.0], &[1.0]).unwrap(), 0.0);
        assert!(pam_alpha(&[1.0], &[1.0], &[0.0, 1.0], &[1.0], &[1.0]).is_err());
    }
}
