//! The whole ONNX product path on real MNIST: host training → export → device load (frozen prefix in tract,
//! trainable suffix native) → identical outputs → learn new tasks with GPM+BECAME → re-export → the re-exported
//! file, run whole by tract, agrees with the device model.
//!
//! The files and reference outputs land in `out/onnx-roundtrip/`, where CI's `scripts/check-onnx.py` checks them
//! with the `onnx` checker and onnxruntime.

use std::path::PathBuf;

use firmware::gpm::GpmConfig;
use firmware::method::Became;
use firmware::nn::{Layer, Mode};
use firmware::onnx::{Cut, OnnxModel, encode, model_to_proto};
use firmware::train::{NoHook, Silent, TrainConfig, evaluate};
use host::data::backbone::feature_stream;
use host::data::stream;
use host::models::onnx::{Reference, ReferenceOutput, check_in_tract, max_rel_diff};
use host::runs::presets::ModelSpec;
use host::runs::simulate;
use ndarray::{Array2, Axis, s};

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../out/onnx-roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mnist() -> host::data::Dataset {
    let dir = host::data::data_dir().join("mnist");
    host::data::load_mnist(&dir)
        .unwrap_or_else(|e| panic!("real MNIST is needed for this test ({e}); run `bash scripts/fetch-data.sh`"))
}

fn reference(
    model: &str,
    source: &str,
    input_name: String,
    x: &Array2<f32>,
    per_sample: &[usize],
    outs: &[(String, Array2<f32>)],
) -> Reference {
    let mut input_shape = vec![x.nrows()];
    input_shape.extend_from_slice(per_sample);
    Reference {
        model: model.into(),
        source: source.into(),
        input_name,
        input_shape,
        input: x.iter().copied().collect(),
        outputs: outs
            .iter()
            .map(|(n, y)| ReferenceOutput {
                name: n.clone(),
                shape: y.shape().to_vec(),
                data: y.iter().copied().collect(),
            })
            .collect(),
    }
}

#[test]
fn host_model_exports_loads_learns_and_reexports() {
    let ds = mnist();
    let dir = out_dir();

    // 1. Host: a LeNet with batch-statistics normalisation, one epoch on 3000 images of digits 0-4.
    let base = stream::split(&ds, "digits-0-4", &[vec![0, 1, 2, 3, 4]], false, 0, 0.05).unwrap();
    let task = &base.tasks[0];
    let train = task.train.select(&(0..3000).collect::<Vec<_>>());
    let mut model = ModelSpec::Lenet.build_for([1, 28, 28], &[5], 0).unwrap();
    let cfg = TrainConfig { epochs: 1, lr: 0.05, batch_size: 64, ..TrainConfig::default() };
    let data = firmware::data::TaskData { task_id: 0, head: 0, train: &train, val: &task.val };
    firmware::train::train(&mut model, &data, &cfg, &mut NoHook, &mut firmware::seeded_rng(0), &mut Silent, "host")
        .unwrap();
    let (_, acc) = evaluate(&mut model, &task.test, 0, 256).unwrap();
    assert!(acc > 0.9, "host model accuracy {acc}");

    // 2. Export.
    let exported = dir.join("exported.onnx");
    std::fs::write(&exported, encode(&model_to_proto(&model, None).unwrap())).unwrap();
    let x = task.test.x.slice(s![..128, ..]).to_owned();
    let host_out = model.forward(&x.view(), 0, Mode::Eval).unwrap();
    model.clear_cache();
    let r = reference(
        "exported.onnx",
        "host model",
        "input".into(),
        &x,
        &[1, 28, 28],
        &[("logits".into(), host_out.clone())],
    );
    host::reports::write_json(&dir.join("exported-ref.json"), &r).unwrap();

    // 3. Device: conv1+bn1+relu+pool frozen in tract, the rest (conv2, bn2, …, head) native.
    let file = OnnxModel::open(&exported).unwrap();
    let mut dm = file.split(&Cut::LastTrainable(4)).unwrap();
    let prefix = dm.prefix.as_ref().expect("a frozen prefix");
    assert_eq!(prefix.feature_shape(), &[20, 12, 12]);
    let kinds: Vec<&str> = dm.trainable.trunk.iter().map(Layer::kind).collect();
    assert_eq!(kinds, ["Conv2d", "BatchNorm", "Relu", "MaxPool2d", "Flatten", "Linear", "Relu"]);
    let device_out = dm.forward(&x.view(), 0).unwrap();
    let d = max_rel_diff(&device_out.view(), &host_out.view());
    assert!(d <= 1e-5, "device model differs from the host model by {d}");

    // 4. Learn two new tasks (digits 5/6 and 7/8, a new head each) with GPM+BECAME on cached features.
    let new = stream::split(&ds, "digits-new", &[vec![5, 6], vec![7, 8]], true, 0, 0.05).unwrap();
    let mut small = new.clone();
    for t in &mut small.tasks {
        t.train = t.train.select(&(0..600).collect::<Vec<_>>());
        t.test = t.test.select(&(0..400).collect::<Vec<_>>());
    }
    let offset = dm.trainable.heads.len();
    let mut rng = firmware::seeded_rng(1);
    for &c in &small.head_sizes {
        dm.add_head(c, &mut rng).unwrap();
    }
    let fstream = feature_stream(&dm, &small, offset).unwrap();
    let gpm = GpmConfig { thresholds: vec![0.97], threshold_increment: 0.003, samples: 125, project_heads: false };
    let learn = TrainConfig { epochs: 1, batch_size: 64, ..TrainConfig::default() };
    let mut method = Became::new(learn, gpm);
    let (result, learned) = simulate::run(&fstream, dm.trainable.clone(), &mut method, 0, &mut Silent).unwrap();
    dm.trainable = learned;
    for (i, row) in result.matrix.rows.iter().enumerate() {
        assert!(row[i] > 0.85, "new task {i} accuracy {}", row[i]);
    }
    let alpha = result.reports[1].alpha.expect("BECAME reports α for the second task");
    assert!((0.0..=1.0).contains(&alpha), "α = {alpha}");

    // 5. Re-export: the frozen prefix is copied, the learned layers written; tract runs the file whole.
    let reexported = dir.join("reexported.onnx");
    dm.write_onnx(&reexported).unwrap();
    let rows: Vec<_> = small.tasks.iter().map(|t| t.test.x.slice(s![..32, ..])).collect();
    let xr = ndarray::concatenate(Axis(0), &rows).unwrap();
    let ours = dm.forward_all(&xr.view()).unwrap();
    let worst = check_in_tract(&reexported, &xr.view(), &ours).unwrap();
    assert!(worst <= 1e-4, "tract vs device model on the re-export: {worst}");
    let refile = OnnxModel::open(&reexported).unwrap();
    assert_eq!(refile.output_names(), ["logits_h0", "logits_h1", "logits_h2"]);
    assert_eq!(refile.split(&Cut::LastTrainable(4)).unwrap().prefix.unwrap().graph.nodes, prefix_nodes(&file));
    let outs: Vec<(String, Array2<f32>)> = refile.output_names().into_iter().zip(ours).collect();
    let r = reference("reexported.onnx", "device model", refile.input_name(), &xr, &[1, 28, 28], &outs);
    host::reports::write_json(&dir.join("reexported-ref.json"), &r).unwrap();
}

fn prefix_nodes(file: &OnnxModel) -> Vec<firmware::onnx::pb::NodeProto> {
    file.split(&Cut::LastTrainable(4)).unwrap().prefix.unwrap().graph.nodes
}
