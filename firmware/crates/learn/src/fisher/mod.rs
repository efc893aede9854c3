//! Diagonal Fisher information over the flat parameter view, and the compact formats the accumulated Fisher is
//! stored in between tasks ([`compact`]).

use edgelearn_core::data::TaskData;
use edgelearn_core::error::{Error, Result};

use rayon::prelude::*;

use edgelearn_core::nn::{Layer, Mode, Model, argmax_rows, softmax_cross_entropy};
use edgelearn_core::threads::threads;

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
///
/// With [`edgelearn_core::threads::threads`] `T > 1` the batches are computed `T` at a time on copies of the model (the
/// shared pool of [`edgelearn_core::threads`]) and their terms `|b|·(∇θ L_b)²` are added to the sum **in batch order**, the order of the one-thread
/// loop, so the result is bit-for-bit the same for any `T`. Batches are independent (batch norms use batch
/// statistics only); a model with an active dropout layer draws its masks from one stream in batch order and is
/// always estimated on one thread. The `T` copies and `T` f64 term vectors are extra workspace.
pub fn diagonal_fisher(model: &mut Model, task: &TaskData<'_>) -> Result<Vec<f32>> {
    let data = task.train;
    if data.is_empty() {
        return Err(Error::Empty(format!("Fisher of task {}: no training samples", task.task_id)));
    }
    let batches: Vec<(usize, usize)> =
        (0..data.len()).step_by(FISHER_BATCH).map(|s| (s, (s + FISHER_BATCH).min(data.len()))).collect();
    let stochastic = model.trunk.iter().any(|l| matches!(l, Layer::Dropout(d) if d.p() > 0.0));
    let threads = threads().min(batches.len());
    let mut fisher = vec![0.0f64; model.num_params()];
    if threads <= 1 || stochastic {
        for &(start, end) in &batches {
            add_batch_term(model, task, start, end, &mut fisher)?;
        }
    } else {
        let pool = edgelearn_core::threads::pool(threads)?;
        let mut copies: Vec<Model> = (0..threads).map(|_| model.clone()).collect();
        for wave in batches.chunks(threads) {
            let terms: Vec<Result<Vec<f64>>> = pool.install(|| {
                copies
                    .par_iter_mut()
                    .zip(wave.par_iter())
                    .map(|(m, &(start, end))| {
                        let mut term = vec![0.0f64; m.num_params()];
                        add_batch_term(m, task, start, end, &mut term)?;
                        Ok(term)
                    })
                    .collect()
            });
            for term in terms {
                fisher.iter_mut().zip(term?).for_each(|(f, t)| *f += t);
            }
        }
    }
    model.zero_grad();
    model.clear_cache();
    let n = data.len() as f64;
    Ok(fisher.into_iter().map(|f| (f / n) as f32).collect())
}

/// `acc += |b| · (∇θ L_b)²` for the batch `start..end` (`acc` is 0 on entry in the threaded path, so its entries
/// are exactly the terms the one-thread loop adds).
fn add_batch_term(model: &mut Model, task: &TaskData<'_>, start: usize, end: usize, acc: &mut [f64]) -> Result<()> {
    let (x, _) = task.train.slice(start, end);
    model.zero_grad();
    let logits = model.forward(&x, task.head, Mode::Train)?;
    let pseudo = argmax_rows(&logits.view());
    let (_, grad) = softmax_cross_entropy(&logits.view(), &pseudo)?;
    model.backward(grad, task.head)?;
    let weight = (end - start) as f64;
    let mut off = 0;
    for p in model.params() {
        let acc = &mut acc[off..off + p.len()];
        // Contiguous slices when the gradient is in standard layout (always, by construction); the IxDyn
        // element iterator is the fallback. Same f64 sums either way.
        match p.grad.as_slice() {
            Some(gs) => acc.iter_mut().zip(gs).for_each(|(f, &g)| *f += f64::from(g) * f64::from(g) * weight),
            None => acc.iter_mut().zip(p.grad.iter()).for_each(|(f, &g)| *f += f64::from(g) * f64::from(g) * weight),
        }
        off += p.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::Rng;

    use super::*;
    use edgelearn_core::data::Samples;
    use edgelearn_core::nn::zoo;

    /// The thread count changes nothing, bit for bit, on a ragged last batch too (the one-thread loop is the
    /// reference). The thread setting is process-wide; other tests computing a Fisher meanwhile get the same
    /// values whatever it is, which is the property under test.
    #[test]
    fn fisher_is_bit_identical_for_any_thread_count() {
        let mut rng = edgelearn_core::seeded_rng(11);
        let x = Array2::from_shape_fn((5 * FISHER_BATCH + 7, 6), |_| rng.random_range(-1.0f32..1.0));
        let y = (0..x.nrows()).map(|i| i % 3).collect();
        let train = Samples::new(x, y).unwrap();
        let val = Samples::new(Array2::zeros((0, 6)), Vec::new()).unwrap();
        let task = TaskData { task_id: 0, head: 0, train: &train, val: &val };
        let mut model = zoo::mlp(6, &[16, 8], &[3], true, &mut edgelearn_core::seeded_rng(3)).unwrap();
        let mut at = |t: usize| {
            edgelearn_core::threads::set_threads(t);
            let f = diagonal_fisher(&mut model, &task).unwrap();
            edgelearn_core::threads::set_threads(1);
            f
        };
        let one = at(1);
        assert!(one.iter().any(|&v| v > 0.0));
        for t in [2, 3, 4, 64] {
            let f = at(t);
            assert!(one.iter().zip(&f).all(|(a, b)| a.to_bits() == b.to_bits()), "{t} threads differ from 1");
        }
    }
}
