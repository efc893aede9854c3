//! The data commands: `host fetch` (the data sets), `host data` (what is there) and `host train` (a base model on
//! all classes of one data set).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use firmware::train::evaluate;

use crate::data::{self, stream};
use crate::models::params::ModelFile;
use crate::progress::Bar;
use crate::reports;
use crate::runs::presets::ModelSpec;
use crate::runs::simulate::EVAL_BATCH;

/// Describe the data sets found in `data_dir` (default: [`data::data_dir`]).
pub fn describe(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = data_dir.unwrap_or_else(data::data_dir);
    for (name, ds) in [
        ("mnist", data::load_mnist(&dir.join("mnist"))),
        ("fashion-mnist", data::load_fashion_mnist(&dir.join("fashion-mnist"))),
    ] {
        println!("{name}: {}", data::describe(&ds?));
    }
    Ok(())
}

/// `host train`'s options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data set: mnist or fmnist.
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Network: mlp:W1,W2[:bias] or lenet.
    #[arg(long, default_value = "mlp:256,256")]
    model: String,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the trained parameters (JSON).
    #[arg(long, default_value = "out/base-model.json")]
    out: PathBuf,
}

/// Run `scripts/fetch-data.sh`.
pub fn fetch() -> anyhow::Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-data.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// Train the model on every class of the data set, print its test accuracy and write its parameters.
pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let ds = data::load_by_name(&a.dataset, a.data_dir.as_deref())?;
    let classes: Vec<usize> = (0..ds.num_classes).collect();
    let stream = stream::split(&ds, &a.dataset, &[classes], false, a.seed, 0.05)?;
    let task = &stream.tasks[0];
    let spec = ModelSpec::parse(&a.model)?;
    let mut model = spec.build(&stream, a.seed)?;
    let cfg = firmware::train::TrainConfig {
        epochs: a.epochs,
        lr: a.lr,
        batch_size: a.batch_size,
        ..firmware::train::TrainConfig::default()
    };
    let data = firmware::data::TaskData { task_id: 0, head: 0, train: &task.train, val: &task.val };
    let mut rng = firmware::seeded_rng(a.seed);
    let mut bar = Bar::new("train", (task.train.len() * a.epochs) as u64);
    let log =
        firmware::train::train(&mut model, &data, &cfg, &mut firmware::train::NoHook, &mut rng, &mut bar, "train")?;
    bar.finish();
    let (loss, acc) = evaluate(&mut model, &task.test, 0, EVAL_BATCH)?;
    println!("{}: {} epochs, test loss {loss:.4}, test accuracy {:.2} %", a.dataset, log.epochs.len(), 100.0 * acc);
    let saved = ModelFile::from_model(&spec, &model, &a.dataset, acc);
    reports::write_json(&a.out, &saved)?;
    println!("parameters written to {}", a.out.display());
    Ok(())
}
