//! Method names on the command line → boxed [`Method`]s with a stream's settings.

use firmware::fisher::FisherFormat;
use firmware::gpm::GpmConfig;
use firmware::method::{Became, Ewc, FineTune, GpmMethod, Joint, Method};

use crate::error::{Error, Result};
use crate::presets::Preset;

/// Names `simulate --method` accepts.
pub const METHODS: &[&str] = &["finetune", "ewc", "gpm", "gpm+became", "joint"];

/// GPM + BECAME with the preset's settings, storing `F_old` in `format` between tasks.
pub fn became(preset: &Preset, format: FisherFormat) -> Became {
    let gpm = GpmConfig { project_heads: !preset.multi_head, ..preset.gpm.clone() };
    Became::new(preset.train.clone(), gpm).with_fisher_format(format)
}

/// Build the method called `name` with the preset's settings. Heads are projected by GPM only when the
/// run is single-head. `gpm+became:<format>` (e.g. `gpm+became:q4`) stores BECAME's accumulated Fisher in a
/// compact format (`firmware::fisher::FisherFormat`).
pub fn build(name: &str, preset: &Preset) -> Result<Box<dyn Method>> {
    if let Some(format) = name.strip_prefix("gpm+became:") {
        let format = format.parse::<FisherFormat>()?;
        return Ok(Box::new(became(preset, format)));
    }
    let gpm = GpmConfig { project_heads: !preset.multi_head, ..preset.gpm.clone() };
    let train = preset.train.clone();
    Ok(match name {
        "finetune" => Box::new(FineTune::new(train)),
        "ewc" => Box::new(Ewc::new(train, preset.ewc_lambda)),
        "gpm" => Box::new(GpmMethod::new(train, gpm)),
        "gpm+became" | "became" => Box::new(became(preset, FisherFormat::F32)),
        "joint" => Box::new(Joint::new(train)),
        other => return Err(Error::UnknownMethod(format!("{other} (known: {})", METHODS.join(", ")))),
    })
}
