//! ONNX file → frozen prefix (tract) + native trainable layers ([`DeviceModel`]).

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use ndarray::{Array1, Array2, Array4, ArrayView2, Axis, s};
use prost::Message;
use rand::Rng;
use tract_onnx::prelude::{
    Datum, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTValue, Tensor, TypedRunnableModel, tvec,
};
use tract_onnx::tract_core::optim::Optimizer;

use super::engine::{Engine, OrtPrefix};
use super::export::{PrefixGraph, default_opset, model_to_proto};
use super::graph::{GraphIndex, attrs, label};
use super::per_sample;
use super::simplify::{self, Rewrites};
use super::{OPSETS, encode, pb, read_f32, read_i64};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{BATCH_NORM_EPS, BatchNorm, Conv2d, Flatten, Layer, Linear, MaxPool2d, Mode, Model, Relu};

/// Where to split a loaded graph into a frozen prefix and trainable layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Nothing frozen: every layer of the file becomes trainable.
    Input,
    /// At a named tensor (a node output such as `/ReduceMean_output_0`, or the graph input): whatever computes
    /// it is frozen, whatever reads it is trainable.
    Tensor(String),
    /// Keep the last `k` layers with parameters trainable (Gemm/MatMul, Conv, batch norm), the head(s)
    /// counting as one; the cut goes right before the `k`-th such layer from the end.
    LastTrainable(usize),
}

impl Cut {
    /// Parse `input`, `last:K` or a tensor name.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::OnnxCut("empty cut (use input, last:K or a tensor name)".into()));
        }
        if s == "input" {
            return Ok(Cut::Input);
        }
        if let Some(k) = s.strip_prefix("last:") {
            let k: usize = k.parse().map_err(|_| Error::OnnxCut(format!("bad layer count in '{s}'")))?;
            return Ok(Cut::LastTrainable(k));
        }
        Ok(Cut::Tensor(s.to_string()))
    }
}

/// A parsed ONNX file (any producer), checked enough that every later step can report problems as errors.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    proto: pb::ModelProto,
    input_shape: Vec<usize>,
    fixed_batch: Option<usize>,
    rewrite: bool,
    any_batch_first: bool,
    engine: Engine,
}

impl OnnxModel {
    /// Read and check an ONNX file of at most `max_bytes` bytes: a larger file (by its metadata) is refused with
    /// [`Error::OverBudget`] (`budget` `"model_file"`) before a byte of it is read.
    pub fn open_within(path: &Path, max_bytes: u64) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|source| Error::Io { context: format!("reading ONNX file {}", path.display()), source })?
            .len();
        if len > max_bytes {
            return Err(Error::OverBudget { budget: "model_file", needed: len, limit: max_bytes });
        }
        Self::open(path)
    }

    /// Read and check an ONNX file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|source| Error::Io { context: format!("reading ONNX file {}", path.display()), source })?;
        Self::from_bytes(&bytes)
    }

    /// Decode and check ONNX bytes: protobuf well-formed, a graph with exactly one `f32` input whose shape is
    /// fixed apart from the batch axis, at least one output, every tensor defined once, no cycle, a supported
    /// default operator set.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let proto = pb::ModelProto::decode(bytes).map_err(|e| {
            Error::OnnxInvalid(format!("not an ONNX protobuf, or a truncated one ({} bytes): {e}", bytes.len()))
        })?;
        Self::from_proto(proto)
    }

    /// Check a decoded model (see [`OnnxModel::from_bytes`]).
    pub fn from_proto(proto: pb::ModelProto) -> Result<Self> {
        let g = proto.graph.as_ref().ok_or_else(|| Error::OnnxInvalid("the model has no graph".into()))?;
        let opset = default_opset(&proto.opset_import);
        if !OPSETS.contains(&opset) {
            return Err(Error::OnnxUnsupported {
                op: format!("opset {opset}"),
                node: "opset_import".into(),
                reason: format!(
                    "default-domain operator sets {}..={} are supported (0 = none declared)",
                    OPSETS.start(),
                    OPSETS.end()
                ),
            });
        }
        if !g.sparse_initializer.is_empty() {
            return Err(Error::OnnxUnsupported {
                op: "sparse initializer".into(),
                node: g
                    .sparse_initializer
                    .first()
                    .and_then(|t| t.values.as_ref())
                    .map_or(String::new(), |v| v.name.clone()),
                reason: "sparse tensors are not supported".into(),
            });
        }
        let idx = GraphIndex::new(g)?;
        let &[input] = idx.inputs.as_slice() else {
            return Err(Error::OnnxUnsupported {
                op: "graph inputs".into(),
                node: idx.inputs.join(", "),
                reason: format!("exactly one graph input is supported, found {}", idx.inputs.len()),
            });
        };
        if idx.outputs.is_empty() {
            return Err(Error::OnnxInvalid("the graph has no output".into()));
        }
        let vi = g.input.iter().find(|v| v.name == input).ok_or_else(|| Error::OnnxInvalid("input lost".into()))?;
        let (fixed_batch, input_shape) = input_shape(vi)?;
        Ok(Self { proto, input_shape, fixed_batch, rewrite: true, any_batch_first: false, engine: Engine::Tract })
    }

    /// Whether frozen prefixes cut from this file are rewritten before tract plans them (the default; see
    /// [`Rewrites`]). `false` hands tract the file's nodes as they are: slower on converted models, useful to
    /// compare against.
    pub fn with_rewrites(mut self, rewrite: bool) -> Self {
        self.rewrite = rewrite;
        self
    }

    /// Whether frozen prefixes cut from this file try tract's plan for any batch size (a symbolic batch axis,
    /// [`PlanKind::Optimized`]) before the plan for one sample per run ([`PlanKind::OptimizedPerSample`], the
    /// default order: faster on every model measured, docs/benchmarks.md). For measuring what a symbolic batch
    /// axis costs.
    pub fn with_any_batch_plan_first(mut self, any_batch_first: bool) -> Self {
        self.any_batch_first = any_batch_first;
        self
    }

    /// The engine that runs the frozen prefixes cut from this file ([`Engine`]; tract by default). tract plans
    /// them either way (it checks the graph and finds the feature shape); with [`Engine::OnnxRuntime`] the runs
    /// go to onnxruntime, and cutting fails with a typed error when this build or machine has none.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// The decoded protobuf.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.proto
    }

    fn graph(&self) -> &pb::GraphProto {
        // `from_proto` refused models without a graph.
        self.proto.graph.as_ref().unwrap_or_else(|| unreachable!("checked in from_proto"))
    }

    fn input_info(&self) -> Result<&pb::ValueInfoProto> {
        let g = self.graph();
        let idx = GraphIndex::new(g)?;
        let name = idx.inputs.first().copied().unwrap_or_default().to_string();
        g.input.iter().find(|v| v.name == name).ok_or_else(|| Error::OnnxInvalid("input lost".into()))
    }

    /// The preprocessing spec the file carries in its metadata ([`crate::INPUT_SPEC_KEY`]), if any.
    pub fn input_spec(&self) -> Option<String> {
        self.proto.metadata_props.iter().find(|p| p.key == crate::INPUT_SPEC_KEY).map(|p| p.value.clone())
    }

    /// Name of the graph input.
    pub fn input_name(&self) -> String {
        self.input_info().map(|v| v.name.clone()).unwrap_or_default()
    }

    /// Per-sample input shape (without the batch axis).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Names of the graph outputs.
    pub fn output_names(&self) -> Vec<String> {
        self.graph().output.iter().map(|v| v.name.clone()).collect()
    }

    /// Default-domain operator set version.
    pub fn opset(&self) -> i64 {
        default_opset(&self.proto.opset_import)
    }

    /// The tensor a [`Cut`] designates (the trainable layers' input).
    pub fn cut_tensor(&self, cut: &Cut) -> Result<String> {
        let idx = GraphIndex::new(self.graph())?;
        resolve_cut(&idx, cut)
    }

    /// Only the frozen prefix up to tensor `cut` (e.g. a backbone's feature tensor), to put new trainable
    /// layers behind with [`DeviceModel::new`]. Nothing after the cut is read.
    pub fn prefix(&self, cut: &str) -> Result<FrozenPrefix> {
        let idx = GraphIndex::new(self.graph())?;
        if !idx.defines(cut) || idx.initializer(cut).is_some() {
            return Err(unknown_tensor(&idx, cut));
        }
        if idx.is_input(cut) {
            return Err(Error::OnnxCut(format!("'{cut}' is the graph input: there is nothing to freeze")));
        }
        FrozenPrefix::build(self, &idx, cut)
    }

    /// Split at `cut`: the part before runs in tract, frozen; the part after becomes native trainable layers
    /// initialised from the file's weights (see [`trainable_layer_count`] for what can be converted).
    pub fn split(&self, cut: &Cut) -> Result<DeviceModel> {
        let idx = GraphIndex::new(self.graph())?;
        let tensor = resolve_cut(&idx, cut)?;
        let suffix = plan_suffix(&idx, &tensor)?;
        let (prefix, shape) = if idx.is_input(&tensor) {
            (None, self.input_shape.clone())
        } else {
            let p = FrozenPrefix::build(self, &idx, &tensor)?;
            let shape = p.feature_shape().to_vec();
            (Some(p), shape)
        };
        let trainable = suffix.build(shape)?;
        tracing::info!(
            cut = %tensor,
            frozen_nodes = prefix.as_ref().map_or(0, |p| p.graph.nodes.len()),
            trainable_layers = trainable.trunk.len() + trainable.heads.len(),
            params = trainable.num_params(),
            "ONNX model split"
        );
        let frame = match &prefix {
            Some(_) => None,
            None => Some(Frame {
                input: self.input_info()?.clone(),
                opset_import: self.proto.opset_import.clone(),
                ir_version: self.proto.ir_version,
                input_spec: self.input_spec(),
            }),
        };
        DeviceModel::assemble(prefix, trainable, frame)
    }
}

