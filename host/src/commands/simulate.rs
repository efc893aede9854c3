//! `host simulate`: methods over a task stream through the device's learner ([`crate::runs::simulate`]).

use std::path::PathBuf;

use clap::Args;

use super::stream::{StreamArgs, preset};
use super::{command_line, parse_list};
use crate::data;
use crate::progress::Bar;
use crate::reports::{self, Aggregate};
use crate::runs::{registry, simulate};

/// `host simulate`'s options.
#[derive(Debug, Args)]
pub struct SimArgs {
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
    /// Compute backend of the learner's large products, for every method (`firmware::backend::install`): auto
    /// (CUDA when compiled in and a GPU answers, else the CPU, with a log line), cpu, cuda (an error when CUDA is
    /// not usable here).
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

/// Run every method over the stream once per seed; print and write each aggregate's report.
pub fn run(a: SimArgs) -> anyhow::Result<()> {
    let preset = preset(&a.stream)?;
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
    let mut device = None;
    let dir = a.stream.data_dir.clone().unwrap_or_else(data::data_dir);
    let command = command_line();
    let mut aggs = Vec::new();
    for method_name in &methods {
        let mut runs = Vec::new();
        for &seed in &seeds {
            let stream = preset.load(&dir, seed)?;
            if device.is_none() {
                // Once the data is there (a missing data folder stays a one-line error).
                device = Some(firmware::backend::install(a.backend)?);
                tracing::debug!(backend = ?device, "compute backend of the large products");
            }
            let model = preset.build_model(&stream, seed)?;
            let mut method = registry::build_for_stream(method_name, &preset, &cfg.profile, &stream)?;
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
