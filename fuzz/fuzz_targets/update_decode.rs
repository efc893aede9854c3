//! Fuzz the fleet update decoder: any bytes → `decode_update` must refuse or accept (never panic, never
//! over-allocate), and an update it accepts must survive an encode → decode round trip unchanged.
#![no_main]

use firmware::fleet::{decode_update, encode_update};
use firmware::store::DEFAULT_MAX_PAYLOAD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = decode_update(data, DEFAULT_MAX_PAYLOAD, "dev-1", "base-1") {
        let again = encode_update(&u, DEFAULT_MAX_PAYLOAD).expect("an accepted update encodes");
        let back = decode_update(&again, DEFAULT_MAX_PAYLOAD, "dev-1", "base-1").expect("and decodes");
        assert_eq!(back, u);
    }
});
