//! A tty (a UART such as `/dev/ttyTHS1`, a USB serial adapter, or one side of a pseudo-terminal pair) opened for
//! the protocol: raw mode, no echo, no line discipline, reads that return after at most 100 ms. Plain `std` file
//! plus `nix` termios: no serialport crate, so no libudev.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::termios::{self, BaudRate, FlushArg, SetArg, SpecialCharacterIndices};

use crate::error::{Error, Result};

/// How long a read waits for the first byte, in tenths of a second (termios `VTIME`).
pub const READ_TIMEOUT_DECISECONDS: u8 = 1;

fn hal(what: String) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Hal(format!("{what}: {e}"))
}

/// The termios speed for a baud rate, or an error for one termios does not have.
pub fn baud_rate(baud: u32) -> Result<BaudRate> {
    Ok(match baud {
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115_200 => BaudRate::B115200,
        230_400 => BaudRate::B230400,
        460_800 => BaudRate::B460800,
        921_600 => BaudRate::B921600,
        other => return Err(Error::Config(format!("unsupported baud rate {other}"))),
    })
}

/// Put the tty `fd` in raw mode: 8 data bits, no parity, no echo, no CR/LF translation, no signals; reads return
/// what has arrived, or nothing after `VTIME = read_timeout_ds` tenths of a second (`VMIN = 0`). With `baud`, set
/// the line speed too (a pseudo-terminal ignores it).
pub fn make_raw(fd: impl AsFd, baud: Option<u32>, read_timeout_ds: u8) -> Result<()> {
    let fd = fd.as_fd();
    let mut t = termios::tcgetattr(fd).map_err(hal("reading the tty settings".into()))?;
    termios::cfmakeraw(&mut t);
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = read_timeout_ds;
    if let Some(b) = baud {
        termios::cfsetspeed(&mut t, baud_rate(b)?).map_err(hal(format!("setting {b} baud")))?;
    }
    termios::tcsetattr(fd, SetArg::TCSANOW, &t).map_err(hal("writing the tty settings".into()))
}

/// Open the tty at `path` for the protocol link: read/write, not as the controlling terminal, raw
/// ([`make_raw`] with [`READ_TIMEOUT_DECISECONDS`]), and with whatever arrived while nobody listened discarded
/// (a device that was off did not hear it either).
pub fn open_tty(path: &Path, baud: Option<u32>) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)
        .map_err(|source| Error::Io { context: format!("opening the serial port {}", path.display()), source })?;
    make_raw(&file, baud, READ_TIMEOUT_DECISECONDS)?;
    termios::tcflush(&file, FlushArg::TCIFLUSH).map_err(hal(format!("flushing {}", path.display())))?;
    Ok(file)
}
