use super::*;
use crate::error::Error;
use crate::protocol::Phase;

use embedded_hal::digital::{InputPin, OutputPin};
use embedded_hal_mock::eh1::MockError;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as T};

#[test]
fn the_four_patterns_differ_and_have_their_documented_duty_cycles() {
    let lit_ms = |phase| (0..12_000u64).filter(|&t| pattern_level(phase, t)).count();
    // Over 12 s (a whole number of every period): idle 100 of 2000 ms, collecting half, training always, error
    // 2 × 150 of 1200 ms.
    assert_eq!(lit_ms(Phase::Idle), 600);
    assert_eq!(lit_ms(Phase::Collecting), 6000);
    assert_eq!(lit_ms(Phase::Training), 12_000);
    assert_eq!(lit_ms(Phase::Error), 3000);
    // Error flashes twice per period: two rising edges per 1200 ms.
    let rises = (1..1200u64).filter(|&t| pattern_level(Phase::Error, t) && !pattern_level(Phase::Error, t - 1)).count();
    assert_eq!(rises + usize::from(pattern_level(Phase::Error, 0)), 2);
}

#[test]
fn led_writes_the_pin_only_on_level_changes_and_restarts_the_pattern_on_a_phase_change() {
    let expectations = [
        // Idle from 0: flash at 0..100, dark, flash at 2000.
        T::set(State::High),
        T::set(State::Low),
        T::set(State::High),
        T::set(State::Low),
        // Collecting from 2200: on 2200..2700, off, on again at 3200.
        T::set(State::High),
        T::set(State::Low),
        T::set(State::High),
        // Training from 3300: on (already on, no write). Error from 10 000: on (no write), off at 10 150, on at
        // 10 300, off at 10 450, on at 11 200.
        T::set(State::Low),
        T::set(State::High),
        T::set(State::Low),
        T::set(State::High),
        // Idle again from 11 250: lit first (no write), dark from 11 350.
        T::set(State::Low),
    ];
    let mut pin = PinMock::new(&expectations);
    let mut led = StatusLed::new(pin.clone(), true, 0);
    led.set_phase(Phase::Idle, 0).unwrap();
    for t in [50, 99, 100, 1999, 2000, 2050, 2100] {
        led.update(t).unwrap();
    }
    led.set_phase(Phase::Collecting, 2200).unwrap();
    assert_eq!(led.phase(), Phase::Collecting);
    for t in [2699, 2700, 3199, 3200] {
        led.update(t).unwrap();
    }
    led.set_phase(Phase::Training, 3300).unwrap();
    for t in [4000, 9999] {
        led.update(t).unwrap();
    }
    // Setting the same phase again does not restart its pattern.
    led.set_phase(Phase::Training, 5000).unwrap();
    led.set_phase(Phase::Error, 10_000).unwrap();
    for t in [10_149, 10_150, 10_300, 10_450, 11_199, 11_200] {
        led.update(t).unwrap();
    }
    led.set_phase(Phase::Idle, 11_250).unwrap();
    led.update(11_350).unwrap();
    led.update(11_400).unwrap();
    pin.done();
}

#[test]
fn active_low_led_inverts_the_pin() {
    let mut pin = PinMock::new(&[T::set(State::Low), T::set(State::High)]);
    let mut led = StatusLed::new(pin.clone(), false, 100);
    led.set_phase(Phase::Collecting, 100).unwrap();
    led.update(600).unwrap();
    pin.done();
}

#[test]
fn led_pin_failure_is_a_typed_error() {
    let mut pin = PinMock::new(&[T::set(State::High).with_error(MockError::Io(std::io::ErrorKind::NotConnected))]);
    let mut led = StatusLed::new(pin.clone(), true, 0);
    assert!(matches!(led.set_phase(Phase::Training, 0), Err(Error::Hal(_))));
    pin.done();
}

/// Poll `button` at each time with the pin reading `levels` (true = high); the times at which a press was
/// reported.
fn presses(active_low: bool, script: &[(u64, bool)]) -> Vec<u64> {
    let state = |high: bool| if high { State::High } else { State::Low };
    let expectations: Vec<T> = script.iter().map(|&(_, high)| T::get(state(high))).collect();
    let mut pin = PinMock::new(&expectations);
    let mut button = Button::new(pin.clone(), active_low, 0);
    let mut out = Vec::new();
    for &(t, _) in script {
        if button.poll(t).unwrap() {
            out.push(t);
        }
    }
    pin.done();
    out
}

#[test]
fn button_reports_each_debounced_press_once() {
    // Active low (pressed = low). A bouncy press at 10 ms settles at 20 ms: reported at 50 ms (30 ms stable);
    // holding it reports nothing more; a bouncy release; a second press reported 30 ms after it settled.
    let script = [
        (0, true),
        (10, false),
        (15, true),
        (20, false),
        (40, false),
        (50, false),
        (60, false),
        (1000, false),
        (1010, true),
        (1020, false),
        (1030, true),
        (1070, true),
        (1080, false),
        (1100, false),
        (1110, false),
        (1200, false),
    ];
    assert_eq!(presses(true, &script), vec![50, 1110]);
}

