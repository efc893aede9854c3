//! # edgelearn-fleet — a fleet of boards that learn apart and merge into one model (issue 18)
//!
//! The firmware takes this crate with its `fleet` feature (`firmware::fleet`).
//!
//! - [`update`]: what a board sends after it commits a task — its trainable parameters, its accumulated diagonal
//!   Fisher in the board's compact format, its class registry, the SLDA statistics the task added ([`slda`]) and
//!   the id of the base model it started from — framed like a state slot (the same 20-byte header and CRC-32C
//!   trailer, [`edgelearn_store::frame`], magic `ELFU`), versioned, and checked on the way in: a bad checksum, a
//!   newer version, an oversized payload, a device id that is not the topic's, another base model or an
//!   inconsistent payload is a typed [`Refusal`].
//! - [`slda`]: SLDA statistics as sums that add up across tasks and boards ([`SldaSums`]).
//! - [`merge`]: the merge of many boards' updates into one model over the union of their classes
//!   ([`merge::merge_updates`]: Fisher-weighted trunk, the head from the pooled statistics).
//! - [`model`]: the merged model as the merger publishes it (magic `ELFM`, the same frame, a version that only
//!   grows), checked on the way in like an update.
//! - [`adopt`]: the state a board commits to adopt a fleet model (one A/B commit, class ids renumbered by name).
//! - [`outbox`]: the board's committed update frames waiting for the broker's acknowledgement.
//! - `mqtt` and `client` (feature `mqtt`; the firmware's `fleet-mqtt`): the transport — topics, ids, a blocking MQTT link (rumqttc) with
//!   acknowledged QoS 1 publishes (for the merger, acknowledgements sent only after a message is stored), and the
//!   board's link thread that empties the outbox and receives the fleet model.
//! - [`fixture`]: small hand-made updates for tests.
//!
//! The merger service is `host fleet serve`; the board's side runs in the daemon (`firmware daemon --fleet …`).
//! A board in a fleet learns with [`edgelearn_learn::method::FLEET_METHOD`] (the trunk stays the fleet's, so the boards'
//! statistics pool exactly).

#![warn(missing_docs)]

pub mod adopt;
#[cfg(feature = "mqtt")]
pub mod client;
pub mod fixture;
pub mod merge;
pub mod model;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod outbox;
pub mod slda;
pub mod update;

pub use adopt::adopted_state;
pub use merge::{MergedModel, merge_updates};
pub use model::{FleetModel, MODEL_MAGIC, decode_model, encode_model};
pub use slda::SldaSums;
pub use update::{FLEET_MAGIC, FLEET_VERSION, FleetUpdate, Refusal, decode_update, encode_update};

/// The id a board gives its base model when none is configured: `onnx-<CRC-32C of the file, hex>-<bytes>`. Every
/// board shipped with the same ONNX file computes the same id, and the merger is started with it
/// (`host fleet serve --base`).
pub fn base_model_id(onnx: &[u8]) -> String {
    format!("onnx-{:08x}-{}", edgelearn_store::CRC32C.checksum(onnx), onnx.len())
}
