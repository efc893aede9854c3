//! Graph rewrites applied to a frozen prefix before tract plans it: the graph-level folding that onnxruntime does
//! itself and tract 0.23.9 does not manage on converted models.
//!
//! Models converted from TensorFlow (open_nsfw is one) compute in NHWC but hand every convolution NCHW data, so
//! each `Conv` sits between two `Transpose`s, its bias and batch normalisation follow as separate `Add`, `Sub`,
//! `Mul`, `Add` nodes on the NHWC side, and float-to-float `Cast`s are sprinkled everywhere. tract's own
//! `ChangeAxes` pass is meant to cancel such transposes, but on open_nsfw it fails (docs/benchmarks.md), and the
//! per-channel chains then stay unfused. So the loader rewrites the prefix first, each rewrite exact up to float
//! rounding:
//!
//! 1. **Casts**: `Cast(to = FLOAT)` of a tensor already known to be `f32`, and `Identity` of a constant, are
//!    dropped (the readers read the input).
//! 2. **Transposes sink**: a `Transpose(P)` feeding an element-wise op moves behind it: `Relu(T_P(x)) =
//!    T_P(Relu(x))`; `T_P(x) ⊕ c = T_P(x ⊕ c')` for a constant `c` and `c' = T_{P⁻¹}(c)` (padded to the rank
//!    first, as broadcasting does); `T_P(x) ⊕ T_P(y) = T_P(x ⊕ y)`; `T_P(x) ⊕ y = T_P(x ⊕ T_{P⁻¹}(y))` when
//!    `T_{P⁻¹}(y)` is already computed; `ReduceMean(T_P(x), axes) = ReduceMean(x, P[axes])` (operator sets
//!    below 18, where `axes` is an attribute). Two transposes in a row merge, and cancel when the composed
//!    permutation is the identity.
//! 3. **Channel-wise ops fold into the convolution** when the `Conv` output has no other reader: for a constant
//!    `v` of one value per output channel (or one value), `Conv(x, W, b) + v = Conv(x, W, b + v)`,
//!    `… − v → b − v`, `… · v → (W·v, b·v)`, `… / v → (W / v, b / v)` (per output channel `o`).
//!
//! Only default-domain nodes are touched, every rewrite checks its preconditions and otherwise leaves the graph
//! alone, the cut tensor keeps its name, and nodes no longer read are removed. The re-exported ONNX file keeps
//! the original nodes ([`super::PrefixGraph`]); only tract's copy is rewritten.

use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, IxDyn};

use super::graph::{GraphIndex, attrs};
use super::{attr, f32_tensor, pb, read_f32};

/// What [`for_tract`] changed in a prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rewrites {
    /// Nodes before.
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
    /// `Cast`/`Identity` nodes dropped as no-ops.
    pub casts_dropped: usize,
    /// `Transpose` nodes before.
    pub transposes_before: usize,
    /// `Transpose` nodes after.
    pub transposes_after: usize,
    /// Channel-wise `Add`/`Sub`/`Mul`/`Div` nodes folded into a `Conv`'s weights and bias.
    pub folded_into_conv: usize,
}

impl Rewrites {
    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        if self.nodes_before == 0 {
            return "not rewritten".into();
        }
        format!(
            "{} → {} nodes: {} no-op casts dropped, transposes {} → {}, {} channel-wise ops folded into convolutions",
            self.nodes_before,
            self.nodes_after,
            self.casts_dropped,
            self.transposes_before,
            self.transposes_after,
            self.folded_into_conv
        )
    }
}

/// Element-wise unary operators a transpose can move behind.
const UNARY: [&str; 6] = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "Neg", "Abs"];
/// Element-wise binary operators (with NumPy broadcasting).
const BINARY: [&str; 4] = ["Add", "Sub", "Mul", "Div"];
/// Reductions with an `axes` attribute below operator set 18.
const REDUCE: [&str; 3] = ["ReduceMean", "ReduceMax", "ReduceMin"];
/// Operators whose output is `f32` when their first input is.
const FLOAT_FROM_FIRST: [&str; 20] = [
    "Conv",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Neg",
    "Abs",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Transpose",
    "Pad",
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "ReduceMean",
    "Softmax",
    "BatchNormalization",
];

