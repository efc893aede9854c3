//! A whole field session on one machine, over a pseudo-terminal pair, with real MNIST: the device daemon
//! (`firmware daemon`, the shipped CNN pretrained on digits 0-3) on the slave side, the host's protocol client
//! on the master side.
//!
//! connect → stream task A (digits 4/5) as samples over the link → learn → task B (digits 6/7) as PNG files
//! dropped into the inbox (plus one unreadable file) → learn → query accuracy → export ONNX (and check it
//! predicts like the device) → SIGKILL ("cut the power") → restart → query again: the same generation, the same
//! classes, every prediction and so the accuracy identical to before the cut → SIGTERM: a clean exit.
#![cfg(unix)]

#[path = "field_common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Daemon, MNIST_NORM, Pty, drop_into_inbox, files_under, mnist, png, raw_image, scratch};
use firmware::nn::Mode;
use firmware::onnx::{Cut, OnnxModel};
use firmware::protocol::{Image, Phase, Request, Response};
use host::device::DeviceClient;

/// Training samples per new class (each new task has two classes).
const TRAIN_PER_CLASS: usize = 120;
/// Test samples per class (all eight classes are queried).
const TEST_PER_CLASS: usize = 50;
const DAEMON_FLAGS: &[&str] = &["--epochs", "3", "--batch", "10", "--lr", "0.01", "--seed", "1"];

/// The first `n` images of `class` in (`x`, `y`), as raw pixels.
fn of_class(x: &ndarray::Array2<f32>, y: &[usize], class: usize, n: usize) -> Vec<Image> {
    let rows: Vec<usize> = y.iter().enumerate().filter(|&(_, &l)| l == class).map(|(i, _)| i).take(n).collect();
    assert_eq!(rows.len(), n, "MNIST has too few images of class {class}");
    rows.into_iter().map(|i| raw_image(x.row(i), MNIST_NORM)).collect()
}

/// The device's predicted class name for every test image.
fn predictions(client: &mut DeviceClient<std::fs::File>, test: &[(usize, Image)]) -> Vec<String> {
    test.iter().map(|(_, img)| client.predict(img.clone()).expect("predict").1).collect()
}

/// Accuracy over the test images whose label is in `classes`.
fn accuracy(test: &[(usize, Image)], predicted: &[String], classes: &[usize]) -> f64 {
    let picked: Vec<bool> = test
        .iter()
        .zip(predicted)
        .filter(|((label, _), _)| classes.contains(label))
        .map(|((label, _), p)| *p == label.to_string())
        .collect();
    picked.iter().filter(|&&ok| ok).count() as f64 / picked.len() as f64
}

