//! Holistic continual merging's closed-form steps: the second-moment-weighted task-vector merge and the
//! post-merge representation correction.

use edgelearn_core::error::{Error, Result, shape_err};

/// Added to every second-moment weight, so that parameters no task moved get equal weights instead of 0/0.
pub const HOLISTIC_V_EPS: f64 = 1e-16;

/// The second-moment-weighted merge of the running task vector `τ*_{t−1}` with the new task vector `τ_t`,
/// per parameter `p`, with Adam's second moments as a diagonal Fisher proxy:
///
/// `τ*_t,p = (V_{t−1,p} τ*_{t−1,p} + v_t,p τ_t,p) / (V_{t−1,p} + v_t,p)`, `V_t = V_{t−1} + v_t`,
///
/// where `V_{t−1} = Σ_{k<t} v_k` (one vector, whatever the number of tasks) and every weight gets
/// [`HOLISTIC_V_EPS`] added. Returns `τ*_t`; `v_acc` becomes `V_t`.
pub fn second_moment_merge(tau_merged: &[f32], v_acc: &mut [f32], tau_new: &[f32], v_new: &[f32]) -> Result<Vec<f32>> {
    let n = tau_merged.len();
    for (name, len) in [("V", v_acc.len()), ("τ_t", tau_new.len()), ("v_t", v_new.len())] {
        if len != n {
            return Err(shape_err(&format!("second-moment merge {name}"), n, len));
        }
    }
    if let Some(p) = v_acc.iter().chain(v_new).position(|v| !v.is_finite() || *v < 0.0) {
        return Err(Error::NonFinite(format!("second-moment merge: entry {p} negative or not finite")));
    }
    let out = (0..n)
        .map(|p| {
            let (wo, wn) = (f64::from(v_acc[p]) + HOLISTIC_V_EPS, f64::from(v_new[p]) + HOLISTIC_V_EPS);
            ((wo * f64::from(tau_merged[p]) + wn * f64::from(tau_new[p])) / (wo + wn)) as f32
        })
        .collect();
    v_acc.iter_mut().zip(v_new).for_each(|(a, b)| *a += b);
    Ok(out)
}

/// Bounds of a correction scale (a unit the merge nearly silenced is not blown up).
pub const CORRECTION_RANGE: (f32, f32) = (0.5, 2.0);

/// The post-merge representation correction of one feature `j`: the least-squares scale that maps the merged
/// model's feature onto the task model's over the current inputs,
///
/// `s_j = Σ_x h_task,j(x) h_merged,j(x) / Σ_x h_merged,j(x)²`, clipped to [`CORRECTION_RANGE`],
///
/// (1 when the merged feature is identically 0). `dot` and `sq` are the two sums per feature.
pub fn correction_scales(dot: &[f64], sq: &[f64]) -> Result<Vec<f32>> {
    if dot.len() != sq.len() {
        return Err(shape_err("representation correction", dot.len(), sq.len()));
    }
    Ok(dot
        .iter()
        .zip(sq)
        .map(|(&d, &s)| if s > 0.0 { ((d / s) as f32).clamp(CORRECTION_RANGE.0, CORRECTION_RANGE.1) } else { 1.0 })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_weights_by_second_moments_and_accumulates_them() {
        // p0: (1·2 + 3·6)/4 = 5; p1: neither moved (v = 0) → mean of 0 and 4 = 2.
        let mut v = vec![1.0f32, 0.0];
        let m = second_moment_merge(&[2.0, 0.0], &mut v, &[6.0, 4.0], &[3.0, 0.0]).unwrap();
        assert!((m[0] - 5.0).abs() < 1e-6 && (m[1] - 2.0).abs() < 1e-6, "{m:?}");
        assert_eq!(v, vec![4.0, 0.0]);
        assert!(second_moment_merge(&[0.0], &mut [-1.0], &[1.0], &[1.0]).is_err());
        assert!(second_moment_merge(&[0.0], &mut [1.0], &[1.0, 2.0], &[1.0]).is_err());
    }

    #[test]
    fn correction_is_the_clipped_least_squares_scale() {
        // h_task = [2, 4], h_merged = [1, 2] → s = (2 + 8)/(1 + 4) = 2; a tenfold one clips at 2; 0.75 stays.
        let s = correction_scales(&[10.0, 50.0, 3.0, 1.0], &[5.0, 5.0, 4.0, 0.0]).unwrap();
        assert_eq!(s, vec![2.0, 2.0, 0.75, 1.0]);
    }
}
