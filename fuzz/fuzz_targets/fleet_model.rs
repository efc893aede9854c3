//! Fuzz the fleet model decoder: any bytes → `decode_model` must refuse or accept (never panic, never
//! over-allocate); a model it accepts must survive an encode → decode round trip unchanged, and a board must
//! either adopt it into a state the store can commit or refuse it with a typed error (what the daemon does with a
//! model it received, `edgelearn_fleet::adopted_state`).
//!
//! Each input is decoded twice: as it is, and with its CRC-32C trailer recomputed (see state_decode.rs: without
//! it the fuzzer would stop at the checksum; a hostile merger, or broker, sends a correct one).
#![no_main]

use std::sync::OnceLock;

use edgelearn_learn::fisher::FisherFormat;
use edgelearn_fleet::{adopted_state, decode_model, encode_model, fixture};
use edgelearn_store::{
    CRC32C, ClassEntry, DEFAULT_MAX_PAYLOAD, FleetState, InboxLedger, LearnerState, ModelDesc, ReplaySeen, ReplayState,
    TaskEntry, encode,
};
use libfuzzer_sys::fuzz_target;

/// Fleet and base model the seeds were made for (`fuzz/seeds/write_seeds.rs`).
const FLEET: &str = "lab";
const BASE: &str = "base-1";

/// A board of fleet `lab` shaped like the fixture updates (2×3 trunk, biased head of width 2) that knows classes
/// `4` and `5` and whose newest learned update is generation 1 of device `a`.
fn board() -> &'static LearnerState {
    static BOARD: OnceLock<LearnerState> = OnceLock::new();
    BOARD.get_or_init(|| {
        let classes = ["4", "5"];
        let u = fixture::update(FLEET, BASE, "a", 1, &classes, 0.1, FisherFormat::F32).expect("fixture update");
        let slda = u.slda.as_ref().expect("fixture has SLDA sums").to_state(&u.classes).expect("SLDA state");
        LearnerState {
            generation: 1,
            model: ModelDesc {
                arch: "t".into(),
                input_shape: vec![3],
                trunk: vec!["linear".into()],
                head_outputs: vec![classes.len() as u32],
            },
            params: u.params.clone(),
            layout: u.layout.clone(),
            fisher: Some(u.fisher.clone()),
            tasks: vec![TaskEntry { id: 0, name: "t0".into(), head: 0, classes: vec![0, 1] }],
            classes: classes
                .iter()
                .enumerate()
                .map(|(i, c)| ClassEntry { id: i as u32, name: c.to_string() })
                .collect(),
            inbox: InboxLedger { samples_learned: 4, files: vec![] },
            replay: ReplayState {
                features: 3,
                labels: vec![0, 1],
                values: vec![0.0; 6],
                seen: vec![ReplaySeen { class: 0, seen: 1 }, ReplaySeen { class: 1, seen: 1 }],
            },
            slda: Some(slda),
            fleet: Some(FleetState { model_version: 0, learned_generation: 1 }),
            ..LearnerState::default()
        }
    })
}

/// `data` with its last four bytes replaced by the CRC-32C (LE) of the bytes before them.
fn resealed(data: &[u8]) -> Option<Vec<u8>> {
    let body = data.len().checked_sub(4)?;
    let mut b = data.to_vec();
    let crc = CRC32C.checksum(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(b) = resealed(data) {
        check(&b);
    }
});

fn check(data: &[u8]) {
    let Ok(model) = decode_model(data, DEFAULT_MAX_PAYLOAD, FLEET, BASE) else { return };
    let again = encode_model(&model, DEFAULT_MAX_PAYLOAD).expect("an accepted fleet model encodes");
    let back = decode_model(&again, DEFAULT_MAX_PAYLOAD, FLEET, BASE).expect("a re-encoded fleet model decodes");
    assert_eq!(back, model);
    if let Ok(Some(next)) = adopted_state(board(), &model, "a") {
        encode(&next, DEFAULT_MAX_PAYLOAD).expect("the state a board adopts commits");
    }
}
