//! Host-side simulation: the device's own learner ([`firmware::learner::Learner`]) over a task stream, and the
//! accuracy matrix it reaches.

use std::time::Instant;

use firmware::budget::BoardProfile;
use firmware::learner::Learner;
use firmware::method::{Method, TaskReport};
use firmware::metrics::{AccuracyMatrix, Summary};
use firmware::nn::Model;
use firmware::train::Progress;
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
    /// Bytes of the model's trainable parameters after the last task (trunk and heads, f32).
    #[serde(default)]
    pub param_bytes: u64,
    /// Bytes of the model's fixed random matrices after the last task (RanPAC's projection, RanDumb's random
    /// Fourier features; f32): held in memory to answer, but never stored, since they are rebuilt from their
    /// widths or seed ([`fixed_bytes`]).
    #[serde(default)]
    pub fixed_bytes: u64,
}

/// Bytes of `model`'s parameter-free constant layers (f32): RanPAC's `M × d` projection
/// ([`firmware::nn::RandomFeatures`]) and RanDumb's `D × d` matrix and `D` offsets ([`firmware::nn::RandomFourier`]).
pub fn fixed_bytes(model: &Model) -> u64 {
    model
        .trunk
        .iter()
        .map(|l| match l {
            firmware::nn::Layer::RandomFeatures(r) => 4 * r.weight().len() as u64,
            firmware::nn::Layer::RandomFourier(r) => 4 * r.constant_len() as u64,
            _ => 0,
        })
        .sum()
}

/// Batch size used for test-set evaluation.
pub const EVAL_BATCH: usize = 256;

/// The learner a simulation drives: the device's [`Learner`] (its sample buffer unused: tasks arrive whole).
pub type SimLearner<M> = Learner<M, 1>;

/// Seed offset of the learner's random stream in a simulation (the model's initialisation takes the seed itself).
pub const LEARNER_SEED: u64 = 0x5EED;

/// The host profile a simulation runs under without `--board`: `boards/host-sim.toml` (generous budgets, `F_old`
/// in f32), compiled in so that it does not depend on the working directory.
pub fn host_profile() -> Result<BoardProfile> {
    Ok(BoardProfile::parse(include_str!("../../../boards/host-sim.toml"), "boards/host-sim.toml")?)
}

/// How a simulation feeds the learner.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The board profile the learner runs under (budgets, Fisher format, class limit): [`host_profile`] or a
    /// `--board` file.
    pub profile: BoardProfile,
    /// Replay buffer capacity in samples; `None`: what the profile's `replay` budget holds (the board's own).
    pub replay: Option<usize>,
    /// Hand each task to the learner as the board receives it ([`Learner::learn_samples`]: the task's training
    /// and validation samples as photos, split by the device's rule), instead of with the stream's own
    /// validation slice ([`Learner::learn_task`], the papers' protocol). Single-head streams only.
    pub as_board: bool,
}

impl RunConfig {
    /// The host profile, the stream's validation slices and `replay` stored samples (0: none).
    pub fn host(replay: usize) -> Result<Self> {
        Ok(Self { profile: host_profile()?, replay: Some(replay), as_board: false })
    }

    /// Board `profile` as the daemon runs it: its replay buffer, its validation rule.
    pub fn board(profile: BoardProfile) -> Self {
        Self { profile, replay: None, as_board: true }
    }
}

