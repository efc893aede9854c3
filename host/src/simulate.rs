//! Host-side simulation: run the device learner over a task stream and measure the accuracy matrix.

use std::time::Instant;

use firmware::method::{LearnContext, Method, TaskReport};
use firmware::metrics::{AccuracyMatrix, Summary};
use firmware::nn::Model;
use firmware::replay::ReplayBuffer;
use firmware::train::{Progress, evaluate};
use serde::{Deserialize, Serialize};

use crate::data::stream::Stream;
use crate::error::{Error, Result};

/// Everything measured in one run of one method over one stream with one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Stream name.
    pub stream: String,
    /// Method name.
    pub method: String,
    /// Seed of the run (model init, shuffling, permutations, validation slices).
    pub seed: u64,
    /// Task names in stream order.
    pub tasks: Vec<String>,
    /// `A[i][j]` and the random-init accuracies.
    pub matrix: AccuracyMatrix,
    /// ACC, BWT, FWT, forgetting.
    pub summary: Summary,
    /// What the method reported per task (α, basis sizes, timings, ...).
    pub reports: Vec<TaskReport>,
    /// Trainable parameters of the model.
    pub num_params: usize,
    /// Wall-clock seconds for the whole run (learning and evaluation).
    pub seconds: f64,
    /// Capacity of the run's replay buffer in samples (`--replay`; 0: no replay).
    #[serde(default)]
    pub replay_samples: usize,
    /// Bytes the replay buffer held after the last task (`4 · features + 4` per stored sample).
    #[serde(default)]
    pub replay_bytes: u64,
}

/// Batch size used for test-set evaluation.
pub const EVAL_BATCH: usize = 256;

/// Accuracy of `model` on every task's test split (each through its own head). A task whose classes the head does
/// not have yet (a growing head, before the task arrives) scores 0: the model cannot name them.
pub fn evaluate_all(model: &mut Model, stream: &Stream) -> Result<Vec<f64>> {
    stream
        .tasks
        .iter()
        .map(|t| {
            if t.test.check_labels(model.head_outputs(t.head)?).is_err() {
                return Ok(0.0);
            }
            Ok(f64::from(evaluate(model, &t.test, t.head, EVAL_BATCH)?.1))
        })
        .collect()
}

/// Outputs a single-head model needs to learn task `i` of a single-head stream: every distinct class of tasks
/// `0..=i` (labels are global, in order of first appearance). Tasks that share their classes, as Permuted-MNIST's
/// do (digits 0–9 in every task), need no new outputs. `None` for multi-head streams.
pub fn outputs_needed(stream: &Stream, i: usize) -> Option<usize> {
    (!stream.multi_head).then(|| {
        stream.tasks[..=i]
            .iter()
            .flat_map(|t| t.classes.iter().copied())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    })
}

/// Learn the stream's tasks in order with `method`, evaluating on all tasks' test sets after each one.
/// The untrained model is evaluated first to give FWT its random-init reference. No replay: [`run_with_replay`]
/// with a buffer of 0 samples.
pub fn run(
    stream: &Stream,
    model: Model,
    method: &mut dyn Method,
    seed: u64,
    progress: &mut dyn Progress,
) -> Result<(RunResult, Model)> {
    run_with_replay(stream, model, method, seed, 0, progress)
}

