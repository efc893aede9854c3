//! A trained model's parameters on disk (JSON) until ONNX export takes over this role.

use firmware::nn::{Model, ParamInfo};
use serde::{Deserialize, Serialize};

use crate::presets::ModelSpec;

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
