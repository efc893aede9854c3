//! Named streams with the settings the papers use for them (model, training schedule, validation share).

use std::path::PathBuf;

use firmware::gpm::GpmConfig;
use firmware::nn::{Model, zoo};
use firmware::train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::data;
use crate::data::stream::{self, Stream};
use crate::error::{Error, Result};

/// Which network a run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelSpec {
    /// Multi-layer perceptron with these hidden widths.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
        /// Whether linear layers carry biases (GPM's PMNIST net has none).
        bias: bool,
    },
    /// The LeNet-style CNN of `firmware::nn::zoo::lenet`.
    Lenet,
}

impl ModelSpec {
    /// Parse `mlp:256,256`, `mlp:100,100:bias` or `lenet`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.split(':');
        match parts.next() {
            Some("lenet") if parts.next().is_none() => Ok(ModelSpec::Lenet),
            Some("mlp") => {
                let hidden = parts
                    .next()
                    .ok_or_else(|| Error::Invalid(format!("model '{s}': mlp needs widths, e.g. mlp:256,256")))?
                    .split(',')
                    .map(|w| {
                        w.trim().parse::<usize>().map_err(|_| Error::Invalid(format!("model '{s}': bad width '{w}'")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let bias = match parts.next() {
                    None => false,
                    Some("bias") => true,
                    Some(o) => return Err(Error::Invalid(format!("model '{s}': unknown option '{o}'"))),
                };
                Ok(ModelSpec::Mlp { hidden, bias })
            }
            _ => Err(Error::Invalid(format!("unknown model '{s}' (use mlp:W1,W2[:bias] or lenet)"))),
        }
    }

    /// Build the network for `stream`'s input size and heads.
    pub fn build(&self, stream: &Stream, seed: u64) -> Result<Model> {
        let mut rng = firmware::seeded_rng(seed);
        let input = stream.channels * stream.rows * stream.cols;
        Ok(match self {
            ModelSpec::Mlp { hidden, bias } => zoo::mlp(input, hidden, &stream.head_sizes, *bias, &mut rng)?,
            ModelSpec::Lenet => {
                zoo::lenet([stream.channels, stream.rows, stream.cols], 100, &stream.head_sizes, &mut rng)?
            }
        })
    }
}

/// Default EWC strength for every stream (override with `--ewc-lambda`).
pub const EWC_LAMBDA: f32 = 1000.0;

/// Where a stream's data comes from and how it is cut into tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamSpec {
    /// Permuted-MNIST with this many tasks.
    PermutedMnist {
        /// Number of tasks.
        tasks: usize,
    },
    /// Split-MNIST, 5 × 2 classes.
    SplitMnist,
    /// Split-Fashion-MNIST, 5 × 2 classes.
    SplitFashion,
    /// Any IDX image data set, split by a class grouping.
    Custom {
        /// Train images, train labels, test images, test labels.
        files: [PathBuf; 4],
        /// Class groups, one per task.
        groups: Vec<Vec<usize>>,
    },
}

/// A stream plus the settings a run on it uses by default.
#[derive(Debug, Clone)]
pub struct Preset {
    /// The stream definition.
    pub stream: StreamSpec,
    /// Task-incremental (one head per task) rather than a single shared head.
    pub multi_head: bool,
    /// Network.
    pub model: ModelSpec,
    /// Training settings for every stage.
    pub train: TrainConfig,
    /// Share of each task's training split held out for validation.
    pub val_frac: f64,
    /// GPM settings (thresholds, representation samples, head projection).
    pub gpm: GpmConfig,
    /// EWC penalty strength λ.
    pub ewc_lambda: f32,
}

impl Preset {
    /// The defaults for a stream name: `pmnist` (GPM's PMNIST settings), `split-mnist`, `split-fmnist`, `custom`.
    ///
    /// * `pmnist`: MLP 784-100-100-10 without bias, single head, lr 0.01, batch 10, 5 epochs, 10 % validation.
    /// * `split-mnist`: MLP 784-256-256 without bias, 2-way heads, lr 0.01, batch 64, 5 epochs, 5 % validation.
    /// * `split-fmnist`: LeNet-style CNN, 2-way heads, lr 0.01, batch 64, 5 epochs, 5 % validation.
    ///
    /// GPM: PMNIST ε = [0.95, 0.99, 0.99] on all three layers (head included), 300 samples; Split-MNIST ε = 0.97
    /// on both trunk layers, 300 samples; Split-Fashion-MNIST ε = 0.97 + 0.003·task on every conv/linear trunk
    /// layer, 125 samples. Heads are projected only in single-head runs.
    pub fn named(name: &str, tasks: Option<usize>) -> Result<Self> {
        let base = TrainConfig::default();
        let split_cfg = TrainConfig { batch_size: 64, ..base.clone() };
        Ok(match name {
            "pmnist" => {
                let tasks = tasks.unwrap_or(10);
                Preset {
                    stream: StreamSpec::PermutedMnist { tasks },
                    multi_head: false,
                    model: ModelSpec::Mlp { hidden: vec![100, 100], bias: false },
                    train: base,
                    val_frac: 0.1,
                    gpm: GpmConfig {
                        thresholds: vec![0.95, 0.99, 0.99],
                        threshold_increment: 0.0,
                        samples: 300,
                        project_heads: true,
                    },
                    ewc_lambda: EWC_LAMBDA,
                }
            }
            "split-mnist" => Preset {
                stream: StreamSpec::SplitMnist,
                multi_head: true,
                model: ModelSpec::Mlp { hidden: vec![256, 256], bias: false },
                train: split_cfg,
                val_frac: 0.05,
                gpm: GpmConfig { thresholds: vec![0.97], threshold_increment: 0.0, samples: 300, project_heads: false },
                ewc_lambda: EWC_LAMBDA,
            },
            "split-fmnist" => Preset {
                stream: StreamSpec::SplitFashion,
                multi_head: true,
                model: ModelSpec::Lenet,
                train: split_cfg,
                val_frac: 0.05,
                gpm: GpmConfig {
                    thresholds: vec![0.97],
                    threshold_increment: 0.003,
                    samples: 125,
                    project_heads: false,
                },
                ewc_lambda: EWC_LAMBDA,
            },
            other => return Err(Error::UnknownStream(other.to_string())),
        })
    }

    /// Load the data and cut the stream. `seed` fixes permutations and validation slices.
    pub fn load(&self, data_dir: &std::path::Path, seed: u64) -> Result<Stream> {
        let check_tasks = |n: usize| {
            if n == 0 { Err(Error::Invalid("a stream needs at least one task".into())) } else { Ok(()) }
        };
        match &self.stream {
            StreamSpec::PermutedMnist { tasks } => {
                check_tasks(*tasks)?;
                let ds = data::load_mnist(&data_dir.join("mnist"))?;
                stream::permuted(&ds, *tasks, seed, self.val_frac)
            }
            StreamSpec::SplitMnist => {
                let ds = data::load_mnist(&data_dir.join("mnist"))?;
                stream::split(&ds, "split-mnist", &stream::default_pairs(10), self.multi_head, seed, self.val_frac)
            }
            StreamSpec::SplitFashion => {
                let ds = data::load_fashion_mnist(&data_dir.join("fashion-mnist"))?;
                stream::split(&ds, "split-fmnist", &stream::default_pairs(10), self.multi_head, seed, self.val_frac)
            }
            StreamSpec::Custom { files, groups } => {
                check_tasks(groups.len())?;
                let ds = data::load_idx_dataset("custom", &files[0], &files[1], &files[2], &files[3])?;
                stream::split(&ds, "custom", groups, self.multi_head, seed, self.val_frac)
            }
        }
    }
}
