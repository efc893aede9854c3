//! Model files the host writes and checks: a trained model's parameters ([`params`]) and ONNX files
//! ([`onnx`]: export checks, reference outputs for external runtimes).

pub mod onnx;
pub mod params;
