//! Helpers shared by the unit tests of several modules.

/// Replace the checked-in `seed-*` files of a fuzz corpus folder with `seeds` (name, bytes); other files (crash
/// inputs kept by hand) stay. Used by each module's `#[ignore]`d `write_fuzz_seeds` test.
pub fn write_fuzz_seeds(dir: &str, seeds: Vec<(String, Vec<u8>)>) {
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
pub fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, crate::data::idx::IDX_U8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// A tiny 2-class task over 6 features (the label says whether feature `feature` is positive): `n` training and 16
/// validation samples, drawn from `seed` (the budget and learner tests' refusals).
pub fn tiny_task(seed: u64, feature: usize, n: usize) -> (crate::data::Samples, crate::data::Samples) {
    use rand::Rng;
    let mut rng = crate::seeded_rng(seed);
    let mut make = |n: usize| {
        let x = ndarray::Array2::from_shape_fn((n, 6), |_| rng.random_range(-1.0f32..1.0));
        let y = (0..n).map(|i| usize::from(x[[i, feature]] > 0.0)).collect();
        crate::data::Samples::new(x, y).unwrap()
    };
    (make(n), make(16))
}
