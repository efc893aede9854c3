//! Runs of the device learner on the host: the named streams and their settings ([`presets`]), method names on
//! the command line ([`registry`]); one stream's simulation
//! ([`simulate`]), many methods × streams × seeds compared ([`compare`]) and the compact-Fisher study
//! ([`fisher_alpha`]).

pub mod compare;
pub mod fisher_alpha;
pub mod presets;
pub mod registry;
pub mod simulate;
