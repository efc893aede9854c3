//! Benchmark of what a class-incremental learner costs per task (issues 17 and 30): the per-task time and peak
//! heap of several methods and exemplar-memory sizes, side by side in one process — the field with and without
//! replay, or the field next to the training-free peers.
//!
//! [`replay_cost`] runs each method over the first tasks of a class-incremental stream once per buffer size
//! (0 = no replay), each from the same seed and the same untrained model, exactly as `host simulate --replay N`
//! feeds the buffer: through the device's learner ([`crate::runs::simulate::learner_for`]; the method gets the stored
//! samples before a task, the task's training samples are offered to the buffer after it). For every task it
//! records the wall-clock time of `Learner::learn_task` (budget check, replay and the method) and the heap the process held at the start of the task and at its peak during it, as
//! measured by the binary's global allocator ([`HeapMeter`]; `host` installs a counting allocator). Evaluation is
//! outside the timed and measured span.

use std::path::Path;
use std::time::Instant;

use firmware::data::TaskData;
use firmware::train::Silent;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runs::presets::Preset;
use crate::runs::registry;
use crate::runs::simulate::{self, RunConfig, evaluate_all};

/// What the benchmark reads from the process's allocator.
pub trait HeapMeter {
    /// Bytes allocated now.
    fn current(&self) -> usize;
    /// Largest number of bytes allocated at once since the last [`HeapMeter::reset_peak`].
    fn peak(&self) -> usize;
    /// Start a new peak from the current allocation.
    fn reset_peak(&self);
}

/// One task of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCost {
    /// 0-based task index.
    pub task: usize,
    /// Wall-clock seconds of `learn_task`.
    pub seconds: f64,
    /// Heap bytes held when the task started (model, stream, buffer, method state).
    pub heap_start_bytes: u64,
    /// Largest heap during the task, bytes.
    pub heap_peak_bytes: u64,
    /// Samples the method was given to replay.
    pub replayed: usize,
    /// Bytes the buffer held when the task started.
    pub buffer_bytes: u64,
    /// Mean test accuracy over the tasks seen so far (%), no task id (one head), after the task.
    pub acc_seen: f64,
}

/// One method with one buffer size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRun {
    /// Method name as built.
    pub method: String,
    /// Buffer capacity in samples (0: no replay).
    pub replay_samples: usize,
    /// Per task, in order.
    pub tasks: Vec<TaskCost>,
}

/// The whole benchmark; what `host bench replay --out` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayBench {
    /// Stream name (`split-mnist-ci`, ...).
    pub stream: String,
    /// Epochs per training stage.
    pub epochs: usize,
    /// Seed of every run.
    pub seed: u64,
    /// One run per method and buffer size, methods outermost, in the order asked for.
    pub runs: Vec<ReplayRun>,
}

