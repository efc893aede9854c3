//! `host compare`: many methods × streams × seeds in one ranked report with plots ([`crate::runs::compare`]).

use std::path::PathBuf;

use clap::Args;

use super::stream::set_base;
use super::{command_line, parse_list};
use crate::data;
use crate::runs::compare;
use crate::runs::presets::Preset;

/// `host compare`'s options.
#[derive(Debug, Args)]
pub struct CompareArgs {
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

/// Build the plan (streams × shots, methods, seeds), run it, write the report and the plots.
pub fn run(a: CompareArgs) -> anyhow::Result<()> {
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
    let plan = compare::ComparePlan {
        streams,
        methods: a.methods.split(',').map(|m| m.trim().to_string()).collect(),
        seeds: parse_list(&a.seeds, "seed")?,
        jobs: a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        data_dir: a.data_dir.clone().unwrap_or_else(data::data_dir),
    };
    let command = command_line();
    let cmp = compare::run(&plan, &command)?;
    let md = compare::write(&cmp, &a.out)?;
    println!("{md}");
    println!("report and plots written to {}", a.out.display());
    Ok(())
}
