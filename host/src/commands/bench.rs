//! `host bench …`: the benchmarks ([`crate::benches`]): one task's update, the tables against PyTorch, the
//! exemplar memory's cost, the GEMM kernels and the fleet's traffic and merge.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::benches::replay::HeapMeter;
use crate::benches::{fleet, gemm, inbox, replay, update};
use crate::data;
use crate::reports;
use crate::runs::presets::{Preset, shipped_base};

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Time one task's GPM+BECAME update phase by phase (stage 1, stage 2, Fisher, merge, basis); write JSON.
    Update(BenchUpdateArgs),
    /// Markdown tables (Rust vs PyTorch, as ratios) from update JSON files; optionally into a doc section.
    Table(BenchTableArgs),
    /// Per-task time and peak heap of class-incremental methods (the field, its peers) with and without an
    /// exemplar memory, side by side in one run; write JSON.
    Replay(BenchReplayArgs),
    /// GEMM kernels on the task update's shapes at 1..N threads; with PyTorch's results, a table of % of peak.
    Gemm(BenchGemmArgs),
    /// Fleet updates: bytes on the wire per compact Fisher format, and the Fisher-weighted merge's time against
    /// the number of boards; write JSON.
    Fleet(BenchFleetArgs),
    /// The daemon on a Lite0 camera model: photos in its inbox to their task committed, split into decode,
    /// backbone, learning and commit, with the heap's and the process's peak memory; write JSON.
    Inbox(BenchInboxArgs),
}

/// `host bench inbox`'s options.
#[derive(Debug, Args)]
pub struct BenchInboxArgs {
    /// Board profile whose budgets the daemon runs under.
    #[arg(long, default_value = "boards/jetson-orin-nano-8gb.toml")]
    board: PathBuf,
    /// Compute threads (replaces the profile's `threads`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Photos per new category in each learn (two new categories a learn).
    #[arg(long, default_value_t = 5)]
    per_class: usize,
    /// Learns per repetition (1 to 3).
    #[arg(long, default_value_t = 2)]
    learns: usize,
    /// Repetitions, each from a fresh state.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// What runs the frozen prefix: tract, or onnxruntime (`--features onnxruntime`, ORT_DYLIB_PATH).
    #[arg(long, default_value = "tract")]
    engine: firmware::onnx::Engine,
    /// Working folder (its contents are replaced).
    #[arg(long, default_value = "out/bench-inbox")]
    work: PathBuf,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `host bench fleet`'s options.
#[derive(Debug, Args)]
pub struct BenchFleetArgs {
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

/// `host bench gemm`'s options.
#[derive(Debug, Args)]
pub struct BenchGemmArgs {
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

/// `host bench replay`'s options.
#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    /// Class-incremental stream (one growing head): split-mnist-ci or split-fmnist-ci.
    #[arg(long, default_value = "split-mnist-ci")]
    stream: String,
    /// Methods (any names `host simulate` knows), comma-separated; the default is the device's.
    #[arg(long, value_delimiter = ',', default_value = "field")]
    method: Vec<String>,
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

/// `host bench update`'s options.
#[derive(Debug, Args)]
pub struct BenchUpdateArgs {
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
    /// Method timed (any the registry knows; the field with `field`).
    #[arg(long, default_value = update::UPDATE_METHOD)]
    method: String,
    /// Where the learner's large products run (`firmware::backend::install`): cpu, cuda, or auto.
    #[arg(long, default_value = "cpu")]
    backend: firmware::backend::BackendKind,
    /// Data folder (default: $EDGELEARN_DATA or <repo>/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `host bench table`'s options.
#[derive(Debug, Args)]
pub struct BenchTableArgs {
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

/// Run one benchmark; `heap` measures the replay benchmark's allocations (the binary's counting allocator).
pub fn run(cmd: BenchCmd, heap: &dyn HeapMeter) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Update(a) => {
            let mut preset = Preset::named(&a.stream, Some(a.tasks))?;
            preset.train.epochs = a.epochs;
            firmware::threads::set_threads(a.threads);
            firmware::backend::install(a.backend)?;
            preset.train.validate()?;
            let dir = a.data_dir.unwrap_or_else(data::data_dir);
            let t = update::update(&preset, &a.stream, &a.method, a.tasks, a.repeat, &dir, a.seed)?;
            print!("{}", update::describe(&t));
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
            let b = replay::replay_cost(&preset, &a.method, a.tasks, &a.replay, &dir, a.seed, heap)?;
            print!("{}", replay::replay_table(&b));
            if let Some(out) = &a.out {
                reports::write_json(out, &b)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Fleet(a) => {
            let model = a.model.unwrap_or_else(shipped_base);
            let format = a.format.parse()?;
            let b = fleet::run(&model, &a.cut, &a.devices, format, a.repeat, a.random_features)?;
            print!("{}", fleet::markdown(&b));
            if let Some(out) = &a.out {
                reports::write_json(out, &b)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Gemm(a) => {
            if let Some(path) = &a.shapes_out {
                reports::write_json(path, &gemm::SHAPES)?;
                return Ok(());
            }
            let r = gemm::run(&a.threads, a.rounds, a.min_seconds)?;
            if let Some(out) = &a.out {
                reports::write_json(out, &r)?;
                println!("written to {}", out.display());
            }
            if let Some(torch) = &a.torch {
                let table = gemm::table(&r, &gemm::read(torch)?)?;
                println!("{table}");
                if let Some(doc) = &a.doc {
                    update::write_section_under(doc, gemm::GEMM_SECTION, &a.preamble, &table)?;
                    println!("section \"{}\" written to {}", gemm::GEMM_SECTION, doc.display());
                }
            }
            Ok(())
        }
        BenchCmd::Inbox(a) => {
            let b = inbox::InboxBench {
                data_dir: a.data_dir.unwrap_or_else(data::data_dir),
                board: a.board,
                threads: a.threads,
                per_class: a.per_class,
                learns: a.learns,
                reps: a.reps,
                engine: a.engine,
            };
            let r = inbox::run(&b, &a.work, heap)?;
            println!(
                "peak resident memory {:.1} MiB; state on disk {:.1} KiB",
                r.peak_rss as f64 / 1048576.0,
                r.state_bytes as f64 / 1024.0
            );
            if let Some(out) = &a.out {
                reports::write_json(out, &r)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        BenchCmd::Table(a) => {
            let results = update::read_results(&a.files)?;
            let tables = update::table(&results)?;
            println!("{tables}");
            if let Some(doc) = &a.doc {
                update::write_section(doc, &a.preamble, &tables)?;
                println!("section \"{}\" written to {}", update::UPDATE_SECTION, doc.display());
            }
            Ok(())
        }
    }
}
