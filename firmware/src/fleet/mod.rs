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
//! - [`fixture`]: small hand-made updates for tests.
//! - [`model`]: the merged model as the merger publishes it (magic `ELFM`, the same frame, a version that only
//!   grows), checked on the way in like an update.
//! - `mqtt` (feature `fleet-mqtt`): the transport — topics, ids and a blocking MQTT link (rumqttc) with acknowledged QoS 1 publishes
//!   and, for the merger, acknowledgements sent only after a message is stored.
//!
//! The merger service is `host fleet serve` (it keeps every update durably and republishes the merged model).
//! Not here yet (issue 18 open): the daemon publishing after each commit, adoption of the fleet model through the
//! A/B store, TLS on the client side, the multi-board demo.

pub mod adopt;
pub mod fixture;
pub mod merge;
pub mod model;
#[cfg(feature = "fleet-mqtt")]
pub mod mqtt;
pub mod slda;
pub mod update;

pub use adopt::adopted_state;
pub use merge::{MergedModel, merge_updates};
pub use model::{FleetModel, MODEL_MAGIC, decode_model, encode_model};
pub use slda::SldaSums;
pub use update::{FLEET_MAGIC, FLEET_VERSION, FleetUpdate, Refusal, decode_update, encode_update};
