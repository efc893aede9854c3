//! `host fisher-alpha`: how far BECAME's α moves when `F_old` is stored in a compact format
//! ([`crate::runs::fisher_alpha`]).

use std::path::PathBuf;

use clap::Args;

use super::{command_line, parse_list};
use crate::data;
use crate::reports;
use crate::runs::fisher_alpha;
use crate::runs::presets::Preset;

/// `host fisher-alpha`'s options.
#[derive(Debug, Args)]
pub struct FisherAlphaArgs {
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

/// Run the study over the seeds; print and write its report.
pub fn run(a: FisherAlphaArgs) -> anyhow::Result<()> {
    let mut preset = Preset::named(&a.stream, a.tasks)?;
    if let Some(e) = a.epochs {
        preset.train.epochs = e;
    }
    preset.train.validate()?;
    let opts = fisher_alpha::Options {
        stream: a.stream.clone(),
        preset,
        seeds: parse_list(&a.seeds, "seed")?,
        formats: parse_list(&a.formats, "Fisher format")?,
        end_to_end: a.end_to_end.as_deref().map(str::parse).transpose()?,
        data_dir: a.data_dir.unwrap_or_else(data::data_dir),
        dump: a.dump,
        replay: a.replay,
        command: command_line(),
    };
    let result = fisher_alpha::run(&opts)?;
    let md = fisher_alpha::markdown(&result);
    reports::write_json(&a.out.join(format!("{}.json", a.stream)), &result)?;
    reports::write_text(&a.out.join(format!("{}.md", a.stream)), &md)?;
    println!("{md}");
    println!("reports written to {}", a.out.display());
    Ok(())
}