/// How many layers with parameters (Gemm/MatMul, Conv, batch norm; the heads counting as one) the graph has
/// after tensor `cut`, or why they cannot become native layers.
pub fn trainable_layer_count(model: &OnnxModel, cut: &str) -> Result<usize> {
    let idx = GraphIndex::new(model.graph())?;
    Ok(plan_suffix(&idx, cut)?.trainable_layers())
}

fn unknown_tensor(idx: &GraphIndex<'_>, t: &str) -> Error {
    let examples: Vec<&str> =
        idx.g.node.iter().flat_map(|n| n.output.iter()).map(String::as_str).rev().take(6).collect();
    Error::OnnxCut(format!("no node output named '{t}' (last outputs of the graph: {})", examples.join(", ")))
}

fn resolve_cut(idx: &GraphIndex<'_>, cut: &Cut) -> Result<String> {
    match cut {
        Cut::Input => Ok(idx.inputs.first().copied().unwrap_or_default().to_string()),
        Cut::Tensor(t) => {
            if !idx.defines(t) || idx.initializer(t).is_some() {
                return Err(unknown_tensor(idx, t));
            }
            Ok(t.clone())
        }
        Cut::LastTrainable(k) => last_trainable(idx, *k),
    }
}

/// The cut leaving exactly `k` trainable layers: walk back from the first output along each node's data input
/// and take the first tensor from which the rest of the graph converts with `k` trainable layers.
fn last_trainable(idx: &GraphIndex<'_>, k: usize) -> Result<String> {
    if k == 0 {
        return Err(Error::OnnxCut("last:0 leaves nothing to train; use at least 1 (the heads)".into()));
    }
    let Some(&first_out) = idx.outputs.first() else {
        return Err(Error::OnnxInvalid("the graph has no output".into()));
    };
    let mut t = first_out.to_string();
    let mut last_err = None;
    for _ in 0..=idx.g.node.len() {
        let Some(p) = idx.producer(&t) else { break };
        let node = idx.node(p);
        let Some(data) = node.input.iter().find(|i| !i.is_empty() && !idx.is_constant(i)) else { break };
        t = data.clone();
        match plan_suffix(idx, &t) {
            Ok(s) if s.trainable_layers() == k => return Ok(t),
            Ok(s) if s.trainable_layers() > k => break,
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    Err(Error::OnnxCut(format!(
        "no cut leaves exactly {k} trainable layer(s){}",
        last_err.map_or(String::new(), |e| format!(" (last obstacle: {e})"))
    )))
}

/// `(fixed batch, per-sample shape)` of an `f32` graph input.
fn input_shape(vi: &pb::ValueInfoProto) -> Result<(Option<usize>, Vec<usize>)> {
    use pb::tensor_shape_proto::dimension::Value;
    let unsupported =
        |reason: String| Error::OnnxUnsupported { op: "graph input".into(), node: vi.name.clone(), reason };
    let Some(pb::type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(unsupported("the input is not a tensor".into()));
    };
    if t.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(unsupported(format!("the input must be float32 (data type {})", t.elem_type)));
    }
    let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    let Some((batch, rest)) = dims.split_first() else {
        return Err(unsupported("the input needs a shape [batch, …] with at least one axis".into()));
    };
    let fixed = match &batch.value {
        Some(Value::DimValue(b)) if *b >= 1 => Some(*b as usize),
        Some(Value::DimValue(b)) => return Err(unsupported(format!("batch axis {b}"))),
        _ => None,
    };
    let mut shape = Vec::with_capacity(rest.len());
    let mut len = 1usize;
    for d in rest {
        match &d.value {
            Some(Value::DimValue(v)) if *v >= 1 && *v <= 1 << 24 => {
                len = len
                    .checked_mul(*v as usize)
                    .filter(|&l| l <= 1 << 28)
                    .ok_or_else(|| unsupported("the per-sample input is larger than 2^28 values".into()))?;
                shape.push(*v as usize);
            }
            _ => {
                return Err(unsupported(format!("every axis but the batch axis must have a fixed size, got {dims:?}")));
            }
        }
    }
    // A fixed batch is what every tract run of the prefix gets (smaller inputs are padded to it): bound it like
    // the sample, so a file cannot make the loader allocate without limit.
    if let Some(b) = fixed
        && b.checked_mul(len).is_none_or(|total| total > 1 << 28)
    {
        return Err(unsupported(format!("a fixed batch of {b} samples is more than 2^28 input values")));
    }
    Ok((fixed, shape))
}

// ------------------------------------------------------------------------------------------------ frozen prefix

/// How tract runs a [`FrozenPrefix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// One optimised plan for any batch size (symbolic batch axis, or the file's own fixed batch). Tried first
    /// only for a file with a fixed batch or with [`OnnxModel::with_any_batch_plan_first`]; otherwise the
    /// fallback when no plan per sample can be made.
    Optimized,
    /// The plan optimised for one sample per run (or for the file's fixed batch), with tract's whole declutter
    /// pass list or, when `change_axes` is `false`, without its `ChangeAxes` pass. The default: on tract 0.23.9
    /// it is the fastest plan on every prefix measured (docs/benchmarks.md, session 33: EfficientNet-Lite0 28 ms
    /// per image instead of 148 ms with a symbolic batch axis, whose depthwise convolutions run 8× slower; the
    /// MNIST CNN base 0.12 ms instead of 0.19 ms at batch 1). On open_nsfw (a converted TensorFlow ResNet-50)
    /// it is the only optimised plan: with a symbolic batch tract's declutter fails ("Invalid axis" pulling a
    /// strided 1×1 shortcut convolution over a Reshape), with or without the loader's rewrites ([`Rewrites`]).
    /// Rewritten, it optimises per sample with every pass (`change_axes: true`, 25–29 ms per image on the
    /// 2-vCPU development VM). On the file's own nodes (`OnnxModel::with_rewrites(false)`) `ChangeAxes` fails at
    /// batch 1 (it removes the unit batch axis, then rejects a Conv bias of shape `[C, 1]`) and the plan without
    /// it runs 46–51 ms per image, still about 2× faster than the typed plan.
    OptimizedPerSample {
        /// Whether the `ChangeAxes` declutter pass ran.
        change_axes: bool,
    },
    /// None of those: the typed, unoptimised plan.
    Typed,
}

impl PlanKind {
    /// A few words for logs and reports.
    pub fn describe(self) -> &'static str {
        match self {
            PlanKind::Optimized => "optimised",
            PlanKind::OptimizedPerSample { change_axes: true } => "optimised per sample",
            PlanKind::OptimizedPerSample { change_axes: false } => "optimised per sample, without ChangeAxes",
            PlanKind::Typed => "typed, unoptimised (into_optimized fails)",
        }
    }
}

/// The frozen part of a loaded model, run by tract: an optimised plan when tract can optimise it (for any
/// batch, else per sample, [`PlanKind`]), the typed (unoptimised) plan otherwise.
#[derive(Clone)]
pub struct FrozenPrefix {
    plan: Arc<TypedRunnableModel>,
    /// The nodes and initializers of the original file up to the cut (re-export copies them).
    pub graph: PrefixGraph,
    input_shape: Vec<usize>,
    /// The batch size `plan` runs (`None`: any).
    batch: Option<usize>,
    kind: PlanKind,
    rewrites: Rewrites,
    /// onnxruntime's sessions of the same prefix, when it runs there ([`Engine::OnnxRuntime`]).
    ort: Option<Arc<OrtPrefix>>,
}

