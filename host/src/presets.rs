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
    /// LeNet without batch norm, with biases (`firmware::nn::zoo::cnn`): the pre-trained base whose
    /// convolutional trunk the device freezes.
    Cnn,
}

impl ModelSpec {
    /// Parse `mlp:256,256`, `mlp:100,100:bias` or `lenet`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.split(':');
        match parts.next() {
            Some("lenet") if parts.next().is_none() => Ok(ModelSpec::Lenet),
            Some("cnn") if parts.next().is_none() => Ok(ModelSpec::Cnn),
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
            _ => Err(Error::Invalid(format!("unknown model '{s}' (use mlp:W1,W2[:bias], lenet or cnn)"))),
        }
    }

    /// Build the network for `stream`'s input size and heads.
    pub fn build(&self, stream: &Stream, seed: u64) -> Result<Model> {
        self.build_for([stream.channels, stream.rows, stream.cols], &stream.head_sizes, seed)
    }

    /// Build the network for images of `[channels, rows, cols]` and heads of the given sizes.
    pub fn build_for(&self, image: [usize; 3], head_sizes: &[usize], seed: u64) -> Result<Model> {
        let mut rng = firmware::seeded_rng(seed);
        let input = image.iter().product();
        Ok(match self {
            ModelSpec::Mlp { hidden, bias } => zoo::mlp(input, hidden, head_sizes, *bias, &mut rng)?,
            ModelSpec::Lenet => zoo::lenet(image, 100, head_sizes, &mut rng)?,
            ModelSpec::Cnn => zoo::cnn(image, 100, head_sizes, &mut rng)?,
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
    /// Class-incremental in the field: the single head starts with the first task's classes and grows as new
    /// classes arrive ([`firmware::nn::Model::grow_head`], see [`crate::simulate::run`]).
    pub grow_head: bool,
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
    /// * `split-mnist-ci`: `split-mnist` class-incremental: one shared head that starts with 2 outputs and grows by
    ///   2 per task (stream name `split-mnist-ci`; GPM projects the head, as in every single-head run).
    /// * `split-fmnist-ci`: `split-fmnist` class-incremental in the same way.
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
                    grow_head: false,
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
                grow_head: false,
                model: ModelSpec::Mlp { hidden: vec![256, 256], bias: false },
                train: split_cfg,
                val_frac: 0.05,
                gpm: GpmConfig { thresholds: vec![0.97], threshold_increment: 0.0, samples: 300, project_heads: false },
                ewc_lambda: EWC_LAMBDA,
            },
            "split-fmnist" => Preset {
                stream: StreamSpec::SplitFashion,
                multi_head: true,
                grow_head: false,
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
            "split-mnist-ci" | "split-fmnist-ci" => {
                let mut p = Self::named(name.trim_end_matches("-ci"), tasks)?;
                p.multi_head = false;
                p.grow_head = true;
                p
            }
            other => return Err(Error::UnknownStream(other.to_string())),
        })
    }

    /// The network for `stream`: as [`ModelSpec::build`], except that with [`Preset::grow_head`] the single head
    /// starts with only the first task's classes.
    pub fn build_model(&self, stream: &Stream, seed: u64) -> Result<Model> {
        if !self.grow_head {
            return self.model.build(stream, seed);
        }
        if stream.multi_head || stream.head_sizes.len() != 1 {
            return Err(Error::Invalid("a growing head needs a single-head stream".into()));
        }
        let first = stream.tasks.first().map_or(1, |t| t.classes.len());
        self.model.build_for([stream.channels, stream.rows, stream.cols], &[first], seed)
    }

    /// Load the data and cut the stream. `seed` fixes permutations and validation slices. With
    /// [`Preset::grow_head`] the stream's name gets a `-ci` suffix.
    pub fn load(&self, data_dir: &std::path::Path, seed: u64) -> Result<Stream> {
        let mut s = self.load_stream(data_dir, seed)?;
        if self.grow_head {
            if s.multi_head {
                return Err(Error::Invalid("a growing head needs a single-head stream (--single-head)".into()));
            }
            if !s.name.ends_with("-ci") {
                s.name.push_str("-ci");
            }
        }
        Ok(s)
    }

    fn load_stream(&self, data_dir: &std::path::Path, seed: u64) -> Result<Stream> {
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
