//! The device self-test behind `firmware selftest --data DIR`: learn two real 2-class MNIST tasks one after the
//! other with GPM+BECAME ([`Became`]) and check that both are still recognised afterwards.
//!
//! It exercises, on the board (or under qemu), the whole learning path: IDX reading with gzip ([`edgelearn_core::data::idx`]),
//! the trainable MLP, projected SGD, the unconstrained second stage, the Fisher estimate, the merge coefficient α,
//! and the GPM basis update. Samples are real: the first `samples` training images of each class pair in file
//! order (plus a validation slice right after them), and every test image of the pair.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;

use crate::backend::{BackendKind, install};
use crate::gpm::GpmConfig;
use crate::method::{Became, LearnContext, Method};
use edgelearn_core::data::idx::{IdxArray, read_idx, resolve_idx};
use edgelearn_core::data::{Samples, TaskData};
use edgelearn_core::error::{Error, Result};
use edgelearn_core::metrics::AccuracyMatrix;
use edgelearn_core::nn::zoo;
use edgelearn_core::train::{Silent, TrainConfig, evaluate};

/// MNIST's per-pixel normalisation: `(p/255 − 0.1307)/0.3081`.
pub const MNIST_NORM: (f32, f32) = (0.1307, 0.3081);

/// File names (without `.gz`; either form is read) of the MNIST IDX files: train images, train labels, test
/// images, test labels.
pub const MNIST_FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Accuracy every learned task must keep for the self-test to pass.
pub const MIN_ACCURACY: f64 = 0.9;

/// What the self-test learns and how.
#[derive(Debug, Clone)]
pub struct SelftestConfig {
    /// Folder holding the four MNIST IDX files (gzipped or raw).
    pub data_dir: PathBuf,
    /// Training samples per task (a validation slice of a tenth of that, at least one, is taken after them).
    pub samples: usize,
    /// The tasks, as class pairs; class `pair[0]` becomes local label 0, `pair[1]` label 1. One head per task.
    pub class_pairs: Vec<[u8; 2]>,
    /// Hidden widths of the MLP.
    pub hidden: Vec<usize>,
    /// Training settings of both BECAME stages.
    pub train: TrainConfig,
    /// GPM settings.
    pub gpm: GpmConfig,
    /// Seed of the initialisation and the shuffling.
    pub seed: u64,
    /// Compute backend: the learner ([`Became`]) is the same on every backend; with CUDA selected (explicitly, or
    /// by [`BackendKind::Auto`] when a GPU answers) its large products run on the GPU ([`crate::backend::install`]).
    pub backend: BackendKind,
}

impl SelftestConfig {
    /// The default self-test on `data_dir`: tasks 0/1 and 2/3, 400 training samples each, MLP 784-100-100 with
    /// two 2-way heads (heads not projected), 5 epochs of batch-10 SGD at lr 0.05, ε = [0.95, 0.99].
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            samples: 400,
            class_pairs: vec![[0, 1], [2, 3]],
            hidden: vec![100, 100],
            train: TrainConfig { epochs: 5, batch_size: 10, lr: 0.05, ..TrainConfig::default() },
            gpm: GpmConfig {
                thresholds: vec![0.95, 0.99],
                threshold_increment: 0.0,
                samples: 300,
                project_heads: false,
            },
            seed: 0,
            backend: BackendKind::Auto,
        }
    }
}

/// What happened to one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// The class pair learned.
    pub classes: [u8; 2],
    /// Training, validation and test samples used.
    pub sizes: [usize; 3],
    /// BECAME's merge coefficient α (none for the first task, which is not merged).
    pub alpha: Option<f64>,
    /// GPM basis size per projected layer after the task.
    pub basis_sizes: Vec<usize>,
    /// Wall-clock seconds spent learning the task.
    pub seconds: f64,
}

/// The self-test's result.
#[derive(Debug, Clone, PartialEq)]
pub struct SelftestReport {
    /// One entry per task, in learning order.
    pub tasks: Vec<TaskOutcome>,
    /// `rows[i][j]`: test accuracy on task `j` after learning task `i`.
    pub matrix: AccuracyMatrix,
    /// Trainable parameters of the model.
    pub params: usize,
    /// Bytes BECAME keeps between tasks (bases + accumulated Fisher).
    pub bytes_kept: usize,
}

impl SelftestReport {
    /// Test accuracy on each task after the last one was learned.
    pub fn final_accuracies(&self) -> &[f64] {
        self.matrix.rows.last().map_or(&[], Vec::as_slice)
    }

    /// True when every task keeps at least `min` accuracy after the last task (false with no tasks).
    pub fn passed(&self, min: f64) -> bool {
        let last = self.final_accuracies();
        !last.is_empty() && last.iter().all(|&a| a >= min)
    }
}