impl std::fmt::Debug for FrozenPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenPrefix")
            .field("input", &self.graph.input.name)
            .field("input_shape", &self.input_shape)
            .field("output", &self.graph.output)
            .field("feature_shape", &self.graph.output_shape)
            .field("nodes", &self.graph.nodes.len())
            .field("plan", &self.kind)
            .field("batch", &self.batch)
            .field("rewrites", &self.rewrites)
            .field("engine", &self.engine())
            .finish()
    }
}

fn tract_err(what: &str) -> impl Fn(tract_onnx::prelude::TractError) -> Error + '_ {
    move |e| Error::Tract(format!("{what}: {e:#}"))
}

/// Run `f`, turning a panic inside tract into [`Error::Tract`].
///
/// tract checks models as far as its inference rules go, but some malformed graphs make it index out of bounds or
/// unwrap while analysing or running them (the `onnx_load` fuzz target found such inputs). Files come from
/// outside, and a model that does not load must never take the learner down, so every call into tract goes
/// through here. [`check_window_attrs`] refuses the malformed attributes found so far before tract sees them, with
/// a clearer message; this guard is for the rest. (The panic message still reaches the panic hook, i.e. stderr.)
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Tract(format!("{what}: tract panicked: {msg}")))
        }
    }
}

/// Reject convolution and pooling nodes whose `kernel_shape`, `strides`, `dilations` and `pads` disagree on the
/// number of spatial axes (ONNX: `pads` has two entries per spatial axis, the others one): tract 0.23 indexes
/// these lists without checking their lengths and panics.
fn check_window_attrs(n: &pb::NodeProto, i: usize) -> Result<()> {
    const WINDOWED: [&str; 7] =
        ["Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"];
    if !WINDOWED.contains(&n.op_type.as_str()) {
        return Ok(());
    }
    // Attribute and values per spatial axis.
    const PER_AXIS: [(&str, usize); 5] =
        [("kernel_shape", 1), ("strides", 1), ("dilations", 1), ("pads", 2), ("output_padding", 1)];
    let mut rank = None;
    for (name, per_axis) in PER_AXIS {
        let Some(l) = attrs::ints(n, name).map(|v| v.len()) else { continue };
        if l % per_axis != 0 || rank.is_some_and(|r| r != l / per_axis) {
            return Err(Error::OnnxInvalid(format!(
                "node {}: kernel_shape, strides, dilations and pads disagree on the number of spatial axes \
                 ({name} has {l} values)",
                label(n, i)
            )));
        }
        rank = Some(l / per_axis);
    }
    Ok(())
}

/// A `Transpose` node's `perm`, when given, must be a permutation of `0..len` (each axis once). tract's axis
/// bookkeeping (`perm_to_cycles`) loops, allocating without bound, on a repeated axis such as `[0, 3, 1, 3]`
/// (found by the `onnx_load` fuzz target, docs/fuzzing.md): such a file is refused before tract sees it.
fn check_transpose_perm(n: &pb::NodeProto, i: usize) -> Result<()> {
    if n.op_type != "Transpose" {
        return Ok(());
    }
    let Some(perm) = attrs::ints(n, "perm") else { return Ok(()) };
    let mut seen = vec![false; perm.len()];
    for &a in &perm {
        match usize::try_from(a).ok().and_then(|a| seen.get_mut(a)) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(Error::OnnxInvalid(format!(
                    "node {}: Transpose perm {perm:?} is not a permutation of its axes",
                    label(n, i)
                )));
            }
        }
    }
    Ok(())
}

