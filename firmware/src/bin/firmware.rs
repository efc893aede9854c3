//! The device daemon and the on-device self-test:
//!
//! ```text
//! firmware --version
//! firmware daemon --board FILE --model FILE --state DIR [--inbox DIR] [--serial TTY] [...]
//! firmware selftest --data DIR [--samples N] [--seed S] [--backend auto|cpu|cuda]
//! ```
//!
//! `daemon` runs the field loop (serial protocol, learn button, status LED, inbox folder) until SIGTERM; see
//! `firmware::daemon` and `firmware daemon --help`.
//!
//! `selftest` learns two real 2-class MNIST tasks (0/1, then 2/3) from the IDX files in `DIR` with GPM+BECAME,
//! prints the accuracy on each task and α, and exits with status 1 when a learned task ends below 90 % (2 for a
//! usage error). The arguments are parsed by hand: the binary carries no host-only dependencies.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use firmware::backend::BackendKind;
use firmware::selftest::{self, MIN_ACCURACY, SelftestConfig};

const USAGE: &str = "usage: firmware [--version | --help]
       firmware daemon --board FILE --model FILE --state DIR [options]   (firmware daemon --help)
       firmware selftest --data DIR [--samples N] [--seed S] [--backend auto|cpu|cuda]

daemon    run the device: serial protocol, learn button, status LED, inbox folder

selftest  learn MNIST classes 0/1 then 2/3 with GPM+BECAME from the IDX files in DIR
          (train-images-idx3-ubyte[.gz], ...), print accuracy per task and alpha;
          exit 1 if a learned task ends below 90 % accuracy
  --data DIR     folder with the four MNIST IDX files (gzipped or raw)
  --samples N    training samples per task (default 400, at least 2)
  --seed S       seed of initialisation and shuffling (default 0)
  --backend B    auto (CUDA when compiled in and a GPU answers, else the CPU), cpu, cuda (default auto)";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
enum Command {
    /// Print the version.
    Version,
    /// Print the usage.
    Help,
    /// Print a one-line description (no arguments).
    About,
    /// Run the self-test.
    Selftest { data: PathBuf, samples: usize, seed: u64, backend: BackendKind },
    /// Run the daemon with these arguments (parsed by `firmware::daemon::Config`).
    Daemon(Vec<String>),
}

/// Parse the arguments after the program name. Errors are one line, for the user.
fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Ok(Command::About);
    };
    match first.as_str() {
        "--version" | "-V" => Ok(Command::Version),
        "--help" | "-h" | "help" => Ok(Command::Help),
        "selftest" => parse_selftest(&args[1..]),
        "daemon" => Ok(Command::Daemon(args[1..].to_vec())),
        other => Err(format!("unknown command or option '{other}'")),
    }
}

