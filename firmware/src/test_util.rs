//! Helpers shared by the unit tests of several modules.

/// Replace the checked-in `seed-*` files of a fuzz corpus folder with `seeds` (name, bytes); other files (crash
/// inputs kept by hand) stay. Used by each module's `#[ignore]`d `write_fuzz_seeds` test.
pub(crate) fn write_fuzz_seeds(dir: &str, seeds: Vec<(String, Vec<u8>)>) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
    }
}

/// A raw IDX file of unsigned bytes with the given dimensions and data (the IDX reader's and the self-test's
/// tests write their files with it).
pub(crate) fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, crate::data::idx::IDX_U8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}