#[test]
fn field_session_over_a_pty_survives_a_power_cut() {
    let started = Instant::now();
    let ds = mnist();
    let dir = scratch("field-session");
    let (state, field, log) = (dir.join("state"), dir.join("field"), dir.join("daemon.log"));
    let pty = Pty::open();
    let test: Vec<(usize, Image)> = (0..8)
        .flat_map(|c| of_class(&ds.test_x, &ds.test_y, c, TEST_PER_CLASS).into_iter().map(move |img| (c, img)))
        .collect();

    // Connect.
    let daemon = Daemon::start(&state, &field, &pty.slave_path, DAEMON_FLAGS, &log);
    let mut client = pty.connect(Duration::from_secs(120), Duration::from_secs(300));
    match client.hello().unwrap() {
        Response::Hello { board, input, .. } => {
            assert_eq!(board, "host-sim");
            assert_eq!(input, [1, 28, 28]);
        }
        other => panic!("{other:?}"),
    }
    let s = client.status().unwrap();
    assert_eq!((s.generation, s.tasks, s.classes, s.phase), (0, 0, 4, Phase::Idle));
    let shipped = predictions(&mut client, &test[..4 * TEST_PER_CLASS]);
    let acc_shipped = accuracy(&test, &shipped, &[0, 1, 2, 3]);
    assert!(acc_shipped > 0.95, "the shipped model on digits 0-3: {acc_shipped}");

    // Task A: digits 4 and 5, streamed over the link.
    for class in [4, 5] {
        for img in of_class(&ds.train_x, &ds.train_y, class, TRAIN_PER_CLASS) {
            match client.call(Request::AddSample { class: class.to_string(), image: img }).unwrap() {
                Response::SampleAdded { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(client.status().unwrap().buffered as usize, 2 * TRAIN_PER_CLASS);
    match client.call(Request::Learn).unwrap() {
        Response::Learned { generation, samples, from_inbox, alpha, .. } => {
            assert_eq!((generation, samples as usize, from_inbox, alpha), (1, 2 * TRAIN_PER_CLASS, 0, None));
        }
        other => panic!("{other:?}"),
    }

    // Task B: digits 6 and 7, dropped into the inbox as PNG files, plus a file that is no image.
    for class in [6, 7] {
        for (i, img) in of_class(&ds.train_x, &ds.train_y, class, TRAIN_PER_CLASS).iter().enumerate() {
            drop_into_inbox(&field, &class.to_string(), &format!("img{i:04}.png"), &png(img));
        }
    }
    drop_into_inbox(&field, "7", "notes.png", b"this is a text file with a .png name");
    let s = client.status().unwrap();
    assert_eq!((s.inbox_pending as usize, s.phase), (2 * TRAIN_PER_CLASS + 1, Phase::Collecting));
    // The field's SLDA head runs without BECAME's stage 2 (firmware::method::FIELD_METHOD): no merge, no α.
    let alpha_b = match client.call(Request::Learn).unwrap() {
        Response::Learned { generation, samples, from_inbox, rejected, alpha, .. } => {
            assert_eq!(generation, 2);
            assert_eq!(
                (samples as usize, from_inbox as usize, rejected),
                (2 * TRAIN_PER_CLASS, 2 * TRAIN_PER_CLASS, 1)
            );
            alpha
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(alpha_b, None);
    assert_eq!(files_under(&field.join("processed")).len(), 2 * TRAIN_PER_CLASS);
    assert_eq!(files_under(&field.join("rejected")), vec![field.join("rejected/7/notes.png")]);
    assert!(files_under(&field.join("inbox")).is_empty());

    // Query.
    let before = client.status().unwrap();
    assert_eq!((before.generation, before.tasks, before.classes, before.buffered), (2, 2, 8, 0));
    assert_eq!((before.inbox_pending, before.rejected, before.samples_learned), (0, 1, 4 * TRAIN_PER_CLASS as u64));
    assert_eq!(before.last_alpha, alpha_b);
    let pred_before = predictions(&mut client, &test);
    let acc = |p: &[String], c: &[usize]| accuracy(&test, p, c);
    let (old, a, b, all) = (
        acc(&pred_before, &[0, 1, 2, 3]),
        acc(&pred_before, &[4, 5]),
        acc(&pred_before, &[6, 7]),
        acc(&pred_before, &[0, 1, 2, 3, 4, 5, 6, 7]),
    );
    eprintln!("before the cut: digits 0-3 {old:.3}, 4/5 {a:.3}, 6/7 {b:.3}, all eight {all:.3}, alpha {alpha_b:?}");
    // Class-incremental without replay, a frozen trunk and 120 samples per class: far above chance (1/8) on
    // every group, the new classes learned.
    assert!(a > 0.5 && b > 0.5, "new classes: 4/5 {a}, 6/7 {b}");
    assert!(all > 0.4, "all eight classes: {all}");

    // Export, and check that the exported file (run by tract + the native head) predicts exactly like the device.
    let onnx = client.export_onnx().unwrap();
    std::fs::write(dir.join("field.onnx"), &onnx).unwrap();
    let exported = OnnxModel::from_bytes(&onnx).unwrap().split(&Cut::parse("last:2").unwrap()).unwrap();
    assert_eq!(exported.trainable.head_outputs(0).unwrap(), 8);
    let x = ndarray::Array2::from_shape_fn((test.len(), 784), |(i, j)| {
        (f32::from(test[i].1.pixels[j]) / 255.0 - MNIST_NORM.0) / MNIST_NORM.1
    });
    let mut head = exported.trainable.clone();
    let logits = head.forward(&exported.features(&x.view()).unwrap().view(), 0, Mode::Eval).unwrap();
    let names = ["0", "1", "2", "3", "4", "5", "6", "7"];
    let exported_pred: Vec<String> = logits
        .rows()
        .into_iter()
        .map(|r| {
            let best = r.iter().enumerate().fold(0, |b, (i, &v)| if v > r[b] { i } else { b });
            names[best].to_string()
        })
        .collect();
    assert_eq!(exported_pred, pred_before, "the exported model predicts like the device");

    // Cut the power and restart.
    daemon.kill();
    drop(client);
    let daemon = Daemon::start(&state, &field, &pty.slave_path, DAEMON_FLAGS, &log);
    let mut client = pty.connect(Duration::from_secs(120), Duration::from_secs(300));
    let after = client.status().unwrap();
    assert_eq!(
        (after.generation, after.tasks, after.classes, after.samples_learned, after.last_alpha),
        (before.generation, before.tasks, before.classes, before.samples_learned, before.last_alpha)
    );
    let pred_after = predictions(&mut client, &test);
    assert_eq!(pred_after, pred_before, "every prediction after the restart equals the one before the cut");
    let all_after = acc(&pred_after, &[0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(all_after, all, "accuracy after the restart equals accuracy before the cut");
    assert_eq!(client.export_onnx().unwrap(), onnx, "the same model exports the same bytes");

    // A clean shutdown on SIGTERM.
    drop(client);
    let status = daemon.terminate(Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{text}");
    assert!(text.contains("shutting down cleanly"), "log:\n{text}");
    eprintln!("field session: {:.1?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
