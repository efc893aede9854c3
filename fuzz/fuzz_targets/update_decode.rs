//! Fuzz the fleet update decoder: any bytes → `decode_update` must refuse or accept (never panic, never
//! over-allocate), and an update it accepts must survive an encode → decode round trip unchanged.
//!
//! Each input is decoded twice: as it is, and with its CRC-32C trailer recomputed (see state_decode.rs: without
//! it the fuzzer would stop at the checksum; a hostile board sends a correct one).
#![no_main]

use edgelearn_fleet::{decode_update, encode_update};
use edgelearn_store::{CRC32C, DEFAULT_MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

/// `data` with its last four bytes replaced by the CRC-32C (LE) of the bytes before them.
fn resealed(data: &[u8]) -> Option<Vec<u8>> {
    let body = data.len().checked_sub(4)?;
    let mut b = data.to_vec();
    let crc = CRC32C.checksum(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

fn check(data: &[u8]) {
    if let Ok(u) = decode_update(data, DEFAULT_MAX_PAYLOAD, "dev-1", "base-1") {
        let again = encode_update(&u, DEFAULT_MAX_PAYLOAD).expect("an accepted update encodes");
        let back = decode_update(&again, DEFAULT_MAX_PAYLOAD, "dev-1", "base-1").expect("and decodes");
        assert_eq!(back, u);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(b) = resealed(data) {
        check(&b);
    }
});
