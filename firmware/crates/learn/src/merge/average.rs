//! Plain weight averaging: 1/t running averages and CoMA's constant-weight average.

use super::interpolate;
use edgelearn_core::error::{Error, Result};

/// 1/t averaging: the running mean of the task models,
///
/// `θ̄_t = ((t − 1)/t) θ̄_{t−1} + (1/t) θ̂_t`,
///
/// so that after `t` tasks `θ̄_t = (1/t) Σ_k θ̂_k` when every `θ̂_k` is averaged in once (`t ≥ 1`; at `t = 1` the
/// result is `θ̂_1`).
pub fn running_mean(theta_avg: &[f32], theta_new: &[f32], t: usize) -> Result<Vec<f32>> {
    if t == 0 {
        return Err(Error::Config("1/t averaging needs t ≥ 1".into()));
    }
    interpolate(theta_avg, theta_new, 1.0 / t as f64)
}

/// CoMA, continual model averaging (Marouf et al., 2023): a fixed-weight exponential average of the previous
/// merged model and the model fine-tuned from it on the new task,
///
/// `θ_t = (1 − a) θ_{t−1} + a θ̂_t`, `a ∈ [0, 1]`.
pub fn coma(theta_old: &[f32], theta_new: &[f32], a: f64) -> Result<Vec<f32>> {
    interpolate(theta_old, theta_new, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_mean_of_three_models_is_their_mean() {
        let (a, b, c) = ([3.0f32, -3.0], [0.0f32, 6.0], [6.0f32, 0.0]);
        let m1 = running_mean(&[0.0, 0.0], &a, 1).unwrap();
        assert_eq!(m1, a.to_vec());
        let m2 = running_mean(&m1, &b, 2).unwrap();
        assert_eq!(m2, vec![1.5, 1.5]);
        let m3 = running_mean(&m2, &c, 3).unwrap();
        assert_eq!(m3, vec![3.0, 1.0]);
        assert!(running_mean(&m3, &c, 0).is_err());
    }

    #[test]
    fn coma_weights_the_new_model_by_a() {
        // (1 − 0.25)·[4, 0] + 0.25·[0, 8] = [3, 2].
        assert_eq!(coma(&[4.0, 0.0], &[0.0, 8.0], 0.25).unwrap(), vec![3.0, 2.0]);
        assert!(coma(&[1.0], &[1.0, 2.0], 0.5).is_err());
    }
}