impl FrozenPrefix {
    fn build(file: &OnnxModel, idx: &GraphIndex<'_>, cut: &str) -> Result<Self> {
        let (proto, input_shape, fixed_batch) = (&file.proto, file.input_shape.as_slice(), file.fixed_batch);
        let input = file.input_info()?;
        let nodes = idx.ancestors(cut);
        for &i in &nodes {
            check_window_attrs(idx.node(i), i)?;
            check_transpose_perm(idx.node(i), i)?;
        }
        let mut graph = PrefixGraph {
            opset_import: proto.opset_import.clone(),
            ir_version: proto.ir_version,
            input: input.clone(),
            initializers: idx.initializers_of(&nodes).into_iter().cloned().collect(),
            nodes: nodes.iter().map(|&i| idx.node(i).clone()).collect(),
            output: cut.to_string(),
            output_shape: Vec::new(),
            input_spec: file.input_spec(),
        };
        // tract plans a rewritten copy (simplify.rs); `graph` keeps the file's nodes for re-export.
        let original = graph.to_model_proto();
        // The rewrites check what they read; should one still panic on a hostile graph, tract gets the original.
        let (prefix_proto, rewrites) = if file.rewrite {
            guarded("rewriting the frozen prefix", || Ok(simplify::for_tract(&original)))
                .unwrap_or_else(|_| (original.clone(), Rewrites::default()))
        } else {
            (original, Rewrites::default())
        };
        tracing::debug!("frozen prefix rewritten for tract: {}", rewrites.describe());
        let tract_nodes = prefix_proto.graph.as_ref().map_or(0, |g| g.node.len());
        let (plan, batch, kind) = guarded("loading the frozen prefix", || {
            let inference =
                tract_onnx::onnx().model_for_proto_model(&prefix_proto).map_err(tract_err("reading the prefix"))?;
            // The file's own fixed batch: the inference model already has concrete facts, so `into_optimized` plans
            // for that batch (then, below, the same without ChangeAxes).
            let any_batch = || -> std::result::Result<Arc<TypedRunnableModel>, tract_onnx::prelude::TractError> {
                inference.clone().into_optimized()?.into_runnable()
            };
            // One sample per call first only where no node mixes the samples of a batch (per_sample.rs): a
            // BatchNorm over batch statistics must see the batch. Where the check cannot tell (open_nsfw's padding
            // arithmetic gathers and concatenates shape vectors on axis 0), the plan for any batch is tried first
            // and the plan per sample is what is left when tract cannot make it, as before.
            let per_sample_first = fixed_batch.is_none() && per_sample::batch_independent(idx, &nodes);
            let any_first = file.any_batch_first || !per_sample_first;
            if any_first {
                match any_batch() {
                    Ok(plan) => return Ok((plan, fixed_batch, PlanKind::Optimized)),
                    Err(e) => tracing::debug!("no optimised plan for any batch size: {e:#}"),
                }
            }
            // Optimise for a concrete batch (the file's, else one sample per run), with or without ChangeAxes.
            // One sample per run is tract's fastest plan on every prefix measured (Lite0's depthwise convolutions
            // 5× faster than with a symbolic batch axis, the CNN base 1.6× at batch 1; docs/benchmarks.md).
            let b = fixed_batch.unwrap_or(1);
            let concrete = |change_axes: bool| -> Result<Arc<TypedRunnableModel>> {
                let mut shape = vec![b];
                shape.extend_from_slice(input_shape);
                let mut typed = inference
                    .clone()
                    .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
                    .and_then(|m| m.into_typed())
                    .map_err(tract_err("typing the prefix for a concrete batch"))?;
                let mut declutter = Optimizer::declutter();
                if !change_axes {
                    declutter.passes.retain(|p| format!("{p:?}") != "ChangeAxes");
                }
                declutter.session().optimize(&mut typed).map_err(tract_err("decluttering the prefix"))?;
                typed.optimize().map_err(tract_err("optimising the prefix"))?;
                typed.into_runnable().map_err(tract_err("planning the optimised prefix"))
            };
            // With the file's own fixed batch, the attempt above already had these concrete facts and the whole
            // pass list: only the attempt without ChangeAxes is new.
            let attempts: &[bool] = if fixed_batch.is_some() { &[false] } else { &[true, false] };
            for &change_axes in attempts {
                match concrete(change_axes) {
                    Ok(plan) => return Ok((plan, Some(b), PlanKind::OptimizedPerSample { change_axes })),
                    Err(e) => tracing::debug!("no optimised plan for batch {b} (ChangeAxes: {change_axes}): {e}"),
                }
            }
            if !any_first {
                match any_batch() {
                    Ok(plan) => return Ok((plan, fixed_batch, PlanKind::Optimized)),
                    Err(e) => tracing::debug!("no optimised plan for any batch size: {e:#}"),
                }
            }
            tracing::warn!("tract could not optimise the frozen prefix; running its typed, unoptimised plan");
            let typed = inference.into_typed().map_err(tract_err("typing the prefix"))?;
            let plan = typed.into_runnable().map_err(tract_err("planning the typed prefix"))?;
            Ok((plan, fixed_batch, PlanKind::Typed))
        })?;
        tracing::info!(cut, nodes = graph.nodes.len(), tract_nodes, plan = ?kind, "frozen prefix loaded in tract");
        let ort = match file.engine {
            Engine::Tract => None,
            Engine::OnnxRuntime => {
                let bytes = encode(&graph.to_model_proto());
                let sessions = edgelearn_core::threads::threads();
                let ort = guarded("loading the prefix in onnxruntime", || {
                    OrtPrefix::new(&bytes, &graph.input.name, sessions)
                })?;
                tracing::info!(cut, sessions, batch = ?batch, "frozen prefix runs in onnxruntime");
                Some(Arc::new(ort))
            }
        };
        let mut p = Self { plan, graph: graph.clone(), input_shape: input_shape.to_vec(), batch, kind, rewrites, ort };
        // Per-sample output shape: from the plan's output fact when it is concrete, else by a probe run.
        let fact_shape: Option<Vec<usize>> = p.plan.model().output_fact(0).ok().and_then(|f| {
            f.shape.dims().iter().skip(1).map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok())).collect()
        });
        graph.output_shape = match fact_shape {
            Some(s) if !s.is_empty() => s,
            _ => {
                let probe = Array2::<f32>::zeros((p.batch.unwrap_or(2), p.input_len()));
                let (_, shape) = p.run_raw(&probe.view())?;
                shape.get(1..).map(<[usize]>::to_vec).unwrap_or_default()
            }
        };
        if graph.output_shape.is_empty() {
            return Err(Error::OnnxUnsupported {
                op: "cut tensor".into(),
                node: cut.into(),
                reason: "the cut tensor must have a batch axis and at least one more".into(),
            });
        }
        p.graph = graph;
        Ok(p)
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Scalars per input sample.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Per-sample shape of the features (the cut tensor without its batch axis).
    pub fn feature_shape(&self) -> &[usize] {
        &self.graph.output_shape
    }

    /// Scalars per feature row.
    pub fn feature_len(&self) -> usize {
        self.graph.output_shape.iter().product()
    }

    /// Whether tract optimised the plan (`false`: it runs the typed plan after `into_optimized()` failed).
    pub fn is_optimized(&self) -> bool {
        self.kind != PlanKind::Typed
    }

    /// How tract runs this prefix.
    pub fn plan_kind(&self) -> PlanKind {
        self.kind
    }

    /// The engine the prefix runs in.
    pub fn engine(&self) -> Engine {
        if self.ort.is_some() { Engine::OnnxRuntime } else { Engine::Tract }
    }

    /// What the loader's graph rewrites changed before tract planned the prefix.
    pub fn rewrites(&self) -> Rewrites {
        self.rewrites
    }

    /// Run one tract call on `x (n, input_len)`; returns the flat output and its full shape. (One copy in, one
    /// copy out: contiguous input is handed to tract as a slice, the output is copied out as one slice.)
    fn run_raw(&self, x: &ArrayView2<'_, f32>) -> Result<(Vec<f32>, Vec<usize>)> {
        let mut shape = vec![x.nrows()];
        shape.extend_from_slice(&self.input_shape);
        let gathered;
        let data: &[f32] = match x.as_slice() {
            Some(s) => s,
            None => {
                gathered = x.iter().copied().collect::<Vec<f32>>();
                &gathered
            }
        };
        if let Some(ort) = &self.ort {
            return guarded("running the frozen prefix in onnxruntime", || ort.run(&shape, data));
        }
        guarded("running the frozen prefix", || {
            let t = Tensor::from_shape(&shape, data).map_err(tract_err("input tensor"))?;
            let out = self.plan.run(tvec!(t.into_tvalue())).map_err(tract_err("running the frozen prefix"))?;
            let first = out.first().ok_or_else(|| Error::Tract("the prefix produced no output".into()))?;
            let cast = first.cast_to::<f32>().map_err(tract_err("prefix output to f32"))?;
            let view = cast.to_plain_array_view::<f32>().map_err(tract_err("prefix output"))?;
            let flat = match view.as_slice() {
                Some(s) => s.to_vec(),
                None => view.iter().copied().collect(),
            };
            Ok((flat, cast.shape().to_vec()))
        })
    }

    /// Features of `x (n, input_len)`, shape `(n, feature_len)`, computed in one tract run (so operators that
    /// mix samples, such as batch-statistics normalisation, see the whole batch). A plan for a fixed batch size
    /// `b` (the file's, or one sample with [`PlanKind::OptimizedPerSample`]) is run in chunks of `b`, the last one
    /// padded with zero rows; the chunks run on the board's compute threads ([`edgelearn_core::threads`]), each
    /// writing its own rows, so the features do not depend on the thread count.
    pub fn run(&self, x: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.input_len() {
            return Err(shape_err("frozen prefix input", self.input_len(), x.ncols()));
        }
        let n = x.nrows();
        let f = self.feature_len();
        if n == 0 {
            return Ok(Array2::zeros((0, f)));
        }
        let out = match self.batch {
            None => self.run_rows(x, 0, n)?,
            Some(b) if n <= b => self.run_rows(x, 0, n)?,
            Some(b) => {
                let mut buf = vec![0.0f32; n * f];
                edgelearn_core::threads::for_each_chunk(&mut buf, b * f, |i, dst| {
                    let start = i * b;
                    let got = self.run_rows(x, start, (start + b).min(n))?;
                    let src = got.as_slice().ok_or_else(|| shape_err("prefix output", f, "a strided array"))?;
                    dst.copy_from_slice(&src[..dst.len()]);
                    Ok(())
                })?;
                Array2::from_shape_vec((n, f), buf).map_err(|e| shape_err("prefix output", f, e))?
            }
        };
        // On the contiguous buffer the scan vectorises; ndarray's element iterator does not.
        let bad = match out.as_slice() {
            Some(s) => s.iter().position(|v| !v.is_finite()),
            None => out.iter().position(|v| !v.is_finite()),
        };
        if let Some(i) = bad {
            return Err(Error::NonFinite(format!("frozen prefix output (flat index {i})")));
        }
        Ok(out)
    }

    /// Features of rows `start..end` of `x` in one tract run (at most the plan's batch; padded with zero rows to a
    /// fixed batch), shape `(end − start, feature_len)`.
    fn run_rows(&self, x: &ArrayView2<'_, f32>, start: usize, end: usize) -> Result<Array2<f32>> {
        let f = self.feature_len();
        let rows = x.slice(s![start..end, ..]);
        let padded;
        let input = match self.batch {
            Some(b) if end - start < b => {
                let mut p = Array2::<f32>::zeros((b, self.input_len()));
                p.slice_mut(s![..end - start, ..]).assign(&rows);
                padded = p;
                padded.view()
            }
            _ => rows,
        };
        let (data, shape) = self.run_raw(&input)?;
        if shape.first() != Some(&input.nrows()) || data.len() != input.nrows() * f {
            return Err(shape_err("frozen prefix output", (input.nrows(), &self.graph.output_shape), shape));
        }
        let got = Array2::from_shape_vec((input.nrows(), f), data).map_err(|e| shape_err("prefix output", f, e))?;
        Ok(if got.nrows() == end - start { got } else { got.slice(s![..end - start, ..]).to_owned() })
    }
}

// ------------------------------------------------------------------------------------------------ trainable part

/// One native layer read from the graph, before shapes are known.
#[derive(Debug, Clone)]
enum Spec {
    Linear { w: Array2<f32>, b: Option<Array1<f32>> },
    Conv { w: Array4<f32>, b: Option<Array1<f32>>, stride: usize, pad: usize },
    Relu,
    MaxPool { k: usize, s: usize },
    Flatten { width: Option<usize> },
    BatchNorm { gamma: Array1<f32>, beta: Array1<f32>, rank: Option<usize> },
}

/// The trainable chain after a cut, as read from the graph.
struct Suffix {
    trunk: Vec<(Spec, String)>,
    heads: Vec<Spec>,
}

impl Suffix {
    fn trainable_layers(&self) -> usize {
        let trunk = self
            .trunk
            .iter()
            .filter(|(s, _)| matches!(s, Spec::Linear { .. } | Spec::Conv { .. } | Spec::BatchNorm { .. }))
            .count();
        trunk + usize::from(!self.heads.is_empty())
    }

