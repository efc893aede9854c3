//! Bad command-line input gives a one-line error and a non-zero exit, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("host binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (ok, err) = run(args);
    assert!(!ok, "{args:?} should fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(lines[0].contains(needle), "{args:?}: {err} lacks {needle:?}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

#[test]
fn unknown_stream() {
    assert_one_line_error(&["simulate", "--stream", "nope"], "unknown stream 'nope'");
}

#[test]
fn zero_tasks() {
    assert_one_line_error(&["simulate", "--stream", "pmnist", "--tasks", "0"], "at least one task");
}

#[test]
fn missing_data_folder() {
    assert_one_line_error(&["simulate", "--data-dir", "/nonexistent/edgelearn-data"], "missing data");
    assert_one_line_error(&["data", "--data-dir", "/nonexistent/edgelearn-data"], "fetch-data.sh");
}

#[test]
fn unknown_method_and_bad_numbers() {
    assert_one_line_error(&["simulate", "--method", "bogus"], "unknown method");
    assert_one_line_error(&["simulate", "--seeds", "x"], "bad seed");
    assert_one_line_error(&["simulate", "--epochs", "0"], "epochs");
    assert_one_line_error(&["simulate", "--lr", "-1"], "lr");
    assert_one_line_error(&["simulate", "--model", "mlp:"], "bad width");
}