/// Rewrite `model` (a standalone prefix, [`super::PrefixGraph::to_model_proto`]) for tract: see the
/// [module docs](self). Returns the rewritten model and what changed; a graph it cannot read comes back as it was
/// (tract then reports what is wrong with it).
pub fn for_tract(model: &pb::ModelProto) -> (pb::ModelProto, Rewrites) {
    let Some(g) = model.graph.as_ref() else { return (model.clone(), Rewrites::default()) };
    let opset = super::export::default_opset(&model.opset_import);
    let Some(nodes) = sorted(g) else { return (model.clone(), Rewrites::default()) };
    let mut w = Work::new(g, nodes, opset);
    let mut stats =
        Rewrites { nodes_before: g.node.len(), transposes_before: count(&g.node, "Transpose"), ..Rewrites::default() };
    stats.casts_dropped = w.drop_noop_casts();
    // Each rewrite removes a node or moves a transpose one node further down; the cap only guards termination.
    let cap = 16 * (g.node.len() + 1);
    let mut steps = 0;
    while steps < cap && w.sink_one_transpose() {
        w.prune();
        steps += 1;
    }
    while steps < cap && w.fold_one_into_conv() {
        stats.folded_into_conv += 1;
        steps += 1;
    }
    w.prune();
    let used: HashSet<&str> = w.nodes.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let mut initializer: Vec<pb::TensorProto> =
        g.initializer.iter().filter(|t| used.contains(t.name.as_str())).cloned().collect();
    let mut made: Vec<&String> = w.made.keys().filter(|name| used.contains(name.as_str())).collect();
    made.sort();
    for name in made {
        let (dims, data) = &w.made[name];
        initializer.push(f32_tensor(name, dims, data.iter().copied()));
    }
    // Field by field: cloning `g` or `model` whole would copy every weight once more only to drop it.
    let mut rewritten = pb::GraphProto {
        node: std::mem::take(&mut w.nodes),
        initializer,
        name: g.name.clone(),
        sparse_initializer: g.sparse_initializer.clone(),
        doc_string: g.doc_string.clone(),
        input: g.input.clone(),
        output: g.output.clone(),
        value_info: g.value_info.clone(),
        quantization_annotation: g.quantization_annotation.clone(),
    };
    // New nodes were put where their first reader was: order the graph once, at the end.
    let Some(nodes) = sorted(&rewritten) else { return (model.clone(), Rewrites::default()) };
    stats.nodes_after = nodes.len();
    stats.transposes_after = count(&nodes, "Transpose");
    rewritten.node = nodes;
    let out = pb::ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        doc_string: model.doc_string.clone(),
        graph: Some(rewritten),
        metadata_props: model.metadata_props.clone(),
        training_info: model.training_info.clone(),
        functions: model.functions.clone(),
    };
    (out, stats)
}

/// The nodes of `g` in the loader's topological order ([`GraphIndex`]); `None` for a graph the loader does not
/// read (a cycle, a tensor defined twice or never).
fn sorted(g: &pb::GraphProto) -> Option<Vec<pb::NodeProto>> {
    let idx = GraphIndex::new(g).ok()?;
    Some(idx.topological_order().into_iter().map(|i| g.node[i].clone()).collect())
}

fn count(nodes: &[pb::NodeProto], op: &str) -> usize {
    nodes.iter().filter(|n| n.op_type == op).count()
}

fn is_default_domain(n: &pb::NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

/// The inverse of a permutation (`None` if `p` is not one).
fn invert(p: &[usize]) -> Option<Vec<usize>> {
    let mut inv = vec![usize::MAX; p.len()];
    for (i, &v) in p.iter().enumerate() {
        if v >= p.len() || inv[v] != usize::MAX {
            return None;
        }
        inv[v] = i;
    }
    Some(inv)
}

/// One step of rewrite 2.
enum Sink {
    /// `node` is a `Transpose` undoing its input's `Transpose` of `x`: its readers read `x`.
    Cancel { node: usize, out: String, x: String },
    /// `node` is a `Transpose` of a `Transpose` of `x`: one `Transpose(perm)` of `x`.
    Merge { node: usize, x: String, perm: Vec<usize> },
    /// `node` reads `inputs` instead (with new `axes` for a reduction), followed by `Transpose(perm)` if any.
    Move { node: usize, inputs: Vec<Operand>, perm: Option<Vec<usize>>, axes: Option<Vec<i64>> },
}

/// An input of a moved node.
enum Operand {
    /// An existing tensor.
    Tensor(String),
    /// A new constant: `name`'s values permuted.
    Permuted { name: String, dims: Vec<usize>, data: Vec<f32> },
}

/// The graph being rewritten.
struct Work<'a> {
    nodes: Vec<pb::NodeProto>,
    /// The file's `f32` constants (initializers and `Constant` nodes' values), decoded only when a rewrite needs
    /// one (the weights of a large model are not copied).
    file_consts: HashMap<&'a str, &'a pb::TensorProto>,
    /// Constants made by the rewrites: shape and values (written out at the end, the ones still read).
    made: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// Names the graph must keep defining (its outputs).
    outputs: HashSet<String>,
    /// The graph input's name and whether it is `f32`.
    input: Option<(String, bool)>,
    /// Every name in use (so new names do not clash).
    names: HashSet<String>,
    opset: i64,
    fresh: usize,
}

