//! # host — the workstation side of the product
//!
//! The learner itself is the `firmware` crate; the host only drives it. Its modules, by job:
//!
//! - [`commands`]: the command line, one module per subcommand group (its clap arguments and what it runs);
//!   `main.rs` only parses and dispatches;
//! - [`data`]: real data sets (IDX files) and the task streams built from them;
//! - [`runs`]: named streams and methods, and the runs of the device learner over them (simulation, comparison,
//!   the compact-Fisher study);
//! - [`reports`]: aggregates over seeds, Markdown and JSON reports, plots;
//! - [`models`]: model files the host writes and checks (parameter files, ONNX export checks, reference outputs);
//! - [`benches`]: benchmarks (timings, not tests);
//! - [`fleet`]: the fleet of boards: its simulation, the merger, the broker and the on-machine demo;
//! - [`device`]: the client of a device daemon over a serial line;
//! - [`error`], [`progress`]: the crate's error type, progress bars and log lines.
#![warn(missing_docs)]

pub mod benches;
pub mod commands;
pub mod data;
pub mod device;
pub mod error;
pub mod fleet;
pub mod models;
pub mod progress;
pub mod reports;
pub mod runs;

pub use error::{Error, Result};
