//! ONNX files the host writes: export checks (the file reloads with the same outputs, in the device loader and
//! whole in tract) and reference outputs for an external runtime (`scripts/check-onnx.py`).

use std::path::Path;

use firmware::data::Samples;
use firmware::nn::{Mode, Model};
use firmware::onnx::{Cut, OnnxModel, model_to_proto};
use ndarray::{Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reports::write_bytes;

/// Largest difference between our outputs and a reloaded copy's that still counts as "the same model".
pub const RELOAD_TOLERANCE: f32 = 1e-4;

/// Largest `|a − b| / max(1, |b|)` over two equally shaped arrays (`∞` when the shapes differ).
pub fn max_rel_diff(a: &ArrayView2<'_, f32>, b: &ArrayView2<'_, f32>) -> f32 {
    if a.dim() != b.dim() {
        return f32::INFINITY;
    }
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

/// Export `model` to `out`, reload the file with the device loader (every layer native) and check that it
/// computes the same logits on (up to 256 of) `samples`.
pub fn export_checked(model: &mut Model, samples: &Samples, out: &Path) -> Result<()> {
    let bytes = firmware::onnx::encode(&model_to_proto(model, None)?);
    write_bytes(out, &bytes)?;
    let mut loaded = OnnxModel::from_bytes(&bytes)?.split(&Cut::Input)?;
    let n = samples.len().min(256);
    let x = samples.x.slice(s![..n, ..]);
    let mut worst = 0.0f32;
    for h in 0..model.heads.len() {
        let ours = model.forward(&x, h, Mode::Eval)?;
        let back = loaded.forward(&x, h)?;
        worst = worst.max(max_rel_diff(&back.view(), &ours.view()));
    }
    model.clear_cache();
    if worst > 1e-5 {
        return Err(Error::Invalid(format!("the exported file reloads with different outputs (max diff {worst:e})")));
    }
    println!(
        "ONNX written to {} ({} bytes, opset {}); reloaded: max output difference {worst:.1e} on {n} test images",
        out.display(),
        bytes.len(),
        firmware::onnx::OPSET
    );
    Ok(())
}

/// Inputs and expected outputs of one model, for an external runtime to reproduce (`scripts/check-onnx.py`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// The ONNX file these outputs belong to.
    pub model: String,
    /// Who computed the outputs (`host model from <params>` or `device model`).
    pub source: String,
    /// Name of the graph input to feed.
    pub input_name: String,
    /// Shape of the input batch.
    pub input_shape: Vec<usize>,
    /// Input values, row-major.
    pub input: Vec<f32>,
    /// Expected outputs by graph output name.
    pub outputs: Vec<ReferenceOutput>,
}

/// One expected output tensor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceOutput {
    /// Graph output name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Reference {
    /// A reference for `model` (computed by `source`) on the input batch `x`, each sample of shape `per_sample`,
    /// with no outputs yet.
    pub fn new(
        model: &Path,
        source: String,
        input_name: String,
        per_sample: &[usize],
        x: &ArrayView2<'_, f32>,
    ) -> Self {
        let mut input_shape = vec![x.nrows()];
        input_shape.extend_from_slice(per_sample);
        Self {
            model: model.display().to_string(),
            source,
            input_name,
            input_shape,
            input: x.iter().copied().collect(),
            outputs: Vec::new(),
        }
    }

    /// Add the expected output `y` of the graph output `name`.
    pub fn push(&mut self, name: String, y: &Array2<f32>) {
        self.outputs.push(ReferenceOutput { name, shape: y.shape().to_vec(), data: y.iter().copied().collect() });
    }
}

/// Run the whole file at `path` in tract (as the "prefix" up to each output) on `x` and return the largest
/// relative difference to `expected` (one array per output, in output order). Errors above
/// [`RELOAD_TOLERANCE`].
pub fn check_in_tract(path: &Path, x: &ArrayView2<'_, f32>, expected: &[Array2<f32>]) -> Result<f32> {
    let file = OnnxModel::open(path)?;
    let names = file.output_names();
    if names.len() != expected.len() {
        return Err(Error::Invalid(format!(
            "{} has {} outputs, expected {}",
            path.display(),
            names.len(),
            expected.len()
        )));
    }
    let mut worst = 0.0f32;
    for (name, want) in names.iter().zip(expected) {
        let got = file.prefix(name)?.run(x)?;
        worst = worst.max(max_rel_diff(&got.view(), &want.view()));
    }
    if worst > RELOAD_TOLERANCE {
        return Err(Error::Invalid(format!(
            "{}: tract's outputs differ from the device model's by {worst:e}",
            path.display()
        )));
    }
    Ok(worst)
}

/// Write `dm` as ONNX to `path`, reload the file whole in tract and compare its outputs on `x` with the native
/// forward pass; with `reference`, also write those outputs for `scripts/check-onnx.py` (onnxruntime). Returns the
/// largest difference and the number of outputs.
pub fn write_checked(
    dm: &mut firmware::onnx::DeviceModel,
    path: &std::path::Path,
    x: &Array2<f32>,
    reference: Option<&std::path::Path>,
    what: &str,
) -> Result<(f32, usize)> {
    dm.write_onnx(path)?;
    let ours = dm.forward_all(&x.view())?;
    let worst = check_in_tract(path, &x.view(), &ours)?;
    if let Some(rpath) = reference {
        let reloaded = OnnxModel::open(path)?;
        let mut r = Reference::new(path, what.into(), reloaded.input_name(), reloaded.input_shape(), &x.view());
        for (name, y) in reloaded.output_names().into_iter().zip(&ours) {
            r.push(name, y);
        }
        crate::reports::write_json(rpath, &r)?;
        println!("reference outputs written to {}", rpath.display());
    }
    Ok((worst, ours.len()))
}