    /// Native layers for a per-sample input `shape`, checking every shape on the way.
    fn build(self, input_shape: Vec<usize>) -> Result<Model> {
        let mut shape = input_shape.clone();
        let mut trunk = Vec::with_capacity(self.trunk.len());
        for (i, (spec, node)) in self.trunk.into_iter().enumerate() {
            let name = format!("trunk.{i}");
            let ctx = |what: &str| format!("ONNX node {node} ({what})");
            let layer = match spec {
                Spec::Linear { w, b } => {
                    if shape != [w.ncols()] {
                        return Err(shape_err(&ctx("Gemm/MatMul input"), [w.ncols()], &shape));
                    }
                    shape = vec![w.nrows()];
                    Layer::Linear(Linear::from_weights(&name, w, b)?)
                }
                Spec::Conv { w, b, stride, pad } => {
                    let conv = Conv2d::from_weights(&name, w, b, stride, pad)?;
                    let &[c, h, wd] = shape.as_slice() else {
                        return Err(shape_err(&ctx("Conv input"), "(channels, h, w)", &shape));
                    };
                    if c != conv.in_channels() {
                        return Err(shape_err(&ctx("Conv channels"), conv.in_channels(), c));
                    }
                    let (oh, ow) = conv.output_size(h, wd)?;
                    shape = vec![conv.out_channels(), oh, ow];
                    Layer::Conv2d(conv)
                }
                Spec::Relu => Layer::Relu(Relu::default()),
                Spec::MaxPool { k, s } => {
                    let pool = MaxPool2d::new(k, s)?;
                    let &[c, h, w] = shape.as_slice() else {
                        return Err(shape_err(&ctx("MaxPool input"), "(channels, h, w)", &shape));
                    };
                    let (oh, ow) = pool.output_size(h, w)?;
                    shape = vec![c, oh, ow];
                    Layer::MaxPool2d(pool)
                }
                Spec::Flatten { width } => {
                    let w: usize = shape.iter().product();
                    if width.is_some_and(|x| x != w) {
                        return Err(shape_err(&ctx("Reshape to (batch, width)"), w, width));
                    }
                    shape = vec![w];
                    Layer::Flatten(Flatten::default())
                }
                Spec::BatchNorm { gamma, beta, rank } => {
                    let ok_rank = rank.is_none_or(|r| r == shape.len() + 1);
                    if !ok_rank || shape.first() != Some(&gamma.len()) || !matches!(shape.len(), 1 | 3) {
                        return Err(shape_err(&ctx("batch norm input"), ("channels", gamma.len()), &shape));
                    }
                    Layer::BatchNorm(BatchNorm::from_weights(&name, gamma, beta)?)
                }
            };
            trunk.push(layer);
        }
        let mut heads = Vec::with_capacity(self.heads.len());
        for (h, spec) in self.heads.into_iter().enumerate() {
            let Spec::Linear { w, b } = spec else {
                return Err(Error::OnnxInvalid("a head that is not a linear layer".into()));
            };
            if shape != [w.ncols()] {
                return Err(shape_err(&format!("ONNX head {h} input"), [w.ncols()], &shape));
            }
            heads.push(Linear::from_weights(&format!("head.{h}"), w, b)?);
        }
        if let Some(Layer::Conv2d(c)) = trunk.first_mut() {
            c.skip_input_grad = true; // nothing reads the gradient of the features
        }
        Model::new(input_shape, trunk, heads)
    }
}

fn unsupported(idx: &GraphIndex<'_>, i: usize, reason: impl Into<String>) -> Error {
    let n = idx.node(i);
    Error::OnnxUnsupported {
        op: n.op_type.clone(),
        node: if n.name.is_empty() { format!("#{i}") } else { n.name.clone() },
        reason: reason.into(),
    }
}

const SUPPORTED: &str = "trainable layers can be Gemm, MatMul (+Add bias), Conv, BatchNormalization (folded when it \
                         uses running statistics), the batch-statistics normalisation pattern this project exports, \
                         Relu, MaxPool, Flatten, Reshape to (batch, width), Identity, Dropout and Cast to float; cut \
                         after this node to keep it in the frozen prefix";

/// Read the chain of layers after tensor `cut` and check that the graph splits cleanly there.
fn plan_suffix(idx: &GraphIndex<'_>, cut: &str) -> Result<Suffix> {
    let mut p = SuffixParser { idx, used: BTreeSet::new(), consts: BTreeSet::new() };
    let suffix = p.parse(cut)?;
    // Every node must be frozen (an ancestor of the cut), trainable (read above), a constant of the trainable
    // part, or dead code.
    let frozen: BTreeSet<usize> = idx.ancestors(cut).into_iter().collect();
    for (i, n) in idx.g.node.iter().enumerate() {
        if frozen.contains(&i) || p.used.contains(&i) || p.consts.contains(&i) {
            continue;
        }
        let dead = n.output.iter().all(|o| o.is_empty() || (idx.consumers(o).is_empty() && !idx.is_output(o)));
        if dead {
            continue;
        }
        return Err(Error::OnnxCut(format!(
            "node {} is neither before the cut '{cut}' nor on the chain of layers after it (a branch across the cut?)",
            label(n, i)
        )));
    }
    Ok(suffix)
}

struct SuffixParser<'g, 'a> {
    idx: &'g GraphIndex<'a>,
    used: BTreeSet<usize>,
    consts: BTreeSet<usize>,
}

impl<'a> SuffixParser<'_, 'a> {
    /// Input `pos` of node `i`, which must be a constant: an initializer, or a `Constant` node (then counted as
    /// used by the suffix).
    fn const_input(&mut self, i: usize, pos: usize, what: &str) -> Result<&'a pb::TensorProto> {
        let n = self.idx.node(i);
        let name = n
            .input
            .get(pos)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unsupported(self.idx, i, format!("missing {what} input")))?;
        let (t, c) = self
            .idx
            .constant(name)
            .ok_or_else(|| unsupported(self.idx, i, format!("{what} '{name}' must be a constant (initializer)")))?;
        if let Some(c) = c {
            self.consts.insert(c);
        }
        Ok(t)
    }
}

impl SuffixParser<'_, '_> {
    fn parse(&mut self, cut: &str) -> Result<Suffix> {
        let idx = self.idx;
        let mut t = cut.to_string();
        let mut trunk: Vec<(Spec, String)> = Vec::new();
        for _ in 0..=idx.g.node.len() {
            let cons = idx.consumers(&t).to_vec();
            if cons.is_empty() {
                if !idx.is_output(&t) {
                    return Err(Error::OnnxCut(format!("nothing reads tensor '{t}' and it is not a graph output")));
                }
                if t == cut {
                    return Err(Error::OnnxCut(format!("'{cut}' is a graph output: nothing after it to train")));
                }
                return match trunk.pop() {
                    Some((head @ Spec::Linear { .. }, _)) => {
                        self.check_outputs(&[t.clone()])?;
                        Ok(Suffix { trunk, heads: vec![head] })
                    }
                    Some((_, node)) => Err(Error::OnnxUnsupported {
                        op: "graph output".into(),
                        node,
                        reason: format!(
                            "output '{t}' is not produced by a Gemm/MatMul head: the trainable layers must end in \
                             linear head(s) giving logits"
                        ),
                    }),
                    None => Err(Error::OnnxCut(format!("no layer between the cut and output '{t}'"))),
                };
            }
            if idx.is_output(&t) {
                return Err(Error::OnnxUnsupported {
                    op: "graph output".into(),
                    node: t.clone(),
                    reason: "a graph output that other nodes also read cannot be part of the trainable layers".into(),
                });
            }
            if let [i] = cons.as_slice() {
                let i = *i;
                self.check_data_input(i, &t)?;
                let n = idx.node(i);
                let out = self.single_output(i)?;
                let node_name = label(n, i);
                match n.op_type.as_str() {
                    "Gemm" => trunk.push((self.gemm(i)?, node_name)),
                    "MatMul" => {
                        let (spec, o) = self.matmul(i)?;
                        trunk.push((spec, node_name));
                        self.used.insert(i);
                        t = o;
                        continue;
                    }
                    "Conv" => trunk.push((self.conv(i)?, node_name)),
                    "Relu" => {
                        self.only_inputs(i, 1)?;
                        trunk.push((Spec::Relu, node_name));
                    }
                    "MaxPool" => trunk.push((self.maxpool(i)?, node_name)),
                    "Flatten" => {
                        self.only_inputs(i, 1)?;
                        if attrs::int(n, "axis", 1) != 1 {
                            return Err(unsupported(idx, i, "only Flatten(axis = 1) is supported"));
                        }
                        trunk.push((Spec::Flatten { width: None }, node_name));
                    }
                    "Reshape" => trunk.push((self.reshape(i)?, node_name)),
                    "Identity" => self.only_inputs(i, 1)?,
                    "Dropout" => {
                        if n.input.get(2).is_some_and(|s| !s.is_empty()) {
                            return Err(unsupported(idx, i, "Dropout with a training_mode input"));
                        }
                        self.extra_outputs_unused(i)?;
                    }
                    "Cast" => {
                        self.only_inputs(i, 1)?;
                        if attrs::int(n, "to", 0) != pb::tensor_proto::DataType::Float as i64 {
                            return Err(unsupported(
                                idx,
                                i,
                                "only casts to float32 can be part of the trainable layers",
                            ));
                        }
                    }
                    "BatchNormalization" => {
                        if let Some(spec) = self.batch_norm_node(i, &mut trunk)? {
                            trunk.push((spec, node_name));
                        }
                    }
                    _ => return Err(unsupported(idx, i, SUPPORTED)),
                }
                self.used.insert(i);
                t = out;
                continue;
            }
            if let Some((spec, out, node)) = self.bn_pattern(&t, &cons)? {
                trunk.push((spec, node));
                t = out;
                continue;
            }
            // Several readers: the heads, each a linear layer straight to a graph output.
            let mut heads = Vec::with_capacity(cons.len());
            let mut outs = Vec::with_capacity(cons.len());
            for &i in &cons {
                self.check_data_input(i, &t)?;
                let n = idx.node(i);
                let (spec, o) = match n.op_type.as_str() {
                    "Gemm" => (self.gemm(i)?, self.single_output(i)?),
                    "MatMul" => self.matmul(i)?,
                    _ => {
                        return Err(unsupported(
                            idx,
                            i,
                            format!("tensor '{t}' has several readers, which is only supported for linear heads"),
                        ));
                    }
                };
                if !idx.is_output(&o) || !idx.consumers(&o).is_empty() {
                    return Err(unsupported(
                        idx,
                        i,
                        format!("head output '{o}' must be a graph output read by nothing else"),
                    ));
                }
                self.used.insert(i);
                heads.push((o.clone(), spec));
                outs.push(o);
            }
            self.check_outputs(&outs)?;
            // Heads in the order of the graph outputs.
            heads.sort_by_key(|(o, _)| idx.outputs.iter().position(|x| x == o));
            return Ok(Suffix { trunk, heads: heads.into_iter().map(|(_, s)| s).collect() });
        }
        Err(Error::OnnxInvalid("the layer chain after the cut does not end".into()))
    }

