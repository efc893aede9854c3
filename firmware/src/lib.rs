//! # firmware — the on-device continual learner
//!
//! The data path reads top to bottom: samples ([`data`]) → trainable model ([`nn`]) → training loop
//! ([`train`]) → [`gpm`] bases / [`fisher`] / [`merge`] → continual-learning [`method`]s → [`metrics`]; all learner
//! state persists through the crash-safe [`store`]. Board profiles and memory budgets are in [`budget`]; the
//! [`learner`] ties a model, a method, the class registry and the store together for class-incremental learning in
//! the field, with the class-balanced exemplar memory of [`replay`]. Models come in and go out as ONNX ([`onnx`]): a
//! frozen prefix runs in tract, the layers after the cut train natively. The heavy operations of a task update (GEMM,
//! im2col, projection, Fisher, merge) also run behind a compute [`backend`]: the CPU always, CUDA with the `cuda`
//! feature.
//! In the field ([`daemon`]): a status LED and a learn button ([`io`]), a serial command protocol ([`protocol`])
//! and photos dropped into folders ([`inbox`]) drive the learner with no screen.
//!
//! Everything here runs on the board; nothing host-only (plotting, CLI UI, data downloads) lives in this crate.
#![warn(missing_docs)]

pub mod backend;
pub mod budget;
pub mod daemon;
pub mod data;
pub mod error;
pub mod fisher;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod gpm;
pub mod inbox;
pub mod io;
pub mod learner;
pub mod merge;
pub mod method;
pub mod metrics;
pub mod nn;
pub mod onnx;
pub mod protocol;
pub mod replay;
pub mod selftest;
pub mod store;
pub mod threads;
pub mod train;

#[cfg(test)]
mod test_util;

pub use error::{Error, Result};

/// The small set of names most users need.
pub mod prelude {
    pub use crate::data::{Samples, TaskData};
    pub use crate::error::{Error, Result};
    pub use crate::method::{Became, Ewc, FineTune, GpmMethod, Joint, LearnContext, Method, TaskReport};
    pub use crate::metrics::{AccuracyMatrix, Summary};
    pub use crate::nn::{Layer, Linear, Mode, Model, Param, Sgd};
    pub use crate::train::{GradHook, NoHook, Progress, Silent, TrainConfig, evaluate, train};
}

/// A deterministic random stream from a seed (ChaCha8: identical on every platform).
pub fn seeded_rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed)
}
