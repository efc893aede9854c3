//! Named streams with the settings the papers use for them (model, training schedule, validation share).

use std::path::PathBuf;

use firmware::gpm::GpmConfig;
use firmware::nn::{Linear, Model, zoo};
use firmware::onnx::{Cut, DeviceModel, OnnxModel};
use firmware::train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::data;
use crate::data::backbone::{self, tasks_through_prefix};
use crate::data::photos;
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
    /// A pre-trained network from an ONNX file (`host pretrain`'s output, or any file the importer reads): the
    /// layers after `cut` start from the file's weights (θ₀ of every method is the pre-trained model); the
    /// layers before it are a frozen prefix the stream's samples are passed through once ([`Preset::load`]). The
    /// file's own heads are replaced by fresh ones for the stream's tasks (its classes are not the stream's).
    Pretrained {
        /// The ONNX file.
        path: PathBuf,
        /// Where the frozen prefix ends (`input`: nothing frozen, `last:K`, or a tensor name).
        cut: String,
    },
}

/// `stream` with every sample replaced by its features after `dm`'s frozen prefix (unchanged when the cut
/// leaves nothing frozen), computed once; the stream becomes flat vectors of the trainable part's input width.
fn through_prefix(dm: &DeviceModel, stream: Stream) -> Result<Stream> {
    if dm.prefix.is_none() {
        return Ok(stream);
    }
    let tasks = tasks_through_prefix(dm, &stream)?;
    Ok(Stream { channels: 1, rows: 1, cols: dm.trainable.input_len(), tasks, ..stream })
}

/// The shipped pre-trained base (a CNN trained on MNIST digits 0–3; models/README.md).
pub fn shipped_base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/mnist-cnn-0123.onnx")
}

