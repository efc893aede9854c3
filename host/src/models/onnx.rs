//! ONNX on the host: pre-train and export a base model, write reference outputs for external checkers, run the
//! device path (load an ONNX file → learn a stream of new tasks → re-export), and time the frozen prefix.
//!
//! The device path calls exactly the firmware code the board runs ([`firmware::onnx`], [`firmware::method`]);
//! the host only supplies data from IDX files and prints reports.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use firmware::data::Samples;
use firmware::nn::{Mode, Model};
use firmware::onnx::{Cut, DeviceModel, OnnxModel, model_to_proto};
use firmware::train::{TrainConfig, evaluate};
use ndarray::{Array2, ArrayView2, Axis, s};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::backbone::tasks_through_prefix;
use crate::data::stream::{self, Stream};
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::models::params::ModelFile;
use crate::progress::Bar;
use crate::reports::{self, Aggregate};
use crate::runs::presets::{ModelSpec, Preset};
use crate::runs::{registry, simulate};

/// Largest difference between our outputs and a reloaded copy's that still counts as "the same model".
pub const RELOAD_TOLERANCE: f32 = 1e-4;

fn load_dataset(name: &str, dir: Option<&Path>) -> Result<Dataset> {
    let dir = dir.map_or_else(data::data_dir, Path::to_path_buf);
    match name {
        "mnist" => data::load_mnist(&dir.join("mnist")),
        "fmnist" | "fashion-mnist" => data::load_fashion_mnist(&dir.join("fashion-mnist")),
        other => Err(Error::Invalid(format!("unknown dataset '{other}' (mnist, fmnist)"))),
    }
}

