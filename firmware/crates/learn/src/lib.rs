//! # edgelearn-learn — continual learning on the board
//!
//! Over the network of `edgelearn-core`: [`gpm`] bases (gradient projection memory), the diagonal [`fisher`]
//! and its compact formats, the closed-form [`merge`]s (BECAME's α*), the continual-learning [`method`]s, the
//! class-balanced exemplar memory of [`replay`], board profiles and byte budgets ([`budget`]), and the one
//! [`learner`] every path drives (simulation, the daemon, the fleet, the benchmarks). The heavy operations of a task
//! update also run behind a compute [`backend`] (the CPU always, CUDA with a `cuda-*` feature); [`selftest`] is the
//! board's real-data check. Methods report plain sizes; budgets stay in [`budget`] and the learner.
#![warn(missing_docs)]

pub mod backend;
pub mod budget;
pub mod fisher;
pub mod gpm;
pub mod learner;
pub mod merge;
pub mod method;
pub mod replay;
pub mod selftest;
