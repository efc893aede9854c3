//! The learn button: an [`InputPin`] debounced in software.

use embedded_hal::digital::InputPin;

use crate::error::{Error, Result};

/// A level must stay unchanged this long before it counts.
pub const DEBOUNCE_MS: u64 = 30;

/// A debounced push button. `active_low`: pressed when the pin reads low (a button to ground with a pull-up, the
/// usual wiring). [`Button::poll`] reports each press once, when the pressed level has been stable for
/// [`DEBOUNCE_MS`]; bounces shorter than that are ignored, and holding the button does not repeat.
#[derive(Debug)]
pub struct Button<P> {
    pin: P,
    active_low: bool,
    /// The debounced state (pressed or not).
    stable: bool,
    /// The last raw reading and when it was first seen.
    raw: bool,
    raw_since: u64,
}

impl<P: InputPin> Button<P> {
    /// A button on `pin`, released at `now_ms`.
    pub fn new(pin: P, active_low: bool, now_ms: u64) -> Self {
        Self { pin, active_low, stable: false, raw: false, raw_since: now_ms }
    }

    /// Whether the debounced state is "pressed".
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// Sample the pin at `now_ms`; `Ok(true)` exactly once per press (on the debounced press edge).
    pub fn poll(&mut self, now_ms: u64) -> Result<bool> {
        let high = self.pin.is_high().map_err(|e| Error::Hal(format!("learn button: {e:?}")))?;
        let pressed = high != self.active_low;
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now_ms;
            return Ok(false);
        }
        if pressed != self.stable && now_ms.saturating_sub(self.raw_since) >= DEBOUNCE_MS {
            self.stable = pressed;
            return Ok(pressed);
        }
        Ok(false)
    }

    /// The pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }
}
