//! Reader for IDX files (the format of MNIST and Fashion-MNIST), gzipped or raw.
//!
//! An IDX file is a 4-byte magic `00 00 <type> <ndims>`, then `ndims` big-endian `u32` dimensions, then the
//! elements in row-major order. Only element type `0x08` (unsigned byte) is supported, which is what image and
//! label files of these data sets use. Every size is checked: a file must hold exactly the bytes its header
//! promises. Gzip is decoded in pure Rust (`flate2` with `miniz_oxide`), so the reader cross-compiles with no C
//! library.
//!
//! ```
//! use edgelearn_core::data::idx::{IDX_U8, parse_idx};
//!
//! // Two 1×2 images: magic, dims 2, 1, 2, then 4 pixels.
//! let bytes = [0, 0, IDX_U8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 10, 20, 30, 40];
//! let a = parse_idx(&bytes, "example")?;
//! assert_eq!(a.dims, vec![2, 1, 2]);
//! assert_eq!(a.items(), 2);
//! assert_eq!(a.item_len(), 2);
//! # Ok::<(), edgelearn_core::Error>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// IDX element type byte for unsigned bytes, the only type the reader supports.
pub const IDX_U8: u8 = 0x08;

/// A decoded IDX file: its dimensions and its elements (row-major, unsigned bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions as in the header, outermost first (e.g. `[60000, 28, 28]` for MNIST training images).
    pub dims: Vec<usize>,
    /// `dims.iter().product()` elements.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Number of items along the first dimension (images or labels); 0 for a zero-dimensional array.
    pub fn items(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Elements per item: the product of every dimension but the first (784 for MNIST images, 1 for labels).
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }

    /// The elements of item `i`, or `None` past the end.
    pub fn item(&self, i: usize) -> Option<&[u8]> {
        let len = self.item_len();
        let start = i.checked_mul(len)?;
        self.data.get(start..start.checked_add(len)?)
    }
}

/// True when `bytes` start with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompress a gzip stream (all members). `name` is used in the error ([`Error::Io`] for a corrupt stream).
pub fn gunzip(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|source| Error::Io { context: format!("decompressing {name}"), source })?;
    Ok(out)
}

/// Parse the bytes of an IDX file; gzipped input (magic `1f 8b`) is decompressed first.
///
/// `name` (usually the path) appears in errors. Fails with [`Error::BadMagic`] when the first two bytes are not
/// zero, [`Error::UnsupportedDtype`] for element types other than unsigned byte, [`Error::Truncated`] when the
/// header or the data is shorter than promised, [`Error::Format`] for zero dimensions, dimensions whose product
/// overflows, or trailing bytes, and [`Error::Io`] for a corrupt gzip stream.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<IdxArray> {
    if is_gzip(bytes) {
        let raw = gunzip(bytes, name)?;
        return parse_raw(&raw, name);
    }
    parse_raw(bytes, name)
}

/// Read and parse one IDX file, gzipped or raw. A file that cannot be read is [`Error::Io`].
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { context: format!("reading {}", path.display()), source })?;
    parse_idx(&bytes, &path.display().to_string())
}

/// `path` if it is a file, else the same name with `.gz` added (or removed, when it ends in `.gz`) if that is a
/// file. Neither is [`Error::Io`] of kind `NotFound`, naming both.
pub fn resolve_idx(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let other = match path.as_os_str().to_string_lossy().strip_suffix(".gz") {
        Some(stripped) => PathBuf::from(stripped),
        None => {
            let mut s = path.as_os_str().to_os_string();
            s.push(".gz");
            PathBuf::from(s)
        }
    };
    if other.is_file() {
        return Ok(other);
    }
    Err(Error::Io {
        context: format!("looking for {} or {}", path.display(), other.display()),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    })
}

