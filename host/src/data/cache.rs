//! Backbone features on disk: a frozen backbone's features of a data set are computed once per machine and read
//! back by every later run (another seed, another method, the demo after the tests).
//!
//! A cache file is named by the caller's stem, its row count and a key (CRC-32C over everything the features
//! depend on: the backbone's bytes, the cut, the inputs' bytes); its content is checked again on every read
//! (magic, shape, CRC-32C of the whole), so a truncated, corrupt or stale file is recomputed, never trusted.

use std::path::Path;

use firmware::store::CRC32C;
use ndarray::Array2;

use crate::error::Result;

/// Magic of a feature cache file.
const CACHE_MAGIC: &[u8; 8] = b"ELFEAT01";

/// Encode a feature matrix: magic, rows and columns (u64 LE), the values (f32 LE), CRC-32C of all before.
pub fn encode(x: &Array2<f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 16 + 4 * x.len() + 4);
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&(x.nrows() as u64).to_le_bytes());
    out.extend_from_slice(&(x.ncols() as u64).to_le_bytes());
    x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    let crc = CRC32C.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decode [`encode`]'s bytes, `None` for anything else (wrong magic, length or CRC, another row count).
pub fn decode(bytes: &[u8], rows: usize) -> Option<Array2<f32>> {
    let body = bytes.get(..bytes.len().checked_sub(4)?)?;
    let crc = u32::from_le_bytes(bytes.get(body.len()..)?.try_into().ok()?);
    if CRC32C.checksum(body) != crc || body.get(..8)? != CACHE_MAGIC {
        return None;
    }
    let r = usize::try_from(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?)).ok()?;
    let c = usize::try_from(u64::from_le_bytes(body.get(16..24)?.try_into().ok()?)).ok()?;
    let data = body.get(24..)?;
    if r != rows || data.len() != r.checked_mul(c)?.checked_mul(4)? {
        return None;
    }
    let values = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Array2::from_shape_vec((r, c), values).ok()
}

/// The `rows × width` features cached in `cache_dir` as `features-{stem}-{rows}-{key:08x}.bin` when that file
/// holds them, otherwise `compute()`'s, written there durably (a failed write only logs: the run goes on).
pub fn cached(
    cache_dir: &Path,
    stem: &str,
    rows: usize,
    key: u32,
    compute: impl FnOnce() -> Result<Array2<f32>>,
) -> Result<Array2<f32>> {
    let path = cache_dir.join(format!("features-{stem}-{rows}-{key:08x}.bin"));
    if let Ok(bytes) = std::fs::read(&path) {
        match decode(&bytes, rows) {
            Some(x) => {
                tracing::info!(cache = %path.display(), rows, "backbone features read from the cache");
                return Ok(x);
            }
            None => tracing::warn!(cache = %path.display(), "feature cache unreadable: computing the features again"),
        }
    }
    let t0 = std::time::Instant::now();
    let x = compute()?;
    tracing::info!(
        rows,
        secs = t0.elapsed().as_secs_f64(),
        threads = rayon::current_num_threads(),
        "backbone features computed"
    );
    if let Err(e) = firmware::store::write_durable(&path, &encode(&x)) {
        tracing::warn!(cache = %path.display(), error = %e, "could not write the feature cache");
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache codec round-trips and refuses a flipped bit, a cut file and another row count.
    #[test]
    fn cache_files_round_trip_and_refuse_damage() {
        let x = Array2::from_shape_fn((3, 5), |(i, j)| i as f32 - 0.5 * j as f32);
        let bytes = encode(&x);
        assert_eq!(decode(&bytes, 3), Some(x));
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(decode(&flipped, 3), None);
        assert_eq!(decode(&bytes[..bytes.len() - 3], 3), None);
        assert_eq!(decode(&bytes, 4), None);
        assert_eq!(decode(&[], 3), None);
    }

    /// A second call reads the first one's file; a damaged file is computed again and rewritten.
    #[test]
    fn features_are_computed_once_and_damage_recomputes() {
        let dir = std::env::temp_dir().join(format!("edgelearn-cache-test-{}", std::process::id()));
        let x = Array2::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32);
        let first = cached(&dir, "t", 2, 7, || Ok(x.clone())).unwrap();
        assert_eq!(first, x);
        let again = cached(&dir, "t", 2, 7, || panic!("should come from the cache")).unwrap();
        assert_eq!(again, x);
        let file = dir.join("features-t-2-00000007.bin");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[25] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();
        let y = x.mapv(|v| v + 1.0);
        assert_eq!(cached(&dir, "t", 2, 7, || Ok(y.clone())).unwrap(), y);
        assert_eq!(decode(&std::fs::read(&file).unwrap(), 2), Some(y));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
