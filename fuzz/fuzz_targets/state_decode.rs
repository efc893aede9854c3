//! Fuzz the state decoder: any bytes → `decode` must return (never panic, never over-allocate), and a state it
//! accepts must survive an encode → decode round trip unchanged.
//!
//! Each input is decoded twice: as it is, and with its CRC-32C trailer recomputed. Random mutations almost never
//! keep the CRC right, so without the second pass the fuzzer would stop at the checksum and never reach the
//! payload decoder behind it; a hostile file carries a correct CRC.
#![no_main]

use edgelearn_store::{CRC32C, DEFAULT_MAX_PAYLOAD, decode, encode};
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
    if let Ok(state) = decode(data, DEFAULT_MAX_PAYLOAD) {
        let again = encode(&state, DEFAULT_MAX_PAYLOAD).expect("a decoded state encodes");
        let back = decode(&again, DEFAULT_MAX_PAYLOAD).expect("a re-encoded state decodes");
        assert_eq!(back, state);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(b) = resealed(data) {
        check(&b);
    }
});