/// Read `(images, labels)` of the training (`train = true`) or test split from an MNIST folder.
pub fn load_split(dir: &Path, train: bool) -> Result<(IdxArray, IdxArray)> {
    let [images, labels] = if train { [MNIST_FILES[0], MNIST_FILES[1]] } else { [MNIST_FILES[2], MNIST_FILES[3]] };
    let images = read_idx(&resolve_idx(&dir.join(images))?)?;
    let labels = read_idx(&resolve_idx(&dir.join(labels))?)?;
    if labels.dims.len() != 1 || images.dims.len() < 2 || images.items() != labels.items() {
        return Err(Error::Format(format!(
            "{}: images {:?} and labels {:?} do not pair up (need n×… images and n labels)",
            dir.display(),
            images.dims,
            labels.dims
        )));
    }
    Ok((images, labels))
}

/// Samples of the classes `pair` from `(images, labels)`: skip the first `skip` matching items, take the next
/// `limit` (all when `None`), normalise pixels with [`MNIST_NORM`], label `pair[0]` as 0 and `pair[1]` as 1.
pub fn pair_samples(
    images: &IdxArray,
    labels: &IdxArray,
    pair: [u8; 2],
    skip: usize,
    limit: Option<usize>,
) -> Result<Samples> {
    if pair[0] == pair[1] {
        return Err(Error::Config(format!("a task needs two different classes, got {}/{}", pair[0], pair[1])));
    }
    let features = images.item_len();
    let (mean, std) = MNIST_NORM;
    let lut: [f32; 256] = std::array::from_fn(|p| (p as f32 / 255.0 - mean) / std);
    let mut x = Vec::new();
    let mut y = Vec::new();
    let matching = labels.data.iter().enumerate().filter_map(|(i, &l)| {
        let local = pair.iter().position(|&c| c == l)?;
        Some((i, local))
    });
    for (i, local) in matching.skip(skip).take(limit.unwrap_or(usize::MAX)) {
        let pixels = images.item(i).ok_or_else(|| Error::Format(format!("image {i} missing")))?;
        x.extend(pixels.iter().map(|&p| lut[usize::from(p)]));
        y.push(local);
    }
    if y.is_empty() {
        return Err(Error::Empty(format!("no samples of classes {}/{} after skipping {skip}", pair[0], pair[1])));
    }
    let x = Array2::from_shape_vec((y.len(), features), x)
        .map_err(|e| Error::Format(format!("{} samples of {features} pixels: {e}", y.len())))?;
    Samples::new(x, y)
}