fn parse_classes(s: &str) -> Result<Vec<usize>> {
    let v = s
        .split(',')
        .map(|c| c.trim().parse::<usize>().map_err(|_| Error::Invalid(format!("bad class '{c}' in '{s}'"))))
        .collect::<Result<Vec<_>>>()?;
    if v.is_empty() {
        return Err(Error::Invalid("no classes given".into()));
    }
    Ok(v)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Largest `|a − b| / max(1, |b|)` over two equally shaped arrays (`∞` when the shapes differ).
pub fn max_rel_diff(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> f32 {
    if a.dim() != b.dim() {
        return f32::INFINITY;
    }
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

// ------------------------------------------------------------------------------------------------ pretrain

/// `host pretrain`: train a base model on a group of classes (single head) and export it as ONNX.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Data set: mnist or fmnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Classes the base model learns (one head, labels in this order).
    #[arg(long, default_value = "0,1,2,3")]
    pub classes: String,
    /// Network: cnn (LeNet without batch norm), lenet or mlp:W1,W2[:bias].
    #[arg(long, default_value = "cnn")]
    pub model: String,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Seed (initialisation, shuffling, validation slice).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the parameters (JSON, for `host export`).
    #[arg(long, default_value = "out/base-model.json")]
    pub params: PathBuf,
    /// Where to write the ONNX file.
    #[arg(long, default_value = "out/base-model.onnx")]
    pub out: PathBuf,
}

/// Train the base model, save its parameters and its ONNX export, and check that the exported file loads back
/// (all layers native) with the same outputs.
pub fn pretrain(a: &PretrainArgs) -> Result<()> {
    let ds = load_dataset(&a.dataset, a.data_dir.as_deref())?;
    let classes = parse_classes(&a.classes)?;
    let name = format!("{}-classes-{}", ds.name, classes.iter().map(ToString::to_string).collect::<Vec<_>>().join(""));
    let stream = stream::split(&ds, &name, std::slice::from_ref(&classes), false, a.seed, 0.05)?;
    let task = &stream.tasks[0];
    let spec = ModelSpec::parse(&a.model)?;
    let mut model = spec.build(&stream, a.seed)?;
    let cfg = TrainConfig { epochs: a.epochs, lr: a.lr, batch_size: a.batch_size, ..TrainConfig::default() };
    cfg.validate()?;
    let data = firmware::data::TaskData { task_id: 0, head: 0, train: &task.train, val: &task.val };
    let mut rng = firmware::seeded_rng(a.seed);
    let mut bar = Bar::new("pretrain", (task.train.len() * a.epochs) as u64);
    let t0 = Instant::now();
    firmware::train::train(&mut model, &data, &cfg, &mut firmware::train::NoHook, &mut rng, &mut bar, "pretrain")?;
    bar.finish();
    let (loss, acc) = evaluate(&mut model, &task.test, 0, simulate::EVAL_BATCH)?;
    println!(
        "{name}: {} epochs in {:.1} s, test loss {loss:.4}, test accuracy {:.2} % ({} test images)",
        a.epochs,
        t0.elapsed().as_secs_f64(),
        100.0 * acc,
        task.test.len()
    );
    let saved = ModelFile::from_model(&spec, &model, &name, acc);
    reports::write_json(&a.params, &saved)?;
    println!("parameters written to {}", a.params.display());
    export_checked(&mut model, &task.test, &a.out)
}

/// Export `model` to `out`, reload the file with the device loader (every layer native) and check that it
/// computes the same logits on (up to 256 of) `samples`.
fn export_checked(model: &mut Model, samples: &Samples, out: &Path) -> Result<()> {
    let bytes = firmware::onnx::encode(&model_to_proto(model, None)?);
    write_bytes(out, &bytes)?;
    let mut loaded = OnnxModel::from_bytes(&bytes)?.split(&Cut::Input)?;
    let n = samples.len().min(256);
    let x = samples.x.slice(s![..n, ..]);
    let mut worst = 0.0f32;
    for h in 0..model.heads.len() {
        let ours = model.forward(&x, h, Mode::Eval)?;
        let back = loaded.forward(&x, h)?;
        worst = worst.max(max_rel_diff(&back.view(), &ours.view()));
    }
    model.clear_cache();
    if worst > 1e-5 {
        return Err(Error::Invalid(format!("the exported file reloads with different outputs (max diff {worst:e})")));
    }
    println!(
        "ONNX written to {} ({} bytes, opset {}); reloaded: max output difference {worst:.1e} on {n} test images",
        out.display(),
        bytes.len(),
        firmware::onnx::OPSET
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------ export

/// `host export`: write a saved parameter file as ONNX.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Parameter file written by `host train` or `host pretrain`.
    #[arg(long, default_value = "out/base-model.json")]
    pub params: PathBuf,
    /// ONNX file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Rebuild the model from its parameter file and export it.
pub fn export(a: &ExportArgs) -> Result<()> {
    let model = ModelFile::read(&a.params)?.to_model()?;
    let bytes = firmware::onnx::encode(&model_to_proto(&model, None)?);
    write_bytes(&a.out, &bytes)?;
    // The file must load back.
    OnnxModel::from_bytes(&bytes)?;
    println!(
        "{} ({} heads, {} parameters) written to {} ({} bytes)",
        a.params.display(),
        model.heads.len(),
        model.num_params(),
        a.out.display(),
        bytes.len()
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------ reference

/// Inputs and expected outputs of one model, for an external runtime to reproduce (`scripts/check-onnx.py`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// The ONNX file these outputs belong to.
    pub model: String,
    /// Who computed the outputs (`host model from <params>` or `device model`).
    pub source: String,
    /// Name of the graph input to feed.
    pub input_name: String,
    /// Shape of the input batch.
    pub input_shape: Vec<usize>,
    /// Input values, row-major.
    pub input: Vec<f32>,
    /// Expected outputs by graph output name.
    pub outputs: Vec<ReferenceOutput>,
}

/// One expected output tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceOutput {
    /// Graph output name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Reference {
    fn new(model: &Path, source: String, input_name: String, per_sample: &[usize], x: &ArrayView2<'_, f32>) -> Self {
        let mut input_shape = vec![x.nrows()];
        input_shape.extend_from_slice(per_sample);
        Self {
            model: model.display().to_string(),
            source,
            input_name,
            input_shape,
            input: x.iter().copied().collect(),
            outputs: Vec::new(),
        }
    }

    fn push(&mut self, name: String, y: &Array2<f32>) {
        self.outputs.push(ReferenceOutput { name, shape: y.shape().to_vec(), data: y.iter().copied().collect() });
    }
}

/// `host onnx-reference`: our outputs for real test images, for `scripts/check-onnx.py`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// The ONNX file the reference is for.
    #[arg(long)]
    pub model: PathBuf,
    /// Compute the outputs with the host model rebuilt from this parameter file (default: with the device
    /// loader on the ONNX file itself).
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// Device loader cut (`input`, `last:K` or a tensor name).
    #[arg(long, default_value = "input")]
    pub cut: String,
    /// Data set the test images come from.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of test images (one batch).
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// JSON file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Compute and write a [`Reference`].
pub fn reference(a: &ReferenceArgs) -> Result<()> {
    let file = OnnxModel::open(&a.model)?;
    let ds = load_dataset(&a.dataset, a.data_dir.as_deref())?;
    let n = a.count.clamp(1, ds.test_x.nrows());
    let x = ds.test_x.slice(s![..n, ..]);
    let names = file.output_names();
    let per_sample = file.input_shape().to_vec();
    if per_sample.iter().product::<usize>() != x.ncols() {
        return Err(Error::Invalid(format!(
            "{} takes inputs of shape {per_sample:?}, not {} images",
            a.model.display(),
            ds.name
        )));
    }
    let mut r = match &a.params {
        Some(p) => {
            let mut model = ModelFile::read(p)?.to_model()?;
            if model.heads.len() != names.len() {
                return Err(Error::Invalid(format!(
                    "{} has {} heads, the ONNX file {} outputs",
                    p.display(),
                    model.heads.len(),
                    names.len()
                )));
            }
            let mut r = Reference::new(
                &a.model,
                format!("host model from {}", p.display()),
                file.input_name(),
                &per_sample,
                &x,
            );
            for (h, name) in names.iter().enumerate() {
                let y = model.forward(&x, h, Mode::Eval)?;
                r.push(name.clone(), &y);
            }
            r
        }
        None => {
            let mut dm = file.split(&Cut::parse(&a.cut)?)?;
            let mut r = Reference::new(&a.model, "device model".into(), file.input_name(), &per_sample, &x);
            for (name, y) in names.iter().zip(dm.forward_all(&x)?) {
                r.push(name.clone(), &y);
            }
            r
        }
    };
    r.model = a.model.display().to_string();
    reports::write_json(&a.out, &r)?;
    println!("reference outputs ({} images, {} outputs) written to {}", n, r.outputs.len(), a.out.display());
    Ok(())
}

// ------------------------------------------------------------------------------------------------ device path

/// `host device-learn`: the device path on the host — load an ONNX model, cut it into a frozen prefix (tract)
/// and native trainable layers, learn a stream of new tasks (one new head each), re-export.
#[derive(Debug, Args)]
pub struct DeviceLearnArgs {
    /// ONNX model to start from (e.g. the output of `host pretrain`).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to cut: `last:K` (the last K layers with parameters stay trainable, heads counting as one),
    /// a tensor name, or `input` (everything trainable).
    #[arg(long, default_value = "last:2")]
    pub cut: String,
    /// Data set of the new tasks.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The new tasks' class groups, e.g. "4,5;6,7;8,9" (one new head per task).
    #[arg(long, default_value = "4,5;6,7;8,9")]
    pub groups: String,
    /// Classes the file's existing head 0 was trained on (labels in this order), to report how it fares.
    #[arg(long)]
    pub base_classes: Option<String>,
    /// Method (see `host simulate --method`).
    #[arg(long, default_value = "gpm+became")]
    pub method: String,
    /// Epochs per stage.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Seed (new heads, shuffling, validation slices).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the adapted model.
    #[arg(long, default_value = "out/device/adapted.onnx")]
    pub out: PathBuf,
    /// Also write reference outputs of the adapted model for `scripts/check-onnx.py`.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Folder for the JSON and Markdown report.
    #[arg(long, default_value = "out/device")]
    pub report_dir: PathBuf,
    /// Board profile of the class-incremental field run (budgets, Fisher format).
    #[arg(long, default_value = "boards/jetson-nano-4gb.toml")]
    pub board: PathBuf,
}

/// Rows of `ds`'s test split whose label is in `classes`, labelled by position in `classes`.
fn class_test_samples(ds: &Dataset, classes: &[usize]) -> Result<Samples> {
    let rows: Vec<usize> = (0..ds.test_y.len()).filter(|&i| classes.contains(&ds.test_y[i])).collect();
    let y = rows.iter().filter_map(|&i| classes.iter().position(|&c| c == ds.test_y[i])).collect();
    Ok(Samples::new(ds.test_x.select(Axis(0), &rows), y)?)
}

/// Replace every sample set of `stream` by its features through `dm`'s frozen prefix (computed once, in chunks
/// of 256) and move each task to head `offset + head`.
pub fn feature_stream(dm: &DeviceModel, stream: &Stream, offset: usize) -> Result<Stream> {
    let mut tasks = tasks_through_prefix(dm, stream)?;
    for t in &mut tasks {
        t.head += offset;
    }
    let width = dm.trainable.input_len();
    let mut head_sizes = vec![0; offset];
    head_sizes.extend_from_slice(&stream.head_sizes);
    Ok(Stream { name: stream.name.clone(), channels: 1, rows: 1, cols: width, multi_head: true, head_sizes, tasks })
}

/// Run the device path and print the accuracy matrix and α per task.
pub fn device_learn(a: &DeviceLearnArgs) -> Result<()> {
    let t0 = Instant::now();
    let file = OnnxModel::open(&a.model)?;
    let cut = Cut::parse(&a.cut)?;
    let mut dm = file.split(&cut)?;
    let frozen = dm.prefix.as_ref().map_or(0, |p| p.graph.nodes.len());
    println!(
        "loaded {}: cut at '{}' → {frozen} frozen nodes in tract ({}), trainable: {} ({} parameters)",
        a.model.display(),
        file.cut_tensor(&cut)?,
        dm.prefix.as_ref().map_or("none", |p| p.plan_kind().describe()),
        dm.trainable
            .trunk
            .iter()
            .map(|l| l.kind())
            .chain(dm.trainable.heads.iter().map(|_| "Head"))
            .collect::<Vec<_>>()
            .join(" → "),
        dm.trainable.num_params()
    );
    let ds = load_dataset(&a.dataset, a.data_dir.as_deref())?;
    if ds.features() != dm.input_len() {
        return Err(Error::Invalid(format!(
            "the model takes {} inputs per sample, {} images have {}",
            dm.input_len(),
            ds.name,
            ds.features()
        )));
    }
    let groups = stream::parse_groups(&a.groups)?;
    let stream = stream::split(&ds, &format!("{}-new-tasks", ds.name), &groups, true, a.seed, 0.05)?;
    // The class-incremental field run starts from the file's model as it is (one head over the base classes).
    let base_model = dm.trainable.clone();
    // One new head per task, behind the file's heads.
    let offset = dm.trainable.heads.len();
    let mut rng = firmware::seeded_rng(a.seed ^ 0x4EAD);
    for &classes in &stream.head_sizes {
        dm.add_head(classes, &mut rng)?;
    }
    let base = match &a.base_classes {
        Some(c) => Some(class_test_samples(&ds, &parse_classes(c)?)?),
        None => None,
    };
    let base_feats = match &base {
        Some(b) => Some(Samples::new(dm.features_batched(&b.x.view(), 256)?, b.y.clone())?),
        None => None,
    };
    let tf = Instant::now();
    let fstream = feature_stream(&dm, &stream, offset)?;
    let n_feat: usize = fstream.tasks.iter().map(|t| t.train.len() + t.val.len() + t.test.len()).sum();
    println!(
        "features of {n_feat} samples computed once through the frozen prefix in {:.1} s ({} values each)",
        tf.elapsed().as_secs_f64(),
        dm.trainable.input_len()
    );
    let base_before = match &base_feats {
        Some(b) => Some(evaluate(&mut dm.trainable, b, 0, simulate::EVAL_BATCH)?.1),
        None => None,
    };

    if let Some(base) = &base_feats {
        let base_classes = parse_classes(a.base_classes.as_deref().unwrap_or_default())?;
        // Factory provisioning: the base classes' own training images (the first PROVISION_PER_CLASS of each, in
        // file order) through the frozen prefix.
        let mut rows = Vec::new();
        for &c in &base_classes {
            rows.extend((0..ds.train_y.len()).filter(|&i| ds.train_y[i] == c).take(PROVISION_PER_CLASS));
        }
        rows.sort_unstable();
        let labels: Vec<usize> =
            rows.iter().filter_map(|&i| base_classes.iter().position(|&c| c == ds.train_y[i])).collect();
        let provision = Samples::new(dm.features_batched(&ds.train_x.select(Axis(0), &rows).view(), 256)?, labels)?;
        field_learn(a, base_model, &base_classes, &provision, base, &fstream, &groups)?;
    }
    println!("== task-incremental (one head per task, task id given at test time; for comparison with papers)");
    let conv = dm.trainable.trunk.iter().any(|l| matches!(l, firmware::nn::Layer::Conv2d(_)));
    let mut preset = Preset::named(if conv { "split-fmnist" } else { "split-mnist" }, None)?;
    preset.train.epochs = a.epochs;
    preset.train.validate()?;
    let mut method = registry::build(&a.method, &preset, &simulate::host_profile()?)?;
    let total: usize = fstream.tasks.iter().map(|t| t.train.len()).sum::<usize>() * a.epochs;
    let mut bar = Bar::new(&a.method, total as u64);
    let (result, learned) = simulate::run(&fstream, dm.trainable.clone(), method.as_mut(), a.seed, &mut bar)?;
    bar.finish();
    dm.trainable = learned;

    let agg = Aggregate::new(vec![result])?;
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    let md = reports::markdown(&agg, &command);
    println!("{md}");
    if let (Some(b), Some(before)) = (&base_feats, base_before) {
        let after = evaluate(&mut dm.trainable, b, 0, simulate::EVAL_BATCH)?.1;
        println!(
            "head 0 of the file (classes {}): test accuracy {:.1} % before, {:.1} % after learning the new tasks",
            a.base_classes.as_deref().unwrap_or_default(),
            100.0 * before,
            100.0 * after
        );
    }
    let stem = format!("{}-{}", agg.stream, agg.method);
    reports::write_json(&a.report_dir.join(format!("{stem}.json")), &agg)?;
    reports::write_text(&a.report_dir.join(format!("{stem}.md")), &md)?;

    dm.write_onnx(&a.out)?;
    let bytes = std::fs::metadata(&a.out).map_err(|e| Error::io(&a.out, e))?.len();
    // Reference batch: 16 test images of every new task (raw pixels).
    let rows: Vec<Array2<f32>> =
        stream.tasks.iter().map(|t| t.test.x.slice(s![..t.test.len().min(16), ..]).to_owned()).collect();
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let x = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Invalid(format!("reference batch: {e}")))?;
    let ours = dm.forward_all(&x.view())?;
    let worst = check_in_tract(&a.out, &x.view(), &ours)?;
    println!(
        "adapted model written to {} ({bytes} bytes, {} heads); reloaded whole in tract: max output difference {worst:.1e}",
        a.out.display(),
        ours.len()
    );
    if let Some(path) = &a.reference {
        let reloaded = OnnxModel::open(&a.out)?;
        let mut r =
            Reference::new(&a.out, "device model".into(), reloaded.input_name(), reloaded.input_shape(), &x.view());
        for (name, y) in reloaded.output_names().into_iter().zip(&ours) {
            r.push(name, y);
        }
        reports::write_json(path, &r)?;
        println!("reference outputs written to {}", path.display());
    }
    println!("device path done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Training images per base class the field run is provisioned with (see [`field_learn`]).
pub const PROVISION_PER_CLASS: usize = 256;

/// The field path, class-incremental: the board's learner ([`firmware::learner::Learner`] under the `--board`
/// profile, with the device's default method [`firmware::method::FIELD_METHOD`]) starts from the file's model (one
/// head over `base_classes`), receives each new group's training samples class by class (as many as its sample
/// buffer holds, every class equally), learns them as one task with a head that grows by one row per class, and is
/// scored after every task over the test images of every class seen so far, with no task id. Prints the accuracy
/// matrix and the headline: accuracy over all test images of all classes seen.
///
/// Before it ships, the board is **provisioned** with its base classes: the learner's first task is `provision`
/// (training images of the base classes the factory has, labels = positions in `base_classes`), so that the
/// device starts with GPM bases, a Fisher and exemplars of the base classes, not with a bare model whose old
/// classes nothing protects.
fn field_learn(
    a: &DeviceLearnArgs,
    model: Model,
    base_classes: &[usize],
    provision: &Samples,
    base_test: &Samples,
    fstream: &Stream,
    groups: &[Vec<usize>],
) -> Result<()> {
    use firmware::budget::BoardProfile;
    use firmware::daemon::{DeviceLearner, SAMPLE_CAPACITY};
    let t0 = Instant::now();
    let profile = BoardProfile::load(&a.board)?;
    firmware::threads::set_threads(profile.threads);
    let train = TrainConfig { epochs: a.epochs, ..TrainConfig::default() };
    let method = firmware::method::field_method(train, profile.fisher_format, profile.budget.fisher)?;
    let method_name = firmware::method::Method::name(&method);
    let names: Vec<String> = base_classes.iter().map(|c| c.to_string()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let head = model.heads.first().ok_or_else(|| Error::Invalid("the model has no head".into()))?;
    if head.out_features() != base_classes.len() || model.heads.len() != 1 {
        return Err(Error::Invalid(format!(
            "the field run needs one head over the {} base classes; the file has {} head(s), the first with {} outputs",
            base_classes.len(),
            model.heads.len(),
            head.out_features()
        )));
    }
    let mut learner = DeviceLearner::new(profile.clone(), "device-learn", model, method, &refs, a.seed)?;
    println!(
        "== class-incremental field run (the product's mode: one growing head, no task id), board {}, method {}",
        profile.name, method_name
    );
    // Test sets in digit labels: the base classes, then each group.
    let digits = |s: &Samples, classes: &[usize]| -> Result<Samples> {
        Ok(Samples::new(s.x.clone(), s.y.iter().map(|&y| classes[y]).collect())?)
    };
    let mut tests = vec![digits(base_test, base_classes)?];
    for (t, g) in fstream.tasks.iter().zip(groups) {
        tests.push(digits(&t.test, g)?);
    }
    let score = |learner: &DeviceLearner, upto: usize| -> Result<(Vec<f64>, f64)> {
        let mut m = learner.model().clone();
        let (mut per, mut hit, mut all) = (Vec::new(), 0usize, 0usize);
        for t in &tests[..=upto] {
            let pred = m.predict(&t.x.view(), 0)?;
            let ok = pred
                .iter()
                .zip(&t.y)
                .filter(|(p, y)| learner.class_name(**p as u32).ok().and_then(|n| n.parse::<usize>().ok()) == Some(**y))
                .count();
            per.push(100.0 * ok as f64 / t.len().max(1) as f64);
            hit += ok;
            all += t.len();
        }
        Ok((per, 100.0 * hit as f64 / all.max(1) as f64))
    };
    let mut rows = vec![score(&learner, 0)?];
    for (i, &y) in provision.y.iter().enumerate() {
        let row = provision.x.row(i);
        let pixels = row.as_slice().ok_or_else(|| Error::Invalid("feature row not contiguous".into()))?;
        learner.add_sample(&names[y], pixels)?;
    }
    learner.learn()?;
    println!(
        "provisioned with {} training images of the base classes: accuracy on them {:.2} %",
        provision.len(),
        score(&learner, 0)?.1
    );
    let mut rng = firmware::seeded_rng(a.seed ^ 0xF1E1D);
    for (ti, (t, g)) in fstream.tasks.iter().zip(groups).enumerate() {
        // Every class of the group equally, interleaved, as many as the sample buffer holds.
        let per_class = SAMPLE_CAPACITY / g.len();
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); g.len()];
        for (i, &y) in t.train.y.iter().enumerate() {
            by_class[y].push(i);
        }
        for idx in &mut by_class {
            rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
            idx.truncate(per_class);
        }
        for k in 0..per_class {
            for (c, idx) in by_class.iter().enumerate() {
                if let Some(&i) = idx.get(k) {
                    let row = t.train.x.row(i);
                    let pixels = row.as_slice().ok_or_else(|| Error::Invalid("feature row not contiguous".into()))?;
                    learner.add_sample(&g[c].to_string(), pixels)?;
                }
            }
        }
        let n = learner.buffer().len();
        let report = learner.learn()?;
        rows.push(score(&learner, ti + 1)?);
        println!(
            "learned classes {:?} from {n} samples (α {}): accuracy over the {} classes seen, no task id: {:.2} %",
            g,
            report.alpha.map_or("–".into(), |x| format!("{x:.3}")),
            learner.classes().len(),
            rows[ti + 1].1
        );
    }
    let mut head = String::from("| after ↓ / on → | classes ");
    head.push_str(&base_classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","));
    for g in groups {
        head.push_str(&format!(" | classes {}", g.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")));
    }
    println!("{head} | all seen |");
    println!("|---{}|---|", "|---".repeat(groups.len() + 1));
    for (i, (per, all)) in rows.iter().enumerate() {
        let name = if i == 0 { "base model".to_string() } else { format!("classes {:?}", groups[i - 1]) };
        let cells: Vec<String> =
            (0..=groups.len()).map(|j| per.get(j).map_or("–".into(), |v| format!("{v:.1}"))).collect();
        println!("| {name} | {} | {all:.2} |", cells.join(" | "));
    }
    let (per, all) = &rows[rows.len() - 1];
    let acc = per.iter().sum::<f64>() / per.len().max(1) as f64;
    println!(
        "FIELD RESULT (class-incremental, no task id): {all:.2} % of the test images of all {} digits right \
         (mean over the {} class groups: {acc:.2} %), {:.1} s",
        learner.classes().len(),
        per.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Run the whole file at `path` in tract (as the "prefix" up to each output) on `x` and return the largest
/// relative difference to `expected` (one array per output, in output order). Errors above
/// [`RELOAD_TOLERANCE`].
pub fn check_in_tract(path: &Path, x: &ArrayView2<'_, f32>, expected: &[Array2<f32>]) -> Result<f32> {
    let file = OnnxModel::open(path)?;
    let names = file.output_names();
    if names.len() != expected.len() {
        return Err(Error::Invalid(format!(
            "{} has {} outputs, expected {}",
            path.display(),
            names.len(),
            expected.len()
        )));
    }
    let mut worst = 0.0f32;
    for (name, want) in names.iter().zip(expected) {
        let got = file.prefix(name)?.run(x)?;
        worst = worst.max(max_rel_diff(&got.view(), &want.view()));
    }
    if worst > RELOAD_TOLERANCE {
        return Err(Error::Invalid(format!(
            "{}: tract's outputs differ from the device model's by {worst:e}",
            path.display()
        )));
    }
    Ok(worst)
}

// ------------------------------------------------------------------------------------------------ benchmark

/// `host prefix-bench`: latency of a frozen prefix in tract (and the prefix as a standalone ONNX file, so that
/// `scripts/bench-prefix.py` can time onnxruntime on exactly the same graph).
#[derive(Debug, Args)]
pub struct PrefixBenchArgs {
    /// ONNX model.
    #[arg(long)]
    pub model: PathBuf,
    /// Cut tensor (the prefix's output).
    #[arg(long)]
    pub cut: String,
    /// Batch sizes, comma separated.
    #[arg(long, default_value = "1,32")]
    pub batch: String,
    /// Timed runs per batch size (after one warm-up run).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Write the prefix as a standalone ONNX file here (the file's own nodes: what onnxruntime is timed on).
    #[arg(long)]
    pub prefix_out: Option<PathBuf>,
    /// Also write the prefix as the loader rewrites it for tract (`firmware::onnx::rewrite_for_tract`), so that
    /// onnxruntime can be timed on that graph too.
    #[arg(long)]
    pub rewritten_out: Option<PathBuf>,
    /// Hand tract the file's nodes as they are (no loader rewrites).
    #[arg(long)]
    pub no_rewrite: bool,
    /// Write the timings as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Timings of one prefix in tract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefixTimings {
    /// Model file.
    pub model: String,
    /// Cut tensor.
    pub cut: String,
    /// Whether tract optimised the plan.
    pub optimized: bool,
    /// How tract runs it ([`firmware::onnx::PlanKind::describe`]).
    #[serde(default)]
    pub plan: String,
    /// What the loader's graph rewrites changed before tract planned the prefix.
    #[serde(default)]
    pub rewrites: firmware::onnx::Rewrites,
    /// Where `--rewritten-out` wrote the rewritten prefix.
    #[serde(default)]
    pub rewritten_file: Option<String>,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Timed runs per batch size.
    pub reps: usize,
    /// Per batch size: (batch, median milliseconds per run, min milliseconds per run).
    pub runs: Vec<(usize, f64, f64)>,
}

/// Time the prefix in tract.
pub fn prefix_bench(a: &PrefixBenchArgs) -> Result<()> {
    let file = OnnxModel::open(&a.model)?.with_rewrites(!a.no_rewrite);
    let t0 = Instant::now();
    let prefix = file.prefix(&a.cut)?;
    println!(
        "prefix up to '{}' loaded in {:.2} s ({} nodes, {})",
        a.cut,
        t0.elapsed().as_secs_f64(),
        prefix.graph.nodes.len(),
        prefix.plan_kind().describe()
    );
    println!("rewritten for tract: {}", prefix.rewrites().describe());
    if let Some(p) = &a.prefix_out {
        write_bytes(p, &firmware::onnx::encode(&prefix.graph.to_model_proto()))?;
        println!("standalone prefix written to {}", p.display());
    }
    if let Some(p) = &a.rewritten_out {
        let (rewritten, _) = firmware::onnx::rewrite_for_tract(&prefix.graph.to_model_proto());
        write_bytes(p, &firmware::onnx::encode(&rewritten))?;
        println!("the prefix as rewritten for tract written to {}", p.display());
    }
    let mut rng = firmware::seeded_rng(7);
    let mut runs = Vec::new();
    for b in
        a.batch.split(',').map(|b| b.trim().parse::<usize>().map_err(|_| Error::Invalid(format!("bad batch '{b}'"))))
    {
        let b = b?.max(1);
        let x = Array2::from_shape_fn((b, prefix.input_len()), |_| rng.random_range(-1.0f32..1.0));
        prefix.run(&x.view())?; // warm-up
        let mut times: Vec<f64> = (0..a.reps.max(1))
            .map(|_| {
                let t = Instant::now();
                prefix.run(&x.view()).map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<firmware::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let (median, min) = (times[times.len() / 2], times[0]);
        println!(
            "tract, batch {b}: median {median:.2} ms per run ({:.3} ms per sample), min {min:.2} ms",
            median / b as f64
        );
        runs.push((b, median, min));
    }
    let t = PrefixTimings {
        model: a.model.display().to_string(),
        cut: a.cut.clone(),
        optimized: prefix.is_optimized(),
        plan: prefix.plan_kind().describe().to_string(),
        rewrites: prefix.rewrites(),
        rewritten_file: a.rewritten_out.as_ref().map(|p| p.display().to_string()),
        input_shape: prefix.input_shape().to_vec(),
        reps: a.reps.max(1),
        runs,
    };
    if let Some(out) = &a.out {
        reports::write_json(out, &t)?;
    }
    Ok(())
}
