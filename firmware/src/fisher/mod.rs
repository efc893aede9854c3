//! Diagonal Fisher information over the flat parameter view, and the compact formats the accumulated Fisher is
//! stored in between tasks ([`compact`]).

use crate::data::TaskData;
use crate::error::{Error, Result};
use crate::nn::{Mode, Model, argmax_rows, softmax_cross_entropy};

pub mod compact;

pub use compact::{CompactFisher, FisherFormat};

/// Batch size of the Fisher estimator (fixed so that every task's Fisher is estimated the same way).
pub const FISHER_BATCH: usize = 64;

/// Diagonal Fisher at the model's current parameters over the task's whole training split:
///
/// `F = (1/N) Σ_b |b| · (∇θ L_b)²`, where `L_b` is the mean cross-entropy of batch `b` (64 samples, in order)
/// against the model's own predictions `ŷ = argmax f_θ(x)`, with the model in training mode.
///
/// This is exactly the estimator of the BECAME code; it must be the same for every task or α is biased.
/// Gradients are left zeroed; parameters are unchanged.
pub fn diagonal_fisher(model: &mut Model, task: &TaskData<'_>) -> Result<Vec<f32>> {
    let data = task.train;
    if data.is_empty() {
        return Err(Error::Empty(format!("Fisher of task {}: no training samples", task.task_id)));
    }
    let mut fisher = vec![0.0f64; model.num_params()];
    for start in (0..data.len()).step_by(FISHER_BATCH) {
        let end = (start + FISHER_BATCH).min(data.len());
        let (x, _) = data.slice(start, end);
        model.zero_grad();
        let logits = model.forward(&x, task.head, Mode::Train)?;
        let pseudo = argmax_rows(&logits.view());
        let (_, grad) = softmax_cross_entropy(&logits.view(), &pseudo)?;
        model.backward(grad, task.head)?;
        let weight = (end - start) as f64;
        let mut off = 0;
        for p in model.params() {
            let acc = &mut fisher[off..off + p.len()];
            // Contiguous slices when the gradient is in standard layout (always, by construction); the IxDyn
            // element iterator is the fallback. Same f64 sums either way.
            match p.grad.as_slice() {
                Some(gs) => acc.iter_mut().zip(gs).for_each(|(f, &g)| *f += f64::from(g) * f64::from(g) * weight),
                None => {
                    acc.iter_mut().zip(p.grad.iter()).for_each(|(f, &g)| *f += f64::from(g) * f64::from(g) * weight)
                }
            }
            off += p.len();
        }
    }
    model.zero_grad();
    model.clear_cache();
    let n = data.len() as f64;
    Ok(fisher.into_iter().map(|f| (f / n) as f32).collect())
}