/// Run the self-test: learn every class pair in order with [`Became`], one head per task, evaluating every task
/// on its test images after each. `log` receives one line per step. Errors for missing or malformed data and
/// bad settings; the accuracy check itself is [`SelftestReport::passed`].
pub fn run(cfg: &SelftestConfig, log: &mut dyn FnMut(String)) -> Result<SelftestReport> {
    if cfg.samples < 2 {
        return Err(Error::Config(format!("need at least 2 training samples per task, got {}", cfg.samples)));
    }
    if cfg.class_pairs.is_empty() {
        return Err(Error::Config("no tasks".into()));
    }
    let t0 = Instant::now();
    let (train_images, train_labels) = load_split(&cfg.data_dir, true)?;
    let (test_images, test_labels) = load_split(&cfg.data_dir, false)?;
    if test_images.item_len() != train_images.item_len() {
        return Err(Error::Format(format!(
            "training images {:?} and test images {:?} differ in shape",
            train_images.dims, test_images.dims
        )));
    }
    log(format!(
        "read {} training and {} test images of {} pixels from {} in {:.1} s",
        train_images.items(),
        test_images.items(),
        train_images.item_len(),
        cfg.data_dir.display(),
        t0.elapsed().as_secs_f64()
    ));

    let n_val = (cfg.samples / 10).max(1);
    let mut tasks = Vec::with_capacity(cfg.class_pairs.len());
    for &pair in &cfg.class_pairs {
        let train = pair_samples(&train_images, &train_labels, pair, 0, Some(cfg.samples))?;
        let val = pair_samples(&train_images, &train_labels, pair, cfg.samples, Some(n_val))?;
        let test = pair_samples(&test_images, &test_labels, pair, 0, None)?;
        tasks.push((pair, train, val, test));
    }

    let mut rng = edgelearn_core::seeded_rng(cfg.seed);
    let heads = vec![2; tasks.len()];
    let mut model = zoo::mlp(train_images.item_len(), &cfg.hidden, &heads, false, &mut rng)?;
    log(format!("compute backend: {}", install(cfg.backend)?));
    let mut method: Box<dyn Method> = Box::new(Became::new(cfg.train.clone(), cfg.gpm.clone()));
    let mut matrix = AccuracyMatrix::new(tasks.len());
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (t, (pair, train, val, test)) in tasks.iter().enumerate() {
        let started = Instant::now();
        let data = TaskData { task_id: t, head: t, train, val };
        let mut ctx = LearnContext { rng: &mut rng, progress: &mut Silent, replay: None };
        let report = method.learn_task(&mut model, &data, &mut ctx)?;
        let seconds = started.elapsed().as_secs_f64();
        let row = tasks
            .iter()
            .enumerate()
            .map(|(j, (_, _, _, test))| Ok(f64::from(evaluate(&mut model, test, j, 256)?.1)))
            .collect::<Result<Vec<_>>>()?;
        let seen = row[..=t].iter().map(|a| format!("{:.2} %", 100.0 * a)).collect::<Vec<_>>().join(", ");
        let alpha = report.alpha.map_or_else(|| "-".to_string(), |a| format!("{a:.4}"));
        log(format!(
            "task {} (classes {}/{}, {} train / {} val / {} test): learned in {seconds:.1} s, alpha {alpha}, \
             bases {:?}; accuracy on tasks 1..={}: {seen}",
            t + 1,
            pair[0],
            pair[1],
            train.len(),
            val.len(),
            test.len(),
            report.basis_sizes,
            t + 1
        ));
        matrix.push_row(row)?;
        outcomes.push(TaskOutcome {
            classes: *pair,
            sizes: [train.len(), val.len(), test.len()],
            alpha: report.alpha,
            basis_sizes: report.basis_sizes,
            seconds,
        });
    }
    Ok(SelftestReport { tasks: outcomes, matrix, params: model.num_params(), bytes_kept: method.bytes_kept() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelearn_core::test_util::idx_file as idx;

    /// A synthetic 4-class "MNIST" of 4×4 images: class c lights up row c. Easy to learn, real code path.
    fn write_toy(dir: &Path, per_class: usize) {
        std::fs::create_dir_all(dir).unwrap();
        let n = 4 * per_class;
        let mut images = Vec::with_capacity(n * 16);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % 4;
            for p in 0..16 {
                let lit = p / 4 == c;
                images.push(if lit { 200 + (i * 7 % 50) as u8 } else { (i * 13 + p) as u8 % 40 });
            }
            labels.push(c as u8);
        }
        for (split, count) in [("train", n), ("t10k", n)] {
            let img = idx(&[count as u32, 4, 4], &images);
            let lab = idx(&[count as u32], &labels);
            std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), img).unwrap();
            std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), lab).unwrap();
        }
    }

    #[test]
    fn pair_samples_relabels_and_normalises() {
        let images = IdxArray { dims: vec![4, 1, 2], data: vec![0, 255, 1, 1, 2, 2, 255, 0] };
        let labels = IdxArray { dims: vec![4], data: vec![3, 5, 7, 3] };
        let s = pair_samples(&images, &labels, [3, 7], 0, None).unwrap();
        assert_eq!(s.y, vec![0, 1, 0]);
        assert_eq!(s.features(), 2);
        let (mean, std) = MNIST_NORM;
        assert!((s.x[[0, 1]] - (1.0 - mean) / std).abs() < 1e-6);
        assert!((s.x[[2, 0]] - (1.0 - mean) / std).abs() < 1e-6);
        let skipped = pair_samples(&images, &labels, [3, 7], 1, Some(1)).unwrap();
        assert_eq!(skipped.y, vec![1]);
        assert!(matches!(pair_samples(&images, &labels, [3, 7], 3, None), Err(Error::Empty(_))));
        assert!(matches!(pair_samples(&images, &labels, [3, 3], 0, None), Err(Error::Config(_))));
    }

    #[test]
    fn learns_two_toy_tasks() {
        let dir = std::env::temp_dir().join(format!("firmware-selftest-{}", std::process::id()));
        write_toy(&dir, 60);
        let cfg = SelftestConfig {
            samples: 40,
            hidden: vec![16],
            gpm: GpmConfig { thresholds: vec![0.95], samples: 40, ..SelftestConfig::new(&dir).gpm },
            ..SelftestConfig::new(&dir)
        };
        let mut lines = Vec::new();
        let report = {
            let _device = crate::backend::tests::OFFLOAD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
            run(&cfg, &mut |l| lines.push(l)).unwrap()
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(lines.len(), 4, "{lines:?}");
        if crate::backend::cuda_status().is_err() {
            assert_eq!(lines[1], "compute backend: cpu", "auto without CUDA runs on the CPU");
        }
        assert_eq!(report.tasks.len(), 2);
        assert_eq!(report.tasks[0].sizes, [40, 4, 120]);
        assert!(report.tasks[0].alpha.is_none());
        let alpha = report.tasks[1].alpha.unwrap();
        assert!((0.0..=1.0).contains(&alpha), "α = {alpha}");
        assert!(report.passed(MIN_ACCURACY), "{:?}", report.matrix);
        assert_eq!(report.final_accuracies().len(), 2);
    }

    #[test]
    fn missing_or_bad_data_is_an_error() {
        let dir = std::env::temp_dir().join(format!("firmware-selftest-missing-{}", std::process::id()));
        assert!(matches!(run(&SelftestConfig::new(&dir), &mut |_| {}), Err(Error::Io { .. })));
        write_toy(&dir, 3);
        // Labels that do not pair up with the images.
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[2], &[0, 1])).unwrap();
        assert!(matches!(run(&SelftestConfig::new(&dir), &mut |_| {}), Err(Error::Format(_))));
        let cfg = SelftestConfig { samples: 1, ..SelftestConfig::new(&dir) };
        assert!(matches!(run(&cfg, &mut |_| {}), Err(Error::Config(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        let empty = SelftestReport { tasks: vec![], matrix: AccuracyMatrix::new(0), params: 0, bytes_kept: 0 };
        assert!(!empty.passed(0.0));
    }
}
