//! Reader for IDX files (the format of MNIST and Fashion-MNIST), gzipped or raw.
//!
//! The reader is the firmware's ([`firmware::data::idx`]), so the board reads exactly what the host reads; its
//! errors reach the host as [`Error::Firmware`](crate::Error::Firmware) (a wrong magic is
//! [`firmware::Error::BadMagic`], an unsupported element type [`firmware::Error::UnsupportedDtype`], a short file
//! [`firmware::Error::Truncated`], sizes that do not agree [`firmware::Error::Format`], a file that cannot be read
//! or a corrupt gzip stream [`firmware::Error::Io`]).

pub use firmware::data::idx::{IDX_U8, IdxArray, gunzip, is_gzip, parse_idx, read_idx, resolve_idx};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Result};

    /// The host does not copy the reader's errors: it carries them.
    #[test]
    fn an_idx_error_reaches_the_host_as_the_firmware_error() {
        let bad_magic = [0x12, 0, IDX_U8, 1, 0, 0, 0, 1, 0];
        let r: Result<IdxArray> = parse_idx(&bad_magic, "t").map_err(Error::from);
        assert!(matches!(r, Err(Error::Firmware(firmware::Error::BadMagic { magic: 0x1200_0801, .. }))), "{r:?}");
        let r: Result<IdxArray> = parse_idx(&[0, 0, IDX_U8, 1, 0, 0, 0, 2, 7], "t").map_err(Error::from);
        assert!(matches!(r, Err(Error::Firmware(firmware::Error::Truncated { expected: 2, found: 1, .. }))), "{r:?}");
    }
}
