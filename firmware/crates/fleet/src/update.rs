//! One board's update as it travels to the merger: [`FleetUpdate`], framed by [`encode_update`] and checked by
//! [`decode_update`].
//!
//! ```text
//! offset  size  field
//!      0     4  magic            b"ELFU"
//!      4     2  version          u16 LE (this build: FLEET_VERSION)
//!      6     2  flags            u16 LE, must be 0
//!      8     8  generation       u64 LE (the board's state generation that committed the update)
//!     16     4  payload_len      u32 LE (n)
//!     20     n  payload          postcard(FleetUpdate)
//!   20+n     4  crc              u32 LE, CRC-32C of bytes 0 .. 20+n
//! ```
//!
//! (device id, generation) names an update once: the merger keeps the highest generation it merged per device
//! and ignores a repeat, so a board that re-sends after a lost acknowledgement is merged exactly once.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::slda::SldaSums;
use edgelearn_core::error::{Error, Result};
use edgelearn_learn::fisher::CompactFisher;
use edgelearn_store::{Corruption, FisherBlob, ParamEntry, frame, read_frame_of};

/// The four magic bytes of an update frame.
pub const FLEET_MAGIC: [u8; 4] = *b"ELFU";
/// The update format version this build writes and reads.
/// Version 2: the update carries the SLDA statistics its task added ([`FleetUpdate::slda`]).
pub const FLEET_VERSION: u16 = 2;

/// Why an update was not accepted; nothing is merged from it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    /// The frame is damaged: magic, lengths, CRC, flags or a payload that does not decode.
    #[error("damaged frame: {0}")]
    Frame(Corruption),
    /// A valid frame from a newer firmware.
    #[error("update format version {found}, this build reads {supported}")]
    NewerVersion {
        /// Version in the frame.
        found: u16,
        /// This build's [`FLEET_VERSION`].
        supported: u16,
    },
    /// The device id in the payload is not the one in the topic it was published under.
    #[error("device id {payload:?} published under the topic of {topic:?}")]
    DeviceMismatch {
        /// From the topic.
        topic: String,
        /// From the payload.
        payload: String,
    },
    /// The update was trained from another base model than the fleet's.
    #[error("base model {found:?}, the fleet's is {expected:?}")]
    UnknownBase {
        /// The fleet's base model id.
        expected: String,
        /// The update's.
        found: String,
    },
    /// The payload decoded but does not describe a consistent update.
    #[error("inconsistent update: {0}")]
    Inconsistent(String),
}

/// What a board publishes after it commits a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetUpdate {
    /// Fleet name (the `<fleet>` of the topic).
    pub fleet: String,
    /// Device id (the `<device>` of the topic).
    pub device: String,
    /// The board's state generation that committed this update (repeated in the frame header).
    pub generation: u64,
    /// Id of the base model the board started from (e.g. the SHA-256 of its ONNX file, hex).
    pub base_model: String,
    /// Name, shape and offset of each trainable parameter (the state file's layout); the single head's
    /// parameters are named `head.0.weight` (`classes × width`) and `head.0.bias` (`classes`).
    pub layout: Vec<ParamEntry>,
    /// The trainable parameters, flat, in `layout` order.
    pub params: Vec<f32>,
    /// The board's accumulated diagonal Fisher over every task it learned, one entry per parameter, in the
    /// board's compact format.
    pub fisher: FisherBlob,
    /// Class names in head-row order (row `i` of the head is `classes[i]`).
    pub classes: Vec<String>,
    /// With an SLDA head: the statistics the samples learned since the board's previous update added
    /// ([`SldaSums::delta`]). Unlike the parameters and the Fisher, which are the board's whole state, these are a
    /// delta: the merger adds every update's once (exactly once per `(device, generation)`), so nothing learned
    /// is counted twice, also after the board adopted a fleet model holding everyone's statistics.
    pub slda: Option<SldaSums>,
}

impl FleetUpdate {
    /// Check the payload's own consistency: layout offsets and sizes, finite parameters, a Fisher of the right
    /// length with finite non-negative entries, distinct non-empty class names matching the head's rows.
    pub fn validate(&self) -> std::result::Result<(), Refusal> {
        let bad = |m: String| Err(Refusal::Inconsistent(m));
        if self.device.is_empty() || self.fleet.is_empty() {
            return bad("empty fleet or device id".into());
        }
        check_payload(&self.layout, &self.params, self.fisher.entries, self.classes.len())?;
        let fisher = self.fisher_values().map_err(|e| Refusal::Inconsistent(format!("Fisher: {e}")))?;
        if let Some(i) = fisher.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return bad(format!("Fisher entry {i} is negative or not finite"));
        }
        let mut names: Vec<&str> = self.classes.iter().map(String::as_str).collect();
        names.sort_unstable();
        if names.iter().any(|n| n.is_empty()) || names.windows(2).any(|w| w[0] == w[1]) {
            return bad("class names must be distinct and non-empty".into());
        }
        if let Some(st) = &self.slda {
            check_slda(st, &self.layout, &self.classes)?;
        }
        Ok(())
    }

    /// The Fisher as f32 values (decoded from its compact format).
    pub fn fisher_values(&self) -> Result<Vec<f32>> {
        Ok(CompactFisher::from_blob(&self.fisher)?.decode())
    }
}