impl<'a> Work<'a> {
    /// `nodes`: those of `g`, topologically ordered.
    fn new(g: &'a pb::GraphProto, nodes: Vec<pb::NodeProto>, opset: i64) -> Self {
        let float = |t: &pb::TensorProto| t.data_type == pb::tensor_proto::DataType::Float as i32;
        let mut file_consts = HashMap::new();
        for t in g.initializer.iter().filter(|t| float(t)) {
            file_consts.insert(t.name.as_str(), t);
        }
        for n in g.node.iter().filter(|n| n.op_type == "Constant" && is_default_domain(n)) {
            let t = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
            if let (Some(t), Some(o)) = (t, n.output.first())
                && float(t)
            {
                file_consts.insert(o.as_str(), t);
            }
        }
        let input = g.input.iter().find(|i| !file_consts.contains_key(i.name.as_str())).map(|i| {
            let float = matches!(
                i.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(pb::type_proto::Value::TensorType(t)) if t.elem_type == pb::tensor_proto::DataType::Float as i32
            );
            (i.name.clone(), float)
        });
        let mut names: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        for n in &g.node {
            names.insert(n.name.clone());
            names.extend(n.input.iter().chain(&n.output).cloned());
        }
        names.extend(g.input.iter().map(|i| i.name.clone()));
        Self {
            nodes,
            file_consts,
            made: HashMap::new(),
            outputs: g.output.iter().map(|o| o.name.clone()).collect(),
            input,
            names,
            opset,
            fresh: 0,
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        let base = base.split("/edgelearn_rw").next().unwrap_or(base);
        loop {
            self.fresh += 1;
            let name = format!("{base}/edgelearn_rw{}", self.fresh);
            if self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    /// Whether `name` is an `f32` constant.
    fn is_constant(&self, name: &str) -> bool {
        self.made.contains_key(name) || self.file_consts.contains_key(name)
    }

    /// Shape and values of the `f32` constant `name` (a copy; `None` if it is not one or does not decode).
    fn constant(&self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        match self.made.get(name) {
            Some(c) => Some(c.clone()),
            None => read_f32(self.file_consts.get(name)?).ok(),
        }
    }

    /// Shape of the `f32` constant `name`, without reading its values.
    fn constant_dims(&self, name: &str) -> Option<Vec<usize>> {
        match self.made.get(name) {
            Some((dims, _)) => Some(dims.clone()),
            None => super::tensor_dims(self.file_consts.get(name)?).ok().map(|(dims, _)| dims),
        }
    }

    fn add_const(&mut self, base: &str, dims: Vec<usize>, data: Vec<f32>) -> String {
        let name = self.fresh(base);
        self.made.insert(name.clone(), (dims, data));
        name
    }

    fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                m.insert(o.as_str(), i);
            }
        }
        m
    }

    fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for x in n.input.iter().filter(|s| !s.is_empty()) {
                let l = m.entry(x.as_str()).or_default();
                if l.last() != Some(&i) {
                    l.push(i);
                }
            }
        }
        m
    }

    /// Make every reader of `from` read `to` instead (`from` must not be a graph output).
    fn alias(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for x in n.input.iter_mut().filter(|x| x.as_str() == from) {
                *x = to.to_string();
            }
        }
    }

    /// The permutation of a default-domain `Transpose` node with an explicit, valid `perm`.
    fn perm(n: &pb::NodeProto) -> Option<Vec<usize>> {
        if n.op_type != "Transpose" || !is_default_domain(n) || n.input.len() != 1 {
            return None;
        }
        let p: Vec<usize> = attrs::ints(n, "perm")?.iter().map(|&v| usize::try_from(v).ok()).collect::<Option<_>>()?;
        invert(&p).map(|_| p)
    }

    /// Rewrite 1: drop `Cast(to = FLOAT)` of `f32` tensors and `Identity` of constants.
    fn drop_noop_casts(&mut self) -> usize {
        let mut float: HashSet<String> = self.file_consts.keys().map(|k| k.to_string()).collect();
        float.extend(self.made.keys().cloned());
        if let Some((name, true)) = &self.input {
            float.insert(name.clone());
        }
        let mut aliases = Vec::new();
        for n in self.nodes.iter().filter(|n| is_default_domain(n)) {
            let Some(out) = n.output.first() else { continue };
            let first_float = n.input.first().is_some_and(|x| float.contains(x));
            let all_float = n.input.iter().filter(|x| !x.is_empty()).all(|x| float.contains(x));
            let op = n.op_type.as_str();
            let to_float = op == "Cast" && attrs::int(n, "to", 0) == pb::tensor_proto::DataType::Float as i64;
            let is_float = to_float
                || (FLOAT_FROM_FIRST.contains(&op) && first_float)
                || (matches!(op, "Add" | "Sub" | "Mul" | "Div" | "Gemm" | "MatMul")
                    && all_float
                    && !n.input.is_empty());
            if is_float {
                float.insert(out.clone());
            }
            let noop =
                (to_float && first_float) || (op == "Identity" && n.input.first().is_some_and(|x| self.is_constant(x)));
            if noop && n.input.len() == 1 && n.output.len() == 1 && !self.outputs.contains(out) {
                aliases.push((out.clone(), n.input[0].clone()));
            }
        }
        // Resolve chains (Cast of Cast) before rewiring.
        let map: HashMap<String, String> = aliases.into_iter().collect();
        let resolve = |x: &str| -> String {
            let mut x = x;
            while let Some(y) = map.get(x) {
                x = y;
            }
            x.to_string()
        };
        for n in &mut self.nodes {
            for x in n.input.iter_mut() {
                if map.contains_key(x.as_str()) {
                    *x = resolve(x);
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|n| !n.output.first().is_some_and(|o| map.contains_key(o)));
        before - self.nodes.len()
    }

    /// Rewrite 2, one step: move one transpose behind its reader, or merge/cancel two. `false` when none applies.
    fn sink_one_transpose(&mut self) -> bool {
        let Some(step) = self.find_sink() else { return false };
        match step {
            Sink::Cancel { node, out, x } => {
                self.nodes.remove(node);
                self.alias(&out, &x);
            }
            Sink::Merge { node, x, perm } => {
                let n = &self.nodes[node];
                self.nodes[node] = transpose_node(&n.name, &x, &n.output[0], &perm);
            }
            Sink::Move { node, inputs, perm, axes } => {
                let mut moved = self.nodes[node].clone();
                let out = moved.output[0].clone();
                moved.input = inputs
                    .into_iter()
                    .map(|o| match o {
                        Operand::Tensor(t) => t,
                        Operand::Permuted { name, dims, data } => self.add_const(&name, dims, data),
                    })
                    .collect();
                if let Some(axes) = axes {
                    moved.attribute.retain(|a| a.name != "axes");
                    moved.attribute.push(attr::ints("axes", &axes));
                }
                match perm {
                    Some(p) => {
                        let mid = self.fresh(&out);
                        moved.output[0] = mid.clone();
                        let t = transpose_node(&moved.name, &mid, &out, &p);
                        self.nodes.splice(node..=node, [moved, t]);
                    }
                    None => self.nodes[node] = moved,
                }
            }
        }
        true
    }

    /// The first applicable rewrite-2 step, if any.
    fn find_sink(&self) -> Option<Sink> {
        let prod = self.producers();
        let cons = self.consumers();
        let transpose_of = |t: &str| -> Option<(String, Vec<usize>)> {
            let n = &self.nodes[*prod.get(t)?];
            Self::perm(n).map(|p| (n.input[0].clone(), p))
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if !is_default_domain(n) || n.output.len() != 1 {
                continue;
            }
            let op = n.op_type.as_str();
            let out = &n.output[0];
            // Transpose of a transpose: merge, or cancel.
            if let Some(q) = Self::perm(n)
                && let Some((x, p)) = transpose_of(&n.input[0])
                && p.len() == q.len()
            {
                let r: Vec<usize> = q.iter().map(|&j| p[j]).collect();
                if !r.iter().enumerate().all(|(k, &v)| k == v) {
                    return Some(Sink::Merge { node: i, x, perm: r });
                }
                if !self.outputs.contains(out) {
                    return Some(Sink::Cancel { node: i, out: out.clone(), x });
                }
                continue;
            }
            if UNARY.contains(&op) && n.input.len() == 1 {
                let Some((x, p)) = transpose_of(&n.input[0]) else { continue };
                return Some(Sink::Move { node: i, inputs: vec![Operand::Tensor(x)], perm: Some(p), axes: None });
            }
            if BINARY.contains(&op) && n.input.len() == 2 {
                let (a, b) = (&n.input[0], &n.input[1]);
                let ins = match (transpose_of(a), transpose_of(b)) {
                    (Some((xa, pa)), Some((xb, pb))) if pa == pb => {
                        Some((vec![Operand::Tensor(xa), Operand::Tensor(xb)], pa))
                    }
                    (Some((x, p)), None) => self.other_operand(b, &p, &cons).map(|o| (vec![Operand::Tensor(x), o], p)),
                    (None, Some((x, p))) => self.other_operand(a, &p, &cons).map(|o| (vec![o, Operand::Tensor(x)], p)),
                    _ => None,
                };
                let Some((inputs, p)) = ins else { continue };
                return Some(Sink::Move { node: i, inputs, perm: Some(p), axes: None });
            }
            if REDUCE.contains(&op) && self.opset < 18 && n.input.len() == 1 {
                let Some((x, p)) = transpose_of(&n.input[0]) else { continue };
                let rank = p.len();
                let axes: Option<Vec<usize>> = match attrs::ints(n, "axes") {
                    None => Some((0..rank).collect()),
                    Some(v) => v
                        .iter()
                        .map(|&a| {
                            let a = if a < 0 { a + rank as i64 } else { a };
                            usize::try_from(a).ok().filter(|&a| a < rank)
                        })
                        .collect(),
                };
                let Some(axes) = axes else { continue };
                let new_axes: Vec<i64> = axes.iter().map(|&a| p[a] as i64).collect();
                let inputs = vec![Operand::Tensor(x)];
                if attrs::int(n, "keepdims", 1) != 0 {
                    return Some(Sink::Move { node: i, inputs, perm: Some(p), axes: Some(new_axes) });
                }
                // Without keepdims the kept axes must come out in the same order.
                let rest: Vec<usize> = (0..rank).filter(|k| !axes.contains(k)).map(|k| p[k]).collect();
                if rest.windows(2).all(|w| w[0] < w[1]) {
                    return Some(Sink::Move { node: i, inputs, perm: None, axes: Some(new_axes) });
                }
            }
        }
        None
    }

    /// The operand to pair with `x` when `T_P(x) ⊕ other` becomes `T_P(x ⊕ operand)`: the constant permuted by
    /// `P⁻¹`, or an existing `Transpose(P⁻¹)` of `other`.
    fn other_operand(&self, other: &str, p: &[usize], cons: &HashMap<&str, Vec<usize>>) -> Option<Operand> {
        let inv = invert(p)?;
        if let Some((dims, data)) = self.constant(other) {
            if dims.len() > p.len() {
                return None;
            }
            let mut padded = vec![1; p.len() - dims.len()];
            padded.extend_from_slice(&dims);
            let a = ArrayD::from_shape_vec(IxDyn(&padded), data).ok()?;
            let t = a.permuted_axes(IxDyn(&inv));
            let dims = t.shape().to_vec();
            let data: Vec<f32> = t.iter().copied().collect();
            return Some(Operand::Permuted { name: other.to_string(), dims, data });
        }
        cons.get(other)?
            .iter()
            .map(|&j| &self.nodes[j])
            .find(|m| Self::perm(m).as_deref() == Some(&inv[..]))
            .and_then(|m| m.output.first().cloned())
            .map(Operand::Tensor)
    }

    /// Rewrite 3, one step: fold one channel-wise constant op into the `Conv` before it. `false` when none applies.
    fn fold_one_into_conv(&mut self) -> bool {
        let cons = self.consumers();
        for ci in 0..self.nodes.len() {
            let conv = &self.nodes[ci];
            if conv.op_type != "Conv" || !is_default_domain(conv) || conv.output.len() != 1 {
                continue;
            }
            let y = conv.output[0].clone();
            if self.outputs.contains(&y) {
                continue;
            }
            let Some(&[oi]) = cons.get(y.as_str()).map(Vec::as_slice) else { continue };
            let op = &self.nodes[oi];
            if !is_default_domain(op)
                || !BINARY.contains(&op.op_type.as_str())
                || op.input.len() != 2
                || op.output.len() != 1
            {
                continue;
            }
            let kind = op.op_type.clone();
            let pos = match (op.input[0] == y, op.input[1] == y) {
                (true, false) => 1,
                (false, true) if kind == "Add" || kind == "Mul" => 0,
                _ => continue,
            };
            let Some((vdims, v)) = self.constant(&op.input[pos]) else { continue };
            // The weights' shape first (no copy); their values only once everything else fits.
            let Some(wdims) = conv.input.get(1).and_then(|n| self.constant_dims(n)) else { continue };
            let Some(&channels) = wdims.first() else { continue };
            if wdims.len() < 3 || channels == 0 || vdims.len() > wdims.len() {
                continue;
            }
            // One value per output channel: shaped [.., C, 1, ..] with C on axis 1 of the conv output, or one value.
            let mut padded = vec![1; wdims.len() - vdims.len()];
            padded.extend_from_slice(&vdims);
            let per_channel = padded.iter().enumerate().all(|(k, &d)| d == 1 || (k == 1 && d == channels));
            if !per_channel || !(v.len() == 1 || v.len() == channels) {
                continue;
            }
            let v: Vec<f32> = if v.len() == 1 { vec![v[0]; channels] } else { v };
            let bias = match conv.input.get(2).filter(|s| !s.is_empty()) {
                None => vec![0.0; channels],
                Some(b) => match self.constant(b) {
                    Some((_, bv)) if bv.len() == channels => bv,
                    _ => continue,
                },
            };
            let Some((_, w)) = self.constant(&conv.input[1]) else { continue };
            let per = w.len() / channels;
            let (w, bias): (Vec<f32>, Vec<f32>) = match kind.as_str() {
                "Add" => (w, bias.iter().zip(&v).map(|(b, v)| b + v).collect()),
                "Sub" => (w, bias.iter().zip(&v).map(|(b, v)| b - v).collect()),
                "Mul" => (
                    w.iter().enumerate().map(|(k, x)| x * v[k / per]).collect(),
                    bias.iter().zip(&v).map(|(b, v)| b * v).collect(),
                ),
                _ => (
                    w.iter().enumerate().map(|(k, x)| x / v[k / per]).collect(),
                    bias.iter().zip(&v).map(|(b, v)| b / v).collect(),
                ),
            };
            if w.iter().chain(&bias).any(|x| !x.is_finite()) {
                continue;
            }
            let (wname, bname) = (conv.input[1].clone(), format!("{}.bias", conv.name));
            let wnew = self.add_const(&wname, wdims, w);
            let bnew = self.add_const(&bname, vec![channels], bias);
            let out = self.nodes[oi].output[0].clone();
            let conv = &mut self.nodes[ci];
            let replaced: Vec<String> = conv.input.drain(1..).collect();
            conv.input.extend([wnew, bnew]);
            conv.output[0] = out;
            self.nodes.remove(oi);
            // A chain of folds makes a new weight tensor per step: drop the ones nothing reads any more.
            for name in replaced {
                if self.made.contains_key(&name) && !self.nodes.iter().any(|n| n.input.contains(&name)) {
                    self.made.remove(&name);
                }
            }
            return true;
        }
        false
    }

    /// Remove the nodes no graph output depends on.
    fn prune(&mut self) {
        let prod = self.producers();
        let mut live = vec![false; self.nodes.len()];
        let mut stack: Vec<usize> = self.outputs.iter().filter_map(|o| prod.get(o.as_str()).copied()).collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut live[i], true) {
                continue;
            }
            stack.extend(self.nodes[i].input.iter().filter_map(|x| prod.get(x.as_str()).copied()));
        }
        let mut k = 0;
        self.nodes.retain(|_| {
            k += 1;
            live[k - 1]
        });
    }
}

fn transpose_node(name: &str, input: &str, output: &str, perm: &[usize]) -> pb::NodeProto {
    let perm: Vec<i64> = perm.iter().map(|&v| v as i64).collect();
    pb::NodeProto {
        name: format!("{name}/transpose"),
        op_type: "Transpose".into(),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![attr::ints("perm", &perm)],
        ..Default::default()
    }
}
