//! Shared helpers for the cross-crate integration tests.

use host::data::stream::Stream;
use host::runs::presets::Preset;

/// Load a named stream from the real data folder, failing with a clear message when the data is missing.
pub fn real_stream(preset: &Preset, seed: u64) -> Stream {
    let dir = host::data::data_dir();
    match preset.load(&dir, seed) {
        Ok(s) => s,
        Err(e) => panic!("real data needed for this test is not available ({e}); run `bash scripts/fetch-data.sh`"),
    }
}

/// splitmix64, seeded: random but reproducible moments for the kill tests.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
