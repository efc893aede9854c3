//! # host — the workstation side of the product
//!
//! Real data ([`data`]), named streams and their settings ([`presets`]), the simulation of the device learner
//! over a stream ([`simulate`]) and reports ([`report`]). The learner itself is the `firmware` crate; the host
//! only drives it.
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod bench_fleet;
pub mod bench_gemm;
pub mod bench_replay;
pub mod compare;
pub mod data;
pub mod device_client;
pub mod error;
pub mod fisher_alpha;
pub mod fleet_broker;
pub mod fleet_demo;
pub mod fleet_serve;
pub mod fleet_sim;
pub mod model_file;
pub mod onnx_cli;
pub mod plots;
pub mod presets;
pub mod progress;
pub mod registry;
pub mod report;
pub mod simulate;

pub use error::{Error, Result};
