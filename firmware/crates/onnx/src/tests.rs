//! Export → load → re-export on synthetic models (the real-data round trips live in `tests/`).

use ndarray::{Array2, ArrayView2};
use rand::Rng;

use super::export::PrefixGraph;
use super::*;
use edgelearn_core::error::Error;
use edgelearn_core::nn::{Layer, Linear, Mode, Model, zoo};

fn rng() -> rand_chacha::ChaCha8Rng {
    edgelearn_core::seeded_rng(11)
}

fn random_input(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut r = edgelearn_core::seeded_rng(seed);
    Array2::from_shape_fn((n, d), |_| r.random_range(-1.0f32..1.0))
}

fn bytes_of(model: &Model) -> Vec<u8> {
    encode(&model_to_proto(model, None).unwrap())
}

fn max_diff(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Logits of every head computed by the host-side model.
fn host_logits(model: &mut Model, x: &ArrayView2<'_, f32>) -> Vec<Array2<f32>> {
    let out = (0..model.heads.len()).map(|h| model.forward(x, h, Mode::Eval).unwrap()).collect();
    model.clear_cache();
    out
}

/// Logits of every output of a whole file, computed by tract alone.
fn tract_logits(bytes: &[u8], x: &ArrayView2<'_, f32>) -> Vec<Array2<f32>> {
    let m = OnnxModel::from_bytes(bytes).unwrap();
    m.output_names().iter().map(|o| m.prefix(o).unwrap().run(x).unwrap()).collect()
}

fn assert_close(a: &[Array2<f32>], b: &[Array2<f32>], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: number of outputs");
    for (h, (x, y)) in a.iter().zip(b).enumerate() {
        let d = max_diff(&x.view(), &y.view());
        assert!(d <= tol, "{what}: head {h} differs by {d}");
    }
}

#[test]
fn mlp_round_trips_at_every_cut() {
    let mut model = zoo::mlp(20, &[16, 8], &[3, 2], true, &mut rng()).unwrap();
    let bytes = bytes_of(&model);
    let x = random_input(7, 20, 1);
    let want = host_logits(&mut model, &x.view());
    assert_close(&tract_logits(&bytes, &x.view()), &want, 1e-5, "tract on the export");
    let file = OnnxModel::from_bytes(&bytes).unwrap();
    assert_eq!(file.input_name(), INPUT_NAME);
    assert_eq!(file.input_shape(), &[20]);
    assert_eq!(file.output_names(), vec!["logits_h0", "logits_h1"]);
    for (cut, trunk_len, frozen) in [
        (Cut::Input, 4, false),
        (Cut::LastTrainable(3), 4, false),
        (Cut::LastTrainable(2), 2, true),
        (Cut::LastTrainable(1), 0, true),
    ] {
        let mut dm = file.split(&cut).unwrap();
        assert_eq!(dm.trainable.trunk.len(), trunk_len, "{cut:?}");
        assert_eq!(dm.prefix.is_some(), frozen, "{cut:?}");
        assert_eq!(dm.trainable.heads.len(), 2);
        assert_close(&dm.forward_all(&x.view()).unwrap(), &want, 1e-5, &format!("{cut:?}"));
        // Parameter names follow the native convention, so methods and the state store see the usual layout.
        assert!(dm.trainable.params().iter().any(|p| p.name == "head.1.bias"));
    }
    assert!(matches!(file.split(&Cut::LastTrainable(4)), Err(Error::OnnxCut(_))));
    assert!(matches!(file.split(&Cut::LastTrainable(0)), Err(Error::OnnxCut(_))));
    assert!(matches!(file.split(&Cut::Tensor("nope".into())), Err(Error::OnnxCut(_))));
    assert_eq!(file.cut_tensor(&Cut::LastTrainable(1)).unwrap(), "/trunk.3/Relu_output_0");
}

#[test]
fn random_features_export_as_a_constant_gemm() {
    let mut model = zoo::mlp(20, &[16], &[3], true, &mut rng()).unwrap();
    edgelearn_learn::method::ensure_random_features(&mut model, 40).unwrap();
    let bytes = bytes_of(&model);
    let x = random_input(5, 20, 2);
    let want = host_logits(&mut model, &x.view());
    assert_close(&tract_logits(&bytes, &x.view()), &want, 1e-5, "tract on an export with random features");
    // An importer reads the projection back as a Linear of the same values.
    let file = OnnxModel::from_bytes(&bytes).unwrap();
    let mut dm = file.split(&Cut::Input).unwrap();
    assert_close(&dm.forward_all(&x.view()).unwrap(), &want, 1e-5, "re-imported");
}

#[test]
fn lenet_with_batch_statistics_round_trips_and_reexports() {
    let mut model = zoo::lenet([1, 16, 16], 12, &[3], &mut rng()).unwrap();
    let bytes = bytes_of(&model);
    let x = random_input(9, 256, 2);
    let want = host_logits(&mut model, &x.view());
    // tract runs the explicit batch-statistics normalisation exactly.
    assert_close(&tract_logits(&bytes, &x.view()), &want, 1e-5, "tract on the export");
    let file = OnnxModel::from_bytes(&bytes).unwrap();
    // conv, bn, conv, bn, linear + head = 6 layers with parameters.
    for k in 1..=6 {
        let cut = Cut::LastTrainable(k);
        let tensor = file.cut_tensor(&cut).unwrap();
        assert_eq!(trainable_layer_count(&file, &tensor).unwrap(), k);
        let mut dm = file.split(&cut).unwrap();
        assert_eq!(dm.prefix.is_none(), k == 6, "last:{k}");
        assert_close(&dm.forward_all(&x.view()).unwrap(), &want, 1e-5, &format!("last:{k}"));
        let bns = dm.trainable.trunk.iter().filter(|l| matches!(l, Layer::BatchNorm(_))).count();
        assert_eq!(bns, [0, 0, 1, 1, 2, 2][k - 1], "last:{k}");
    }
    // Change the trainable part, re-export, and check the file against the device model in tract and natively.
    let mut dm = file.split(&Cut::LastTrainable(4)).unwrap();
    let mut r = edgelearn_core::seeded_rng(3);
    for p in dm.trainable.params_mut() {
        p.value.mapv_inplace(|v| v + r.random_range(-0.05f32..0.05));
    }
    let head = dm.add_head(4, &mut r).unwrap();
    assert_eq!(head, 1);
    let ours = dm.forward_all(&x.view()).unwrap();
    let re = dm.to_onnx_bytes().unwrap();
    let refile = OnnxModel::from_bytes(&re).unwrap();
    assert_eq!(refile.output_names(), vec!["logits_h0", "logits_h1"]);
    assert_close(&tract_logits(&re, &x.view()), &ours, 1e-5, "tract on the re-export");
    let mut again = refile.split(&Cut::LastTrainable(4)).unwrap();
    assert_close(&again.forward_all(&x.view()).unwrap(), &ours, 1e-6, "device loader on the re-export");
    // The frozen prefix is carried over unchanged.
    let (p0, p1) = (dm.prefix.as_ref().unwrap(), again.prefix.as_ref().unwrap());
    assert_eq!(p0.graph.nodes, p1.graph.nodes);
    assert_eq!(p0.graph.initializers, p1.graph.initializers);
}

#[test]
fn cnn_trunk_is_a_per_sample_feature_extractor() {
    let mut model = zoo::cnn([1, 28, 28], 10, &[4], &mut rng()).unwrap();
    let bytes = bytes_of(&model);
    let x = random_input(5, 784, 4);
    let want = host_logits(&mut model, &x.view());
    let file = OnnxModel::from_bytes(&bytes).unwrap();
    let mut dm = file.split(&Cut::LastTrainable(2)).unwrap();
    assert_eq!(dm.trainable.input_shape, vec![800]);
    assert_close(&dm.forward_all(&x.view()).unwrap(), &want, 1e-5, "cnn last:2");
    // Features of one sample do not depend on the others.
    let all = dm.features(&x.view()).unwrap();
    let one = dm.features(&x.slice(ndarray::s![2..3, ..])).unwrap();
    assert!(max_diff(&all.slice(ndarray::s![2..3, ..]), &one.view()) < 1e-6);
    let batched = dm.features_batched(&x.view(), 2).unwrap();
    assert!(max_diff(&all.view(), &batched.view()) < 1e-6);
}

/// A per-sample plan's chunks run on the compute threads and give the same bits for any thread count.
#[test]
fn prefix_features_are_the_same_bits_on_any_thread_count() {
    let model = zoo::cnn([1, 28, 28], 10, &[4], &mut rng()).unwrap();
    let file = OnnxModel::from_bytes(&bytes_of(&model)).unwrap();
    let dm = file.split(&Cut::LastTrainable(2)).unwrap();
    let x = random_input(13, 784, 5);
    let before = edgelearn_core::threads::threads();
    let run = |t: usize| {
        edgelearn_core::threads::set_threads(t);
        dm.features(&x.view()).unwrap()
    };
    let one = run(1);
    for t in [2, 3] {
        assert!(run(t).iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "{t} threads");
    }
    edgelearn_core::threads::set_threads(before);
}

#[test]
fn opset_18_reduce_mean_takes_axes_as_input() {
    let mut model = zoo::mlp(6, &[5], &[2], true, &mut rng()).unwrap();
    model.trunk.insert(1, Layer::BatchNorm(edgelearn_core::nn::BatchNorm::new("bn", 5)));
    let mut model = Model::new(model.input_shape.clone(), model.trunk, model.heads).unwrap();
    let frame = PrefixGraph {
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 18 }],
        ir_version: IR_VERSION,
        input: batch_value_info("x", &[6]),
        nodes: vec![],
        initializers: vec![],
        output: "x".into(),
        output_shape: vec![6],
        input_spec: None,
    };
    let proto = model_to_proto(&model, Some(&frame)).unwrap();
    assert!(proto.graph.as_ref().unwrap().node.iter().any(|n| n.op_type == "ReduceMean" && n.input.len() == 2));
    let bytes = encode(&proto);
    let x = random_input(6, 6, 5);
    let want = host_logits(&mut model, &x.view());
    assert_close(&tract_logits(&bytes, &x.view()), &want, 1e-5, "tract, opset 18");
    let mut dm = OnnxModel::from_bytes(&bytes).unwrap().split(&Cut::Input).unwrap();
    assert_close(&dm.forward_all(&x.view()).unwrap(), &want, 1e-6, "native, opset 18");
    // The re-export keeps the file's input name and operator set.
    let re = dm.to_onnx().unwrap();
    assert_eq!(re.graph.as_ref().unwrap().input[0].name, "x");
    assert_eq!(super::export::default_opset(&re.opset_import), 18);
}

