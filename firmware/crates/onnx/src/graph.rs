//! Read-only index over an ONNX graph: who produces and who consumes each tensor, constants, ancestors,
//! topological order. Built once per loaded file; every lookup is checked (no panics on hostile graphs).

use std::collections::{HashMap, HashSet};

use super::pb;
use edgelearn_core::error::{Error, Result};

/// Producer/consumer maps of one graph.
pub(crate) struct GraphIndex<'a> {
    /// The graph.
    pub g: &'a pb::GraphProto,
    inits: HashMap<&'a str, &'a pb::TensorProto>,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    /// Graph inputs that are not initializers.
    pub inputs: Vec<&'a str>,
    /// Graph outputs in order.
    pub outputs: Vec<&'a str>,
    /// Position of each node in a topological order.
    rank: Vec<usize>,
}

impl<'a> GraphIndex<'a> {
    /// Index `g`; errors on tensors defined twice, used but never defined, or cycles.
    pub fn new(g: &'a pb::GraphProto) -> Result<Self> {
        let mut inits = HashMap::new();
        for t in &g.initializer {
            if inits.insert(t.name.as_str(), t).is_some() {
                return Err(Error::OnnxInvalid(format!("initializer '{}' is defined twice", t.name)));
            }
        }
        let inputs: Vec<&str> = g.input.iter().map(|v| v.name.as_str()).filter(|n| !inits.contains_key(n)).collect();
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if producer.insert(o.as_str(), i).is_some()
                    || inits.contains_key(o.as_str())
                    || inputs.contains(&o.as_str())
                {
                    return Err(Error::OnnxInvalid(format!("tensor '{o}' is defined more than once")));
                }
            }
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                let list = consumers.entry(inp.as_str()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        for (i, n) in g.node.iter().enumerate() {
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                let s = inp.as_str();
                if !producer.contains_key(s) && !inits.contains_key(s) && !inputs.contains(&s) {
                    return Err(Error::OnnxInvalid(format!(
                        "tensor '{inp}' read by node {} is never defined",
                        label(n, i)
                    )));
                }
            }
        }
        let outputs: Vec<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
        for o in &outputs {
            if !producer.contains_key(o) && !inits.contains_key(o) && !inputs.contains(o) {
                return Err(Error::OnnxInvalid(format!("graph output '{o}' is never defined")));
            }
        }
        let mut idx = Self { g, inits, producer, consumers, inputs, outputs, rank: Vec::new() };
        idx.rank = idx.topological_rank()?;
        Ok(idx)
    }

    /// Kahn's algorithm, ties broken by file order; a cycle is [`Error::OnnxInvalid`].
    fn topological_rank(&self) -> Result<Vec<usize>> {
        let n = self.g.node.len();
        let mut indeg = vec![0usize; n];
        for (i, node) in self.g.node.iter().enumerate() {
            let deps: HashSet<usize> =
                node.input.iter().filter_map(|s| self.producer.get(s.as_str()).copied()).collect();
            indeg[i] = deps.len();
        }
        let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
        let mut rank = vec![usize::MAX; n];
        let mut next = 0;
        while let Some(i) = ready.pop_first() {
            rank[i] = next;
            next += 1;
            let mut seen = HashSet::new();
            for o in self.g.node[i].output.iter().filter(|o| !o.is_empty()) {
                for &c in self.consumers.get(o.as_str()).map_or(&[][..], Vec::as_slice) {
                    // A node reading two outputs of `i` depends on it once.
                    if seen.insert(c) {
                        indeg[c] = indeg[c].saturating_sub(1);
                        if indeg[c] == 0 {
                            ready.insert(c);
                        }
                    }
                }
            }
        }
        if next != n {
            return Err(Error::OnnxInvalid("the graph has a cycle".into()));
        }
        Ok(rank)
    }

    /// Every node index in the topological order of [`GraphIndex::new`] (ties by file order).
    pub fn topological_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rank.len()).collect();
        order.sort_by_key(|&i| self.rank[i]);
        order
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &'a pb::NodeProto {
        &self.g.node[i]
    }

    /// The node producing `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producer.get(tensor).copied()
    }

    /// Nodes reading `tensor` (each once), in file order.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map_or(&[], Vec::as_slice)
    }

    /// True for a graph output.
    pub fn is_output(&self, tensor: &str) -> bool {
        self.outputs.contains(&tensor)
    }

    /// True for a (non-initializer) graph input.
    pub fn is_input(&self, tensor: &str) -> bool {
        self.inputs.contains(&tensor)
    }

    /// True when some node, initializer or input defines `tensor`.
    pub fn defines(&self, tensor: &str) -> bool {
        self.producer.contains_key(tensor) || self.inits.contains_key(tensor) || self.is_input(tensor)
    }

    /// An initializer by name.
    pub fn initializer(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.inits.get(name).copied()
    }

    /// A constant tensor: an initializer, or the `value` of a `Constant` node (whose index is returned too).
    pub fn constant(&self, name: &str) -> Option<(&'a pb::TensorProto, Option<usize>)> {
        if let Some(t) = self.initializer(name) {
            return Some((t, None));
        }
        let i = self.producer(name)?;
        let n = &self.g.node[i];
        if n.op_type != "Constant" {
            return None;
        }
        n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref()).map(|t| (t, Some(i)))
    }

    /// True when `name` is a constant ([`GraphIndex::constant`]).
    pub fn is_constant(&self, name: &str) -> bool {
        self.constant(name).is_some()
    }

    /// Every node `tensor` depends on, in topological order (empty for a graph input or initializer).
    pub fn ancestors(&self, tensor: &str) -> Vec<usize> {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = self.producer(tensor).into_iter().collect();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            for inp in &self.g.node[i].input {
                if let Some(p) = self.producer(inp)
                    && !seen.contains(&p)
                {
                    stack.push(p);
                }
            }
        }
        let mut v: Vec<usize> = seen.into_iter().collect();
        v.sort_by_key(|&i| self.rank[i]);
        v
    }

    /// The initializers read by `nodes` (each once, in first-use order).
    pub fn initializers_of(&self, nodes: &[usize]) -> Vec<&'a pb::TensorProto> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for &i in nodes {
            for inp in &self.g.node[i].input {
                if let Some(t) = self.initializer(inp)
                    && seen.insert(inp.as_str())
                {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// `'name' (Op)` or `#index (Op)` for unnamed nodes.
pub(crate) fn label(n: &pb::NodeProto, i: usize) -> String {
    if n.name.is_empty() { format!("#{i} ({})", n.op_type) } else { format!("'{}' ({})", n.name, n.op_type) }
}

/// Node attribute helpers.
pub(crate) mod attrs {
    use super::pb;

    fn get<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
        n.attribute.iter().find(|a| a.name == name)
    }

    /// An `INT` attribute or its default.
    pub fn int(n: &pb::NodeProto, name: &str, default: i64) -> i64 {
        get(n, name).map_or(default, |a| a.i)
    }

    /// An `INTS` attribute, if present.
    pub fn ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
        get(n, name).map(|a| a.ints.clone())
    }

    /// A `FLOAT` attribute or its default.
    pub fn float(n: &pb::NodeProto, name: &str, default: f32) -> f32 {
        get(n, name).map_or(default, |a| a.f)
    }

    /// A `STRING` attribute (lossy UTF-8), if present.
    pub fn string(n: &pb::NodeProto, name: &str) -> Option<String> {
        get(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
}
