//! [`Model`] → ONNX (`ModelProto`), optionally behind a frozen prefix copied from another ONNX graph.

use std::collections::HashSet;

use prost::Message;

use super::{
    BATCH_AXIS, INPUT_NAME, IR_VERSION, OPSET, OPSETS, PRODUCER, attr, batch_value_info, f32_tensor, i64_tensor,
    output_name, pb,
};
use edgelearn_core::error::{Error, Result, shape_err};
use edgelearn_core::nn::{BATCH_NORM_EPS, BatchNorm, Conv2d, Layer, Linear, MaxPool2d, Model};

/// The frozen part of a loaded ONNX graph, kept verbatim so that a re-export can put it back in front of the
/// trainable layers: every node and initializer needed to compute the cut tensor, in a valid order.
#[derive(Debug, Clone)]
pub struct PrefixGraph {
    /// Operator sets of the original file.
    pub opset_import: Vec<pb::OperatorSetIdProto>,
    /// IR version of the original file.
    pub ir_version: i64,
    /// The graph input the prefix reads (the original file's).
    pub input: pb::ValueInfoProto,
    /// The nodes computing the cut tensor, topologically ordered.
    pub nodes: Vec<pb::NodeProto>,
    /// The initializers those nodes read.
    pub initializers: Vec<pb::TensorProto>,
    /// Name of the cut tensor: the prefix's output, the trainable layers' input.
    pub output: String,
    /// Per-sample shape of the cut tensor (without the batch axis).
    pub output_shape: Vec<usize>,
    /// The original file's preprocessing spec ([`INPUT_SPEC_KEY`] metadata), carried into every re-export: the
    /// file's input is still the same photo tensor.
    pub input_spec: Option<String>,
}

/// The ONNX metadata key that holds a model's preprocessing spec (how a photo becomes its input; the firmware's
/// `inbox::SPEC_METADATA_KEY`).
pub const INPUT_SPEC_KEY: &str = "edgelearn.preprocess";

impl PrefixGraph {
    /// Default-domain operator set version of the original file (0 when it declares none).
    pub fn opset(&self) -> i64 {
        default_opset(&self.opset_import)
    }

