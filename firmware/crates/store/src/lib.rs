//! # edgelearn-store — the crash-safe state store
//!
//! The crash-safe state store: all learner state (parameters, GPM bases, Fisher, task/class registry, metrics
//! history, replay buffer) in one postcard value, framed with a magic, a format version, a generation and a
//! CRC-32C, kept in two slots that are written alternately through temp file + fsync + rename + directory fsync.
//!
//! - [`LearnerState`] and its parts are the on-disk schema ([`state`]).
//! - [`encode`] / [`decode`] turn a state into the bytes of one slot and back ([`format`](mod@format)); [`decode`] never
//!   panics and returns typed errors ([`Corruption`], [`Error::UnsupportedVersion`](edgelearn_core::Error::UnsupportedVersion)).
//! - [`StateStore`] owns a directory with `state.a` / `state.b`: [`StateStore::load`] picks the newest valid
//!   slot, [`StateStore::commit`] writes the next generation into the other one ([`slots`]).
//!
//! The byte layout, slot rules and commit protocol are specified in `docs/state-format.md`.
//!
//! ```
//! use edgelearn_store::{LearnerState, StateStore, fixture};
//! # fn main() -> edgelearn_core::Result<()> {
//! let dir = std::env::temp_dir().join(format!("store-doc-{}", std::process::id()));
//! let mut store = StateStore::open(&dir)?;
//! assert!(store.load()?.is_none()); // fresh device
//! let mut state: LearnerState = fixture::synthetic(0, 1);
//! assert_eq!(store.commit(&mut state)?, 1);
//! let loaded = StateStore::open(&dir)?.load()?.expect("committed");
//! assert_eq!(loaded.state, state);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod fixture;
pub mod format;
pub mod slots;
pub mod state;
#[cfg(test)]
mod tests;

pub use format::{
    CRC_LEN, CRC32C, Corruption, DEFAULT_MAX_PAYLOAD, FORMAT_VERSION, HEADER_LEN, Header, MAGIC,
    OLDEST_READABLE_VERSION, decode, encode, frame, read_frame, read_frame_of,
};
pub use slots::{LoadedState, Slot, SlotReport, SlotStatus, StateStore, remove_durable, write_durable};
pub use state::{
    BasisState, ClassEntry, FISHER_F32LE, FisherBlob, FleetState, InboxLedger, LayerSlot, LearnerState, LedgerFile,
    MetricsHistory, ModelDesc, ParamEntry, ReplaySeen, ReplayState, SldaState, TaskEntry, inconsistent, to_u32,
};