/// Run each of `methods` over the first `tasks` tasks of the preset's stream once per buffer size in `sizes`,
/// measuring each task's time and heap with `meter` (see the module documentation). Errors on an empty `methods`
/// or `sizes`, `tasks` of 0 or more than the stream has, a stream with a head per task (one shared head is the
/// setting), an unknown method (before any data is loaded) or any error of a method.
pub fn replay_cost(
    preset: &Preset,
    methods: &[String],
    tasks: usize,
    sizes: &[usize],
    data_dir: &Path,
    seed: u64,
    meter: &dyn HeapMeter,
) -> Result<ReplayBench> {
    if sizes.is_empty() || methods.is_empty() {
        return Err(Error::Invalid("the benchmark needs at least one method and one buffer size".into()));
    }
    for m in methods {
        registry::build(m, preset, &simulate::host_profile()?)?;
    }
    let mut stream = preset.load(data_dir, seed)?;
    if stream.multi_head {
        return Err(Error::Invalid(format!(
            "stream {} has a head per task; replay needs one shared head",
            stream.name
        )));
    }
    if tasks == 0 || tasks > stream.tasks.len() {
        return Err(Error::Invalid(format!(
            "stream {} has {} tasks, asked for {tasks}",
            stream.name,
            stream.tasks.len()
        )));
    }
    stream.tasks.truncate(tasks);
    let mut runs = Vec::with_capacity(sizes.len() * methods.len());
    for (method, &size) in methods.iter().flat_map(|m| sizes.iter().map(move |s| (m, s))) {
        let model = preset.build_model(&stream, seed)?;
        let method = registry::build_for_stream(method, preset, &simulate::host_profile()?, &stream)?;
        let name = method.name();
        let mut learner = simulate::learner_for(&stream, model, method, seed, &RunConfig::host(size)?)?;
        let mut costs = Vec::with_capacity(tasks);
        for (i, task) in stream.tasks.iter().enumerate() {
            simulate::register_classes(&mut learner, &stream, i)?;
            let data = TaskData { task_id: task.id, head: task.head, train: &task.train, val: &task.val };
            let buffer_bytes = learner.replay().bytes();
            let replayed = learner.replay().len();
            let heap_start = meter.current();
            meter.reset_peak();
            let t0 = Instant::now();
            learner.learn_task(&data, &mut Silent)?;
            let seconds = t0.elapsed().as_secs_f64();
            let heap_peak = meter.peak();
            let row = evaluate_all(&mut learner, &stream)?;
            let acc_seen = 100.0 * row[..=i].iter().sum::<f64>() / (i + 1) as f64;
            tracing::info!(method = %name, replay = size, task = i, seconds, heap_peak, acc_seen, "task measured");
            costs.push(TaskCost {
                task: i,
                seconds,
                heap_start_bytes: heap_start as u64,
                heap_peak_bytes: heap_peak as u64,
                replayed,
                buffer_bytes,
                acc_seen,
            });
        }
        runs.push(ReplayRun { method: name, replay_samples: size, tasks: costs });
    }
    Ok(ReplayBench { stream: stream.name.clone(), epochs: preset.train.epochs, seed, runs })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// A Markdown table: one row per task, for each run (method, buffer size) its seconds, peak heap (MiB) and
/// accuracy over the classes seen, then the ratios of every run's time and peak to the first run's.
pub fn replay_table(b: &ReplayBench) -> String {
    let label = |r: &ReplayRun| format!("{} @ {}", r.method, r.replay_samples);
    let mut head = String::from("| task |");
    let mut rule = String::from("|---|");
    for r in &b.runs {
        head += &format!(" {n}: s | {n}: peak MiB | {n}: ACC seen % |", n = label(r));
        rule += "---|---|---|";
    }
    let base = b.runs.first();
    for r in b.runs.iter().skip(1) {
        let z = base.map(label).unwrap_or_default();
        head += &format!(" time {n} / {z} | peak {n} / {z} |", n = label(r));
        rule += "---|---|";
    }
    let mut out = format!(
        "{}, {} epoch(s) per stage, seed {}; columns by method @ buffer size (samples)\n\n{head}\n{rule}\n",
        b.stream, b.epochs, b.seed
    );
    let tasks = b.runs.iter().map(|r| r.tasks.len()).max().unwrap_or(0);
    for t in 0..tasks {
        let mut row = format!("| {} |", t + 1);
        for r in &b.runs {
            match r.tasks.get(t) {
                Some(c) => row += &format!(" {:.2} | {} | {:.2} |", c.seconds, mib(c.heap_peak_bytes), c.acc_seen),
                None => row += " – | – | – |",
            }
        }
        for r in b.runs.iter().skip(1) {
            let (a, z) = (r.tasks.get(t), base.and_then(|x| x.tasks.get(t)));
            match (a, z) {
                (Some(a), Some(z)) if z.seconds > 0.0 && z.heap_peak_bytes > 0 => {
                    row += &format!(
                        " {:.2} | {:.2} |",
                        a.seconds / z.seconds,
                        a.heap_peak_bytes as f64 / z.heap_peak_bytes as f64
                    )
                }
                _ => row += " – | – |",
            }
        }
        out += &row;
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(task: usize, seconds: f64, peak: u64) -> TaskCost {
        TaskCost {
            task,
            seconds,
            heap_start_bytes: 0,
            heap_peak_bytes: peak,
            replayed: 0,
            buffer_bytes: 0,
            acc_seen: 50.0,
        }
    }

    #[test]
    fn table_has_a_row_per_task_and_ratios_against_the_first_run() {
        let b = ReplayBench {
            stream: "s".into(),
            epochs: 1,
            seed: 0,
            runs: vec![
                ReplayRun {
                    method: "m".into(),
                    replay_samples: 0,
                    tasks: vec![cost(0, 1.0, 1 << 20), cost(1, 2.0, 2 << 20)],
                },
                ReplayRun {
                    method: "peer".into(),
                    replay_samples: 200,
                    tasks: vec![cost(0, 1.5, 1 << 20), cost(1, 3.0, 3 << 20)],
                },
            ],
        };
        let t = replay_table(&b);
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| 1 ") || l.starts_with("| 2 ")).collect();
        assert_eq!(rows.len(), 2, "{t}");
        assert!(rows[0].ends_with("| 1.50 | 1.00 |"), "{}", rows[0]);
        assert!(rows[1].ends_with("| 1.50 | 1.50 |"), "{}", rows[1]);
        assert!(t.contains("time peer @ 200 / m @ 0"), "{t}");
    }
}