/// Frame an update ([`edgelearn_store::frame`] with [`FLEET_MAGIC`]); refuses an update that does not validate or
/// whose payload exceeds `max_payload`.
pub fn encode_update(u: &FleetUpdate, max_payload: usize) -> Result<Vec<u8>> {
    u.validate().map_err(|r| Error::Config(format!("update of {}: {r}", u.device)))?;
    let payload = postcard::to_allocvec(u).map_err(|e| Error::Config(format!("update does not encode: {e}")))?;
    frame(FLEET_MAGIC, FLEET_VERSION, u.generation, &payload, max_payload)
}

/// Check and decode an update received on the topic of device `topic_device`, from a fleet whose base model is
/// `base_model`. Never panics and allocates nothing in proportion to a length field before the frame's length
/// and CRC are checked against `bytes` and `max_payload`.
pub fn decode_update(
    bytes: &[u8],
    max_payload: usize,
    topic_device: &str,
    base_model: &str,
) -> std::result::Result<FleetUpdate, Refusal> {
    let (generation, u) = decode_frame::<FleetUpdate>(FLEET_MAGIC, bytes, max_payload)?;
    if u.generation != generation {
        return Err(Refusal::Frame(Corruption::GenerationMismatch { header: generation, payload: u.generation }));
    }
    if u.device != topic_device {
        return Err(Refusal::DeviceMismatch { topic: topic_device.to_string(), payload: u.device });
    }
    if u.base_model != base_model {
        return Err(Refusal::UnknownBase { expected: base_model.to_string(), found: u.base_model });
    }
    u.validate()?;
    Ok(u)
}

/// The checks an update and a fleet model share: a layout that tiles `params` exactly, finite parameters, one
/// Fisher entry per parameter, and a single head (`head.0.weight`) with one row per class name.
pub(crate) fn check_payload(
    layout: &[ParamEntry],
    params: &[f32],
    fisher_entries: u64,
    classes: usize,
) -> std::result::Result<(), Refusal> {
    let bad = |m: String| Err(Refusal::Inconsistent(m));
    let mut offset = 0u64;
    for p in layout {
        if p.offset != offset {
            return bad(format!("{} at offset {}, expected {offset}", p.name, p.offset));
        }
        let n = p.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(u64::from(d)));
        offset = match n.and_then(|n| offset.checked_add(n)) {
            Some(o) => o,
            None => return bad(format!("{}: shape {:?} overflows", p.name, p.shape)),
        };
    }
    if offset != params.len() as u64 {
        return bad(format!("layout covers {offset} values, {} parameters sent", params.len()));
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return bad(format!("parameter {i} is not finite"));
    }
    if fisher_entries != params.len() as u64 {
        return bad(format!("{fisher_entries} Fisher entries for {} parameters", params.len()));
    }
    let rows = layout.iter().find(|p| p.name == "head.0.weight").and_then(|p| p.shape.first().copied());
    if rows != Some(classes as u32) {
        return bad(format!("{classes} class names for a head of {rows:?} rows"));
    }
    Ok(())
}

/// SLDA sums that fit a payload: consistent in themselves, as wide as the head's input, over classes the head has.
pub(crate) fn check_slda(st: &SldaSums, layout: &[ParamEntry], classes: &[String]) -> std::result::Result<(), Refusal> {
    st.validate().map_err(|e| Refusal::Inconsistent(e.to_string()))?;
    let width = layout.iter().find(|p| p.name == "head.0.weight").and_then(|p| p.shape.get(1).copied());
    if width != Some(st.dim) {
        return Err(Refusal::Inconsistent(format!("SLDA sums of width {} for a head input of {width:?}", st.dim)));
    }
    if let Some(c) = st.classes.iter().find(|c| !classes.contains(c)) {
        return Err(Refusal::Inconsistent(format!("SLDA sums of class {c:?}, which the head does not have")));
    }
    Ok(())
}