/// Accuracy of the learner's model on every task's test split. A task whose classes the head does not have yet (a
/// growing head, before the task arrives) scores 0: the model cannot name them.
///
/// Multi-head (task-incremental) streams: each task's test split through its own head, in batches of
/// [`EVAL_BATCH`] (the papers' protocol). Single-head (class-incremental) streams: every test image the head can
/// name goes through one pass in an interleaved order ([`EVAL_MIX_SEED`]), batches of [`EVAL_BATCH`], and each
/// task is scored on its own images. No batch then holds one task's classes alone: a layer with batch statistics
/// (the BatchNorm of GPM's conv nets, which normalises with the batch's own statistics at test time as well)
/// would otherwise learn from the batch which task it comes from, a task id the class-incremental setting does
/// not give. For a model without such a layer the two orders give the same predictions.
pub fn evaluate_all<M: Method>(learner: &mut SimLearner<M>, stream: &Stream) -> Result<Vec<f64>> {
    if stream.multi_head {
        return stream
            .tasks
            .iter()
            .map(|t| {
                if t.test.check_labels(learner.model().head_outputs(t.head)?).is_err() {
                    return Ok(0.0);
                }
                Ok(f64::from(learner.evaluate(&t.test, t.head, EVAL_BATCH)?.1))
            })
            .collect();
    }
    let mut model = learner.model().clone();
    let outputs = model.head_outputs(0)?;
    let named: Vec<bool> = stream.tasks.iter().map(|t| t.test.check_labels(outputs).is_ok()).collect();
    let mut rows: Vec<(usize, usize)> = Vec::new();
    for (t, task) in stream.tasks.iter().enumerate().filter(|(t, _)| named[*t]) {
        if task.test.is_empty() {
            return Err(Error::Invalid(format!("task {t} has no test images")));
        }
        rows.extend((0..task.test.len()).map(|i| (t, i)));
    }
    rand::seq::SliceRandom::shuffle(rows.as_mut_slice(), &mut firmware::seeded_rng(EVAL_MIX_SEED));
    let mut hits = vec![0usize; stream.tasks.len()];
    let width = stream.tasks.first().map_or(0, |t| t.test.features());
    for chunk in rows.chunks(EVAL_BATCH) {
        let mut x = ndarray::Array2::<f32>::zeros((chunk.len(), width));
        for (mut row, &(t, i)) in x.rows_mut().into_iter().zip(chunk) {
            row.assign(&stream.tasks[t].test.x.row(i));
        }
        for (&(t, i), p) in chunk.iter().zip(model.predict(&x.view(), 0)?) {
            hits[t] += usize::from(p == stream.tasks[t].test.y[i]);
        }
    }
    Ok(stream
        .tasks
        .iter()
        .enumerate()
        .map(|(t, task)| if named[t] { hits[t] as f64 / task.test.len() as f64 } else { 0.0 })
        .collect())
}

/// Seed of the interleaved order in which [`evaluate_all`] scores a class-incremental stream's test images (the
/// same for every method and run).
pub const EVAL_MIX_SEED: u64 = 0xE7A1_0DE5;

/// Outputs a single-head model needs to learn task `i` of a single-head stream: one past the largest class of
/// tasks `0..=i` (labels are global class ids; a stream numbers its classes in order of first appearance, so
/// this is the number of classes seen, and a model pre-trained on classes `0..k` keeps them). Tasks that share
/// their classes, as Permuted-MNIST's do (digits 0–9 in every task), need no new outputs. `None` for multi-head
/// streams.
pub fn outputs_needed(stream: &Stream, i: usize) -> Option<usize> {
    (!stream.multi_head)
        .then(|| stream.tasks[..=i].iter().flat_map(|t| t.classes.iter().copied()).max().map_or(0, |c| c + 1))
}

/// Register the classes task `i` of a single-head stream brings (class `c` is named `"c"`; labels are class ids
/// in order of first appearance), growing the learner's head by one zero row each. Nothing for multi-head streams.
pub fn register_classes<M: Method>(learner: &mut SimLearner<M>, stream: &Stream, i: usize) -> Result<()> {
    let Some(needed) = outputs_needed(stream, i) else { return Ok(()) };
    if learner.model().heads.len() != 1 || learner.classes().len() >= needed {
        return Ok(());
    }
    while learner.classes().len() < needed {
        let next = learner.classes().len().to_string();
        learner.ensure_class(&next)?;
    }
    tracing::info!(task = stream.tasks[i].id, outputs = needed, "head grown");
    Ok(())
}

/// The learner a simulation of `stream` starts from: `model` under `cfg`'s profile (and replay capacity), one
/// class registered per output of a single head (named by its label), none for a head per task.
pub fn learner_for<M: Method>(
    stream: &Stream,
    model: Model,
    method: M,
    seed: u64,
    cfg: &RunConfig,
) -> Result<SimLearner<M>> {
    let single_head = !stream.multi_head && model.heads.len() == 1;
    let names: Vec<String> =
        if single_head { (0..model.head_outputs(0)?).map(|c| c.to_string()).collect() } else { Vec::new() };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut learner =
        Learner::new(cfg.profile.clone(), stream.name.clone(), model, method, &refs, seed.wrapping_add(LEARNER_SEED))?;
    if let Some(n) = cfg.replay {
        if n > 0 && !single_head {
            return Err(Error::Invalid(format!(
                "replay needs one shared head (labels are global class ids); stream {} has a head per task: use \
                 --single-head or --grow-head",
                stream.name
            )));
        }
        learner = learner.with_replay_capacity(n)?;
    }
    Ok(learner)
}

/// Learn the stream's tasks in order with `method` under the host profile ([`RunConfig::host`], no replay),
/// evaluating on all tasks' test sets after each one. See [`run_with`].
pub fn run(
    stream: &Stream,
    model: Model,
    method: &mut dyn Method,
    seed: u64,
    progress: &mut dyn Progress,
) -> Result<(RunResult, Model)> {
    run_with(stream, model, method, seed, &RunConfig::host(0)?, progress)
}