    /// The heads must produce every graph output.
    fn check_outputs(&self, outs: &[String]) -> Result<()> {
        for o in &self.idx.outputs {
            if !outs.iter().any(|x| x == o) {
                return Err(Error::OnnxCut(format!("graph output '{o}' is not computed by the layers after the cut")));
            }
        }
        Ok(())
    }

    /// Node `i` must read `t` as its first input (its data input).
    fn check_data_input(&self, i: usize, t: &str) -> Result<()> {
        let n = self.idx.node(i);
        if n.input.first().map(String::as_str) != Some(t) || n.input.iter().skip(1).any(|x| x == t) {
            return Err(unsupported(self.idx, i, format!("tensor '{t}' must be the node's first and only data input")));
        }
        Ok(())
    }

    fn single_output(&self, i: usize) -> Result<String> {
        let n = self.idx.node(i);
        match n.output.first() {
            Some(o) if !o.is_empty() => Ok(o.clone()),
            _ => Err(Error::OnnxInvalid(format!("node {} has no output", label(n, i)))),
        }
    }

    fn extra_outputs_unused(&self, i: usize) -> Result<()> {
        let n = self.idx.node(i);
        if n.output
            .iter()
            .skip(1)
            .any(|o| !o.is_empty() && (!self.idx.consumers(o).is_empty() || self.idx.is_output(o)))
        {
            return Err(unsupported(self.idx, i, "only the first output of this node may be used"));
        }
        Ok(())
    }

    fn only_inputs(&self, i: usize, k: usize) -> Result<()> {
        let n = self.idx.node(i);
        if n.input.iter().filter(|s| !s.is_empty()).count() != k {
            return Err(unsupported(self.idx, i, format!("expected {k} input(s)")));
        }
        self.extra_outputs_unused(i)
    }

    /// A constant input of node `i` (initializer or `Constant` node) as `f32`.
    fn const_f32(&mut self, i: usize, pos: usize, what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        read_f32(self.const_input(i, pos, what)?)
    }

    fn const_i64(&mut self, i: usize, pos: usize, what: &str) -> Result<Vec<i64>> {
        Ok(read_i64(self.const_input(i, pos, what)?)?.1)
    }

    /// An optional bias input of length `out` (a scalar is broadcast), times `scale`.
    fn bias(&mut self, i: usize, pos: usize, out: usize, scale: f32) -> Result<Option<Array1<f32>>> {
        if self.idx.node(i).input.get(pos).is_none_or(String::is_empty) {
            return Ok(None);
        }
        let (_, v) = self.const_f32(i, pos, "bias")?;
        let v = match v.len() {
            l if l == out => v,
            1 => vec![v[0]; out],
            l => return Err(unsupported(self.idx, i, format!("bias of {l} values for {out} outputs"))),
        };
        Ok(Some(Array1::from_iter(v.into_iter().map(|x| x * scale))))
    }

    fn gemm(&mut self, i: usize) -> Result<Spec> {
        let n = self.idx.node(i);
        self.extra_outputs_unused(i)?;
        if attrs::int(n, "transA", 0) != 0 {
            return Err(unsupported(self.idx, i, "Gemm with transA = 1"));
        }
        let (alpha, beta, trans_b) =
            (attrs::float(n, "alpha", 1.0), attrs::float(n, "beta", 1.0), attrs::int(n, "transB", 0));
        let (dims, v) = self.const_f32(i, 1, "weight")?;
        let &[r, c] = dims.as_slice() else {
            return Err(unsupported(self.idx, i, format!("weight of shape {dims:?}, 2-D expected")));
        };
        let b = Array2::from_shape_vec((r, c), v).map_err(|e| shape_err("Gemm weight", (r, c), e))?;
        let w = if trans_b != 0 { b } else { b.t().as_standard_layout().into_owned() };
        let w = w.mapv(|x| x * alpha);
        let bias = self.bias(i, 2, w.nrows(), beta)?;
        Ok(Spec::Linear { w, b: bias })
    }

    /// `MatMul(x, B)` with a constant `(in, out)` `B`, plus a directly following `Add` of a constant bias when
    /// there is one. Returns the layer and its output tensor.
    fn matmul(&mut self, i: usize) -> Result<(Spec, String)> {
        self.only_inputs(i, 2)?;
        let (dims, v) = self.const_f32(i, 1, "weight")?;
        let &[r, c] = dims.as_slice() else {
            return Err(unsupported(self.idx, i, format!("weight of shape {dims:?}, 2-D expected")));
        };
        let b = Array2::from_shape_vec((r, c), v).map_err(|e| shape_err("MatMul weight", (r, c), e))?;
        let w = b.t().as_standard_layout().into_owned();
        let out = self.single_output(i)?;
        // The bias may follow through casts to float / identities (as in PyTorch exports with autocast).
        let mut through = Vec::new();
        let mut cur = out.clone();
        while let [c] = self.idx.consumers(&cur)
            && !self.idx.is_output(&cur)
            && through.len() < 8
        {
            let n = self.idx.node(*c);
            let passthrough = (n.op_type == "Identity"
                || (n.op_type == "Cast" && attrs::int(n, "to", 0) == pb::tensor_proto::DataType::Float as i64))
                && n.input.len() == 1;
            if !passthrough {
                break;
            }
            through.push(*c);
            cur = self.single_output(*c)?;
        }
        if let [a] = self.idx.consumers(&cur)
            && !self.idx.is_output(&cur)
        {
            let a = *a;
            let n = self.idx.node(a);
            if n.op_type == "Add" && n.input.len() == 2 {
                let other = if n.input[0] == cur { 1 } else { 0 };
                if n.input[1 - other] == cur && self.idx.is_constant(&n.input[other]) {
                    let bias = self.bias(a, other, w.nrows(), 1.0)?;
                    self.used.insert(a);
                    self.used.extend(through);
                    return Ok((Spec::Linear { w, b: bias }, self.single_output(a)?));
                }
            }
        }
        Ok((Spec::Linear { w, b: None }, out))
    }

