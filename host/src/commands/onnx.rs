//! The ONNX commands: `host pretrain` (a base model on a group of classes, exported as ONNX and checked),
//! `host export` (a parameter file as ONNX), `host onnx-reference` (our outputs on real test images, for
//! `scripts/check-onnx.py`) and `host prefix-bench` (a frozen prefix's latency in tract).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use firmware::nn::Mode;
use firmware::onnx::{Cut, OnnxModel, model_to_proto};
use firmware::train::{TrainConfig, evaluate};
use ndarray::{Array2, s};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::parse_classes;
use crate::data::{self, stream};
use crate::error::{Error, Result};
use crate::models::onnx::{Reference, export_checked};
use crate::models::params::ModelFile;
use crate::progress::Bar;
use crate::reports::{self, write_bytes};
use crate::runs::presets::ModelSpec;
use crate::runs::simulate;

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
    let ds = data::load_by_name(&a.dataset, a.data_dir.as_deref())?;
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
    let ds = data::load_by_name(&a.dataset, a.data_dir.as_deref())?;
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
    /// Try tract's plan for any batch size (a symbolic batch axis) before the plan for one sample per run.
    #[arg(long)]
    pub any_batch_first: bool,
    /// The engine that runs the prefix: tract, or onnxruntime (a build with `--features onnxruntime`, the library
    /// from ORT_DYLIB_PATH).
    #[arg(long, default_value = "tract")]
    pub engine: firmware::onnx::Engine,
    /// Compute threads (the board profile's `threads`): the prefix's per-sample runs are spread over them.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
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
    /// The engine that ran it (`tract`, `onnxruntime`).
    #[serde(default)]
    pub engine: String,
    /// Compute threads.
    #[serde(default)]
    pub threads: usize,
    /// Timed runs per batch size.
    pub reps: usize,
    /// Per batch size: (batch, median milliseconds per run, min milliseconds per run).
    pub runs: Vec<(usize, f64, f64)>,
}

/// Time the prefix in tract.
pub fn prefix_bench(a: &PrefixBenchArgs) -> Result<()> {
    firmware::threads::set_threads(a.threads);
    let file = OnnxModel::open(&a.model)?
        .with_rewrites(!a.no_rewrite)
        .with_any_batch_plan_first(a.any_batch_first)
        .with_engine(a.engine);
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
            "{}, {} thread(s), batch {b}: median {median:.2} ms per run ({:.3} ms per sample), min {min:.2} ms",
            a.engine,
            a.threads,
            median / b as f64,
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
        engine: prefix.engine().to_string(),
        threads: a.threads.max(1),
        reps: a.reps.max(1),
        runs,
    };
    if let Some(out) = &a.out {
        reports::write_json(out, &t)?;
    }
    Ok(())
}