/// Read a fleet frame of `magic` (an update or a fleet model) and decode its postcard payload: length, size cap and
/// CRC ([`read_frame_of`]), a format version this build reads, flags 0, no trailing bytes. Returns the header's
/// generation field (an update's generation, a model's version) beside the payload.
pub(crate) fn decode_frame<T: serde::de::DeserializeOwned>(
    magic: [u8; 4],
    bytes: &[u8],
    max_payload: usize,
) -> std::result::Result<(u64, T), Refusal> {
    let header = read_frame_of(magic, bytes, max_payload).map_err(|e| match e {
        Error::CorruptState(c) => Refusal::Frame(c),
        other => Refusal::Inconsistent(other.to_string()),
    })?;
    if header.format_version > FLEET_VERSION {
        return Err(Refusal::NewerVersion { found: header.format_version, supported: FLEET_VERSION });
    }
    if header.format_version == 0 {
        return Err(Refusal::Inconsistent("fleet format version 0".into()));
    }
    if header.flags != 0 {
        return Err(Refusal::Frame(Corruption::Flags(header.flags)));
    }
    let payload = &bytes[edgelearn_store::HEADER_LEN..bytes.len() - edgelearn_store::CRC_LEN];
    let (value, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|e| Refusal::Frame(Corruption::Decode(e.to_string())))?;
    if !rest.is_empty() {
        return Err(Refusal::Frame(Corruption::TrailingBytes(rest.len())));
    }
    Ok((header.generation, value))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use edgelearn_learn::fisher::FisherFormat;

    /// [`crate::fixture::update`] of fleet `lab`, base model `base-1`.
    pub(crate) fn update(
        device: &str,
        generation: u64,
        classes: &[&str],
        seed: f32,
        format: FisherFormat,
    ) -> FleetUpdate {
        crate::fixture::update("lab", "base-1", device, generation, classes, seed, format).expect("a fixture update")
    }

    /// Seeds of the update_decode fuzz target (`cargo test --workspace --lib fleet::update::tests::write_fuzz_seeds
    /// -- --ignored`): valid updates in three Fisher formats.
    #[test]
    #[ignore = "writes fuzz/corpus/update_decode"]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../fuzz/corpus/update_decode");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, format) in [FisherFormat::F32, FisherFormat::F16, FisherFormat::Log8].into_iter().enumerate() {
            let u = update("dev-1", 1 + i as u64, &["cat", "dog", "eel"][..=i], 0.5, format);
            std::fs::write(dir.join(format!("seed-{}", format.name())), encode_update(&u, 1 << 20).unwrap()).unwrap();
        }
    }

    #[test]
    fn an_update_round_trips_in_every_fisher_format() {
        for format in [FisherFormat::F32, FisherFormat::F16, FisherFormat::Log8] {
            let u = update("dev-1", 3, &["cat", "dog"], 1.0, format);
            let bytes = encode_update(&u, 1 << 20).unwrap();
            assert_eq!(&bytes[..4], b"ELFU");
            assert_eq!(decode_update(&bytes, 1 << 20, "dev-1", "base-1").unwrap(), u);
        }
    }

    #[test]
    fn bad_updates_are_refused_with_their_reason() {
        let u = update("dev-1", 3, &["cat", "dog"], 1.0, FisherFormat::F32);
        let bytes = encode_update(&u, 1 << 20).unwrap();
        // A flipped bit anywhere: the CRC (or the magic) refuses it.
        for i in [0, 5, 9, 17, 30, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(matches!(decode_update(&b, 1 << 20, "dev-1", "base-1"), Err(Refusal::Frame(_))), "byte {i}");
        }
        // Truncated, oversized.
        assert!(matches!(decode_update(&bytes[..bytes.len() - 3], 1 << 20, "dev-1", "base-1"), Err(Refusal::Frame(_))));
        assert!(matches!(
            decode_update(&bytes, 16, "dev-1", "base-1"),
            Err(Refusal::Frame(Corruption::TooLarge { .. }))
        ));
        // A newer version with a valid CRC.
        let payload = &bytes[edgelearn_store::HEADER_LEN..bytes.len() - edgelearn_store::CRC_LEN];
        let newer = frame(FLEET_MAGIC, FLEET_VERSION + 1, 3, payload, 1 << 20).unwrap();
        assert_eq!(
            decode_update(&newer, 1 << 20, "dev-1", "base-1"),
            Err(Refusal::NewerVersion { found: FLEET_VERSION + 1, supported: FLEET_VERSION })
        );
        // Another device's topic, another base model.
        assert!(matches!(decode_update(&bytes, 1 << 20, "dev-2", "base-1"), Err(Refusal::DeviceMismatch { .. })));
        assert!(matches!(decode_update(&bytes, 1 << 20, "dev-1", "base-2"), Err(Refusal::UnknownBase { .. })));
        // Inconsistent payloads never leave the board, and are refused on arrival if forged.
        let mut nan = u.clone();
        nan.params[1] = f32::NAN;
        assert!(encode_update(&nan, 1 << 20).is_err());
        let forged = frame(FLEET_MAGIC, FLEET_VERSION, 3, &postcard::to_allocvec(&nan).unwrap(), 1 << 20).unwrap();
        assert!(matches!(decode_update(&forged, 1 << 20, "dev-1", "base-1"), Err(Refusal::Inconsistent(_))));
        let mut dup = u.clone();
        dup.classes = vec!["cat".into(), "cat".into()];
        assert!(dup.validate().is_err());
        let mut short = u;
        short.params.pop();
        assert!(short.validate().is_err());
    }
}