    fn conv(&mut self, i: usize) -> Result<Spec> {
        let n = self.idx.node(i);
        self.extra_outputs_unused(i)?;
        let (dims, v) = self.const_f32(i, 1, "weight")?;
        let &[o, c, kh, kw] = dims.as_slice() else {
            return Err(unsupported(
                self.idx,
                i,
                format!("weight of shape {dims:?}: only 2-D convolutions are supported"),
            ));
        };
        if attrs::int(n, "group", 1) != 1 {
            return Err(unsupported(self.idx, i, "grouped convolution"));
        }
        if attrs::ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(unsupported(self.idx, i, "dilated convolution"));
        }
        if let Some(k) = attrs::ints(n, "kernel_shape")
            && k != [kh as i64, kw as i64]
        {
            return Err(unsupported(self.idx, i, format!("kernel_shape {k:?} does not match the weight {dims:?}")));
        }
        let stride = square(self.idx, i, attrs::ints(n, "strides"), 1, "strides")?;
        let pad = self.pads(i)?;
        let w = Array4::from_shape_vec((o, c, kh, kw), v).map_err(|e| shape_err("Conv weight", (o, c, kh, kw), e))?;
        let b = self.bias(i, 2, o, 1.0)?;
        Ok(Spec::Conv { w, b, stride, pad })
    }

    /// Symmetric, equal padding on every side (explicit `pads` or `auto_pad = VALID`).
    fn pads(&self, i: usize) -> Result<usize> {
        let n = self.idx.node(i);
        match attrs::string(n, "auto_pad").as_deref() {
            None | Some("") | Some("NOTSET") => {}
            Some("VALID") => return Ok(0),
            Some(other) => return Err(unsupported(self.idx, i, format!("auto_pad = {other}"))),
        }
        match attrs::ints(n, "pads") {
            None => Ok(0),
            Some(p) if p.len() == 4 && p.iter().all(|&x| x == p[0]) && p[0] >= 0 => Ok(p[0] as usize),
            Some(p) => {
                Err(unsupported(self.idx, i, format!("pads {p:?}: only equal padding on all sides is supported")))
            }
        }
    }

    fn maxpool(&mut self, i: usize) -> Result<Spec> {
        let n = self.idx.node(i);
        self.only_inputs(i, 1)?;
        let k = square(self.idx, i, attrs::ints(n, "kernel_shape"), 0, "kernel_shape")?;
        let s = square(self.idx, i, attrs::ints(n, "strides"), 1, "strides")?;
        if k == 0 {
            return Err(unsupported(self.idx, i, "MaxPool without kernel_shape"));
        }
        if self.pads(i)? != 0 || attrs::int(n, "ceil_mode", 0) != 0 {
            return Err(unsupported(self.idx, i, "padded or ceil-mode pooling"));
        }
        if attrs::ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(unsupported(self.idx, i, "dilated pooling"));
        }
        Ok(Spec::MaxPool { k, s })
    }

    fn reshape(&mut self, i: usize) -> Result<Spec> {
        self.only_inputs(i, 2)?;
        let shape = self.const_i64(i, 1, "shape")?;
        match shape.as_slice() {
            [0 | -1, -1] => Ok(Spec::Flatten { width: None }),
            [0 | -1, w] if *w > 0 => Ok(Spec::Flatten { width: Some(*w as usize) }),
            _ => Err(unsupported(
                self.idx,
                i,
                format!("Reshape to {shape:?}: only (batch, width) flattening is supported"),
            )),
        }
    }

    /// `BatchNormalization`: batch statistics (`training_mode = 1`) become a native batch norm; running
    /// statistics are folded into the preceding Gemm/MatMul/Conv (exact at inference).
    fn batch_norm_node(&mut self, i: usize, trunk: &mut [(Spec, String)]) -> Result<Option<Spec>> {
        let n = self.idx.node(i);
        self.extra_outputs_unused(i)?;
        let eps = attrs::float(n, "epsilon", 1e-5);
        let (_, gamma) = self.const_f32(i, 1, "scale")?;
        let (_, beta) = self.const_f32(i, 2, "B")?;
        if gamma.len() != beta.len() {
            return Err(unsupported(self.idx, i, "scale and B lengths differ"));
        }
        if attrs::int(n, "training_mode", 0) != 0 {
            if (eps - BATCH_NORM_EPS).abs() > 1e-9 {
                return Err(unsupported(self.idx, i, format!("epsilon {eps}: the native layer uses {BATCH_NORM_EPS}")));
            }
            return Ok(Some(Spec::BatchNorm { gamma: Array1::from(gamma), beta: Array1::from(beta), rank: None }));
        }
        let (_, mean) = self.const_f32(i, 3, "mean")?;
        let (_, var) = self.const_f32(i, 4, "var")?;
        if mean.len() != gamma.len() || var.len() != gamma.len() {
            return Err(unsupported(self.idx, i, "mean/var lengths differ from scale"));
        }
        let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
        let shift: Vec<f32> = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        match trunk.last_mut().map(|(s, _)| s) {
            Some(Spec::Linear { w, b }) if w.nrows() == scale.len() => {
                for (mut row, &s) in w.axis_iter_mut(Axis(0)).zip(&scale) {
                    row.mapv_inplace(|x| x * s);
                }
                let old = b.take().unwrap_or_else(|| Array1::zeros(scale.len()));
                *b = Some(Array1::from_iter(old.iter().zip(&scale).zip(&shift).map(|((o, s), t)| o * s + t)));
                Ok(None)
            }
            Some(Spec::Conv { w, b, .. }) if w.shape()[0] == scale.len() => {
                for (mut f, &s) in w.axis_iter_mut(Axis(0)).zip(&scale) {
                    f.mapv_inplace(|x| x * s);
                }
                let old = b.take().unwrap_or_else(|| Array1::zeros(scale.len()));
                *b = Some(Array1::from_iter(old.iter().zip(&scale).zip(&shift).map(|((o, s), t)| o * s + t)));
                Ok(None)
            }
            _ => Err(unsupported(
                self.idx,
                i,
                "BatchNormalization with running statistics can only be folded into a Gemm/MatMul/Conv right before \
                 it; cut after it to keep it frozen",
            )),
        }
    }

    /// The batch-statistics normalisation this project exports (see the module docs), starting at tensor `x`
    /// read by `cons`. `None` when `cons` is not its start.
    fn bn_pattern(&mut self, x: &str, cons: &[usize]) -> Result<Option<(Spec, String, String)>> {
        let idx = self.idx;
        let &[a, b] = cons else { return Ok(None) };
        let (r1, sub) = match (idx.node(a).op_type.as_str(), idx.node(b).op_type.as_str()) {
            ("ReduceMean", "Sub") => (a, b),
            ("Sub", "ReduceMean") => (b, a),
            _ => return Ok(None),
        };
        let fail =
            |i: usize, why: &str| unsupported(idx, i, format!("not the batch-statistics normalisation pattern: {why}"));
        let axes = self.reduce_axes(r1)?;
        let mean = self.single_output(r1)?;
        if idx.node(r1).input.first().map(String::as_str) != Some(x) || idx.consumers(&mean) != [sub] {
            return Err(fail(r1, "the mean must be read by the Sub only"));
        }
        if idx.node(sub).input != [x.to_string(), mean.clone()] {
            return Err(fail(sub, "expected Sub(x, mean)"));
        }
        let d = self.single_output(sub)?;
        let dc = idx.consumers(&d);
        let (sq, div) = match dc {
            [p, q] if idx.node(*p).op_type == "Mul" && idx.node(*q).op_type == "Div" => (*p, *q),
            [p, q] if idx.node(*p).op_type == "Div" && idx.node(*q).op_type == "Mul" => (*q, *p),
            _ => return Err(fail(sub, "x − mean must be read by one Mul (square) and one Div")),
        };
        if idx.node(sq).input != [d.clone(), d.clone()] {
            return Err(fail(sq, "expected Mul(d, d)"));
        }
        let r2 = self.next(sq, "ReduceMean")?;
        if self.reduce_axes(r2)? != axes {
            return Err(fail(r2, "the variance must reduce the same axes as the mean"));
        }
        let add_eps = self.next(r2, "Add")?;
        let eps_pos = self.other_input(add_eps, &self.single_output(r2)?)?;
        let (_, eps) = self.const_f32(add_eps, eps_pos, "epsilon")?;
        if eps.len() != 1 || (eps[0] - BATCH_NORM_EPS).abs() > 1e-9 {
            return Err(fail(add_eps, &format!("epsilon {eps:?}: the native layer uses {BATCH_NORM_EPS}")));
        }
        let sqrt = self.next(add_eps, "Sqrt")?;
        if self.next(sqrt, "Div")? != div || idx.node(div).input != [d.clone(), self.single_output(sqrt)?] {
            return Err(fail(div, "expected Div(d, sqrt(var + eps))"));
        }
        let mul = self.next(div, "Mul")?;
        let gpos = self.other_input(mul, &self.single_output(div)?)?;
        let (_, gamma) = self.const_f32(mul, gpos, "scale")?;
        let add = self.next(mul, "Add")?;
        let bpos = self.other_input(add, &self.single_output(mul)?)?;
        let (_, beta) = self.const_f32(add, bpos, "shift")?;
        if gamma.len() != beta.len() {
            return Err(fail(add, "scale and shift lengths differ"));
        }
        let rank = match axes.as_slice() {
            [0] => 2,
            [0, 2, 3] => 4,
            _ => return Err(fail(r1, &format!("axes {axes:?}: [0] or [0, 2, 3] expected"))),
        };
        let out = self.single_output(add)?;
        for n in [r1, sub, sq, r2, add_eps, sqrt, div, mul, add] {
            self.extra_outputs_unused(n)?;
            self.used.insert(n);
        }
        let spec = Spec::BatchNorm { gamma: Array1::from(gamma), beta: Array1::from(beta), rank: Some(rank) };
        Ok(Some((spec, out, label(idx.node(r1), r1))))
    }

    /// The only reader of node `i`'s output, which must be an `op` node (and not a graph output).
    fn next(&self, i: usize, op: &str) -> Result<usize> {
        let out = self.single_output(i)?;
        match self.idx.consumers(&out) {
            [c] if self.idx.node(*c).op_type == op && !self.idx.is_output(&out) => Ok(*c),
            _ => Err(unsupported(
                self.idx,
                i,
                format!("not the batch-statistics normalisation pattern: its output should go to one {op} only"),
            )),
        }
    }

    /// Position of the input of binary node `i` that is not `t` (which must be the other one).
    fn other_input(&self, i: usize, t: &str) -> Result<usize> {
        let n = self.idx.node(i);
        match n.input.as_slice() {
            [a, _] if a == t => Ok(1),
            [_, b] if b == t => Ok(0),
            _ => Err(unsupported(self.idx, i, format!("expected two inputs, one of them '{t}'"))),
        }
    }

    fn reduce_axes(&mut self, i: usize) -> Result<Vec<i64>> {
        let n = self.idx.node(i);
        if attrs::int(n, "keepdims", 1) != 1 {
            return Err(unsupported(self.idx, i, "ReduceMean without keepdims"));
        }
        match attrs::ints(n, "axes") {
            Some(a) => Ok(a),
            None if n.input.len() >= 2 => self.const_i64(i, 1, "axes"),
            None => Err(unsupported(self.idx, i, "ReduceMean over all axes")),
        }
    }
}

