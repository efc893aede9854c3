//! Unit tests of the state format and the two-slot store.

use std::fs;
use std::path::PathBuf;

use super::slots::FailPoint;
use super::*;
use edgelearn_core::error::Error;

const MAX: usize = DEFAULT_MAX_PAYLOAD;

/// A fresh, empty directory under the system temp dir (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "firmware-store-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn corruption(r: edgelearn_core::Result<LearnerState>) -> Corruption {
    match r {
        Err(Error::CorruptState(c)) => c,
        other => panic!("expected a corruption, got {other:?}"),
    }
}

/// Re-seal a modified frame with a correct CRC (to reach the checks behind the CRC).
fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - CRC_LEN;
    let crc = CRC32C.checksum(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
}

/// The tiny state of the hex example in docs/state-format.md.
fn tiny() -> LearnerState {
    LearnerState {
        generation: 1,
        model: ModelDesc {
            arch: "t".into(),
            input_shape: vec![2],
            trunk: vec!["linear".into()],
            head_outputs: vec![1],
        },
        params: vec![0.5, -1.0, 2.0],
        layout: vec![
            ParamEntry { name: "w".into(), shape: vec![1, 2], offset: 0 },
            ParamEntry { name: "b".into(), shape: vec![1], offset: 2 },
        ],
        bases: vec![BasisState { layer: LayerSlot::Trunk(0), rows: 2, cols: 1, data: vec![1.0, 0.0] }],
        fisher: Some(FisherBlob::from_f32(&[0.25, 0.0, 1.0])),
        tasks: vec![TaskEntry { id: 0, name: "a".into(), head: 0, classes: vec![7] }],
        classes: vec![ClassEntry { id: 7, name: "cat".into() }],
        metrics: MetricsHistory {
            accuracy: vec![vec![1.0]],
            random_init: vec![],
            alphas: vec![None],
            basis_sizes: vec![vec![1]],
        },
        inbox: InboxLedger {
            samples_learned: 2,
            files: vec![LedgerFile { class: "cat".into(), name: "a.png".into(), len: 70, crc: 0x1234_5678 }],
        },
        replay: ReplayState {
            features: 2,
            labels: vec![7],
            values: vec![0.5, 1.0],
            seen: vec![ReplaySeen { class: 7, seen: 3 }],
        },
        slda: None,
        fleet: None,
    }
}

/// The exact bytes of [`tiny`]; docs/state-format.md shows them. A change here is a format change.
const TINY_HEX: &str = "454c53540500000001000000000000008b000000010174010201066c696e6561\
                        720101030000003f000080bf0000004002017702010200016201010201000002\
                        01020000803f0000000001056633326c65030c0000803e000000000000803f01\
                        0001610001070107036361740101000000000000f03f00010001010102010363\
                        617405612e706e6746f8acd19101020107020000003f0000803f010703000067\
                        1a4121";

/// The bytes of [`tiny`] as format version 4 wrote them (no fleet record).
const TINY_V4_HEX: &str = "454c53540400000001000000000000008a000000010174010201066c696e6561\
                        720101030000003f000080bf0000004002017702010200016201010201000002\
                        01020000803f0000000001056633326c65030c0000803e000000000000803f01\
                        0001610001070107036361740101000000000000f03f00010001010102010363\
                        617405612e706e6746f8acd19101020107020000003f0000803f01070300d812\
                        82c0";

/// The bytes of [`tiny`] as format version 3 wrote them (no SLDA statistics).
const TINY_V3_HEX: &str = "454c535403000000010000000000000089000000010174010201066c696e6561\
                        720101030000003f000080bf0000004002017702010200016201010201000002\
                        01020000803f0000000001056633326c65030c0000803e000000000000803f01\
                        0001610001070107036361740101000000000000f03f00010001010102010363\
                        617405612e706e6746f8acd19101020107020000003f0000803f010703be0b42\
                        59";

/// The bytes of [`tiny`] without its replay buffer as format version 2 wrote them (the example of the version 2
/// document, written by the version 2 code).
const TINY_V2_HEX: &str = "454c53540200000001000000000000007a000000010174010201066c696e6561\
                        720101030000003f000080bf0000004002017702010200016201010201000002\
                        01020000803f0000000001056633326c65030c0000803e000000000000803f01\
                        0001610001070107036361740101000000000000f03f00010001010102010363\
                        617405612e706e6746f8acd1910145b539a4";

