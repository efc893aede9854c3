//! A trained model's parameters on disk (JSON) until ONNX export takes over this role.

use firmware::nn::{Model, ParamInfo};
use serde::{Deserialize, Serialize};

use crate::runs::presets::ModelSpec;

/// Architecture, parameter layout and values of a trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    /// Network architecture.
    pub spec: ModelSpec,
    /// Data set it was trained on.
    pub dataset: String,
    /// Test accuracy measured after training.
    pub test_accuracy: f32,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Parameter names, shapes and offsets.
    pub params: Vec<ParamInfo>,
    /// Flat parameter values.
    pub values: Vec<f32>,
}

impl ModelFile {
    /// Capture a model.
    pub fn from_model(spec: &ModelSpec, model: &Model, dataset: &str, test_accuracy: f32) -> Self {
        Self {
            spec: spec.clone(),
            dataset: dataset.to_string(),
            test_accuracy,
            input_shape: model.input_shape.clone(),
            params: model.param_infos(),
            values: model.flat_params(),
        }
    }
}

impl ModelFile {
    /// Read a parameter file written by `host train` / `host pretrain`.
    pub fn read(path: &std::path::Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Rebuild the network: the architecture from `spec`, `input_shape` and the head widths recorded in the
    /// parameter layout (`head.{h}.weight`), then the saved values. Names, shapes and the value count must match
    /// what the architecture has.
    pub fn to_model(&self) -> crate::Result<Model> {
        let image: [usize; 3] = match self.input_shape.as_slice() {
            [c, r, w] => [*c, *r, *w],
            [n] => [1, 1, *n],
            other => return Err(crate::Error::Invalid(format!("parameter file: input shape {other:?}"))),
        };
        let mut heads = Vec::new();
        while let Some(p) = self.params.iter().find(|p| p.name == format!("head.{}.weight", heads.len())) {
            match p.shape.as_slice() {
                [classes, _] => heads.push(*classes),
                other => return Err(crate::Error::Invalid(format!("parameter file: {} has shape {other:?}", p.name))),
            }
        }
        let mut model = self.spec.build_for(image, &heads, 0)?;
        model.input_shape = self.input_shape.clone();
        if model.param_infos() != self.params {
            return Err(crate::Error::Invalid(format!(
                "parameter file does not match the {:?} architecture with heads {heads:?}",
                self.spec
            )));
        }
        model.set_flat_params(&self.values)?;
        Ok(model)
    }
}