    /// A standalone model computing only the cut tensor (what tract runs).
    pub fn to_model_proto(&self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: self.ir_version,
            opset_import: self.opset_import.clone(),
            producer_name: PRODUCER.into(),
            graph: Some(pb::GraphProto {
                name: "frozen_prefix".into(),
                node: self.nodes.clone(),
                initializer: self.initializers.clone(),
                input: vec![self.input.clone()],
                output: vec![pb::ValueInfoProto {
                    name: self.output.clone(),
                    r#type: Some(super::f32_type(None)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(&self) -> HashSet<String> {
        let mut names: HashSet<String> = HashSet::new();
        names.insert(self.input.name.clone());
        for n in &self.nodes {
            names.insert(n.name.clone());
            names.extend(n.output.iter().cloned());
            names.extend(n.input.iter().cloned());
        }
        names.extend(self.initializers.iter().map(|t| t.name.clone()));
        names
    }
}

/// Version of the default-domain (`""` / `ai.onnx`) operator set in an import list, 0 when absent.
pub(crate) fn default_opset(imports: &[pb::OperatorSetIdProto]) -> i64 {
    imports.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version)
}

/// Serialise a model proto (protobuf wire format).
pub fn encode(proto: &pb::ModelProto) -> Vec<u8> {
    proto.encode_to_vec()
}

/// Build the ONNX model of `model` (see the [module docs](super) for the format).
///
/// Without a prefix the graph reads [`INPUT_NAME`] `f32 [N, …model.input_shape]`. With a prefix, the prefix's
/// nodes and initializers come first, unchanged, and the trainable layers read its output tensor (whose
/// per-sample shape must be `model.input_shape`); the file keeps the prefix's input and operator sets.
pub fn model_to_proto(model: &Model, prefix: Option<&PrefixGraph>) -> Result<pb::ModelProto> {
    let opset = prefix.map_or(OPSET, PrefixGraph::opset);
    if !OPSETS.contains(&opset) {
        return Err(Error::OnnxUnsupported {
            op: format!("opset {opset}"),
            node: "opset_import".into(),
            reason: format!("operator sets {}..={} are supported", OPSETS.start(), OPSETS.end()),
        });
    }
    if let Some(p) = prefix
        && p.output_shape != model.input_shape
    {
        return Err(shape_err("ONNX export: prefix output vs trainable input", &model.input_shape, &p.output_shape));
    }
    let taken = prefix.map(PrefixGraph::names).unwrap_or_default();
    let mut ns = String::new();
    let mut attempt = 0;
    let (mut builder, outputs) = loop {
        let mut b = Builder { ns: ns.clone(), out_ns: String::new(), opset, nodes: Vec::new(), inits: Vec::new() };
        // Output names stay `logits…` unless the prefix already uses them.
        let heads = model.heads.len();
        let mut k = 0;
        while (0..heads).any(|h| taken.contains(&format!("{}{}", b.out_ns, output_name(heads, h)))) && k < 64 {
            k += 1;
            b.out_ns = format!("edgelearn_out{k}/");
        }
        let outputs = b.emit(model, prefix.map_or(INPUT_NAME, |p| p.output.as_str()))?;
        let clash = b
            .inits
            .iter()
            .map(|t| &t.name)
            .chain(b.nodes.iter().flat_map(|n| n.output.iter().chain([&n.name])))
            .any(|n| taken.contains(n));
        if !clash {
            break (b, outputs);
        }
        attempt += 1;
        if attempt > 64 {
            return Err(Error::OnnxInvalid("the prefix uses every name the trainable layers could take".into()));
        }
        ns = if attempt == 1 { "edgelearn/".to_string() } else { format!("edgelearn_{attempt}/") };
    };
    let heads = model.heads.len();
    let output: Vec<pb::ValueInfoProto> =
        outputs.iter().zip(&model.heads).map(|(name, h)| batch_value_info(name, &[h.out_features()])).collect();
    let (ir_version, opset_import, input, mut nodes, mut initializer) = match prefix {
        Some(p) => (p.ir_version, p.opset_import.clone(), p.input.clone(), p.nodes.clone(), p.initializers.clone()),
        None => (
            IR_VERSION,
            vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
            batch_value_info(INPUT_NAME, &model.input_shape),
            Vec::new(),
            Vec::new(),
        ),
    };
    nodes.append(&mut builder.nodes);
    initializer.append(&mut builder.inits);
    let doc = format!(
        "Written by {PRODUCER} {}. {} head(s): output '{}' … for head i (logits). Batch norm layers use batch \
         statistics and are written as ReduceMean/Sub/Mul/Add/Sqrt/Div over the batch axes, so every sample's \
         output depends on the batch it is run with, as on the device.{}",
        env!("CARGO_PKG_VERSION"),
        heads,
        output_name(heads, 0),
        prefix.map_or(String::new(), |p| format!(
            " The nodes up to tensor '{}' are the frozen prefix of the original model, unchanged.",
            p.output
        ))
    );
    let meta = |k: &str, v: String| pb::StringStringEntryProto { key: k.into(), value: v };
    Ok(pb::ModelProto {
        ir_version,
        opset_import,
        producer_name: PRODUCER.into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc,
        metadata_props: vec![
            meta("edgelearn.heads", heads.to_string()),
            meta("edgelearn.batch_norm", "batch-statistics".into()),
            meta("edgelearn.batch_axis", BATCH_AXIS.into()),
            meta("edgelearn.trainable_input", prefix.map_or(input.name.clone(), |p| p.output.clone())),
        ]
        .into_iter()
        .chain(prefix.and_then(|p| p.input_spec.clone()).map(|spec| meta(INPUT_SPEC_KEY, spec)))
        .collect(),
        graph: Some(pb::GraphProto {
            name: "edgelearn".into(),
            node: nodes,
            initializer,
            input: vec![input],
            output,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Emits nodes and initializers for the trainable layers.
struct Builder {
    ns: String,
    out_ns: String,
    opset: i64,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

impl Builder {
    fn name(&self, s: &str) -> String {
        format!("{}{s}", self.ns)
    }

    fn node(&mut self, scope: &str, op: &str, inputs: Vec<String>, attrs: Vec<pb::AttributeProto>) -> String {
        let n = self.nodes.iter().filter(|n| n.name.starts_with(&self.name(&format!("/{scope}/{op}")))).count();
        let suffix = if n == 0 { String::new() } else { format!("_{n}") };
        let name = self.name(&format!("/{scope}/{op}{suffix}"));
        let out = format!("{name}_output_0");
        self.nodes.push(pb::NodeProto {
            name,
            op_type: op.into(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn init(&mut self, t: pb::TensorProto) -> String {
        let t = pb::TensorProto { name: self.name(&t.name), ..t };
        let name = t.name.clone();
        self.inits.push(t);
        name
    }

    /// Emit the whole model reading tensor `input`; returns the output tensor names (one per head).
    fn emit(&mut self, model: &Model, input: &str) -> Result<Vec<String>> {
        if model.heads.is_empty() {
            return Err(Error::Config("a model needs at least one head".into()));
        }
        let mut x = input.to_string();
        let mut shape = model.input_shape.clone();
        for (i, layer) in model.trunk.iter().enumerate() {
            let scope = format!("trunk.{i}");
            (x, shape) = match layer {
                Layer::Linear(l) => (self.linear(&scope, l, &x, &shape, None)?, vec![l.out_features()]),
                Layer::Conv2d(c) => self.conv(&scope, c, &x, &shape)?,
                Layer::MaxPool2d(p) => self.maxpool(&scope, p, &x, &shape)?,
                Layer::BatchNorm(bn) => (self.batch_norm(&scope, bn, &x, &shape)?, shape),
                Layer::Relu(_) => (self.node(&scope, "Relu", vec![x], vec![]), shape),
                Layer::Dropout(_) => (x, shape),
                // A constant Gemm: an importer reads it back as a Linear with the same values.
                Layer::RandomFeatures(r) => {
                    let l = Linear::from_weights(&format!("{scope}.random_features"), r.weight().clone(), None)?;
                    (self.linear(&scope, &l, &x, &shape, None)?, vec![r.out_features()])
                }
                Layer::RandomFourier(_) => {
                    return Err(Error::Config(format!(
                        "ONNX export: {scope} (RandomFourier, RanDumb's features) has no ONNX form here; the \
                         method is for host-side comparison"
                    )));
                }
                Layer::Flatten(_) => {
                    let width = shape.iter().product();
                    (self.node(&scope, "Flatten", vec![x], vec![attr::int("axis", 1)]), vec![width])
                }
            };
        }
        let heads = model.heads.len();
        let mut outputs = Vec::with_capacity(heads);
        for (h, head) in model.heads.iter().enumerate() {
            let out = format!("{}{}", self.out_ns, output_name(heads, h));
            outputs.push(self.linear(&format!("head.{h}"), head, &x, &shape, Some(out))?);
        }
        Ok(outputs)
    }

    fn linear(&mut self, scope: &str, l: &Linear, x: &str, shape: &[usize], out: Option<String>) -> Result<String> {
        if shape != [l.in_features()] {
            return Err(shape_err(&format!("ONNX export: {scope} (Linear) input"), [l.in_features()], shape));
        }
        let w =
            self.init(f32_tensor(&l.weight.name, &[l.out_features(), l.in_features()], l.weight.value.iter().copied()));
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = &l.bias {
            inputs.push(self.init(f32_tensor(&b.name, &[l.out_features()], b.value.iter().copied())));
        }
        let y = self.node(scope, "Gemm", inputs, vec![attr::int("transB", 1)]);
        Ok(match out {
            Some(name) => {
                if let Some(last) = self.nodes.last_mut() {
                    last.output = vec![name.clone()];
                }
                name
            }
            None => y,
        })
    }

    fn conv(&mut self, scope: &str, c: &Conv2d, x: &str, shape: &[usize]) -> Result<(String, Vec<usize>)> {
        let &[ch, h, w] = shape else {
            return Err(shape_err(&format!("ONNX export: {scope} (Conv) input"), "(channels, h, w)", shape));
        };
        if ch != c.in_channels() {
            return Err(shape_err(&format!("ONNX export: {scope} (Conv) channels"), c.in_channels(), ch));
        }
        let (oh, ow) = c.output_size(h, w)?;
        let (kh, kw) = c.kernel_size();
        let dims = [c.out_channels(), c.in_channels(), kh, kw];
        let wt = self.init(f32_tensor(&c.weight.name, &dims, c.weight.value.iter().copied()));
        let mut inputs = vec![x.to_string(), wt];
        if let Some(b) = &c.bias {
            inputs.push(self.init(f32_tensor(&b.name, &[c.out_channels()], b.value.iter().copied())));
        }
        let (s, p) = (c.stride() as i64, c.padding() as i64);
        let attrs = vec![
            attr::ints("kernel_shape", &[kh as i64, kw as i64]),
            attr::ints("strides", &[s, s]),
            attr::ints("pads", &[p, p, p, p]),
            attr::ints("dilations", &[1, 1]),
            attr::int("group", 1),
        ];
        Ok((self.node(scope, "Conv", inputs, attrs), vec![c.out_channels(), oh, ow]))
    }

    fn maxpool(&mut self, scope: &str, p: &MaxPool2d, x: &str, shape: &[usize]) -> Result<(String, Vec<usize>)> {
        let &[ch, h, w] = shape else {
            return Err(shape_err(&format!("ONNX export: {scope} (MaxPool) input"), "(channels, h, w)", shape));
        };
        let (oh, ow) = p.output_size(h, w)?;
        let (k, s) = (p.kernel() as i64, p.stride() as i64);
        let attrs = vec![attr::ints("kernel_shape", &[k, k]), attr::ints("strides", &[s, s])];
        Ok((self.node(scope, "MaxPool", vec![x.to_string()], attrs), vec![ch, oh, ow]))
    }

    fn reduce_mean(&mut self, scope: &str, x: String, axes: &[i64], axes_name: &str) -> String {
        if self.opset >= 18 {
            self.node(scope, "ReduceMean", vec![x, axes_name.to_string()], vec![attr::int("keepdims", 1)])
        } else {
            self.node(scope, "ReduceMean", vec![x], vec![attr::ints("axes", axes), attr::int("keepdims", 1)])
        }
    }

    fn batch_norm(&mut self, scope: &str, bn: &BatchNorm, x: &str, shape: &[usize]) -> Result<String> {
        let c = bn.features();
        let (axes, pdims): (Vec<i64>, Vec<usize>) = match shape {
            [f] if *f == c => (vec![0], vec![c]),
            [ch, _, _] if *ch == c => (vec![0, 2, 3], vec![c, 1, 1]),
            _ => return Err(shape_err(&format!("ONNX export: {scope} (BatchNorm) input"), ("features", c), shape)),
        };
        let axes_name = if self.opset >= 18 {
            self.init(i64_tensor(&format!("{scope}.axes"), &[axes.len()], &axes))
        } else {
            String::new()
        };
        let eps = self.init(f32_tensor(&format!("{scope}.eps"), &[], [BATCH_NORM_EPS]));
        let gamma = self.init(f32_tensor(&bn.weight.name, &pdims, bn.weight.value.iter().copied()));
        let beta = self.init(f32_tensor(&bn.bias.name, &pdims, bn.bias.value.iter().copied()));
        let mean = self.reduce_mean(scope, x.to_string(), &axes, &axes_name);
        let d = self.node(scope, "Sub", vec![x.to_string(), mean], vec![]);
        let sq = self.node(scope, "Mul", vec![d.clone(), d.clone()], vec![]);
        let var = self.reduce_mean(scope, sq, &axes, &axes_name);
        let ve = self.node(scope, "Add", vec![var, eps], vec![]);
        let std = self.node(scope, "Sqrt", vec![ve], vec![]);
        let xhat = self.node(scope, "Div", vec![d, std], vec![]);
        let scaled = self.node(scope, "Mul", vec![xhat, gamma], vec![]);
        Ok(self.node(scope, "Add", vec![scaled, beta], vec![]))
    }
}