/// A hand-written graph `x → MatMul+Add → BatchNormalization (running stats) → Relu → Reshape → Gemm(transB=0)`,
/// the way other exporters write layers.
fn foreign_model(op_after_relu: Option<&str>) -> pb::ModelProto {
    let mut r = edgelearn_core::seeded_rng(9);
    let mut rand = |n: usize| (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect::<Vec<f32>>();
    let node = |op: &str, name: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>| pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![format!("{name}_out")],
        attribute: attrs,
        ..Default::default()
    };
    let var: Vec<f32> = rand(4).into_iter().map(|v| v.abs() + 0.5).collect();
    let mut nodes = vec![
        node("MatMul", "mm", &["x", "w1"], vec![]),
        node("Add", "add", &["b1", "mm_out"], vec![]),
        node("BatchNormalization", "bn", &["add_out", "g", "b", "m", "v"], vec![attr::float("epsilon", 1e-3)]),
        node("Relu", "relu", &["bn_out"], vec![]),
    ];
    let mut last = "relu_out".to_string();
    if let Some(op) = op_after_relu {
        nodes.push(node(op, "extra", &[&last], vec![]));
        last = "extra_out".into();
    }
    nodes.push(node("Reshape", "flat", &[&last, "shape"], vec![]));
    nodes.push(node("Gemm", "head", &["flat_out", "w2", "b2"], vec![attr::float("alpha", 0.5)]));
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer: vec![
                f32_tensor("w1", &[3, 4], rand(12)),
                f32_tensor("b1", &[4], rand(4)),
                f32_tensor("g", &[4], rand(4)),
                f32_tensor("b", &[4], rand(4)),
                f32_tensor("m", &[4], rand(4)),
                f32_tensor("v", &[4], var),
                i64_tensor("shape", &[2], &[0, -1]),
                f32_tensor("w2", &[4, 2], rand(8)),
                f32_tensor("b2", &[2], rand(2)),
            ],
            input: vec![batch_value_info("x", &[3])],
            output: vec![batch_value_info("head_out", &[2])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn foreign_layers_convert_to_native_ones() {
    let bytes = encode(&foreign_model(None));
    let x = random_input(4, 3, 6);
    let want = tract_logits(&bytes, &x.view());
    let file = OnnxModel::from_bytes(&bytes).unwrap();
    let mut dm = file.split(&Cut::Input).unwrap();
    // MatMul+Add → Linear with the BatchNormalization folded in; Reshape → Flatten; Gemm(alpha) → head.
    let kinds: Vec<&str> = dm.trainable.trunk.iter().map(Layer::kind).collect();
    assert_eq!(kinds, ["Linear", "Relu", "Flatten"]);
    assert_close(&dm.forward_all(&x.view()).unwrap(), &want, 1e-5, "foreign graph, native");
    let mut head_only = file.split(&Cut::LastTrainable(1)).unwrap();
    assert_close(&head_only.forward_all(&x.view()).unwrap(), &want, 1e-5, "foreign graph, head only");
    // Re-exported in this project's format, it still computes the same.
    let re = dm.to_onnx_bytes().unwrap();
    assert_close(&tract_logits(&re, &x.view()), &want, 1e-5, "foreign graph re-exported");
}

#[test]
fn unsupported_trainable_op_is_a_typed_error_naming_it() {
    let bytes = encode(&foreign_model(Some("Tanh")));
    let file = OnnxModel::from_bytes(&bytes).unwrap();
    match file.split(&Cut::Input) {
        Err(Error::OnnxUnsupported { op, node, .. }) => {
            assert_eq!(op, "Tanh");
            assert_eq!(node, "extra");
        }
        other => panic!("expected an unsupported-op error, got {other:?}"),
    }
    // Frozen, the same op is fine: tract runs it.
    let mut dm = file.split(&Cut::Tensor("extra_out".into())).unwrap();
    let x = random_input(3, 3, 7);
    assert_close(&dm.forward_all(&x.view()).unwrap(), &tract_logits(&bytes, &x.view()), 1e-5, "Tanh frozen");
    // A cut inside the frozen part that leaves a branch across it is refused.
    let err = OnnxModel::from_bytes(&encode(&foreign_model(None))).unwrap().split(&Cut::Tensor("mm_out".into()));
    assert!(matches!(err, Err(Error::OnnxUnsupported { .. } | Error::OnnxCut(_))), "{err:?}");
}

#[test]
fn corrupt_truncated_and_foreign_bytes_are_typed_errors() {
    let model = zoo::lenet([1, 16, 16], 8, &[2, 2], &mut rng()).unwrap();
    let bytes = bytes_of(&model);
    assert!(matches!(OnnxModel::from_bytes(&[]), Err(Error::OnnxInvalid(_))));
    assert!(matches!(OnnxModel::from_bytes(b"definitely not protobuf \xff\xff\xff"), Err(Error::OnnxInvalid(_))));
    // Every truncation either fails to decode or fails a check; none panics. Cutting into the graph (the first
    // 90 % of the file: the initializers) always fails.
    let load = |b: &[u8]| OnnxModel::from_bytes(b).and_then(|m| m.split(&Cut::LastTrainable(2)));
    let step = (bytes.len() / 300).max(1);
    for len in (0..bytes.len()).step_by(step).chain(0..64) {
        let r = load(&bytes[..len]);
        if len < bytes.len() * 9 / 10 {
            assert!(
                matches!(r, Err(Error::OnnxInvalid(_) | Error::OnnxUnsupported { .. } | Error::OnnxCut(_))),
                "truncated to {len} bytes: {r:?}"
            );
        }
    }
    // Flipped bytes: errors or (when the flip hits a weight) a model that still loads; never a panic.
    let mut r = edgelearn_core::seeded_rng(8);
    for _ in 0..150 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            let i = r.random_range(0..b.len());
            b[i] ^= 1 << r.random_range(0..8);
        }
        let _ = load(&b);
    }
    // A weight whose data does not match its shape.
    let mut proto = model_to_proto(&model, None).unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.initializer[0].raw_data.truncate(8);
    let err = OnnxModel::from_proto(proto).and_then(|m| m.split(&Cut::Input));
    assert!(matches!(err, Err(Error::OnnxInvalid(_))), "{err:?}");
    // Unsupported input type and operator set.
    let mut proto = model_to_proto(&model, None).unwrap();
    proto.opset_import[0].version = 3;
    assert!(matches!(OnnxModel::from_proto(proto), Err(Error::OnnxUnsupported { .. })));
    let mut proto = model_to_proto(&model, None).unwrap();
    if let Some(pb::type_proto::Value::TensorType(t)) =
        proto.graph.as_mut().unwrap().input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = pb::tensor_proto::DataType::Int64 as i32;
    }
    assert!(matches!(OnnxModel::from_proto(proto), Err(Error::OnnxUnsupported { .. })));
    // A fixed batch so large that padding a run to it could not be allocated (2^40 samples of 256 values).
    let mut proto = model_to_proto(&model, None).unwrap();
    if let Some(pb::type_proto::Value::TensorType(t)) =
        proto.graph.as_mut().unwrap().input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim[0].value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(1 << 40));
    }
    let err = OnnxModel::from_proto(proto);
    assert!(matches!(&err, Err(Error::OnnxUnsupported { reason, .. }) if reason.contains("fixed batch")), "{err:?}");
    // External weights.
    let mut proto = model_to_proto(&model, None).unwrap();
    proto.graph.as_mut().unwrap().initializer[0].data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    let err = OnnxModel::from_proto(proto).and_then(|m| m.split(&Cut::Input));
    assert!(matches!(err, Err(Error::OnnxUnsupported { .. })), "{err:?}");
    // A cycle.
    let mut proto = model_to_proto(&model, None).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let last = g.node.last().unwrap().output[0].clone();
    g.node[0].input[0] = last;
    assert!(OnnxModel::from_proto(proto).is_err());
    // Reading a missing file is an I/O error.
    assert!(matches!(OnnxModel::open(std::path::Path::new("/nonexistent/model.onnx")), Err(Error::Io { .. })));
}

