//! Per-parameter Fisher-weighted averages: CoFiMA and IMM's mode merge.

use edgelearn_core::error::{Error, Result, shape_err};

/// CoFiMA's lower clip on Fisher entries, so that a parameter no task uses still gets a defined weight.
pub const COFIMA_FISHER_MIN: f32 = 1e-4;

fn check_len(context: &str, n: usize, others: &[&[f32]]) -> Result<()> {
    for v in others {
        if v.len() != n {
            return Err(shape_err(context, n, v.len()));
        }
    }
    Ok(())
}

fn check_fisher(context: &str, f: &[f32]) -> Result<()> {
    match f.iter().position(|v| !v.is_finite() || *v < 0.0) {
        Some(i) => Err(Error::NonFinite(format!("{context}: Fisher entry {i} is negative or not finite"))),
        None => Ok(()),
    }
}

/// CoFiMA, continual Fisher-weighted model averaging (Marouf et al., 2024), per parameter `p`:
///
/// `θ_t,p = ((1 − a) F̃_{t−1,p} θ_{t−1,p} + a F̃_t,p θ̂_t,p) / ((1 − a) F̃_{t−1,p} + a F̃_t,p)`,
/// `F̃ = max(F, 1e-4)`,
///
/// where `F_{t−1}` is the previous task's Fisher only (not a sum over tasks) and `F_t` the new task's, at the
/// fine-tuned model. `a ∈ (0, 1)`; with equal Fishers it is CoMA.
pub fn cofima(theta_old: &[f32], f_old: &[f32], theta_new: &[f32], f_new: &[f32], a: f64) -> Result<Vec<f32>> {
    let n = theta_old.len();
    check_len("CoFiMA", n, &[f_old, theta_new, f_new])?;
    check_fisher("CoFiMA F_old", f_old)?;
    check_fisher("CoFiMA F_new", f_new)?;
    if !(a > 0.0 && a < 1.0) {
        return Err(Error::Config(format!("CoFiMA weight {a} outside (0, 1)")));
    }
    Ok((0..n)
        .map(|p| {
            let wo = (1.0 - a) * f64::from(f_old[p].max(COFIMA_FISHER_MIN));
            let wn = a * f64::from(f_new[p].max(COFIMA_FISHER_MIN));
            ((wo * f64::from(theta_old[p]) + wn * f64::from(theta_new[p])) / (wo + wn)) as f32
        })
        .collect())
}

/// IMM's precision floor: added to every Fisher entry so that parameters no task uses get equal weights
/// (the mean merge) instead of 0/0.
pub const IMM_FISHER_EPS: f32 = 1e-8;

/// Running sums for mode-IMM (Lee et al., 2017): `S = Σ_k F_k ⊙ θ̂_k` and `P = Σ_k F_k` (with the floor
/// [`IMM_FISHER_EPS`] added to each `F_k`), so that the merge of every task so far costs two vectors, not one
/// model per task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImmModeSums {
    /// `Σ_k (F_k + ε) θ̂_k`, f64 for exact accumulation over many tasks.
    pub weighted: Vec<f64>,
    /// `Σ_k (F_k + ε)`.
    pub precision: Vec<f64>,
}

impl ImmModeSums {
    /// Add task `k`'s optimum `θ̂_k` with its Fisher `F_k`.
    pub fn add(&mut self, theta: &[f32], fisher: &[f32]) -> Result<()> {
        check_len("mode-IMM", theta.len(), &[fisher])?;
        check_fisher("mode-IMM", fisher)?;
        if self.weighted.is_empty() {
            self.weighted = vec![0.0; theta.len()];
            self.precision = vec![0.0; theta.len()];
        }
        if self.weighted.len() != theta.len() {
            return Err(shape_err("mode-IMM sums", self.weighted.len(), theta.len()));
        }
        for p in 0..theta.len() {
            let f = f64::from(fisher[p]) + f64::from(IMM_FISHER_EPS);
            self.weighted[p] += f * f64::from(theta[p]);
            self.precision[p] += f;
        }
        Ok(())
    }

    /// Mode-IMM's merge, the mode of the product of the tasks' Laplace posteriors:
    ///
    /// `θ*_p = Σ_k F_k,p θ̂_k,p / Σ_k F_k,p`.
    pub fn merge(&self) -> Result<Vec<f32>> {
        if self.weighted.is_empty() {
            return Err(Error::Empty("mode-IMM: no task added".into()));
        }
        Ok(self.weighted.iter().zip(&self.precision).map(|(s, p)| (s / p) as f32).collect())
    }

    /// Bytes the two sums take as stored (f64 each).
    pub fn bytes(&self) -> usize {
        8 * (self.weighted.len() + self.precision.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cofima_hand_example() {
        // p0: weights 0.5·1 and 0.5·3 → (1·2 + 3·6)/4 = 5. p1: both clipped to 1e-4 → plain mean 1.
        let m = cofima(&[2.0, 0.0], &[1.0, 0.0], &[6.0, 2.0], &[3.0, 0.0], 0.5).unwrap();
        assert!((m[0] - 5.0).abs() < 1e-6 && (m[1] - 1.0).abs() < 1e-6, "{m:?}");
        // a = 0.75 with Fishers 1 and 1 → CoMA: 0.25·2 + 0.75·6 = 5.
        let m = cofima(&[2.0], &[1.0], &[6.0], &[1.0], 0.75).unwrap();
        assert!((m[0] - 5.0).abs() < 1e-6);
        // The clip is at 1e-4, not 0: F_new = 1e-6 counts as 1e-4 → (1e-4·0 + 1e-4·4)/(2e-4) = 2 … with F_old = 0.
        let m = cofima(&[0.0], &[0.0], &[4.0], &[1e-6], 0.5).unwrap();
        assert!((m[0] - 2.0).abs() < 1e-5, "{m:?}");
        assert!(cofima(&[0.0], &[-1.0], &[4.0], &[1.0], 0.5).is_err());
        assert!(cofima(&[0.0], &[1.0], &[4.0], &[1.0], 1.0).is_err());
    }

    #[test]
    fn mode_imm_hand_example() {
        let mut s = ImmModeSums::default();
        s.add(&[0.0, 1.0], &[1.0, 0.0]).unwrap();
        s.add(&[3.0, 5.0], &[2.0, 0.0]).unwrap();
        let m = s.merge().unwrap();
        // p0: (1·0 + 2·3)/3 = 2; p1: no Fisher → equal weights → mean 3.
        assert!((m[0] - 2.0).abs() < 1e-6 && (m[1] - 3.0).abs() < 1e-6, "{m:?}");
        assert_eq!(s.bytes(), 32);
        assert!(s.add(&[0.0], &[1.0]).is_err());
        assert!(ImmModeSums::default().merge().is_err());
    }
}
