//! The status LED: one blink pattern per device phase, driven from the main loop's clock.
//!
//! | phase | pattern (period) |
//! |---|---|
//! | idle | short 100 ms flash every 2 s ("alive") |
//! | collecting | 500 ms on, 500 ms off |
//! | training | on |
//! | error | two 150 ms flashes, then dark, every 1.2 s |

use embedded_hal::digital::{OutputPin, PinState};

use crate::error::{Error, Result};
use crate::protocol::Phase;

/// Whether the LED is lit at `t_ms` in `phase`'s pattern.
pub fn pattern_level(phase: Phase, t_ms: u64) -> bool {
    match phase {
        Phase::Idle => t_ms % 2000 < 100,
        Phase::Collecting => t_ms % 1000 < 500,
        Phase::Training => true,
        Phase::Error => {
            let t = t_ms % 1200;
            t < 150 || (300..450).contains(&t)
        }
    }
}

/// A status LED on an [`OutputPin`] (`active_high`: lit when the pin is high). The pin is written only when the
/// level changes.
#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
    active_high: bool,
    phase: Phase,
    since_ms: u64,
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    /// An LED on `pin`, idle from `now_ms` (the pin is written on the first [`StatusLed::update`]).
    pub fn new(pin: P, active_high: bool, now_ms: u64) -> Self {
        Self { pin, active_high, phase: Phase::Idle, since_ms: now_ms, lit: None }
    }

    /// The phase shown.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Show `phase` from `now_ms` on (its pattern restarts when the phase changes) and update the pin.
    pub fn set_phase(&mut self, phase: Phase, now_ms: u64) -> Result<()> {
        if phase != self.phase {
            self.phase = phase;
            self.since_ms = now_ms;
        }
        self.update(now_ms)
    }

    /// Set the pin to the pattern's level at `now_ms` (call it from the main loop, every few tens of ms).
    pub fn update(&mut self, now_ms: u64) -> Result<()> {
        let lit = pattern_level(self.phase, now_ms.saturating_sub(self.since_ms));
        if self.lit != Some(lit) {
            let state = PinState::from(lit == self.active_high);
            self.pin.set_state(state).map_err(|e| Error::Hal(format!("status LED: {e:?}")))?;
            self.lit = Some(lit);
        }
        Ok(())
    }

    /// The pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }
}
