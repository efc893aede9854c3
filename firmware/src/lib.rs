//! # firmware — the on-device continual learner
//!
//! The data path reads top to bottom, one crate per layer (firmware/crates/), each re-exported here under its
//! module path: samples ([`data`]) → trainable model ([`nn`]) → training loop ([`train`]) → [`metrics`]
//! (`edgelearn-core`); all learner state as plain data and the crash-safe [`store`] (`edgelearn-store`); [`gpm`]
//! bases / [`fisher`] / [`merge`] → continual-learning [`method`]s, the exemplar memory of [`replay`], board
//! profiles and memory budgets ([`budget`]) and the [`learner`] that ties a model, a method, the class registry
//! and the store together (`edgelearn-learn`, with the compute [`backend`]: the CPU always, CUDA with the `cuda`
//! feature); models in and out as ONNX ([`onnx`], `edgelearn-onnx`: a frozen prefix runs in tract, the layers
//! after the cut train natively); the serial command [`protocol`] (`edgelearn-protocol`); fleet learning
//! (`fleet`, `edgelearn-fleet`, feature `fleet`).
//! This crate itself holds what runs the board in the field ([`daemon`]): a status LED and a learn button
//! ([`io`]), the serial link, and photos dropped into folders ([`inbox`]) drive the learner with no screen.
//!
//! Everything here runs on the board; nothing host-only (plotting, CLI UI, data downloads) lives in this crate.
#![warn(missing_docs)]

pub mod daemon;
pub mod inbox;
pub mod intake;
pub mod io;

pub use edgelearn_core::{Error, Result, augment, data, error, metrics, nn, seeded_rng, threads, train};
#[cfg(feature = "fleet")]
pub use edgelearn_fleet as fleet;
pub use edgelearn_learn::{backend, budget, fisher, gpm, learner, merge, method, replay, selftest};
pub use edgelearn_onnx as onnx;
pub use edgelearn_protocol as protocol;
pub use edgelearn_store as store;

/// The small set of names most users need.
pub mod prelude {
    pub use crate::data::{Samples, TaskData};
    pub use crate::error::{Error, Result};
    pub use crate::method::{Became, Ewc, FineTune, GpmMethod, Joint, LearnContext, Method, TaskReport};
    pub use crate::metrics::{AccuracyMatrix, Summary};
    pub use crate::nn::{Layer, Linear, Mode, Model, Param, Sgd};
    pub use crate::train::{GradHook, NoHook, Progress, Silent, TrainConfig, evaluate, train};
}
