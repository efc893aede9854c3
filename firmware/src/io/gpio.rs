//! The LED and button lines of a GPIO character device (`/dev/gpiochipN`), through `linux-embedded-hal`'s
//! [`CdevPin`] (embedded-hal 1.0 `OutputPin` / `InputPin`). Line numbers are the chip's offsets (`gpioinfo`
//! lists them).

use std::path::Path;

use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

use crate::error::{Error, Result};

/// Consumer label shown by `gpioinfo` for the lines the daemon holds.
pub const CONSUMER: &str = "edgelearn";

fn request(chip: &Path, line: u32, flags: LineRequestFlags, what: &str) -> Result<CdevPin> {
    let err = |e: &dyn std::fmt::Display| Error::Hal(format!("{what} on {} line {line}: {e}", chip.display()));
    let mut c = Chip::new(chip).map_err(|e| err(&e))?;
    let handle = c.get_line(line).and_then(|l| l.request(flags, 0, CONSUMER)).map_err(|e| err(&e))?;
    CdevPin::new(handle).map_err(|e| err(&e))
}

/// The status LED: `line` of `chip` as an output, initially low.
pub fn led(chip: &Path, line: u32) -> Result<CdevPin> {
    request(chip, line, LineRequestFlags::OUTPUT, "status LED")
}

/// The learn button: `line` of `chip` as an input.
pub fn button(chip: &Path, line: u32) -> Result<CdevPin> {
    request(chip, line, LineRequestFlags::INPUT, "learn button")
}
