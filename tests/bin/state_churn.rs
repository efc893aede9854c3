//! Kill-test helper: learns (deterministically) and commits state in a loop until it is killed.
//!
//! Usage: `state_churn DIR SCALE`. Loads the newest state in DIR (or starts fresh), then forever: builds the
//! synthetic state of the next generation (`firmware::store::fixture::synthetic(generation, SCALE)`), commits
//! it, and prints `committed <generation>` once the commit returned (i.e. after the directory fsync).
//! The test `kill_state` SIGKILLs it at random moments and checks what survives.

use std::io::Write;
use std::process::ExitCode;

use firmware::store::{StateStore, fixture};

fn run() -> firmware::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(scale)) = (args.next(), args.next()) else {
        return Err(firmware::Error::Config("usage: state_churn DIR SCALE".into()));
    };
    let scale: usize = scale.parse().map_err(|e| firmware::Error::Config(format!("SCALE {scale:?}: {e}")))?;
    let mut store = StateStore::open(dir)?;
    let mut generation = match store.load()? {
        Some(loaded) => loaded.generation(),
        None => 0,
    };
    let stdout = std::io::stdout();
    loop {
        let mut state = fixture::synthetic(generation + 1, scale);
        generation = store.commit(&mut state)?;
        let mut out = stdout.lock();
        let _ = writeln!(out, "committed {generation}");
        let _ = out.flush();
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("state_churn: {e}");
            ExitCode::FAILURE
        }
    }
}
