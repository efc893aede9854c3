//! A fleet of boards that learn apart and merge into one model (issue 18; the `fleet` feature).
//!
//! What this module holds so far is the part every other piece rests on, with no transport in it:
//!
//! - [`update`]: what a board sends after it commits a task — its trainable parameters, its accumulated diagonal
//!   Fisher in the board's compact format, its class registry and the id of the base model it started from —
//!   framed like a state slot (the same 20-byte header and CRC-32C trailer, [`crate::store::frame`], magic
//!   `ELFU`), versioned, and checked on the way in: a bad checksum, a newer version, an oversized payload, a
//!   device id that is not the topic's, another base model or an inconsistent payload is a typed [`Refusal`].
//! - [`merge`]: the Fisher-weighted merge of many boards' updates into one model over the union of their
//!   classes ([`merge::merge_updates`]).
//!
//! Not here yet (issue 18 open): the MQTT transport (rumqttc, mosquitto), the merger service, adoption through
//! the A/B store, the fleet test and demo.

pub mod merge;
pub mod update;

pub use merge::{MergedModel, merge_updates};
pub use update::{FLEET_MAGIC, FLEET_VERSION, FleetUpdate, Refusal, decode_update, encode_update};