fn parse_selftest(args: &[String]) -> Result<Command, String> {
    let mut data = None;
    let mut samples = 400usize;
    let mut seed = 0u64;
    let mut backend = BackendKind::Auto;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--samples" => {
                let v = value("--samples")?;
                samples = v.parse().map_err(|_| format!("--samples: '{v}' is not a whole number"))?;
                if samples < 2 {
                    return Err(format!("--samples: need at least 2, got {samples}"));
                }
            }
            "--seed" => {
                let v = value("--seed")?;
                seed = v.parse().map_err(|_| format!("--seed: '{v}' is not a whole number"))?;
            }
            "--backend" => backend = value("--backend")?.parse().map_err(|e| format!("--backend: {e}"))?,
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("selftest: unknown option '{other}'")),
        }
    }
    let data = data.ok_or_else(|| "selftest: --data DIR is required".to_string())?;
    Ok(Command::Selftest { data, samples, seed, backend })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Command::Version) => {
            println!("firmware {} ({})", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH);
            ExitCode::SUCCESS
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::About) => {
            println!("firmware {}: on-device continual learner (run with --help)", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Selftest { data, samples, seed, backend }) => run_selftest(data, samples, seed, backend),
        Ok(Command::Daemon(args)) => firmware::daemon::main(&args),
        Err(msg) => {
            eprintln!("firmware: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run_selftest(data: PathBuf, samples: usize, seed: u64, backend: BackendKind) -> ExitCode {
    let cfg = SelftestConfig { samples, seed, backend, ..SelftestConfig::new(data) };
    println!(
        "selftest: GPM+BECAME, MLP {}-{} with {} heads of 2 classes, {} training samples per task, {} epochs, \
         seed {seed}, on {}",
        28 * 28,
        cfg.hidden.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"),
        cfg.class_pairs.len(),
        cfg.samples,
        cfg.train.epochs,
        std::env::consts::ARCH
    );
    let started = Instant::now();
    let report = match selftest::run(&cfg, &mut |line| println!("selftest: {line}")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("firmware: selftest failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (task, acc) in report.tasks.iter().zip(report.final_accuracies()) {
        let alpha = task.alpha.map_or_else(|| "- (first task, no merge)".to_string(), |a| format!("{a:.4}"));
        println!(
            "selftest: task classes {}/{}: final accuracy {:.2} %, alpha {alpha}",
            task.classes[0],
            task.classes[1],
            100.0 * acc
        );
    }
    let passed = report.passed(MIN_ACCURACY);
    println!(
        "selftest: {} in {:.1} s ({} parameters, {} bytes of learner state kept; threshold {:.0} %)",
        if passed { "PASSED" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        report.params,
        report.bytes_kept,
        100.0 * MIN_ACCURACY
    );
    if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse_args(&[]), Ok(Command::About));
        assert_eq!(parse_args(&args(&["--version"])), Ok(Command::Version));
        assert_eq!(parse_args(&args(&["-V"])), Ok(Command::Version));
        assert_eq!(parse_args(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(
            parse_args(&args(&["selftest", "--data", "d"])),
            Ok(Command::Selftest { data: "d".into(), samples: 400, seed: 0, backend: BackendKind::Auto })
        );
        assert_eq!(
            parse_args(&args(&["selftest", "--samples", "50", "--seed", "3", "--data", "x/y"])),
            Ok(Command::Selftest { data: "x/y".into(), samples: 50, seed: 3, backend: BackendKind::Auto })
        );
        assert_eq!(parse_args(&args(&["selftest", "-h"])), Ok(Command::Help));
        // `daemon` hands everything after it to `firmware::daemon::Config::parse`.
        assert_eq!(
            parse_args(&args(&["daemon", "--board", "b", "--help"])),
            Ok(Command::Daemon(args(&["--board", "b", "--help"])))
        );
        assert_eq!(
            parse_args(&args(&["selftest", "--data", "d", "--backend", "cpu"])),
            Ok(Command::Selftest { data: "d".into(), samples: 400, seed: 0, backend: BackendKind::Cpu })
        );
    }

    #[test]
    fn rejects_bad_input_with_a_message() {
        let err = |a: &[&str]| parse_args(&args(a)).unwrap_err();
        assert!(err(&["learn"]).contains("unknown command"));
        assert!(err(&["selftest"]).contains("--data DIR is required"));
        assert!(err(&["selftest", "--data"]).contains("needs a value"));
        assert!(err(&["selftest", "--data", "d", "--samples", "many"]).contains("not a whole number"));
        assert!(err(&["selftest", "--data", "d", "--samples", "1"]).contains("at least 2"));
        assert!(err(&["selftest", "--data", "d", "--samples", "-3"]).contains("not a whole number"));
        assert!(err(&["selftest", "--data", "d", "--seed", "x"]).contains("not a whole number"));
        assert!(err(&["selftest", "--data", "d", "--frobnicate"]).contains("unknown option"));
        assert!(err(&["selftest", "--data", "d", "--backend", "tpu"]).contains("unknown backend"));
    }
}