fn square(idx: &GraphIndex<'_>, i: usize, v: Option<Vec<i64>>, default: usize, what: &str) -> Result<usize> {
    match v.as_deref() {
        None => Ok(default),
        Some([a, b]) if a == b && *a >= 1 && *a <= 1 << 16 => Ok(*a as usize),
        Some(other) => {
            Err(unsupported(idx, i, format!("{what} {other:?}: only equal values on both axes are supported")))
        }
    }
}

// ------------------------------------------------------------------------------------------------ device model

/// The graph input and operator sets of a file loaded without a frozen prefix (kept for re-export).
#[derive(Debug, Clone)]
struct Frame {
    input: pb::ValueInfoProto,
    opset_import: Vec<pb::OperatorSetIdProto>,
    ir_version: i64,
    input_spec: Option<String>,
}

/// What the device runs: an optional frozen prefix (tract) followed by the native trainable [`Model`].
///
/// Samples can be pushed through the prefix once ([`DeviceModel::features`]) and the cached features used as
/// the trainable model's input for every epoch, every Fisher pass and every evaluation.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    /// The frozen part (none when everything is trainable).
    pub prefix: Option<FrozenPrefix>,
    /// The trainable part; its `input_shape` is the prefix's feature shape.
    pub trainable: Model,
    frame: Option<Frame>,
}

impl DeviceModel {
    /// Put `trainable` behind `prefix` (its `input_shape` must be the prefix's feature shape).
    pub fn new(prefix: Option<FrozenPrefix>, trainable: Model) -> Result<Self> {
        Self::assemble(prefix, trainable, None)
    }

    fn assemble(prefix: Option<FrozenPrefix>, trainable: Model, frame: Option<Frame>) -> Result<Self> {
        if let Some(p) = &prefix
            && p.feature_shape() != trainable.input_shape.as_slice()
        {
            return Err(shape_err("trainable input vs prefix features", p.feature_shape(), &trainable.input_shape));
        }
        Ok(Self { prefix, trainable, frame })
    }

    /// Scalars per raw input sample.
    pub fn input_len(&self) -> usize {
        self.prefix.as_ref().map_or_else(|| self.trainable.input_len(), FrozenPrefix::input_len)
    }

    /// Features of raw samples `x (n, input_len)` (the prefix's output; `x` itself without a prefix), computed
    /// in one prefix run.
    pub fn features(&self, x: &ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        match &self.prefix {
            Some(p) => p.run(x),
            None if x.ncols() == self.trainable.input_len() => Ok(x.to_owned()),
            None => Err(shape_err("device model input", self.trainable.input_len(), x.ncols())),
        }
    }

    /// Features of many samples, computed `batch` rows at a time (bounded memory; with batch-statistics layers in
    /// the prefix each chunk is normalised on its own).
    pub fn features_batched(&self, x: &ArrayView2<'_, f32>, batch: usize) -> Result<Array2<f32>> {
        let batch = batch.max(1);
        if x.nrows() <= batch {
            return self.features(x);
        }
        let mut parts = Vec::new();
        for start in (0..x.nrows()).step_by(batch) {
            let end = (start + batch).min(x.nrows());
            parts.push(self.features(&x.slice(s![start..end, ..]))?);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| shape_err("features", x.nrows(), e))
    }

    /// Logits of head `head` for raw samples (evaluation mode; prefix and trainable part see the whole batch).
    pub fn forward(&mut self, x: &ArrayView2<'_, f32>, head: usize) -> Result<Array2<f32>> {
        let f = self.features(x)?;
        let y = self.trainable.forward(&f.view(), head, Mode::Eval)?;
        self.trainable.clear_cache();
        Ok(y)
    }

    /// Logits of every head for raw samples (one prefix run), in head order.
    pub fn forward_all(&mut self, x: &ArrayView2<'_, f32>) -> Result<Vec<Array2<f32>>> {
        let f = self.features(x)?;
        let mut out = Vec::with_capacity(self.trainable.heads.len());
        for h in 0..self.trainable.heads.len() {
            out.push(self.trainable.forward(&f.view(), h, Mode::Eval)?);
        }
        self.trainable.clear_cache();
        Ok(out)
    }

    /// Append a new linear head with `classes` outputs (PyTorch initialisation, with bias); returns its index.
    pub fn add_head(&mut self, classes: usize, rng: &mut impl Rng) -> Result<usize> {
        if classes == 0 {
            return Err(Error::Config("a head needs at least one class".into()));
        }
        let h = self.trainable.heads.len();
        let width = self.trainable.heads.first().map_or_else(|| self.trainable.input_len(), Linear::in_features);
        self.trainable.heads.push(Linear::new(&format!("head.{h}"), width, classes, true, rng));
        Ok(h)
    }

    /// The model as ONNX: the frozen prefix's original nodes and initializers unchanged, then the trainable
    /// layers with their current weights (see the [module docs](super)).
    pub fn to_onnx(&self) -> Result<pb::ModelProto> {
        match (&self.prefix, &self.frame) {
            (Some(p), _) => model_to_proto(&self.trainable, Some(&p.graph)),
            (None, Some(f)) => {
                let frame = PrefixGraph {
                    opset_import: f.opset_import.clone(),
                    ir_version: f.ir_version,
                    input: f.input.clone(),
                    nodes: Vec::new(),
                    initializers: Vec::new(),
                    output: f.input.name.clone(),
                    output_shape: self.trainable.input_shape.clone(),
                    input_spec: f.input_spec.clone(),
                };
                model_to_proto(&self.trainable, Some(&frame))
            }
            (None, None) => model_to_proto(&self.trainable, None),
        }
    }

    /// [`DeviceModel::to_onnx`], serialised.
    pub fn to_onnx_bytes(&self) -> Result<Vec<u8>> {
        Ok(encode(&self.to_onnx()?))
    }

    /// Write [`DeviceModel::to_onnx`] to `path` durably ([`edgelearn_store::write_durable`]: a temporary file, fsync
    /// and a rename, so a crash never leaves a half-written model).
    pub fn write_onnx(&self, path: &Path) -> Result<()> {
        edgelearn_store::write_durable(path, &self.to_onnx_bytes()?)
    }
}
