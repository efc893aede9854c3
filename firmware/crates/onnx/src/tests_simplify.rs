//! The loader's graph rewrites (simplify.rs) on hand-made graphs: each rewritten graph computes what the original
//! does (both run by tract), and each rewrite fires exactly where its precondition holds.

use ndarray::ArrayD;
use rand::Rng;
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor, tvec};

use super::simplify::for_tract;
use super::*;

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{output}_node"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn cast_f32(x: &str, out: &str) -> pb::NodeProto {
    node("Cast", &[x], out, vec![attr::int("to", DataType::Float as i64)])
}

fn transpose(x: &str, out: &str, perm: &[i64]) -> pb::NodeProto {
    node("Transpose", &[x], out, vec![attr::ints("perm", perm)])
}

fn conv(x: &str, w: &str, out: &str) -> pb::NodeProto {
    node("Conv", &[x, w], out, vec![attr::ints("kernel_shape", &[3, 3]), attr::ints("pads", &[1, 1, 1, 1])])
}

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = edgelearn_core::seeded_rng(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn model(nodes: Vec<pb::NodeProto>, inits: Vec<pb::TensorProto>, input: &[usize], output: &str) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![batch_value_info("x", input)],
            output: vec![pb::ValueInfoProto { name: output.into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Run `proto` in tract on a batch of 3 random inputs.
fn run(proto: &pb::ModelProto, input: &[usize]) -> ArrayD<f32> {
    let mut shape = vec![3];
    shape.extend_from_slice(input);
    let x = values(shape.iter().product(), 4, -1.0, 1.0);
    let plan = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap();
    let out = plan.run(tvec!(Tensor::from_shape(&shape, &x).unwrap().into_tvalue())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().to_owned()
}

fn max_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn ops(proto: &pb::ModelProto, op: &str) -> usize {
    proto.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == op).count()
}

/// A TensorFlow-style residual block in NHWC, 5×5×2 input: every Conv between Transposes, its bias and batch norm
/// as separate channel-wise ops on the NHWC side, float-to-float Casts, a residual Add whose other operand is
/// NHWC, a global ReduceMean over H and W.
fn nhwc_block() -> pb::ModelProto {
    let nodes = vec![
        cast_f32("x", "x_f"),
        transpose("x_f", "x_nchw", &[0, 3, 1, 2]),
        conv("x_nchw", "w1", "c1"),
        transpose("c1", "c1_nhwc", &[0, 2, 3, 1]),
        cast_f32("c1_nhwc", "c1_f"),
        node("Add", &["c1_f", "b1"], "c1_b", vec![]),
        node("Sub", &["c1_b", "mean"], "bn_sub", vec![]),
        node("Mul", &["bn_sub", "scale"], "bn_mul", vec![]),
        node("Add", &["beta", "bn_mul"], "bn_add", vec![]),
        node("Div", &["bn_add", "two"], "bn_div", vec![]),
        node("Relu", &["bn_div"], "r1", vec![]),
        transpose("r1", "r1_nchw", &[0, 3, 1, 2]),
        conv("r1_nchw", "w2", "c2"),
        transpose("c2", "c2_nhwc", &[0, 2, 3, 1]),
        node("Add", &["c2_nhwc", "r1"], "res", vec![]),
        node("Relu", &["res"], "r2", vec![]),
        node("ReduceMean", &["r2"], "features", vec![attr::ints("axes", &[1, 2]), attr::int("keepdims", 0)]),
    ];
    let inits = vec![
        f32_tensor("w1", &[3, 2, 3, 3], values(54, 1, -1.0, 1.0)),
        f32_tensor("b1", &[3], values(3, 2, -1.0, 1.0)),
        f32_tensor("mean", &[1, 1, 1, 3], values(3, 3, -1.0, 1.0)),
        f32_tensor("scale", &[1, 1, 1, 3], values(3, 5, 0.5, 2.0)),
        f32_tensor("beta", &[3], values(3, 6, -1.0, 1.0)),
        f32_tensor("two", &[], [2.0]),
        f32_tensor("w2", &[3, 3, 3, 3], values(81, 7, -1.0, 1.0)),
    ];
    model(nodes, inits, &[5, 5, 2], "features")
}

/// [`nhwc_block`] with a `Gemm` head (3 → 2) behind the features: a file the loader splits at `last:1`, its
/// prefix going through every rewrite (a fuzz seed).
pub(super) fn nhwc_block_with_head() -> pb::ModelProto {
    let mut m = nhwc_block();
    let g = m.graph.as_mut().unwrap();
    g.node.push(node("Gemm", &["features", "wh", "bh"], "logits", vec![attr::int("transB", 1)]));
    g.initializer.push(f32_tensor("wh", &[2, 3], values(6, 8, -1.0, 1.0)));
    g.initializer.push(f32_tensor("bh", &[2], values(2, 10, -1.0, 1.0)));
    g.output = vec![batch_value_info("logits", &[2])];
    m
}

#[test]
fn nhwc_block_loses_its_transposes_casts_and_channel_ops_and_computes_the_same() {
    let original = nhwc_block();
    let (rewritten, stats) = for_tract(&original);
    assert_eq!(stats.casts_dropped, 2, "{stats:?}");
    // Only the transpose of the NHWC graph input is left.
    assert_eq!((stats.transposes_before, stats.transposes_after), (4, 1), "{stats:?}");
    let g = rewritten.graph.as_ref().unwrap();
    assert!(g.node.iter().any(|n| n.op_type == "Transpose" && n.input[0] == "x"));
    // Add(bias), Sub, Mul, Add (constant first), Div by a scalar: all into the first Conv's weights and bias.
    assert_eq!(stats.folded_into_conv, 5, "{stats:?}");
    assert_eq!(ops(&rewritten, "Cast") + ops(&rewritten, "Sub") + ops(&rewritten, "Mul") + ops(&rewritten, "Div"), 0);
    assert_eq!(ops(&rewritten, "Conv"), 2);
    assert_eq!(stats.nodes_after, rewritten.graph.as_ref().unwrap().node.len());
    // The graph output keeps its name; the original proto is untouched.
    assert_eq!(rewritten.graph.as_ref().unwrap().output[0].name, "features");
    assert_eq!(ops(&original, "Transpose"), 4);
    let (want, got) = (run(&original, &[5, 5, 2]), run(&rewritten, &[5, 5, 2]));
    assert_eq!(want.shape(), &[3, 3]);
    let d = max_diff(&want, &got);
    assert!(d <= 1e-5, "rewritten block differs by {d}");
}

#[test]
fn frozen_prefix_runs_the_rewritten_graph_and_keeps_the_original_for_export() {
    let file = OnnxModel::from_proto(nhwc_block()).unwrap();
    let prefix = file.prefix("features").unwrap();
    assert_eq!(prefix.rewrites().transposes_after, 1);
    assert_eq!(prefix.graph.nodes.len(), nhwc_block().graph.unwrap().node.len(), "re-export keeps every node");
    let x = ndarray::Array2::from_shape_vec((3, 50), values(150, 4, -1.0, 1.0)).unwrap();
    let got = prefix.run(&x.view()).unwrap();
    let want = run(&nhwc_block(), &[5, 5, 2]);
    let d = max_diff(&got.into_dyn(), &want);
    assert!(d <= 1e-5, "prefix differs from the original graph by {d}");
}

/// `x (NCHW 2×5×5) → Conv → op(const) → Relu`, with the op's operands in the given order.
fn conv_then(op: &str, conv_first: bool, c_dims: &[usize], extra_reader: bool) -> pb::ModelProto {
    let ins: [&str; 2] = if conv_first { ["c", "k"] } else { ["k", "c"] };
    let mut nodes = vec![conv("x", "w", "c"), node(op, &ins, "y", vec![]), node("Relu", &["y"], "out", vec![])];
    if extra_reader {
        nodes.push(node("Add", &["c", "out"], "out2", vec![]));
    }
    let n: usize = c_dims.iter().product();
    let inits =
        vec![f32_tensor("w", &[3, 2, 3, 3], values(54, 1, -1.0, 1.0)), f32_tensor("k", c_dims, values(n, 9, 0.5, 2.0))];
    model(nodes, inits, &[2, 5, 5], if extra_reader { "out2" } else { "out" })
}

#[test]
fn channel_ops_fold_only_where_exact() {
    // (op, conv operand first, constant shape, conv output read elsewhere too, folds)
    let cases: [(&str, bool, &[usize], bool, usize); 8] = [
        ("Mul", true, &[3, 1, 1], false, 1),
        ("Mul", false, &[1, 3, 1, 1], false, 1),
        ("Sub", true, &[3, 1, 1], false, 1),
        ("Div", true, &[1], false, 1),
        // k − Conv(x) would need the weights negated: left alone.
        ("Sub", false, &[3, 1, 1], false, 0),
        // One value per column (axis 3), not per channel.
        ("Add", true, &[5], false, 0),
        // A second reader still needs the unscaled output.
        ("Mul", true, &[3, 1, 1], true, 0),
        // Broadcasting that grows the output (a constant of higher rank).
        ("Add", true, &[2, 1, 3, 1, 1], false, 0),
    ];
    for (op, first, dims, extra, folds) in cases {
        let original = conv_then(op, first, dims, extra);
        let (rewritten, stats) = for_tract(&original);
        let what = format!("{op} conv_first={first} {dims:?} extra_reader={extra}");
        assert_eq!(stats.folded_into_conv, folds, "{what}: {stats:?}");
        if dims.len() <= 4 {
            let d = max_diff(&run(&original, &[2, 5, 5]), &run(&rewritten, &[2, 5, 5]));
            assert!(d <= 1e-5, "{what}: differs by {d}");
        }
    }
}

#[test]
fn casts_of_non_float_tensors_and_output_transposes_stay() {
    // Cast(to = FLOAT) of an integer input is a real conversion.
    let mut int_input = model(vec![cast_f32("x", "xf"), node("Relu", &["xf"], "out", vec![])], vec![], &[4], "out");
    if let Some(pb::type_proto::Value::TensorType(t)) =
        int_input.graph.as_mut().unwrap().input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = DataType::Int64 as i32;
    }
    let (rewritten, stats) = for_tract(&int_input);
    assert_eq!((stats.casts_dropped, ops(&rewritten, "Cast")), (0, 1));
    // A transpose pair whose second half is the graph output (the cut tensor) keeps that tensor defined.
    let pair = model(
        vec![transpose("x", "t", &[0, 2, 1]), node("Relu", &["t"], "r", vec![]), transpose("r", "out", &[0, 2, 1])],
        vec![],
        &[2, 3],
        "out",
    );
    let (rewritten, stats) = for_tract(&pair);
    let g = rewritten.graph.as_ref().unwrap();
    assert!(g.node.iter().any(|n| n.output.iter().any(|o| o == "out")), "the output is still computed");
    assert!(stats.transposes_after <= 2, "{stats:?}");
    let d = max_diff(&run(&pair, &[2, 3]), &run(&rewritten, &[2, 3]));
    assert!(d == 0.0, "differs by {d}");
    // A cycle or a tensor defined twice: returned as it was, for tract to report.
    let mut twice = pair.clone();
    twice.graph.as_mut().unwrap().node[1].output[0] = "t".into();
    assert_eq!(for_tract(&twice).0, twice);
}
