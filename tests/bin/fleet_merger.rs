//! The fleet's merger for the integration tests: `host fleet serve` (the same library entry point,
//! [`host::fleet::serve::serve`]) built inside the `integration` package so that its tests can find it through
//! `CARGO_BIN_EXE_fleet_merger` and SIGKILL it.
//!
//! Usage: `fleet_merger BROKER(host:port) PASSWORD_FILE FLEET BASE DIR` (the user is `merger`).

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    firmware::daemon::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [broker, password_file, fleet, base, dir] = &args[..] else {
        eprintln!("usage: fleet_merger BROKER PASSWORD_FILE FLEET BASE DIR");
        return ExitCode::from(2);
    };
    let run = || -> anyhow::Result<()> {
        let mut b = firmware::fleet::mqtt::BrokerConfig::parse(broker)?;
        let password = std::fs::read_to_string(password_file)?;
        b.credentials = Some(("merger".into(), password.lines().next().unwrap_or_default().to_string()));
        b.timeout = Duration::from_secs(5);
        let cfg = host::fleet::serve::ServeConfig {
            broker: b,
            fleet: fleet.clone(),
            base_model: base.clone(),
            dir: dir.into(),
            max_payload: firmware::daemon::fleet::MAX_FRAME,
            max_merges: None,
            idle_exit: None,
        };
        let r = host::fleet::serve::serve(&cfg)?;
        eprintln!("merger stopped: {r:?}");
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet_merger: {e:#}");
            ExitCode::FAILURE
        }
    }
}
