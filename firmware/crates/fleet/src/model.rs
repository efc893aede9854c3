//! The fleet model as the merger publishes it: [`FleetModel`], framed by [`encode_model`] and checked by
//! [`decode_model`].
//!
//! ```text
//! offset  size  field
//!      0     4  magic            b"ELFM"
//!      4     2  version          u16 LE (this build: FLEET_VERSION)
//!      6     2  flags            u16 LE, must be 0
//!      8     8  model version    u64 LE (the merger's counter: 1, 2, …; a board adopts only a newer one)
//!     16     4  payload_len      u32 LE (n)
//!     20     n  payload          postcard(FleetModel)
//!   20+n     4  crc              u32 LE, CRC-32C of bytes 0 .. 20+n
//! ```
//!
//! The same frame as a state slot and an update ([`edgelearn_store::frame`]); only the magic differs, so a file of
//! one kind can never be read as the other.

use serde::{Deserialize, Serialize};

use crate::merge::MergedModel;
use crate::slda::SldaSums;
use crate::update::{FLEET_VERSION, Refusal, check_payload, check_slda, decode_frame};
use edgelearn_core::error::{Error, Result};
use edgelearn_store::{Corruption, FisherBlob, ParamEntry, frame};

/// The four magic bytes of a fleet-model frame.
pub const MODEL_MAGIC: [u8; 4] = *b"ELFM";

/// What the merger publishes, retained, on `edgelearn/<fleet>/model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetModel {
    /// Fleet name.
    pub fleet: String,
    /// The merger's model version (repeated in the frame header); strictly increasing.
    pub version: u64,
    /// The base model every merged update started from.
    pub base_model: String,
    /// The merged class registry, in head-row order.
    pub classes: Vec<String>,
    /// Name, shape and offset of each parameter.
    pub layout: Vec<ParamEntry>,
    /// The merged parameters, in `layout` order.
    pub params: Vec<f32>,
    /// `Σᵢ Fᵢ` per parameter (f32 little-endian blob): the merged model's diagonal Fisher.
    pub fisher: FisherBlob,
    /// `(device, generation)` of every update merged into this version.
    pub merged: Vec<(String, u64)>,
    /// The pooled SLDA statistics ([`MergedModel::slda`]): what an adopting board goes on learning from.
    pub slda: Option<SldaSums>,
}

impl FleetModel {
    /// Version `version` of fleet `fleet` from a merge.
    pub fn from_merge(fleet: &str, version: u64, m: &MergedModel) -> Self {
        Self {
            fleet: fleet.to_string(),
            version,
            base_model: m.base_model.clone(),
            classes: m.classes.clone(),
            layout: m.layout.clone(),
            params: m.params.clone(),
            fisher: FisherBlob::from_f32(&m.fisher),
            merged: m.merged.clone(),
            slda: m.slda.clone(),
        }
    }

    /// Check the payload's own consistency: a layout that tiles `params`, finite parameters, a Fisher of the
    /// right length, a head of one row per class.
    pub fn validate(&self) -> std::result::Result<(), Refusal> {
        check_payload(&self.layout, &self.params, self.fisher.entries, self.classes.len())?;
        match &self.slda {
            Some(st) => check_slda(st, &self.layout, &self.classes),
            None => Ok(()),
        }
    }
}

/// Frame a fleet model ([`edgelearn_store::frame`] with [`MODEL_MAGIC`], the model version in the header).
pub fn encode_model(m: &FleetModel, max_payload: usize) -> Result<Vec<u8>> {
    m.validate().map_err(|r| Error::Config(format!("fleet model {}: {r}", m.version)))?;
    let payload = postcard::to_allocvec(m).map_err(|e| Error::Config(format!("fleet model does not encode: {e}")))?;
    frame(MODEL_MAGIC, FLEET_VERSION, m.version, &payload, max_payload)
}

/// Check and decode a fleet model received for fleet `fleet` whose base model is `base_model`: frame, CRC,
/// version, header/payload agreement, fleet, base model and consistency. Never panics on any input.
pub fn decode_model(
    bytes: &[u8],
    max_payload: usize,
    fleet: &str,
    base_model: &str,
) -> std::result::Result<FleetModel, Refusal> {
    let (version, m) = decode_frame::<FleetModel>(MODEL_MAGIC, bytes, max_payload)?;
    if m.version != version {
        return Err(Refusal::Frame(Corruption::GenerationMismatch { header: version, payload: m.version }));
    }
    if m.fleet != fleet {
        return Err(Refusal::Inconsistent(format!("fleet model of {:?}, expected {fleet:?}", m.fleet)));
    }
    if m.base_model != base_model {
        return Err(Refusal::UnknownBase { expected: base_model.to_string(), found: m.base_model });
    }
    m.validate()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge_updates;
    use crate::update::tests::update;
    use edgelearn_learn::fisher::FisherFormat;

    const MAX: usize = 1 << 20;

    fn model() -> FleetModel {
        let a = update("a", 1, &["4", "5"], 0.1, FisherFormat::F32);
        let b = update("b", 2, &["5", "6"], 0.7, FisherFormat::F32);
        FleetModel::from_merge("f", 3, &merge_updates(&[a, b]).unwrap())
    }

    #[test]
    fn a_model_round_trips_and_carries_the_merge() {
        let m = model();
        assert_eq!(m.classes, ["4", "5", "6"]);
        assert_eq!(m.merged, [("a".to_string(), 1), ("b".to_string(), 2)]);
        let bytes = encode_model(&m, MAX).unwrap();
        assert_eq!(&bytes[..4], b"ELFM");
        assert_eq!(decode_model(&bytes, MAX, "f", &m.base_model).unwrap(), m);
    }

    #[test]
    fn damaged_foreign_or_mismatched_models_are_refused() {
        let m = model();
        let bytes = encode_model(&m, MAX).unwrap();
        for i in [0, 9, 30, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(matches!(decode_model(&b, MAX, "f", &m.base_model), Err(Refusal::Frame(_))), "byte {i}");
        }
        for n in [0, 10, 23, bytes.len() - 1] {
            assert!(decode_model(&bytes[..n], MAX, "f", &m.base_model).is_err(), "truncated to {n}");
        }
        assert!(matches!(decode_model(&bytes, MAX, "f", "other"), Err(Refusal::UnknownBase { .. })));
        assert!(matches!(decode_model(&bytes, MAX, "g", &m.base_model), Err(Refusal::Inconsistent(_))));
        assert!(decode_model(&bytes, 16, "f", &m.base_model).is_err(), "over the payload limit");
        // An update frame is not a model frame.
        let u = update("a", 1, &["4", "5"], 0.1, FisherFormat::F32);
        let ub = crate::encode_update(&u, MAX).unwrap();
        assert!(matches!(decode_model(&ub, MAX, "f", &u.base_model), Err(Refusal::Frame(_))));
        let mut bad = m.clone();
        bad.params[0] = f32::NAN;
        assert!(encode_model(&bad, MAX).is_err());
    }
}