/// Learn the stream's tasks in order through the device's [`Learner`] running `method` under `cfg`, evaluating
/// on all tasks' test sets after each one; the untrained model is evaluated first to give FWT its random-init
/// reference. Everything a board does happens here as it does on the board, because it is the board's code:
/// the budget check before each task, head growth (a single head gains one zero row per new class, labels being
/// class ids in order of first appearance; the method resizes what it keeps per parameter), the replay buffer
/// (class-balanced reservoir; the method gets the stored samples before each task, the task's samples are offered
/// after it), the task registry. The learner's random stream is seeded with `seed + LEARNER_SEED`, the replay
/// buffer's from that. Replay needs one shared head: a multi-head stream with replay is refused.
pub fn run_with(
    stream: &Stream,
    model: Model,
    method: &mut dyn Method,
    seed: u64,
    cfg: &RunConfig,
    progress: &mut dyn Progress,
) -> Result<(RunResult, Model)> {
    let single_head = !stream.multi_head && model.heads.len() == 1;
    let name = method.name();
    let mut learner = learner_for(stream, model, method, seed, cfg)?;
    let t0 = Instant::now();
    let mut matrix = AccuracyMatrix::new(stream.tasks.len());
    matrix.random_init = evaluate_all(&mut learner, stream)?;
    let mut reports = Vec::with_capacity(stream.tasks.len());
    for (i, task) in stream.tasks.iter().enumerate() {
        register_classes(&mut learner, stream, i)?;
        let report = if cfg.as_board && single_head {
            learner.learn_samples(&task.train.concat(&task.val)?, progress)?
        } else {
            let data =
                firmware::data::TaskData { task_id: task.id, head: task.head, train: &task.train, val: &task.val };
            learner.learn_task(&data, progress)?
        };
        let row = evaluate_all(&mut learner, stream)?;
        tracing::info!(
            method = %name,
            task = task.id,
            acc_on_task = row[task.id],
            mean_so_far = row[..=task.id].iter().sum::<f64>() / (task.id + 1) as f64,
            alpha = ?report.alpha,
            replay_stored = learner.replay().len(),
            "task learned"
        );
        matrix.push_row(row)?;
        reports.push(report);
    }
    let summary = matrix.summary()?;
    let result = RunResult {
        stream: stream.name.clone(),
        method: name,
        seed,
        tasks: stream.tasks.iter().map(|t| t.name.clone()).collect(),
        matrix,
        summary,
        reports,
        num_params: learner.model().num_params(),
        seconds: t0.elapsed().as_secs_f64(),
        replay_samples: learner.replay().capacity(),
        replay_bytes: learner.replay().bytes(),
        param_bytes: 4 * learner.model().num_params() as u64,
        fixed_bytes: fixed_bytes(learner.model()),
    };
    Ok((result, learner.into_model()))
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

    /// Class-incremental scoring mixes the tasks' test images in its batches: over per-task batches the
    /// BatchNorm below (batch statistics at test time, as in GPM's conv nets) sees a constant batch and answers
    /// class 0 for everything (task 1 at 0 %); over mixed batches it tells the classes apart, as one interleaved
    /// pass must. A multi-head stream keeps the per-task batches.
    #[test]
    fn class_incremental_scoring_does_not_batch_one_task_alone() {
        use firmware::nn::{BatchNorm, Layer, Linear};
        let mut ci = stream(&[&[0], &[1]], false);
        for (t, task) in ci.tasks.iter_mut().enumerate() {
            let x = Array2::from_shape_fn((20, 2), |(_, j)| if j == t { 1.0 } else { 0.0 });
            task.test = Samples::new(x, vec![t; 20]).unwrap();
        }
        ci.cols = 2;
        let head = Linear::from_weights("head.0", ndarray::array![[1.0f32, 0.0], [0.0, 1.0]], None).unwrap();
        let model = Model::new(vec![2], vec![Layer::BatchNorm(BatchNorm::new("trunk.0", 2))], vec![head]).unwrap();
        let method = firmware::method::FineTune::new(firmware::train::TrainConfig::default());
        let mut learner: SimLearner<_> =
            Learner::new(host_profile().unwrap(), "bn", model, method, &["0", "1"], 0).unwrap();
        assert_eq!(evaluate_all(&mut learner, &ci).unwrap(), vec![1.0, 1.0]);
        let mut ti = ci.clone();
        ti.multi_head = true;
        assert_eq!(evaluate_all(&mut learner, &ti).unwrap(), vec![1.0, 0.0], "per-task batches: the constant batch");
    }

    #[test]
    fn outputs_needed_counts_the_classes_seen() {
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
        // A base pre-trained on 0-3 learning 4/5: the head keeps its four classes and grows to six.
        assert_eq!(outputs_needed(&stream(&[&[4, 5], &[6, 7]], false), 0), Some(6));
    }
}