#[test]
fn glitches_shorter_than_the_debounce_time_are_ignored() {
    let script: Vec<(u64, bool)> = (0..200).map(|i| (i * 5, i % 4 == 1 || i % 4 == 2)).collect();
    // Low for 10 ms out of every 20 ms: never stable for DEBOUNCE_MS.
    const { assert!(DEBOUNCE_MS > 10) };
    assert_eq!(presses(false, &script), Vec::<u64>::new());
    let script: Vec<(u64, bool)> = (0..200).map(|i| (i * 5, i % 4 == 1 || i % 4 == 2)).collect();
    assert_eq!(presses(true, &script), Vec::<u64>::new());
}

#[test]
fn active_high_button_is_pressed_when_high() {
    let script = [(0, false), (5, true), (34, true), (35, true), (100, true), (101, false)];
    assert_eq!(presses(false, &script), vec![35]);
    let script = [(0, false), (5, true), (34, true), (35, true)];
    assert_eq!(presses(true, &script), Vec::<u64>::new(), "active low: high is released");
}

#[test]
fn button_state_and_pin_errors() {
    let mut pin = PinMock::new(&[
        T::get(State::Low),
        T::get(State::Low),
        T::get(State::Low).with_error(MockError::Io(std::io::ErrorKind::BrokenPipe)),
    ]);
    let mut button = Button::new(pin.clone(), true, 0);
    assert!(!button.poll(0).unwrap());
    assert!(button.poll(DEBOUNCE_MS).unwrap());
    assert!(button.is_pressed());
    assert!(matches!(button.poll(DEBOUNCE_MS + 1), Err(Error::Hal(_))));
    button.into_inner();
    pin.done();
}

#[test]
fn clocks_and_the_unwired_pin() {
    let c = ManualClock::new(5);
    c.advance(10);
    assert_eq!(c.now_ms(), 15);
    c.set(3);
    assert_eq!(c.now_ms(), 3);
    let s = SystemClock::new();
    let a = s.now_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(s.now_ms() >= a + 5);
    let mut p = NoPin;
    p.set_high().unwrap();
    p.set_low().unwrap();
    assert!(p.is_high().unwrap() && !p.is_low().unwrap());
    // An unwired active-low button is never pressed.
    let mut b = Button::new(NoPin, true, 0);
    assert!((0..100).all(|t| !b.poll(t * 10).unwrap()));
}

#[cfg(unix)]
mod tty {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    use crate::io::serial::{baud_rate, make_raw, open_tty};
    use crate::protocol::{Command, Link, Request, StdIo, encode_frame_vec};

    fn pty() -> (File, std::path::PathBuf, std::os::fd::OwnedFd) {
        let p = nix::pty::openpty(None, None).unwrap();
        let path = nix::unistd::ttyname(&p.slave).unwrap();
        (File::from(p.master), path, p.slave)
    }

    #[test]
    fn a_pty_opened_raw_passes_every_byte_and_times_out_reads() {
        let (mut master, path, _slave) = pty();
        let mut tty = open_tty(&path, Some(115_200)).unwrap();
        // All 256 byte values, including the ones a cooked tty would eat or translate (^C, ^D, CR, LF, DEL).
        let all: Vec<u8> = (0..=255u8).collect();
        master.write_all(&all).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < all.len() && Instant::now() < deadline {
            let n = tty.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, all);
        // Nothing more: the read returns 0 bytes after about VTIME (100 ms) instead of blocking.
        let t = Instant::now();
        assert_eq!(tty.read(&mut buf).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_link_over_a_pty_carries_frames() {
        let (mut master, path, _slave) = pty();
        let tty = open_tty(&path, None).unwrap();
        let mut link = Link::new(StdIo(tty));
        let cmd = Command { seq: 77, request: Request::ExportOnnx { offset: 12 } };
        master.write_all(&encode_frame_vec(&cmd).unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(c) = link.recv::<Command>().unwrap() {
                break c;
            }
            assert!(Instant::now() < deadline, "no frame within 5 s");
        };
        assert_eq!(got, cmd);
        link.resync().unwrap();
        let mut b = [0u8; 1];
        master.read_exact(&mut b).unwrap();
        assert_eq!(b, [0]);
    }

    #[test]
    fn bad_ttys_and_speeds_are_errors() {
        assert!(matches!(
            open_tty(std::path::Path::new("/nonexistent/tty"), None),
            Err(crate::error::Error::Io { .. })
        ));
        assert!(matches!(baud_rate(12_345), Err(crate::error::Error::Config(_))));
        assert!(baud_rate(115_200).is_ok());
        // A regular file is not a tty: its settings cannot be read.
        let f = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
        assert!(matches!(make_raw(&f, None, 1), Err(crate::error::Error::Hal(_))));
    }
}