#[test]
fn a_model_file_over_the_budget_is_refused_before_it_is_read() {
    // A 2 GiB sparse file: refused from its metadata, with nothing read (the old path read it whole first).
    let dir = std::env::temp_dir().join(format!("edgelearn-model-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.onnx");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(2 << 30).unwrap();
    let err = OnnxModel::open_within(&path, 256 << 20);
    assert!(
        matches!(err, Err(Error::OverBudget { budget: "model_file", needed, limit }) if needed == 2 << 30 && limit == 256 << 20),
        "{err:?}"
    );
    // Within the budget the ordinary checks run (here: not an ONNX model).
    std::fs::write(&path, b"not onnx").unwrap();
    let err = OnnxModel::open_within(&path, 256 << 20);
    assert!(err.is_err() && !matches!(err, Err(Error::OverBudget { .. })), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cut_parses() {
    assert_eq!(Cut::parse("input").unwrap(), Cut::Input);
    assert_eq!(Cut::parse("last:3").unwrap(), Cut::LastTrainable(3));
    assert_eq!(Cut::parse("/ReduceMean_output_0").unwrap(), Cut::Tensor("/ReduceMean_output_0".into()));
    assert!(Cut::parse("last:x").is_err());
    assert!(Cut::parse(" ").is_err());
}

// ---- fuzz seeds (`onnx_load` target) ----

const SEED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../fuzz/corpus/onnx_load");

/// A tiny model of this project's own layers: `input_shape → trunk → heads` (seeded weights).
fn tiny(input_shape: &[usize], trunk: Vec<Layer>, heads: &[(usize, usize)]) -> Model {
    let mut r = edgelearn_core::seeded_rng(21);
    let heads = heads.iter().enumerate().map(|(i, &(w, c))| Linear::new(&format!("head.{i}"), w, c, true, &mut r));
    Model::new(input_shape.to_vec(), trunk, heads.collect()).unwrap()
}

/// The checked-in seed corpus of the `onnx_load` fuzz target, by file name: tiny models written by the
/// exporter (`seed-valid-*`: they load and split at `last:1`), damaged ones (`seed-bad-*`: the load or that
/// split is a typed error) and a randomly mutated one. Every file is a few KB at most.
fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    use edgelearn_core::nn::{BatchNorm, Conv2d, Flatten, MaxPool2d, Relu};
    let mut r = edgelearn_core::seeded_rng(20);
    // Flatten (1×4×4) → Linear(16→8) → ReLU → head(3).
    let mlp = tiny(
        &[1, 4, 4],
        vec![
            Layer::Flatten(Flatten::default()),
            Layer::Linear(Linear::new("t", 16, 8, true, &mut r)),
            Layer::Relu(Relu::default()),
        ],
        &[(8, 3)],
    );
    // Conv(1→2, 3×3) → ReLU → MaxPool(2) → Flatten → Linear(8→4) → ReLU → head(3), on 1×6×6 images.
    let conv = tiny(
        &[1, 6, 6],
        vec![
            Layer::Conv2d(Conv2d::new("t", 1, 2, 3, 1, 0, true, &mut r).unwrap()),
            Layer::Relu(Relu::default()),
            Layer::MaxPool2d(MaxPool2d::new(2, 2).unwrap()),
            Layer::Flatten(Flatten::default()),
            Layer::Linear(Linear::new("t", 8, 4, true, &mut r)),
            Layer::Relu(Relu::default()),
        ],
        &[(4, 3)],
    );
    // Conv(1→2, 3×3, pad 1) → batch-statistics norm → ReLU → Flatten → heads(2, 3), on 1×3×3 images.
    let conv_bn = tiny(
        &[1, 3, 3],
        vec![
            Layer::Conv2d(Conv2d::new("t", 1, 2, 3, 1, 1, false, &mut r).unwrap()),
            Layer::BatchNorm(BatchNorm::new("t", 2)),
            Layer::Relu(Relu::default()),
            Layer::Flatten(Flatten::default()),
        ],
        &[(18, 2), (18, 3)],
    );
    // A multi-head MLP 6 → 5 → batch norm → ReLU → heads (2, 3, 2).
    let mut multi = zoo::mlp(6, &[5], &[2, 3, 2], true, &mut r).unwrap();
    multi.trunk.insert(1, Layer::BatchNorm(BatchNorm::new("bn", 5)));
    let multi = Model::new(multi.input_shape.clone(), multi.trunk, multi.heads).unwrap();
    // A device model after learning: frozen conv prefix (tract) + trainable part with a new head, re-exported.
    let mut dm = OnnxModel::from_bytes(&bytes_of(&conv)).unwrap().split(&Cut::LastTrainable(2)).unwrap();
    dm.add_head(2, &mut r).unwrap();
    let reexport = dm.to_onnx_bytes().unwrap();

    let conv_bytes = bytes_of(&conv);
    let with = |f: &dyn Fn(&mut pb::ModelProto)| {
        let mut p = model_to_proto(&conv, None).unwrap();
        f(&mut p);
        encode(&p)
    };
    let mut flipped = conv_bytes.clone();
    let mut fr = edgelearn_core::seeded_rng(22);
    for _ in 0..4 {
        let i = fr.random_range(0..flipped.len() / 2);
        flipped[i] ^= 1 << fr.random_range(0..8);
    }
    vec![
        ("seed-valid-mlp-4x4".into(), bytes_of(&mlp)),
        ("seed-valid-conv".into(), conv_bytes.clone()),
        ("seed-valid-conv-bn-2-heads".into(), bytes_of(&conv_bn)),
        ("seed-valid-mlp-bn-3-heads".into(), bytes_of(&multi)),
        ("seed-valid-foreign-ops".into(), encode(&foreign_model(None))),
        ("seed-valid-foreign-tanh".into(), encode(&foreign_model(Some("Tanh")))),
        ("seed-valid-reexport".into(), reexport),
        ("seed-valid-nhwc-block-rewritten".into(), encode(&super::tests_simplify::nhwc_block_with_head())),
        ("seed-bad-empty".into(), Vec::new()),
        ("seed-bad-truncated-header".into(), conv_bytes[..20].to_vec()),
        ("seed-bad-truncated-half".into(), conv_bytes[..conv_bytes.len() / 2].to_vec()),
        ("seed-mutated-bit-flips".into(), flipped),
        ("seed-bad-opset-3".into(), with(&|p| p.opset_import[0].version = 3)),
        ("seed-bad-short-weight".into(), with(&|p| p.graph.as_mut().unwrap().initializer[0].raw_data.truncate(8))),
        ("seed-bad-conv-pads-length".into(), with(&conv_pads_one_value)),
        (
            "seed-bad-cycle".into(),
            with(&|p| {
                let g = p.graph.as_mut().unwrap();
                g.node[0].input[0] = g.node.last().unwrap().output[0].clone();
            }),
        ),
    ]
}

/// Run what the `onnx_load` fuzz target runs; `Ok(true)` when the file loads and splits at `last:1`.
fn fuzz_body(bytes: &[u8]) -> edgelearn_core::error::Result<bool> {
    let model = OnnxModel::from_bytes(bytes)?;
    let mut split_ok = false;
    for cut in [Cut::LastTrainable(1), Cut::LastTrainable(2), Cut::Input] {
        if let Ok(mut dm) = model.split(&cut) {
            split_ok |= cut == Cut::LastTrainable(1);
            let x = Array2::<f32>::zeros((2, dm.input_len()));
            let _ = dm.forward_all(&x.view());
            let _ = dm.to_onnx_bytes();
        }
    }
    Ok(split_ok)
}

/// Regenerate the seeds after an exporter change:
/// `cargo test -p firmware --lib onnx::tests::write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand after an exporter change"]
fn write_fuzz_seeds() {
    edgelearn_core::test_util::write_fuzz_seeds(SEED_DIR, fuzz_seeds());
}

#[test]
fn checked_in_fuzz_seeds_are_current() {
    for (name, bytes) in fuzz_seeds() {
        assert!(bytes.len() <= 4096, "fuzz seed {name} is {} bytes", bytes.len());
        let on_disk = std::fs::read(format!("{SEED_DIR}/{name}"))
            .unwrap_or_else(|e| panic!("fuzz seed {name} missing ({e}): run write_fuzz_seeds"));
        assert!(on_disk == bytes, "fuzz seed {name} is stale: run write_fuzz_seeds");
        let result = fuzz_body(&bytes);
        if name.starts_with("seed-valid-") {
            assert!(matches!(result, Ok(true)), "{name}: {result:?}");
        } else if name.starts_with("seed-bad-") {
            assert!(matches!(result, Err(_) | Ok(false)), "{name}: {result:?}");
        }
    }
}

/// Every file of the checked-in corpus, seeds and the inputs the fuzzer once crashed on (`crash-*`), goes
/// through the fuzz target's steps with a value or a typed error.
#[test]
fn fuzz_corpus_gives_values_or_typed_errors() {
    let mut files = 0;
    for entry in std::fs::read_dir(SEED_DIR).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let _ = fuzz_body(&bytes);
        files += 1;
    }
    assert!(files >= fuzz_seeds().len());
}

/// The Conv of the `conv` seed model with `pads = [8388607]`: one value for two spatial axes.
fn conv_pads_one_value(p: &mut pb::ModelProto) {
    let g = p.graph.as_mut().expect("exported model has a graph");
    let conv = g.node.iter_mut().find(|n| n.op_type == "Conv").expect("conv model has a Conv");
    conv.attribute.retain(|a| a.name != "pads");
    conv.attribute.push(super::attr::ints("pads", &[8_388_607]));
}

/// Found by the fuzzer (its input is rebuilt by `conv_pads_one_value` and kept in the corpus as
/// `seed-bad-conv-pads-length`): a conv model whose frozen Conv has `pads = [8388607]` (one value for two spatial
/// axes). tract 0.23.9 indexed `pads` out of bounds while inferring the Conv's output shape (tract-core
/// `ops/cnn/padding.rs:116`); the loader now refuses the node before tract sees it.
#[test]
fn fuzz_crash_conv_pads_length_is_a_typed_error() {
    let bytes = fuzz_seeds()
        .into_iter()
        .find_map(|(name, bytes)| (name == "seed-bad-conv-pads-length").then_some(bytes))
        .expect("seed-bad-conv-pads-length is one of the fuzz seeds");
    let model = OnnxModel::from_bytes(&bytes).unwrap();
    for cut in [Cut::LastTrainable(1), Cut::LastTrainable(2), Cut::Tensor("/trunk.0/Conv_output_0".into())] {
        match model.split(&cut) {
            Err(Error::OnnxInvalid(m)) => assert!(m.contains("pads has 1 values"), "{cut:?}: {m}"),
            other => panic!("{cut:?}: expected OnnxInvalid, got {other:?}"),
        }
    }
    // Trainable, the same Conv is refused by the native converter.
    assert!(model.split(&Cut::Input).is_err());
}

/// A panic inside tract becomes `Error::Tract` (the guard behind every tract call), not an unwinding panic.
#[test]
fn tract_panics_become_typed_errors() {
    let r: edgelearn_core::error::Result<()> = super::import::guarded("testing", || panic!("index out of bounds"));
    assert!(matches!(&r, Err(Error::Tract(m)) if m.contains("tract panicked: index out of bounds")), "{r:?}");
}

/// Found by the `onnx_load` fuzz target (session 32, `fuzz/corpus/onnx_load/crash-transpose-repeated-axis`): a
/// 1.7 KB model whose frozen `Transpose` has `perm = [0, 3, 1, 3]`. tract's `perm_to_cycles` looped, growing a
/// vector until the fuzzer's 128 MiB allocation limit; the loader now refuses the node before tract sees it.
#[test]
fn fuzz_crash_transpose_repeated_axis_is_a_typed_error() {
    let bytes = std::fs::read(format!("{SEED_DIR}/crash-transpose-repeated-axis")).unwrap();
    let model = OnnxModel::from_bytes(&bytes).unwrap();
    let mut refused = 0;
    for cut in [Cut::LastTrainable(1), Cut::LastTrainable(2), Cut::LastTrainable(3)] {
        match model.split(&cut) {
            Err(Error::OnnxInvalid(m)) if m.contains("not a permutation") => refused += 1,
            Err(_) | Ok(_) => {}
        }
    }
    assert!(refused > 0, "no cut refused the repeated axis");
}

/// The second engine: built without the `onnxruntime` feature, asking for it is a typed error; with it (the
/// library from ORT_DYLIB_PATH, which scripts/test.sh points at the onnxruntime wheel's), onnxruntime runs the same
/// prefix as tract to 1e-5 and gives the same bits for any thread count (each sample in one single-threaded
/// session).
#[test]
fn the_onnxruntime_engine_matches_tract_or_is_a_typed_error() {
    let model = zoo::cnn([1, 28, 28], 10, &[4], &mut rng()).unwrap();
    let bytes = bytes_of(&model);
    let x = random_input(13, 784, 6);
    let tract = OnnxModel::from_bytes(&bytes).unwrap().split(&Cut::LastTrainable(2)).unwrap();
    let ort = OnnxModel::from_bytes(&bytes).unwrap().with_engine(Engine::OnnxRuntime).split(&Cut::LastTrainable(2));
    if !cfg!(feature = "onnxruntime") {
        assert!(matches!(ort, Err(Error::Config(ref m)) if m.contains("onnxruntime")), "{ort:?}");
        return;
    }
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH must name onnxruntime's library (scripts/test.sh sets it to .venv-onnx's)"
    );
    let ort = ort.unwrap();
    assert_eq!(ort.prefix.as_ref().map(FrozenPrefix::engine), Some(Engine::OnnxRuntime));
    assert_eq!(tract.prefix.as_ref().map(FrozenPrefix::engine), Some(Engine::Tract));
    let want = tract.features(&x.view()).unwrap();
    let before = edgelearn_core::threads::threads();
    let run = |t: usize| {
        edgelearn_core::threads::set_threads(t);
        ort.features(&x.view()).unwrap()
    };
    let one = run(1);
    assert!(
        max_diff(&one.view(), &want.view()) <= 1e-5,
        "onnxruntime vs tract: {}",
        max_diff(&one.view(), &want.view())
    );
    for t in [2, 3] {
        assert!(run(t).iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "{t} threads");
    }
    edgelearn_core::threads::set_threads(before);
}
