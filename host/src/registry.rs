//! Method names on the command line → boxed [`Method`]s with a stream's settings.

use firmware::gpm::GpmConfig;
use firmware::method::{Became, Ewc, FineTune, GpmMethod, Joint, Method};

use crate::error::{Error, Result};
use crate::presets::Preset;

/// Names `simulate --method` accepts.
pub const METHODS: &[&str] = &["finetune", "ewc", "gpm", "gpm+became", "joint"];

/// Build the method called `name` with the preset's settings. Heads are projected by GPM only when the
/// run is single-head.
pub fn build(name: &str, preset: &Preset) -> Result<Box<dyn Method>> {
    let gpm = GpmConfig { project_heads: !preset.multi_head, ..preset.gpm.clone() };
    let train = preset.train.clone();
    Ok(match name {
        "finetune" => Box::new(FineTune::new(train)),
        "ewc" => Box::new(Ewc::new(train, preset.ewc_lambda)),
        "gpm" => Box::new(GpmMethod::new(train, gpm)),
        "gpm+became" | "became" => Box::new(Became::new(train, gpm)),
        "joint" => Box::new(Joint::new(train)),
        other => return Err(Error::UnknownMethod(format!("{other} (known: {})", METHODS.join(", ")))),
    })
}