/// [`run`] with an exemplar memory of `replay` samples ([`ReplayBuffer`], class-balanced reservoir): before each
/// task the method gets the stored samples in [`LearnContext::replay`] (`None` while the buffer is empty), and
/// after it learned the task the task's training samples are offered to the buffer, in order. The buffer draws
/// from its own seeded stream, so the method's random stream is the same with and without replay. Replay needs
/// one shared head (labels are global class ids): a multi-head stream with `replay > 0` is refused.
///
/// Class-incremental in the field: when the model's single head has fewer outputs than the classes seen up to the
/// next task ([`outputs_needed`]; a model built by [`crate::presets::Preset::build_model`] with `grow_head`), the
/// head grows first ([`Model::grow_head`], new rows at zero) and the method resizes what it keeps per parameter
/// ([`Method::params_grown`]). With a full-width head (every other run) nothing grows.
pub fn run_with_replay(
    stream: &Stream,
    mut model: Model,
    method: &mut dyn Method,
    seed: u64,
    replay: usize,
    progress: &mut dyn Progress,
) -> Result<(RunResult, Model)> {
    if replay > 0 && stream.multi_head {
        return Err(Error::Invalid(format!(
            "--replay needs one shared head (labels are global class ids); stream {} has a head per task: use \
             --single-head or --grow-head",
            stream.name
        )));
    }
    let features = stream.tasks.first().map_or(0, |t| t.train.features());
    let mut buffer = ReplayBuffer::new(replay, features);
    let mut replay_rng = firmware::seeded_rng(seed.wrapping_add(0x5EED_0B0F));
    let t0 = Instant::now();
    let mut rng = firmware::seeded_rng(seed.wrapping_add(0x5EED));
    let mut matrix = AccuracyMatrix::new(stream.tasks.len());
    matrix.random_init = evaluate_all(&mut model, stream)?;
    let mut reports = Vec::with_capacity(stream.tasks.len());
    for (i, task) in stream.tasks.iter().enumerate() {
        if let Some(needed) = outputs_needed(stream, i)
            && model.heads.len() == 1
            && model.head_outputs(0)? < needed
        {
            let growth = model.grow_head(0, needed)?;
            method.params_grown(&growth)?;
            tracing::info!(task = task.id, outputs = needed, "head grown");
        }
        let data = firmware::data::TaskData { task_id: task.id, head: task.head, train: &task.train, val: &task.val };
        let stored = if buffer.is_empty() { None } else { Some(buffer.samples()?) };
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut *progress, replay: stored.as_ref() };
        let report = method.learn_task(&mut model, &data, &mut ctx)?;
        buffer.offer_all(&task.train, &mut replay_rng)?;
        let row = evaluate_all(&mut model, stream)?;
        tracing::info!(
            method = %method.name(),
            task = task.id,
            acc_on_task = row[task.id],
            mean_so_far = row[..=task.id].iter().sum::<f64>() / (task.id + 1) as f64,
            alpha = ?report.alpha,
            replay_stored = buffer.len(),
            "task learned"
        );
        matrix.push_row(row)?;
        reports.push(report);
    }
    let summary = matrix.summary()?;
    let result = RunResult {
        stream: stream.name.clone(),
        method: method.name(),
        seed,
        tasks: stream.tasks.iter().map(|t| t.name.clone()).collect(),
        matrix,
        summary,
        reports,
        num_params: model.num_params(),
        seconds: t0.elapsed().as_secs_f64(),
        replay_samples: replay,
        replay_bytes: buffer.bytes(),
    };
    Ok((result, model))
}

#[cfg(test)]
mod tests {
    use firmware::data::Samples;
    use ndarray::Array2;

    use super::*;
    use crate::data::stream::StreamTask;

    fn stream(classes: &[&[usize]], multi_head: bool) -> Stream {
        let empty = || Samples::new(Array2::zeros((0, 1)), Vec::new()).unwrap();
        let tasks = classes
            .iter()
            .enumerate()
            .map(|(id, c)| StreamTask {
                id,
                name: format!("task {id}"),
                classes: c.to_vec(),
                head: 0,
                train: empty(),
                val: empty(),
                test: empty(),
            })
            .collect();
        Stream { name: "t".into(), channels: 1, rows: 1, cols: 1, multi_head, head_sizes: vec![10], tasks }
    }

    #[test]
    fn outputs_needed_counts_distinct_classes() {
        // Permuted-MNIST: every task has digits 0-9; the single head stays 10 wide (it grew to 100 before).
        let digits: Vec<usize> = (0..10).collect();
        let pmnist = stream(&[&digits, &digits, &digits], false);
        assert_eq!(outputs_needed(&pmnist, 0), Some(10));
        assert_eq!(outputs_needed(&pmnist, 2), Some(10));
        // Class-incremental Split-MNIST: 2 new classes per task.
        let split = stream(&[&[0, 1], &[2, 3], &[4, 5]], false);
        assert_eq!(outputs_needed(&split, 0), Some(2));
        assert_eq!(outputs_needed(&split, 2), Some(6));
        assert_eq!(outputs_needed(&stream(&[&[0, 1]], true), 0), None);
    }
}
