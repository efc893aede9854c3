//! Reader for IDX files (the format of MNIST and Fashion-MNIST), gzipped or raw.
//!
//! The reader lives in the firmware crate ([`firmware::data::idx`]), so the board reads exactly what the host
//! reads; this module re-exports it with the host's [`Error`] variants: a wrong magic is [`Error::BadMagic`], an
//! unsupported element type [`Error::UnsupportedDtype`], a short file [`Error::Truncated`], sizes that do not
//! agree [`Error::SizeMismatch`], and a file that cannot be read or a corrupt gzip stream [`Error::Io`].

use std::path::Path;

pub use firmware::data::idx::{IDX_U8, IdxArray, is_gzip};

use crate::error::{Error, Result};

/// The host error for a firmware IDX error about `name` (a path or a label).
fn host_error(name: &str, e: firmware::Error) -> Error {
    match e {
        firmware::Error::BadMagic { path, magic } => Error::BadMagic { path, magic },
        firmware::Error::Truncated { path, expected, found } => Error::Truncated { path, expected, found },
        firmware::Error::UnsupportedDtype { path, dtype } => Error::UnsupportedDtype { path, dtype },
        firmware::Error::Format(msg) => Error::SizeMismatch(msg),
        firmware::Error::Io { source, .. } => Error::io(name, source),
        other => Error::Firmware(other),
    }
}

/// Decompress a gzip stream (all members). `name` is used in the error.
pub fn gunzip(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    firmware::data::idx::gunzip(bytes, name).map_err(|e| host_error(name, e))
}

/// Parse the bytes of an IDX file; gzipped input (magic `1f 8b`) is decompressed first.
///
/// `name` (usually the path) appears in errors. Fails with [`Error::BadMagic`] when the first two bytes are not
/// zero, [`Error::UnsupportedDtype`] for element types other than unsigned byte, [`Error::Truncated`] when the
/// header or the data is shorter than promised, [`Error::SizeMismatch`] for zero dimensions, dimensions whose
/// product overflows, or trailing bytes, and [`Error::Io`] for a corrupt gzip stream.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<IdxArray> {
    firmware::data::idx::parse_idx(bytes, name).map_err(|e| host_error(name, e))
}

/// Read and parse one IDX file, gzipped or raw.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    firmware::data::idx::read_idx(path).map_err(|e| host_error(&path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// A raw IDX u8 file with the given dims and data.
    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, IDX_U8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn valid_raw() {
        let a = parse_idx(&idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), "t").unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data, (1..=12).collect::<Vec<u8>>());
        assert_eq!(a.items(), 2);
    }

    #[test]
    fn valid_labels_1d() {
        let a = parse_idx(&idx(&[3], &[7, 0, 9]), "t").unwrap();
        assert_eq!(a.dims, vec![3]);
        assert_eq!(a.data, vec![7, 0, 9]);
    }

    #[test]
    fn valid_empty_array() {
        let a = parse_idx(&idx(&[0, 28, 28], &[]), "t").unwrap();
        assert_eq!(a.dims, vec![0, 28, 28]);
        assert!(a.data.is_empty());
    }

    #[test]
    fn valid_gzipped() {
        let raw = idx(&[2, 3], &[9, 8, 7, 6, 5, 4]);
        let packed = gz(&raw);
        assert!(is_gzip(&packed));
        assert_eq!(parse_idx(&packed, "t").unwrap(), parse_idx(&raw, "t").unwrap());
    }

    #[test]
    fn read_idx_from_files() {
        let dir = std::env::temp_dir().join(format!("host-idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = idx(&[1, 2, 2], &[1, 2, 3, 4]);
        std::fs::write(dir.join("a"), &raw).unwrap();
        std::fs::write(dir.join("a.gz"), gz(&raw)).unwrap();
        assert_eq!(read_idx(&dir.join("a")).unwrap(), read_idx(&dir.join("a.gz")).unwrap());
        assert!(matches!(read_idx(&dir.join("missing")), Err(Error::Io { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_magic() {
        let mut b = idx(&[1], &[0]);
        b[0] = 0x12;
        match parse_idx(&b, "t") {
            Err(Error::BadMagic { magic, .. }) => assert_eq!(magic, 0x1200_0801),
            other => panic!("expected BadMagic, got {other:?}"),
        }
    }

    #[test]
    fn unsupported_dtype() {
        let mut b = idx(&[1], &[0, 0, 0, 0]);
        b[2] = 0x0D; // float
        assert!(matches!(parse_idx(&b, "t"), Err(Error::UnsupportedDtype { dtype: 0x0D, .. })));
    }

    #[test]
    fn truncated() {
        assert!(matches!(parse_idx(&[], "t"), Err(Error::Truncated { expected: 4, found: 0, .. })));
        assert!(matches!(parse_idx(&[0, 0, 8], "t"), Err(Error::Truncated { .. })));
        // Header says 3 dims but only 2 are present.
        let b = &idx(&[2, 2, 2], &[])[..12];
        assert!(matches!(parse_idx(b, "t"), Err(Error::Truncated { expected: 16, found: 12, .. })));
        // Data shorter than the dims promise.
        assert!(matches!(
            parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5]), "t"),
            Err(Error::Truncated { expected: 6, found: 5, .. })
        ));
        // A gzip stream cut short is an I/O error, not a panic.
        let packed = gz(&idx(&[64], &[3; 64]));
        assert!(matches!(parse_idx(&packed[..packed.len() / 2], "t"), Err(Error::Io { .. })));
    }

    #[test]
    fn trailing_bytes() {
        assert!(matches!(parse_idx(&idx(&[2], &[1, 2, 3]), "t"), Err(Error::SizeMismatch(_))));
    }

    #[test]
    fn zero_dims() {
        assert!(matches!(parse_idx(&idx(&[], &[]), "t"), Err(Error::SizeMismatch(_))));
    }

    #[test]
    fn overflowing_dims() {
        // 0xFFFFFFFF^3 overflows usize on 64-bit targets: a typed error, no panic and no huge allocation.
        let b = idx(&[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]);
        assert!(matches!(parse_idx(&b, "t"), Err(Error::SizeMismatch(_))));
        // Huge but representable: more bytes than present, reported as truncation.
        let b = idx(&[60000, 28, 28], &[0; 100]);
        assert!(matches!(parse_idx(&b, "t"), Err(Error::Truncated { expected: 47_040_000, found: 100, .. })));
    }
}