/// The bytes of [`tiny`] without its ledger as format version 1 wrote them (the example of the version 1 document).
const TINY_V1_HEX: &str = "454c535401000000010000000000000068000000010174010201066c696e6561\
                        720101030000003f000080bf0000004002017702010200016201010201000002\
                        01020000803f0000000001056633326c65030c0000803e000000000000803f01\
                        0001610001070107036361740101000000000000f03f000100010101750468e0";

fn unhex(h: &str) -> Vec<u8> {
    let h = h.replace(' ', "");
    (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn golden_bytes_of_the_documented_example() {
    let bytes = encode(&tiny(), MAX).unwrap();
    let got = hex(&bytes);
    assert_eq!(got, TINY_HEX.replace(' ', ""), "format changed: update docs/state-format.md and FORMAT_VERSION");
    assert_eq!(decode(&bytes, MAX).unwrap(), tiny());
}

#[test]
fn version_1_files_still_load_with_an_empty_ledger() {
    let v1: Vec<u8> =
        (0..TINY_V1_HEX.len() / 2).map(|i| u8::from_str_radix(&TINY_V1_HEX[2 * i..2 * i + 2], 16).unwrap()).collect();
    assert_eq!(read_frame(&v1, MAX).unwrap().format_version, 1);
    let state = decode(&v1, MAX).unwrap();
    assert_eq!(state, LearnerState { inbox: InboxLedger::default(), replay: ReplayState::default(), ..tiny() });
    // A store holding only a version 1 slot loads it and commits the next generation as the current version.
    let dir = TempDir::new("v1");
    write_slot_bytes(&dir, Slot::A, &v1);
    let mut store = StateStore::open(&dir.0).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.generation(), 1);
    let mut next = loaded.state;
    assert_eq!(store.commit(&mut next).unwrap(), 2);
    let again = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
    assert_eq!(again.state, next);
}

#[test]
fn version_4_files_still_load_outside_a_fleet() {
    let v4 = unhex(TINY_V4_HEX);
    assert_eq!(read_frame(&v4, MAX).unwrap().format_version, 4);
    assert_eq!(decode(&v4, MAX).unwrap(), tiny());
    // The fleet record round-trips.
    let fleet = LearnerState { fleet: Some(FleetState { model_version: 3, learned_generation: 7 }), ..tiny() };
    assert_eq!(decode(&encode(&fleet, MAX).unwrap(), MAX).unwrap(), fleet);
}

#[test]
fn version_3_files_still_load_without_slda_statistics() {
    let v3 = unhex(TINY_V3_HEX);
    assert_eq!(read_frame(&v3, MAX).unwrap().format_version, 3);
    assert_eq!(decode(&v3, MAX).unwrap(), tiny());
}

#[test]
fn slda_statistics_round_trip_and_inconsistent_ones_are_corrupt() {
    let slda = SldaState {
        dim: 2,
        means: vec![0.5, -1.0],
        counts: vec![3],
        sigma: vec![1.0, 0.25, 0.25, 2.0],
        updates: 3,
        train_weight: vec![0.1, 0.2],
        train_bias: vec![-0.5],
    };
    let state = LearnerState { slda: Some(slda.clone()), ..tiny() };
    let bytes = encode(&state, MAX).unwrap();
    assert_eq!(decode(&bytes, MAX).unwrap(), state);
    for broken in [
        SldaState { means: vec![0.5], ..slda.clone() },
        SldaState { sigma: vec![1.0; 3], ..slda.clone() },
        SldaState { train_bias: vec![], ..slda.clone() },
        SldaState { means: vec![f64::NAN, 0.0], ..slda.clone() },
    ] {
        let bad = LearnerState { slda: Some(broken), ..tiny() };
        assert!(matches!(bad.validate(), Err(Error::CorruptState(_))), "{bad:?}");
    }
}

#[test]
fn version_2_files_still_load_with_an_empty_replay_buffer() {
    let v2 = unhex(TINY_V2_HEX);
    assert_eq!(read_frame(&v2, MAX).unwrap().format_version, 2);
    let state = decode(&v2, MAX).unwrap();
    assert_eq!(state, LearnerState { replay: ReplayState::default(), ..tiny() });
    // Loaded and committed again, it is written as the current version.
    let dir = TempDir::new("v2");
    write_slot_bytes(&dir, Slot::A, &v2);
    let mut store = StateStore::open(&dir.0).unwrap();
    let mut next = store.load().unwrap().unwrap().state;
    assert_eq!(store.commit(&mut next).unwrap(), 2);
    let bytes = fs::read(dir.0.join(Slot::B.file_name())).unwrap();
    assert_eq!(read_frame(&bytes, MAX).unwrap().format_version, FORMAT_VERSION);
    assert_eq!(StateStore::open(&dir.0).unwrap().load().unwrap().unwrap().state, next);
}

#[test]
fn inconsistent_replay_buffers_are_refused() {
    let cases: [fn(&mut ReplayState); 4] = [
        |r| r.values.push(0.0),
        |r| r.values[1] = f32::NAN,
        |r| r.seen[0].seen = 0,
        |r| r.seen.insert(0, ReplaySeen { class: 9, seen: 1 }),
    ];
    for (i, f) in cases.into_iter().enumerate() {
        let mut s = tiny();
        f(&mut s.replay);
        assert!(matches!(decode(&encode(&s, MAX).unwrap(), MAX), Err(Error::CorruptState(_))), "case {i}");
    }
}

#[test]
fn round_trip_at_several_sizes() {
    for (generation, scale) in [(0, 0), (1, 1), (7, 3), (12345, 40)] {
        let s = fixture::synthetic(generation, scale);
        s.validate().unwrap();
        let bytes = encode(&s, MAX).unwrap();
        let h = read_frame(&bytes, MAX).unwrap();
        assert_eq!(h.generation, generation);
        assert_eq!(h.format_version, FORMAT_VERSION);
        assert_eq!(h.payload_len as usize, bytes.len() - HEADER_LEN - CRC_LEN);
        assert_eq!(decode(&bytes, MAX).unwrap(), s);
    }
}

#[test]
fn every_single_byte_flip_is_detected() {
    let bytes = encode(&tiny(), MAX).unwrap();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= bit;
            match decode(&b, MAX) {
                Err(Error::CorruptState(_)) => {}
                other => panic!("flip of bit {bit:#x} in byte {i} not reported as corruption: {other:?}"),
            }
        }
    }
}

