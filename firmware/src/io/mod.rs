//! The board's I/O without a screen: a status LED, a learn button and a serial link, all through embedded-hal 1.0
//! / embedded-io traits so that the same code runs on the board (`linux-embedded-hal` GPIO character devices, a
//! tty) and in tests (`embedded-hal-mock` pins, byte vectors).
//!
//! - [`led`]: [`StatusLed`] drives an `OutputPin` with one blink pattern per [`Phase`](crate::protocol::Phase).
//! - [`button`]: [`Button`] debounces an `InputPin` and reports each press once.
//! - [`Clock`]: milliseconds since some start ([`SystemClock`] on the board, a hand-set [`ManualClock`] in tests).
//! - [`NoPin`]: an LED / button that is not wired (a board without GPIO, the host).
//! - [`serial`] (Linux): open a tty (a UART or a pseudo-terminal) raw, for the protocol [`Link`](crate::protocol::Link).
//! - [`gpio`] (Linux): LED and button lines of a GPIO character device (`/dev/gpiochipN`).

pub mod button;
#[cfg(target_os = "linux")]
pub mod gpio;
pub mod led;
#[cfg(unix)]
pub mod serial;
#[cfg(test)]
mod tests;

pub use button::{Button, DEBOUNCE_MS};
pub use led::{StatusLed, pattern_level};

use std::cell::Cell;
use std::time::Instant;

/// A monotonic millisecond clock.
pub trait Clock {
    /// Milliseconds since an arbitrary start; never decreases.
    fn now_ms(&self) -> u64;
}

/// The system's monotonic clock, counted from when this value was created.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock starting at 0 now.
    pub fn new() -> Self {
        Self(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(Cell<u64>);

impl ManualClock {
    /// A clock at `ms`.
    pub fn new(ms: u64) -> Self {
        Self(Cell::new(ms))
    }

    /// Set the time.
    pub fn set(&self, ms: u64) {
        self.0.set(ms);
    }

    /// Move the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get().saturating_add(ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

/// A pin that is not wired: as an output it ignores every level, as an input it always reads high (a released
/// active-low button).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPin;

impl embedded_hal::digital::ErrorType for NoPin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for NoPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl embedded_hal::digital::InputPin for NoPin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        Ok(true)
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }
}
