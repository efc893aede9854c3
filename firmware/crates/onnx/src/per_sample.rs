//! Whether a frozen prefix computes each sample from that sample alone, so that tract may run it one sample per
//! call ([`crate::PlanKind::OptimizedPerSample`], its fastest plan) without changing a single output.
//!
//! A prefix mixes the samples of a batch when a node reduces, normalises, reorders, slices or joins along the
//! batch axis: the BatchNorm with batch statistics that `host` exports (ReduceMean over axes `[0, 2, 3]`), a
//! `BatchNormalization` in training mode, a Transpose that moves axis 0, a Flatten at axis 0, a Reshape whose
//! first target dimension is neither kept (`0`) nor inferred (`-1`), a Softmax, Concat, Split, Slice or Gather on
//! axis 0. Anything this check cannot read (axes from a computed tensor, a negative axis whose rank it does not
//! know) counts as mixing. Every other operator of ONNX's default domain acts on each sample alone.

use super::graph::{GraphIndex, attrs};
use super::read_i64;

/// `true` when no node of `nodes` (indices into `idx`'s graph) mixes the samples of a batch (see the module).
pub(crate) fn batch_independent(idx: &GraphIndex<'_>, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| node_batch_independent(idx, i))
}

/// The constant integer values of input `k` of node `i`, when it is an initializer.
fn const_ints(idx: &GraphIndex<'_>, i: usize, k: usize) -> Option<Vec<i64>> {
    let name = idx.node(i).input.get(k).filter(|s| !s.is_empty())?;
    read_i64(idx.initializer(name)?).ok().map(|(_, v)| v)
}

fn node_batch_independent(idx: &GraphIndex<'_>, i: usize) -> bool {
    let n = idx.node(i);
    let axis = |default: i64| attrs::int(n, "axis", default);
    match n.op_type.as_str() {
        op if op.starts_with("Reduce") => {
            // Opset 18 moved `axes` from an attribute to the second input; no axes reduces every axis.
            let axes = attrs::ints(n, "axes").or_else(|| const_ints(idx, i, 1));
            axes.is_some_and(|a| !a.is_empty() && a.iter().all(|&x| x > 0))
        }
        "BatchNormalization" => attrs::int(n, "training_mode", 0) == 0,
        "Transpose" => attrs::ints(n, "perm").is_some_and(|p| p.first() == Some(&0)),
        "Flatten" => axis(1) > 0,
        "Reshape" => const_ints(idx, i, 1).is_some_and(|s| matches!(s.first(), Some(0 | -1))),
        "Softmax" | "LogSoftmax" | "Hardmax" => axis(-1) > 0,
        "Concat" | "Split" | "Gather" | "GatherElements" | "CumSum" => axis(0) > 0,
        "Slice" => const_ints(idx, i, 3).is_some_and(|a| a.iter().all(|&x| x > 0)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{attr, pb};

    fn node(op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![format!("{op}_out")],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![v.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// Whether the one-node graph `n` (with initializers `inits`) keeps the samples apart.
    fn apart(n: pb::NodeProto, inits: Vec<pb::TensorProto>) -> bool {
        let g = pb::GraphProto {
            node: vec![n],
            initializer: inits,
            input: vec![pb::ValueInfoProto { name: "x".into(), ..Default::default() }],
            ..Default::default()
        };
        let idx = GraphIndex::new(&g).unwrap();
        batch_independent(&idx, &[0])
    }

    #[test]
    fn per_sample_operators_pass() {
        assert!(apart(node("Conv", &["x", "w"], vec![]), vec![ints("w", &[1])]));
        assert!(apart(node("Relu", &["x"], vec![]), vec![]));
        assert!(apart(node("ReduceMean", &["x"], vec![attr::ints("axes", &[2, 3])]), vec![]));
        assert!(apart(node("ReduceMean", &["x", "a"], vec![]), vec![ints("a", &[2, 3])]), "opset 18 axes input");
        assert!(apart(node("Flatten", &["x"], vec![]), vec![]));
        assert!(apart(node("Reshape", &["x", "s"], vec![]), vec![ints("s", &[-1, 800])]));
        assert!(apart(node("Reshape", &["x", "s"], vec![]), vec![ints("s", &[0, 800])]));
        assert!(apart(node("Transpose", &["x"], vec![attr::ints("perm", &[0, 2, 3, 1])]), vec![]));
        assert!(apart(node("BatchNormalization", &["x"], vec![]), vec![]));
    }

    /// host's export of a BatchNorm with batch statistics (ReduceMean over `[0, 2, 3]`) and every other way of
    /// mixing the batch are caught; what cannot be read counts as mixing.
    #[test]
    fn batch_mixing_operators_are_caught() {
        assert!(!apart(node("ReduceMean", &["x"], vec![attr::ints("axes", &[0, 2, 3])]), vec![]));
        assert!(!apart(node("ReduceMean", &["x", "a"], vec![]), vec![ints("a", &[0, 2, 3])]));
        assert!(!apart(node("ReduceMean", &["x"], vec![]), vec![]), "no axes: every axis");
        assert!(!apart(node("ReduceSum", &["x", "x"], vec![]), vec![]), "axes computed, not constant");
        assert!(!apart(node("ReduceMax", &["x"], vec![attr::ints("axes", &[-1])]), vec![]), "rank unknown");
        assert!(!apart(node("BatchNormalization", &["x"], vec![attr::int("training_mode", 1)]), vec![]));
        assert!(!apart(node("Transpose", &["x"], vec![attr::ints("perm", &[1, 0])]), vec![]));
        assert!(!apart(node("Transpose", &["x"], vec![]), vec![]), "no perm: reversed");
        assert!(!apart(node("Flatten", &["x"], vec![attr::int("axis", 0)]), vec![]));
        assert!(!apart(node("Reshape", &["x", "s"], vec![]), vec![ints("s", &[1, -1])]));
        assert!(!apart(node("Concat", &["x", "x"], vec![attr::int("axis", 0)]), vec![]));
        assert!(!apart(node("Softmax", &["x"], vec![attr::int("axis", 0)]), vec![]));
        assert!(!apart(node("Slice", &["x", "s", "e"], vec![]), vec![ints("s", &[0]), ints("e", &[1])]));
    }
}