/// Parse uncompressed IDX bytes.
fn parse_raw(bytes: &[u8], name: &str) -> Result<IdxArray> {
    let truncated = |expected: usize| Error::Truncated { path: name.to_string(), expected, found: bytes.len() };
    let Some(&[z0, z1, dtype, ndims]) = bytes.first_chunk::<4>() else {
        return Err(truncated(4));
    };
    if z0 != 0 || z1 != 0 {
        return Err(Error::BadMagic { path: name.to_string(), magic: u32::from_be_bytes([z0, z1, dtype, ndims]) });
    }
    if dtype != IDX_U8 {
        return Err(Error::UnsupportedDtype { path: name.to_string(), dtype });
    }
    let ndims = usize::from(ndims);
    if ndims == 0 {
        return Err(Error::Format(format!("{name}: IDX header has zero dimensions")));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(truncated(header));
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Format(format!("{name}: IDX dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() < count {
        return Err(Error::Truncated { path: name.to_string(), expected: count, found: body.len() });
    }
    if body.len() > count {
        return Err(Error::Format(format!(
            "{name}: {} trailing bytes after the {count} elements of an IDX array with dimensions {dims:?}",
            body.len() - count
        )));
    }
    Ok(IdxArray { dims, data: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;
    use crate::test_util::idx_file as idx;

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
        assert_eq!((a.items(), a.item_len()), (2, 6));
        assert_eq!(a.item(1), Some(&[7, 8, 9, 10, 11, 12][..]));
        assert_eq!(a.item(2), None);
    }

    #[test]
    fn valid_labels_1d() {
        let a = parse_idx(&idx(&[3], &[7, 0, 9]), "t").unwrap();
        assert_eq!(a.dims, vec![3]);
        assert_eq!(a.data, vec![7, 0, 9]);
        assert_eq!(a.item_len(), 1);
        assert_eq!(a.item(2), Some(&[9][..]));
    }

    #[test]
    fn valid_empty_array() {
        let a = parse_idx(&idx(&[0, 28, 28], &[]), "t").unwrap();
        assert_eq!(a.dims, vec![0, 28, 28]);
        assert!(a.data.is_empty());
        assert_eq!(a.item(0), None);
    }

    #[test]
    fn valid_gzipped() {
        let raw = idx(&[2, 3], &[9, 8, 7, 6, 5, 4]);
        let packed = gz(&raw);
        assert!(is_gzip(&packed));
        assert!(!is_gzip(&raw));
        assert_eq!(parse_idx(&packed, "t").unwrap(), parse_idx(&raw, "t").unwrap());
    }

    #[test]
    fn read_and_resolve_files() {
        let dir = std::env::temp_dir().join(format!("firmware-idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = idx(&[1, 2, 2], &[1, 2, 3, 4]);
        std::fs::write(dir.join("a"), &raw).unwrap();
        std::fs::write(dir.join("b.gz"), gz(&raw)).unwrap();
        assert_eq!(read_idx(&dir.join("a")).unwrap(), read_idx(&dir.join("b.gz")).unwrap());
        assert!(matches!(read_idx(&dir.join("missing")), Err(Error::Io { .. })));
        // Given with or without `.gz`, whichever exists is found.
        assert_eq!(resolve_idx(&dir.join("a")).unwrap(), dir.join("a"));
        assert_eq!(resolve_idx(&dir.join("a.gz")).unwrap(), dir.join("a"));
        assert_eq!(resolve_idx(&dir.join("b")).unwrap(), dir.join("b.gz"));
        match resolve_idx(&dir.join("c")) {
            Err(Error::Io { source, context }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                assert!(context.contains("c.gz"), "{context}");
            }
            other => panic!("expected a NotFound error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_magic() {
        let mut b = idx(&[1], &[0]);
        b[0] = 0x12;
        match parse_idx(&b, "t") {
            Err(e @ Error::BadMagic { magic, .. }) => {
                assert_eq!(magic, 0x1200_0801);
                assert_eq!(e.to_string(), "t: not an IDX file (magic 0x12000801)");
            }
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
        assert!(matches!(parse_idx(&idx(&[2], &[1, 2, 3]), "t"), Err(Error::Format(_))));
    }

    #[test]
    fn zero_dims() {
        assert!(matches!(parse_idx(&idx(&[], &[]), "t"), Err(Error::Format(_))));
    }

    #[test]
    fn overflowing_dims() {
        // 0xFFFFFFFF^3 overflows usize on 64-bit targets: a typed error, no panic and no huge allocation.
        let b = idx(&[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]);
        assert!(matches!(parse_idx(&b, "t"), Err(Error::Format(_))));
        // Huge but representable: more bytes than present, reported as truncation.
        let b = idx(&[60000, 28, 28], &[0; 100]);
        assert!(matches!(parse_idx(&b, "t"), Err(Error::Truncated { expected: 47_040_000, found: 100, .. })));
    }
}
