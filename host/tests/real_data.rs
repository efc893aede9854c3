//! The real data sets load, look like MNIST / Fashion-MNIST, and the benchmark streams build from them.
//!
//! These tests need the files installed by `scripts/fetch-data.sh`; without them they FAIL (never skip), with a
//! message saying so.

use host::data::stream::{default_pairs, permuted, split};
use host::data::{Dataset, data_dir, describe, load_fashion_mnist, load_mnist};

fn must_load(set: &str, load: fn(&std::path::Path) -> host::Result<Dataset>) -> Dataset {
    let dir = data_dir().join(set);
    match load(&dir) {
        Ok(ds) => ds,
        Err(e) => panic!(
            "cannot load {set} from {}: {e}\n\
             The real data sets are not installed: run `scripts/fetch-data.sh` (or set EDGELEARN_DATA to the folder \
             it filled).",
            dir.display()
        ),
    }
}

fn check_shape(ds: &Dataset) {
    assert_eq!(ds.train_y.len(), 60_000, "{}", describe(ds));
    assert_eq!(ds.test_y.len(), 10_000);
    assert_eq!(ds.train_x.dim(), (60_000, 784));
    assert_eq!(ds.test_x.dim(), (10_000, 784));
    assert_eq!((ds.channels, ds.rows, ds.cols), (1, 28, 28));
    assert_eq!(ds.num_classes, 10);
    let counts = ds.train_class_counts();
    assert_eq!(counts.iter().sum::<usize>(), 60_000);
    assert!(counts.iter().all(|&c| (5_000..=7_000).contains(&c)), "{counts:?}");
    assert!(ds.test_class_counts().iter().all(|&c| c > 0));
    // Normalised with the data set's own statistics: mean ≈ 0 and std ≈ 1 on the training images.
    let n = ds.train_x.len() as f64;
    let mean = ds.train_x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = ds.train_x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 1e-3, "{}: train mean {mean}", ds.name);
    assert!((var.sqrt() - 1.0).abs() < 0.01, "{}: train std {}", ds.name, var.sqrt());
}

#[test]
fn mnist_loads_and_streams_build() {
    let ds = must_load("mnist", load_mnist);
    check_shape(&ds);
    assert_eq!(ds.train_y[..5], [5, 0, 4, 1, 9], "first MNIST training labels");

    let s = split(&ds, "split-mnist", &default_pairs(10), true, 0, 0.05).unwrap();
    assert_eq!(s.tasks.len(), 5);
    assert_eq!(s.head_sizes, vec![2; 5]);
    for t in &s.tasks {
        let total = t.train.len() + t.val.len();
        assert!((11_000..=13_500).contains(&total), "task {}: {total} training samples", t.id);
        let want_val = (0.05 * total as f64).round() as usize;
        assert_eq!(t.val.len(), want_val);
        assert!((1_800..=2_200).contains(&t.test.len()), "task {}: {} test samples", t.id, t.test.len());
        assert!(t.train.y.iter().chain(&t.val.y).chain(&t.test.y).all(|&y| y < 2));
    }
    assert_eq!(s.tasks.iter().map(|t| t.train.len() + t.val.len()).sum::<usize>(), 60_000);
    assert_eq!(s.tasks.iter().map(|t| t.test.len()).sum::<usize>(), 10_000);

    let ci = split(&ds, "split-mnist-ci", &default_pairs(10), false, 0, 0.05).unwrap();
    assert_eq!(ci.head_sizes, vec![10]);
    assert!(ci.tasks[4].train.y.iter().all(|&y| y == 8 || y == 9));

    let p = permuted(&ds, 10, 0, 0.1).unwrap();
    assert_eq!(p.tasks.len(), 10);
    assert_eq!(p.head_sizes, vec![10]);
    for t in &p.tasks {
        assert_eq!(t.train.len(), 54_000);
        assert_eq!(t.val.len(), 6_000);
        assert_eq!(t.test.len(), 10_000);
        assert_eq!(t.train.features(), 784);
    }
    assert_ne!(p.tasks[0].test.x.row(0), p.tasks[1].test.x.row(0));
}

