//! Fuzz the board profile parser: any bytes (as UTF-8 text) → `BoardProfile::parse` must give a profile or a
//! typed `Error::Profile`, never panic; a profile it accepts, written back as TOML, must parse to the same profile.
#![no_main]

use edgelearn_core::Error;
use edgelearn_learn::budget::BoardProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match BoardProfile::parse(text, "fuzz") {
        Ok(profile) => {
            let again = toml::to_string(&profile).expect("an accepted profile writes as TOML");
            let back = BoardProfile::parse(&again, "fuzz (written back)").expect("a written-back profile parses");
            assert_eq!(back, profile);
        }
        Err(Error::Profile(_)) => {}
        Err(e) => panic!("not a profile error: {e}"),
    }
});
