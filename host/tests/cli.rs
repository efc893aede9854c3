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

#[test]
fn device_learn_options() {
    assert_one_line_error(&["device-learn", "--model", "m.onnx", "--shots", "0"], "--shots must be at least 1");
    assert_one_line_error(&["device-learn", "--model", "m.onnx", "--field-only"], "--field-only needs --base-classes");
}

/// The field run with a few photos per new class, through the board's learner, on the shipped base model and real
/// MNIST: each class of the group is taught with exactly `--shots` photos, and the run reports new and base
/// classes apart.
///
/// The Jetson Nano profile's `[augment]` table follows each of the 3 photos with `min(⌈250/3⌉ − 1, 24) = 24`
/// jittered copies (75 samples a class); `--no-augment` teaches the photos alone, and scores lower on the new
/// digits.
#[test]
fn device_learn_field_run_with_three_photos_per_class() {
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_host"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args([
                "device-learn",
                "--model",
                "models/mnist-cnn-0123.onnx",
                "--base-classes",
                "0,1,2,3",
                "--groups",
                "4,5",
                "--shots",
                "3",
            ])
            .args(["--field-only", "--field-method", "slda-oas"])
            .args(extra)
            .output()
            .expect("host binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.lines().find(|l| l.starts_with("FIELD NEW/BASE")).expect("a FIELD NEW/BASE line");
        assert!(line.contains("(3 photos per new class)"), "{line}");
        let new: f64 = line
            .split("new classes ")
            .nth(1)
            .and_then(|r| r.split(" %").next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no new-class accuracy in {line}"));
        (stdout, new)
    };
    let (with, new_with) = run(&[]);
    assert!(with.contains("learned classes [4, 5] from 6 photos (150 samples with their jittered copies"), "{with}");
    let (without, new_without) = run(&["--no-augment"]);
    assert!(
        without.contains("learned classes [4, 5] from 6 photos (6 samples with their jittered copies"),
        "{without}"
    );
    assert!(new_with > new_without, "copies {new_with} % vs photos alone {new_without} %");
}
