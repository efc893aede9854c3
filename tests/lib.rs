//! Shared helpers for the cross-crate integration tests.

use host::data::stream::Stream;
use host::presets::Preset;

/// Load a named stream from the real data folder, failing with a clear message when the data is missing.
pub fn real_stream(preset: &Preset, seed: u64) -> Stream {
    let dir = host::data::data_dir();
    match preset.load(&dir, seed) {
        Ok(s) => s,
        Err(e) => panic!("real data needed for this test is not available ({e}); run `bash scripts/fetch-data.sh`"),
    }
}
