//! The device daemon for the integration tests: exactly `firmware daemon ARGS…` (the same library entry point the
//! firmware binary calls), built inside the `integration` package so that its tests can find it through
//! `CARGO_BIN_EXE_device_daemon`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    firmware::daemon::main(&args)
}