impl ModelSpec {
    /// Parse `mlp:256,256`, `mlp:100,100:bias`, `lenet`, `cnn` or `onnx:FILE.onnx[@CUT]` (cut `input` when
    /// omitted).
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
            Some("onnx") => {
                let rest = s.split_once(':').map_or("", |(_, r)| r);
                let (path, cut) = rest.rsplit_once('@').unwrap_or((rest, "input"));
                if path.is_empty() {
                    return Err(Error::Invalid(format!("model '{s}': use onnx:FILE.onnx[@CUT]")));
                }
                Ok(ModelSpec::Pretrained { path: PathBuf::from(path), cut: cut.to_string() })
            }
            _ => Err(Error::Invalid(format!(
                "unknown model '{s}' (use mlp:W1,W2[:bias], lenet, cnn or onnx:FILE.onnx[@CUT])"
            ))),
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
            ModelSpec::Pretrained { path, cut } => {
                let dm = self.open_pretrained(path, cut)?;
                if dm.trainable.input_len() != input {
                    return Err(Error::Invalid(format!(
                        "{}: the layers after cut '{cut}' take {} values per sample, the stream gives {input}",
                        path.display(),
                        dm.trainable.input_len()
                    )));
                }
                let t = dm.trainable;
                let width = t.heads.first().map_or_else(|| t.input_len(), Linear::in_features);
                let heads = head_sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| Linear::new(&format!("head.{i}"), width, n, true, &mut rng))
                    .collect();
                Model::new(t.input_shape, t.trunk, heads)?
            }
        })
    }

    /// The file of a [`ModelSpec::Pretrained`], split at its cut.
    pub fn open_pretrained(&self, path: &std::path::Path, cut: &str) -> Result<DeviceModel> {
        Ok(OnnxModel::open(path)?.split(&Cut::parse(cut)?)?)
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
    /// MNIST (or Fashion-MNIST) cut into these class groups, one task each (the pre-trained streams: MNIST
    /// 4/5, 6/7, 8/9 after a base trained on 0–3).
    Groups {
        /// Fashion-MNIST instead of MNIST.
        fashion: bool,
        /// Class groups, one per task.
        groups: Vec<Vec<usize>>,
    },
    /// MNIST (or Fashion-MNIST), subsampled, through the frozen open_nsfw ResNet-50 prefix
    /// ([`crate::data::backbone`]), cut into these class groups: the trainable suffix sees 1024-d features.
    Backbone {
        /// Fashion-MNIST instead of MNIST.
        fashion: bool,
        /// Images kept per class.
        subsample: backbone::Subsample,
        /// Class groups, one per task.
        groups: Vec<Vec<usize>>,
    },
    /// Every image of MNIST (or Fashion-MNIST) sent as a camera's grey picture through the frozen
    /// EfficientNet-Lite0 prefix ([`crate::data::photos::grey_dataset`]), cut into these class groups: the
    /// trainable suffix sees 1280-d features.
    GreyLite0 {
        /// Fashion-MNIST instead of MNIST.
        fashion: bool,
        /// Class groups, one per task.
        groups: Vec<Vec<usize>>,
    },
    /// Folders of colour photos under the data folder (one per class, any size, PNG or JPEG) through the frozen
    /// EfficientNet-Lite0 prefix ([`crate::data::photos`]), a fixed per-class test split, cut into these class
    /// groups: the trainable suffix sees 1280-d features.
    Photos {
        /// Stream name (`tux8`).
        name: String,
        /// Folder under the data folder.
        folder: String,
        /// Class folders, in class order.
        classes: Vec<String>,
        /// Test photos per class.
        test_per_class: usize,
        /// Class groups, one per task.
        groups: Vec<Vec<usize>>,
    },
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
    /// classes arrive ([`firmware::nn::Model::grow_head`], see [`crate::runs::simulate::run`]).
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
    /// Score on the tasks' validation splits instead of their test sets (`host compare --eval val`): for choosing
    /// hyper-parameters without seeing a test set. The stream's name gets `@val`.
    pub eval_on_val: bool,
    /// Few-shot training (`--shots K`): each task keeps `K` training samples per class, drawn per seed
    /// ([`stream::keep_shots`]); validation and test splits unchanged. `None`: every sample. The stream's name
    /// gets `@K-shot`.
    pub shots: Option<usize>,
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
    /// * `mnist-pt`: the pre-trained MNIST stream: the shipped CNN (pre-trained on digits 0–3,
    ///   [`shipped_base`]) learns 4/5, 6/7, 8/9 as three tasks with 2-way heads, every layer trainable from the
    ///   pre-trained weights (cut `input`); batch 64, lr 0.01, 5 epochs, GPM's conv-net thresholds.
    /// * `fmnist-pt`: Fashion-MNIST, 5 × 2 classes, on the same MNIST-pre-trained network (a domain shift).
    /// * `mnist-pt-ci`, `fmnist-pt-ci`: the same, class-incremental (one growing head, no task id).
    /// * `mnist-nsfw`, `fmnist-nsfw` (and `-ci`): Split-MNIST / Split-Fashion-MNIST (5 × 2 classes) through the
    ///   frozen open_nsfw ResNet-50 prefix (a third-party backbone, [`crate::data::backbone`]; the first 600
    ///   training and 300 test images per class), with a trainable suffix MLP 1024-256 (biased) and the heads;
    ///   split-mnist's training and GPM settings (ε 0.97, 300 samples).
    /// * `mnist-lite0`, `fmnist-lite0` (and `-ci`): Split-MNIST / Split-Fashion-MNIST (5 × 2 classes), all 60 000
    ///   training and 10 000 test images, each sent as a grey picture through the camera's frozen
    ///   EfficientNet-Lite0 prefix (1280-d features, cached on disk), a trainable MLP 1280-256 (biased) and the
    ///   heads; split-mnist's training and GPM settings.
    /// * `tux8` (and `tux8-ci`): the camera stream: colour photos of eight tuxpaint stamp categories (Debian
    ///   `tuxpaint-stamps-default`, [`crate::data::photos::TUX8_CLASSES`]; 14 fixed test photos per class, 20 to
    ///   233 for training), decoded as the board decodes its inbox and passed through the frozen
    ///   EfficientNet-Lite0 prefix (1280-d features, cached on disk), 4 tasks of 2 classes, a trainable MLP
    ///   1280-256 (biased) and the heads; split-mnist's training and GPM settings. With `--shots K`: K photos a
    ///   class.
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
                    eval_on_val: false,
                    shots: None,
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
                eval_on_val: false,
                shots: None,
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
                eval_on_val: false,
                shots: None,
            },
            "mnist-pt" | "fmnist-pt" => {
                let fashion = name == "fmnist-pt";
                let groups = if fashion { stream::default_pairs(10) } else { vec![vec![4, 5], vec![6, 7], vec![8, 9]] };
                // split-fmnist's settings (GPM's conv-net thresholds): the whole CNN trains from the pre-trained θ₀.
                Preset {
                    stream: StreamSpec::Groups { fashion, groups },
                    model: ModelSpec::Pretrained { path: shipped_base(), cut: "input".into() },
                    ..Self::named("split-fmnist", tasks)?
                }
            }
            "mnist-nsfw" | "fmnist-nsfw" => Preset {
                stream: StreamSpec::Backbone {
                    fashion: name == "fmnist-nsfw",
                    subsample: backbone::Subsample { train: 600, test: 300 },
                    groups: stream::default_pairs(10),
                },
                model: ModelSpec::Mlp { hidden: vec![256], bias: true },
                ..Self::named("split-mnist", tasks)?
            },
            "mnist-lite0" | "fmnist-lite0" => Preset {
                stream: StreamSpec::GreyLite0 { fashion: name == "fmnist-lite0", groups: stream::default_pairs(10) },
                model: ModelSpec::Mlp { hidden: vec![256], bias: true },
                ..Self::named("split-mnist", tasks)?
            },
            "tux8" => Preset {
                stream: StreamSpec::Photos {
                    name: "tux8".into(),
                    folder: photos::TUX8_FOLDER.into(),
                    classes: photos::TUX8_CLASSES.iter().map(|c| c.to_string()).collect(),
                    test_per_class: photos::TUX8_TEST_PER_CLASS,
                    groups: stream::default_pairs(photos::TUX8_CLASSES.len()),
                },
                model: ModelSpec::Mlp { hidden: vec![256], bias: true },
                ..Self::named("split-mnist", tasks)?
            },
            "split-mnist-ci" | "split-fmnist-ci" | "mnist-pt-ci" | "fmnist-pt-ci" | "mnist-nsfw-ci"
            | "fmnist-nsfw-ci" | "mnist-lite0-ci" | "fmnist-lite0-ci" | "tux8-ci" => {
                let mut p = Self::named(name.trim_end_matches("-ci"), tasks)?;
                p.multi_head = false;
                p.grow_head = true;
                p
            }
            other => return Err(Error::UnknownStream(other.to_string())),
        })
    }

    /// The GPM settings a method runs with on this preset's stream: [`Preset::gpm`], with the heads projected
    /// only when the run is single-head (a head per task is never projected).
    pub fn gpm_config(&self) -> GpmConfig {
        GpmConfig { project_heads: !self.multi_head, ..self.gpm.clone() }
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
        // Shots before the frozen prefix: only the kept samples pass through it.
        if let Some(k) = self.shots {
            stream::keep_shots(&mut s, k, seed)?;
        }
        if let ModelSpec::Pretrained { path, cut } = &self.model {
            s = through_prefix(&self.model.open_pretrained(path, cut)?, s)?;
        }
        if self.eval_on_val {
            if let Some(t) = s.tasks.iter().find(|t| t.val.is_empty()) {
                return Err(Error::Invalid(format!("--eval val: task {} has no validation split", t.id)));
            }
            for t in &mut s.tasks {
                t.test = t.val.clone();
            }
            s.name.push_str("@val");
        }
        if self.grow_head {
            if s.multi_head {
                return Err(Error::Invalid("a growing head needs a single-head stream (--single-head)".into()));
            }
            if !s.name.ends_with("-ci") {
                s.name.push_str("-ci");
            }
        }
        if let Some(k) = self.shots {
            s.name.push_str(&format!("@{k}-shot"));
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
            StreamSpec::Groups { fashion, groups } => {
                check_tasks(groups.len())?;
                let (ds, name) = if *fashion {
                    (data::load_fashion_mnist(&data_dir.join("fashion-mnist"))?, "fmnist")
                } else {
                    (data::load_mnist(&data_dir.join("mnist"))?, "mnist")
                };
                stream::split(&ds, &format!("{name}-pt"), groups, self.multi_head, seed, self.val_frac)
            }
            StreamSpec::Backbone { fashion, subsample, groups } => {
                check_tasks(groups.len())?;
                let (ds, norm, name) = if *fashion {
                    (data::load_fashion_mnist(&data_dir.join("fashion-mnist"))?, data::FASHION_MNIST_NORM, "fmnist")
                } else {
                    (data::load_mnist(&data_dir.join("mnist"))?, data::MNIST_NORM, "mnist")
                };
                let feats = backbone::features_of(&backbone::open_nsfw_path(data_dir), &ds, norm, *subsample)?;
                stream::split(&feats, &format!("{name}-nsfw"), groups, self.multi_head, seed, self.val_frac)
            }
            StreamSpec::GreyLite0 { fashion, groups } => {
                check_tasks(groups.len())?;
                let (ds, norm, name) = if *fashion {
                    (data::load_fashion_mnist(&data_dir.join("fashion-mnist"))?, data::FASHION_MNIST_NORM, "fmnist")
                } else {
                    (data::load_mnist(&data_dir.join("mnist"))?, data::MNIST_NORM, "mnist")
                };
                let feats = photos::grey_dataset(data_dir, &ds, norm)?;
                stream::split(&feats, &format!("{name}-lite0"), groups, self.multi_head, seed, self.val_frac)
            }
            StreamSpec::Photos { name, folder, classes, test_per_class, groups } => {
                check_tasks(groups.len())?;
                let names: Vec<&str> = classes.iter().map(String::as_str).collect();
                let ds = photos::photo_dataset(data_dir, &data_dir.join(folder), name, &names, *test_per_class)?;
                stream::split(&ds, name, groups, self.multi_head, seed, self.val_frac)
            }
            StreamSpec::Custom { files, groups } => {
                check_tasks(groups.len())?;
                let ds = data::load_idx_dataset("custom", &files[0], &files[1], &files[2], &files[3])?;
                stream::split(&ds, "custom", groups, self.multi_head, seed, self.val_frac)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_model_spec_parses_path_and_cut() {
        let p = |s: &str| ModelSpec::parse(s).unwrap();
        assert_eq!(p("onnx:m.onnx"), ModelSpec::Pretrained { path: "m.onnx".into(), cut: "input".into() });
        assert_eq!(p("onnx:a/b.onnx@last:2"), ModelSpec::Pretrained { path: "a/b.onnx".into(), cut: "last:2".into() });
        assert!(ModelSpec::parse("onnx:").is_err());
        assert!(Preset::named("mnist-pt-ci", None).is_ok_and(|p| p.grow_head && !p.multi_head));
    }
}
