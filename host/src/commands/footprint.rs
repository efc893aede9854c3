//! `host footprint`: a board profile's budgets against what each method needs to learn a stream's first task
//! (the check the device runs before every step).

use std::path::PathBuf;

use clap::Args;

use super::stream::{StreamArgs, preset};
use crate::data;
use crate::runs::registry;

/// `host footprint`'s options.
#[derive(Debug, Args)]
pub struct FootprintArgs {
    /// Board profile (boards/*.toml).
    #[arg(long, default_value = "boards/host-sim.toml")]
    board: PathBuf,
    #[command(flatten)]
    stream: StreamArgs,
    /// Methods, comma separated; gpm+became stores F_old in the profile's fisher_format.
    #[arg(long, default_value = "gpm+became")]
    method: String,
}

/// Print, per method and budget, what learning the stream's first task needs against what the board allows.
pub fn run(a: FootprintArgs) -> anyhow::Result<()> {
    use firmware::method::Method;
    let profile = firmware::budget::BoardProfile::load(&a.board)?;
    let preset = preset(&a.stream)?;
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
