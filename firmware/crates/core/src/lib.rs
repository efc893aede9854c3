//! # edgelearn-core — the bottom layer of the on-device learner
//!
//! Samples and the IDX reader ([`data`]) → the trainable network ([`nn`]: layers, GEMM, losses, optimisers) → the
//! training loop ([`train`]) → [`metrics`]; the board's worker pool ([`threads`]) and the one error type
//! ([`error`], which imports nothing of the project). The layers above (`edgelearn-store`, `edgelearn-learn`,
//! `edgelearn-onnx`, `edgelearn-protocol`, `edgelearn-fleet`) and the `firmware` facade build on it; nothing here
//! knows of them.
#![warn(missing_docs)]

pub mod augment;
pub mod data;
pub mod error;
pub mod metrics;
pub mod nn;
pub mod threads;
pub mod train;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use error::{Error, Result};

/// A deterministic random stream from a seed (ChaCha8: identical on every platform).
pub fn seeded_rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed)
}