#[test]
fn flips_in_each_region_give_the_expected_error() {
    let bytes = encode(&fixture::synthetic(3, 1), MAX).unwrap();
    let n = bytes.len();
    let flip = |i: usize| {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        corruption(decode(&b, MAX))
    };
    assert!(matches!(flip(0), Corruption::BadMagic { .. }));
    assert!(matches!(flip(4), Corruption::Crc { .. })); // version byte: corruption, never "newer"
    assert!(matches!(flip(9), Corruption::Crc { .. })); // generation
    assert!(matches!(flip(17), Corruption::LengthMismatch { .. })); // payload length
    assert!(matches!(flip(HEADER_LEN + 5), Corruption::Crc { .. })); // payload
    assert!(matches!(flip(n - 1), Corruption::Crc { .. })); // trailer
}

#[test]
fn every_truncation_and_extension_is_detected() {
    let bytes = encode(&tiny(), MAX).unwrap();
    for len in 0..bytes.len() {
        let c = corruption(decode(&bytes[..len], MAX));
        assert!(
            matches!(c, Corruption::TooShort { .. } | Corruption::LengthMismatch { .. } | Corruption::BadMagic { .. }),
            "truncation to {len}: {c:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(corruption(decode(&longer, MAX)), Corruption::LengthMismatch { .. }));
}

#[test]
fn wrong_magic_and_reserved_flags() {
    let mut b = encode(&tiny(), MAX).unwrap();
    b[..4].copy_from_slice(b"ELSU");
    assert_eq!(corruption(decode(&b, MAX)), Corruption::BadMagic { found: *b"ELSU" });
    let mut b = encode(&tiny(), MAX).unwrap();
    b[6] = 1;
    reseal(&mut b);
    assert_eq!(corruption(decode(&b, MAX)), Corruption::Flags(1));
}

#[test]
fn newer_version_is_a_typed_error() {
    let mut b = encode(&tiny(), MAX).unwrap();
    b[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    reseal(&mut b);
    match decode(&b, MAX) {
        Err(Error::UnsupportedVersion { found, supported }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn absurd_lengths_are_refused_before_allocating() {
    let mut b = encode(&tiny(), MAX).unwrap();
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(corruption(decode(&b, 1 << 20)), Corruption::TooLarge { .. }));
    // A payload whose vector length claims 2^60 elements inside a valid frame: postcard fails on the missing
    // bytes instead of reserving memory for them.
    let mut payload = postcard::to_allocvec(&tiny()).unwrap();
    let (state_prefix, _) = payload.split_at(1); // generation = 1 (one varint byte)
    let mut forged = state_prefix.to_vec();
    forged.extend_from_slice(&[0x01, 0x74]); // arch "t"
    forged.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]); // input_shape len 2^60
    payload = forged;
    let mut frame = Vec::new();
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    frame.extend_from_slice(&0u16.to_le_bytes());
    frame.extend_from_slice(&1u64.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(&[0; 4]);
    reseal(&mut frame);
    assert!(matches!(corruption(decode(&frame, MAX)), Corruption::Decode(_)));
    // Encoding refuses a state over the limit.
    assert!(matches!(encode(&fixture::synthetic(1, 4), 64), Err(Error::Config(_))));
}

#[test]
fn trailing_payload_and_generation_mismatch() {
    let s = tiny();
    let payload = postcard::to_allocvec(&s).unwrap();
    let frame = |payload: &[u8], generation: u64| {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        f.extend_from_slice(&0u16.to_le_bytes());
        f.extend_from_slice(&generation.to_le_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0; 4]);
        reseal(&mut f);
        f
    };
    let mut extra = payload.clone();
    extra.push(0);
    assert_eq!(corruption(decode(&frame(&extra, 1), MAX)), Corruption::TrailingBytes(1));
    assert_eq!(corruption(decode(&frame(&payload, 2), MAX)), Corruption::GenerationMismatch { header: 2, payload: 1 });
}

#[test]
fn inconsistent_states_are_refused() {
    type Corrupt = Box<dyn Fn(&mut LearnerState)>;
    let cases: Vec<(&str, Corrupt)> = vec![
        ("no head", Box::new(|s| s.model.head_outputs.clear())),
        ("params short", Box::new(|s| s.params.truncate(2))),
        ("gap in layout", Box::new(|s| s.layout[1].offset = 3)),
        ("overflowing shape", Box::new(|s| s.layout[0].shape = vec![u32::MAX, u32::MAX, u32::MAX])),
        ("NaN parameter", Box::new(|s| s.params[0] = f32::NAN)),
        ("basis size", Box::new(|s| s.bases[0].cols = 2)),
        ("basis of missing head", Box::new(|s| s.bases[0].layer = LayerSlot::Head(3))),
        ("fisher entries", Box::new(|s| s.fisher = Some(FisherBlob::from_f32(&[1.0])))),
        ("fisher bytes", Box::new(|s| s.fisher.as_mut().unwrap().bytes.truncate(11))),
        ("negative fisher", Box::new(|s| s.fisher = Some(FisherBlob::from_f32(&[1.0, -1.0, 0.0])))),
        ("untagged fisher", Box::new(|s| s.fisher.as_mut().unwrap().format.clear())),
        ("duplicate class", Box::new(|s| s.classes.push(ClassEntry { id: 7, name: "dog".into() }))),
        ("task head", Box::new(|s| s.tasks[0].head = 1)),
        ("task class", Box::new(|s| s.tasks[0].classes.push(8))),
        ("duplicate task", Box::new(|s| s.tasks.push(s.tasks[0].clone()))),
        ("NaN accuracy", Box::new(|s| s.metrics.accuracy[0][0] = f64::NAN)),
    ];
    for (what, f) in cases {
        let mut s = tiny();
        f(&mut s);
        assert!(matches!(s.validate(), Err(Error::CorruptState(Corruption::Inconsistent(_)))), "{what}");
        // An inconsistent state is never written either.
        let dir = TempDir::new("inconsistent");
        let mut store = StateStore::open(&dir.0).unwrap();
        assert!(store.commit(&mut s).is_err(), "{what}");
        assert!(store.load().unwrap().is_none(), "{what}");
    }
    // Unknown Fisher formats pass (their own module checks them).
    let mut s = tiny();
    s.fisher = Some(FisherBlob { format: "f16".into(), entries: 3, bytes: vec![0; 6] });
    s.validate().unwrap();
}

#[test]
fn model_round_trip_and_mismatch() {
    use edgelearn_core::nn::zoo;
    let mut rng = edgelearn_core::seeded_rng(1);
    let model = zoo::mlp(6, &[5], &[2, 2], true, &mut rng).unwrap();
    let state = LearnerState::from_model(&model, "mlp:5").unwrap();
    state.validate().unwrap();
    let mut other = zoo::mlp(6, &[5], &[2, 2], true, &mut edgelearn_core::seeded_rng(2)).unwrap();
    assert_ne!(other.flat_params(), model.flat_params());
    state.restore_params(&mut other).unwrap();
    assert_eq!(other.flat_params(), model.flat_params());
    let mut wrong = zoo::mlp(6, &[4], &[2, 2], true, &mut rng).unwrap();
    assert!(matches!(state.restore_params(&mut wrong), Err(Error::Shape { .. })));
    let mut wrong_heads = zoo::mlp(6, &[5], &[2, 3], true, &mut rng).unwrap();
    assert!(state.restore_params(&mut wrong_heads).is_err());

    let f = FisherBlob::from_f32(&[0.5, 0.0, 3.0]);
    assert_eq!(f.to_f32().unwrap(), vec![0.5, 0.0, 3.0]);
    assert!(FisherBlob { format: "q8".into(), ..f }.to_f32().is_err());
}

// ---- slots ----

fn write_slot_bytes(dir: &TempDir, slot: Slot, bytes: &[u8]) {
    fs::write(dir.0.join(slot.file_name()), bytes).unwrap();
}

#[test]
fn empty_store_loads_none() {
    let dir = TempDir::new("empty");
    let mut store = StateStore::open(&dir.0).unwrap();
    assert!(store.load().unwrap().is_none());
    assert_eq!(store.generation(), None);
}

#[test]
fn open_creates_a_missing_directory() {
    let dir = TempDir::new("create");
    let nested = dir.0.join("a/b");
    let mut store = StateStore::open(&nested).unwrap();
    store.commit(&mut tiny()).unwrap();
    assert!(nested.join("state.a").is_file());
}

#[test]
fn commits_alternate_slots_and_generations_increase() {
    let dir = TempDir::new("alternate");
    let mut store = StateStore::open(&dir.0).unwrap();
    for g in 1..=5u64 {
        let mut s = fixture::synthetic(0, 1);
        assert_eq!(store.commit(&mut s).unwrap(), g);
        assert_eq!(s.generation, g);
        let expect = if g % 2 == 1 { Slot::A } else { Slot::B };
        let mut fresh = StateStore::open(&dir.0).unwrap();
        let loaded = fresh.load().unwrap().unwrap();
        assert_eq!((loaded.slot, loaded.generation()), (expect, g));
        assert_eq!(loaded.state, s);
        assert!(loaded.reports.iter().all(|r| !r.is_bad()));
        assert!(!dir.0.join(expect.tmp_name()).exists(), "temp file left behind");
    }
    // A new process continues the sequence.
    let mut store = StateStore::open(&dir.0).unwrap();
    assert_eq!(store.commit(&mut tiny()).unwrap(), 6);
}

#[test]
fn newest_valid_slot_wins_and_a_corrupt_one_is_reported() {
    let dir = TempDir::new("select");
    let s4 = fixture::synthetic(4, 1);
    let s5 = fixture::synthetic(5, 1);
    write_slot_bytes(&dir, Slot::A, &encode(&s5, MAX).unwrap());
    write_slot_bytes(&dir, Slot::B, &encode(&s4, MAX).unwrap());
    let mut store = StateStore::open(&dir.0).unwrap();
    let l = store.load().unwrap().unwrap();
    assert_eq!((l.slot, l.state.clone()), (Slot::A, s5.clone()));

    // Corrupt the newest: the older one is used and the corrupt slot reported.
    let mut bad = encode(&s5, MAX).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    write_slot_bytes(&dir, Slot::A, &bad);
    let l = store.load().unwrap().unwrap();
    assert_eq!((l.slot, l.state.clone()), (Slot::B, s4.clone()));
    assert!(matches!(l.reports[0].status, SlotStatus::Corrupt(Corruption::Crc { .. })));
    assert!(l.reports[0].is_bad() && !l.reports[1].is_bad());
    // The next commit overwrites the corrupt slot with generation 5 (older valid + 1).
    let mut next = fixture::synthetic(9, 0);
    assert_eq!(store.commit(&mut next).unwrap(), 5);
    let l = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
    assert_eq!((l.slot, l.generation()), (Slot::A, 5));
    assert_eq!(l.state, next);

    // A truncated newest slot (what a torn write without the rename protocol would leave).
    let full = encode(&fixture::synthetic(6, 1), MAX).unwrap();
    write_slot_bytes(&dir, Slot::B, &full[..full.len() - 3]);
    let l = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
    assert_eq!((l.slot, l.generation()), (Slot::A, 5));
    assert!(matches!(l.reports[1].status, SlotStatus::Corrupt(Corruption::LengthMismatch { .. })));
}

#[test]
fn both_slots_corrupt_is_an_error_and_commit_refuses_until_reset() {
    let dir = TempDir::new("both");
    write_slot_bytes(&dir, Slot::A, b"garbage");
    write_slot_bytes(&dir, Slot::B, &[]);
    let mut store = StateStore::open(&dir.0).unwrap();
    assert!(matches!(store.load(), Err(Error::NoValidState(_))));
    let mut s = tiny();
    assert!(matches!(store.commit(&mut s), Err(Error::NoValidState(_))));
    assert_eq!(fs::read(dir.0.join("state.a")).unwrap(), b"garbage", "nothing written");
    store.reset().unwrap();
    assert_eq!(store.commit(&mut s).unwrap(), 1);
    assert_eq!(store.load().unwrap().unwrap().state, s);
}

#[test]
fn one_slot_missing_other_corrupt_is_an_error() {
    let dir = TempDir::new("one");
    write_slot_bytes(&dir, Slot::B, b"ELST");
    let mut store = StateStore::open(&dir.0).unwrap();
    assert!(matches!(store.load(), Err(Error::NoValidState(_))));
}

#[test]
fn newer_format_slot_is_an_error_without_fallback_or_change() {
    let dir = TempDir::new("newer");
    let old = fixture::synthetic(7, 1);
    write_slot_bytes(&dir, Slot::A, &encode(&old, MAX).unwrap());
    let mut newer = encode(&fixture::synthetic(8, 1), MAX).unwrap();
    newer[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    reseal(&mut newer);
    write_slot_bytes(&dir, Slot::B, &newer);
    let before: Vec<Vec<u8>> = Slot::ALL.iter().map(|s| fs::read(dir.0.join(s.file_name())).unwrap()).collect();

    let mut store = StateStore::open(&dir.0).unwrap();
    match store.load() {
        Err(Error::UnsupportedVersion { found, supported }) => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.read_slot(Slot::B).0, SlotStatus::Newer { version: FORMAT_VERSION + 1, generation: 8 });
    let mut s = tiny();
    assert!(matches!(store.commit(&mut s), Err(Error::UnsupportedVersion { .. })));
    assert_eq!(s, tiny(), "state untouched");
    let after: Vec<Vec<u8>> = Slot::ALL.iter().map(|s| fs::read(dir.0.join(s.file_name())).unwrap()).collect();
    assert_eq!(before, after, "no state change on disk");
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 2, "no temp file either");

    // Even with the newer file in the *older* generation, no silent fallback.
    let mut newer_low = encode(&fixture::synthetic(2, 1), MAX).unwrap();
    newer_low[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    reseal(&mut newer_low);
    write_slot_bytes(&dir, Slot::B, &newer_low);
    assert!(matches!(store.load(), Err(Error::UnsupportedVersion { .. })));
}

#[test]
fn older_unsupported_version_is_reported_and_skipped() {
    let dir = TempDir::new("older");
    write_slot_bytes(&dir, Slot::A, &encode(&fixture::synthetic(3, 0), MAX).unwrap());
    let mut v0 = encode(&fixture::synthetic(4, 0), MAX).unwrap();
    v0[4..6].copy_from_slice(&0u16.to_le_bytes());
    reseal(&mut v0);
    write_slot_bytes(&dir, Slot::B, &v0);
    let l = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
    assert_eq!(l.generation(), 3);
    assert_eq!(l.reports[1].status, SlotStatus::Older { version: 0 });
}

#[test]
fn oversized_slot_file_is_not_read() {
    let dir = TempDir::new("big");
    write_slot_bytes(&dir, Slot::A, &encode(&fixture::synthetic(1, 0), MAX).unwrap());
    write_slot_bytes(&dir, Slot::B, &vec![0u8; 5000]);
    let mut store = StateStore::open_with_limit(&dir.0, 1000).unwrap();
    let l = store.load().unwrap().unwrap();
    assert_eq!(l.generation(), 1);
    assert!(matches!(l.reports[1].status, SlotStatus::Corrupt(Corruption::TooLarge { len: 5000, .. })));
    // And a commit over the limit is refused with nothing written.
    let mut big = fixture::synthetic(1, 10);
    assert!(matches!(store.commit(&mut big), Err(Error::Config(_))));
    assert_eq!(big.generation, 1, "generation restored");
    assert_eq!(store.load().unwrap().unwrap().generation(), 1);
}

#[test]
fn failed_commits_leave_the_previous_state_loadable() {
    for fail in [FailPoint::Create, FailPoint::MidWrite, FailPoint::Rename, FailPoint::DirSync] {
        let dir = TempDir::new("fail");
        let mut store = StateStore::open(&dir.0).unwrap();
        let mut s1 = fixture::synthetic(0, 2);
        let mut s2 = fixture::synthetic(0, 2);
        store.commit(&mut s1).unwrap();
        store.commit(&mut s2).unwrap();
        let mut s3 = fixture::synthetic(9, 2);
        store.fail = Some(fail);
        assert!(matches!(store.commit(&mut s3), Err(Error::Io { .. })), "{fail:?}");
        assert_eq!(s3.generation, 9, "{fail:?}: caller's generation unchanged");
        let l = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
        assert!(l.reports.iter().all(|r| !r.is_bad()), "{fail:?}: {:?}", l.reports);
        if fail == FailPoint::DirSync {
            // The rename happened: the new state is in place (and the previous one still in the other slot).
            assert_eq!(l.generation(), 3);
        } else {
            assert_eq!((l.generation(), &l.state), (2, &s2), "{fail:?}");
        }
        // The store recovers: the next commit rescans and continues the sequence.
        store.fail = None;
        let g = store.commit(&mut fixture::synthetic(1, 0)).unwrap();
        assert_eq!(g, l.generation() + 1, "{fail:?}");
        assert!(!dir.0.join("state.a.tmp").exists() && !dir.0.join("state.b.tmp").exists());
    }
}

#[test]
fn real_io_error_leaves_the_previous_state_loadable() {
    // Running as root, permissions do not stop writes; a directory in the temp file's place does.
    let dir = TempDir::new("ioerr");
    let mut store = StateStore::open(&dir.0).unwrap();
    let mut s1 = fixture::synthetic(1, 1);
    store.commit(&mut s1).unwrap();
    fs::create_dir(dir.0.join(Slot::B.tmp_name())).unwrap();
    assert!(matches!(store.commit(&mut fixture::synthetic(2, 1)), Err(Error::Io { .. })));
    let l = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
    assert_eq!((l.generation(), &l.state), (1, &s1));
}

#[test]
fn stale_temp_files_are_ignored_and_replaced() {
    let dir = TempDir::new("stale");
    let mut store = StateStore::open(&dir.0).unwrap();
    let mut s1 = fixture::synthetic(1, 1);
    store.commit(&mut s1).unwrap();
    let full = encode(&fixture::synthetic(2, 1), MAX).unwrap();
    fs::write(dir.0.join(Slot::B.tmp_name()), &full[..full.len() / 2]).unwrap(); // a killed writer's leftover
    let l = StateStore::open(&dir.0).unwrap().load().unwrap().unwrap();
    assert_eq!((l.generation(), &l.state), (1, &s1));
    assert_eq!(l.reports[1].status, SlotStatus::Missing);
    let mut s2 = fixture::synthetic(5, 0);
    assert_eq!(store.commit(&mut s2).unwrap(), 2);
    assert_eq!(StateStore::open(&dir.0).unwrap().load().unwrap().unwrap().state, s2);
}

// ---- fuzz seeds ----

const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../fuzz/corpus/state_decode");

/// The checked-in seed corpus of the `state_decode` fuzz target, by file name.
fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = |s: &LearnerState| encode(s, MAX).unwrap();
    let tiny_bytes = valid(&tiny());
    let mut newer = tiny_bytes.clone();
    newer[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    reseal(&mut newer);
    let mut bad_crc = tiny_bytes.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut bad_magic = tiny_bytes.clone();
    bad_magic[0] = b'X';
    let mut empty_payload = tiny_bytes[..HEADER_LEN].to_vec();
    empty_payload[16..20].copy_from_slice(&0u32.to_le_bytes());
    empty_payload.extend_from_slice(&[0; CRC_LEN]);
    reseal(&mut empty_payload);
    let mut inconsistent = tiny();
    inconsistent.layout[1].offset = 3;
    vec![
        ("seed-valid-tiny".into(), tiny_bytes.clone()),
        (
            "seed-valid-v1-tiny".into(),
            (0..TINY_V1_HEX.len() / 2)
                .map(|i| u8::from_str_radix(&TINY_V1_HEX[2 * i..2 * i + 2], 16).unwrap())
                .collect(),
        ),
        ("seed-valid-v2-tiny".into(), unhex(TINY_V2_HEX)),
        ("seed-valid-v3-tiny".into(), unhex(TINY_V3_HEX)),
        ("seed-valid-synthetic-0-0".into(), valid(&fixture::synthetic(0, 0))),
        ("seed-valid-synthetic-1-1".into(), valid(&fixture::synthetic(1, 1))),
        ("seed-valid-synthetic-7-3".into(), valid(&fixture::synthetic(7, 3))),
        ("seed-newer-version".into(), newer),
        ("seed-corrupt-truncated".into(), tiny_bytes[..60].to_vec()),
        ("seed-corrupt-crc".into(), bad_crc),
        ("seed-corrupt-magic".into(), bad_magic),
        ("seed-corrupt-empty-payload".into(), empty_payload),
        ("seed-corrupt-inconsistent".into(), encode(&inconsistent, MAX).unwrap()),
    ]
}

/// Regenerate the seeds after a format change:
/// `cargo test -p firmware --lib store::tests::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand after a format change"]
fn write_fuzz_seeds() {
    edgelearn_core::test_util::write_fuzz_seeds(SEED_DIR, fuzz_seeds());
}

#[test]
fn checked_in_fuzz_seeds_are_current() {
    for (name, bytes) in fuzz_seeds() {
        let on_disk = fs::read(format!("{SEED_DIR}/{name}"))
            .unwrap_or_else(|e| panic!("fuzz seed {name} missing ({e}): run write_fuzz_seeds"));
        assert!(on_disk == bytes, "fuzz seed {name} is stale: run write_fuzz_seeds");
        let result = decode(&bytes, MAX);
        match name.split('-').nth(1) {
            Some("valid") => assert!(result.is_ok(), "{name}: {result:?}"),
            Some("newer") => assert!(matches!(result, Err(Error::UnsupportedVersion { .. })), "{name}"),
            _ => assert!(matches!(result, Err(Error::CorruptState(_))), "{name}: {result:?}"),
        }
    }
}
