//! Fuzz the state decoder: any bytes → `decode` must return (never panic, never over-allocate), and a state it
//! accepts must survive an encode → decode round trip unchanged.
#![no_main]

use firmware::store::{DEFAULT_MAX_PAYLOAD, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = decode(data, DEFAULT_MAX_PAYLOAD) {
        let again = encode(&state, DEFAULT_MAX_PAYLOAD).expect("a decoded state encodes");
        let back = decode(&again, DEFAULT_MAX_PAYLOAD).expect("a re-encoded state decodes");
        assert_eq!(back, state);
    }
});