#[test]
fn fashion_mnist_loads_and_splits() {
    let ds = must_load("fashion-mnist", load_fashion_mnist);
    check_shape(&ds);
    // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    assert_eq!(ds.train_class_counts(), vec![6_000; 10]);
    assert_eq!(ds.test_class_counts(), vec![1_000; 10]);
    let s = split(&ds, "split-fmnist", &default_pairs(10), true, 0, 0.05).unwrap();
    assert_eq!(s.tasks.len(), 5);
    for t in &s.tasks {
        assert_eq!(t.val.len(), 600);
        assert_eq!(t.train.len(), 11_400);
        assert_eq!(t.test.len(), 2_000);
    }
}

/// The pre-trained streams (issue 20): `mnist-pt` starts every layer from the shipped base's weights with fresh
/// 2-way heads for 4/5, 6/7, 8/9; `fmnist-pt-ci` with a frozen prefix passes Fashion-MNIST through the base's
/// convolutions once and trains the rest from the base's weights with one growing head.
#[test]
fn pretrained_streams_start_from_the_base_model() {
    use firmware::onnx::{Cut, OnnxModel};
    use host::runs::presets::{ModelSpec, Preset, shipped_base};
    let dir = data_dir();
    let p = Preset::named("mnist-pt", None).unwrap();
    let s = p.load(&dir, 0).expect("MNIST (run scripts/fetch-data.sh)");
    assert_eq!(s.tasks.iter().map(|t| t.classes.clone()).collect::<Vec<_>>(), [vec![4, 5], vec![6, 7], vec![8, 9]]);
    assert_eq!((s.features(), s.head_sizes.clone()), (784, vec![2, 2, 2]));
    let model = p.build_model(&s, 0).unwrap();
    let base = OnnxModel::open(&shipped_base()).unwrap().split(&Cut::Input).unwrap().trainable;
    assert_eq!(model.trunk.len(), base.trunk.len());
    let (mine, theirs) = (model.flat_params(), base.flat_params());
    let trunk_len: usize = base.params().iter().filter(|p| p.name.starts_with("trunk.")).map(|p| p.len()).sum();
    assert!(trunk_len > 100_000, "the CNN's trunk: {trunk_len} parameters");
    assert_eq!(mine[..trunk_len], theirs[..trunk_len], "the trunk starts at the pre-trained weights");
    assert_eq!(model.heads.iter().map(|h| h.out_features()).collect::<Vec<_>>(), [2, 2, 2]);

    let mut p = Preset::named("fmnist-pt-ci", None).unwrap();
    let ModelSpec::Pretrained { cut, .. } = &mut p.model else { panic!("fmnist-pt-ci is a pre-trained stream") };
    *cut = "last:2".into();
    let s = p.load(&dir, 0).expect("Fashion-MNIST (run scripts/fetch-data.sh)");
    assert_eq!((s.features(), s.tasks.len(), s.multi_head), (800, 5, false));
    let model = p.build_model(&s, 0).unwrap();
    assert_eq!(model.input_len(), 800);
    assert_eq!(model.heads[0].out_features(), 2, "the growing head starts with the first task's classes");
}

/// `host compare --eval val`: every task is scored on its validation split (carved from the training images),
/// never on the test set, and the stream's name says so.
#[test]
fn eval_on_val_scores_the_validation_splits() {
    use host::runs::presets::Preset;
    let mut p = Preset::named("split-mnist", None).unwrap();
    let test = p.load(&data_dir(), 0).expect("MNIST (run scripts/fetch-data.sh)");
    p.eval_on_val = true;
    let val = p.load(&data_dir(), 0).unwrap();
    assert_eq!(val.name, format!("{}@val", test.name));
    for (t, v) in test.tasks.iter().zip(&val.tasks) {
        assert!(!v.val.is_empty());
        assert_eq!(v.test.y, v.val.y, "task {} scores its validation split", v.id);
        assert_eq!(v.test.x, v.val.x);
        assert_ne!(v.test.len(), t.test.len(), "not the test set");
        assert_eq!(v.train.y, t.train.y, "training data unchanged");
    }
}
