//! The stand-in for the CUDA backend in a build without the `cuda` feature: it cannot be created (its
//! constructor returns [`Error::BackendUnavailable`]), so every operation is unreachable by construction.

use std::convert::Infallible;

use ndarray::Array2;

use super::{Backend, Gemm};
use edgelearn_core::error::{Error, Result};
use edgelearn_core::nn::offload::Offload;
use edgelearn_core::nn::ops::Window2d;

/// Why this build has no CUDA backend.
const NOT_COMPILED: &str = "not compiled with CUDA support (rebuild with `--features firmware/cuda`, or \
                            `firmware/cuda-11040` for JetPack 5)";

/// The CUDA backend of a build without the `cuda` feature: [`CudaBackend::new`] always fails with
/// [`Error::BackendUnavailable`] ("not compiled with CUDA support"); no value of this type exists.
#[derive(Debug)]
pub struct CudaBackend {
    never: Infallible,
}

impl CudaBackend {
    /// Always [`Error::BackendUnavailable`]: this build has no CUDA backend.
    pub fn new(_ordinal: usize) -> Result<Self> {
        Err(Error::BackendUnavailable { backend: "cuda", reason: NOT_COMPILED.into() })
    }

    /// Always `Err`: this build has no CUDA backend.
    pub fn available() -> std::result::Result<(), String> {
        Err(NOT_COMPILED.into())
    }
}

impl Backend for CudaBackend {
    type Buf = Vec<f32>;
    type Basis = ();

    fn name(&self) -> &'static str {
        match self.never {}
    }
    fn upload(&self, _: &[f32]) -> Result<Vec<f32>> {
        match self.never {}
    }
    fn download(&self, _: &Vec<f32>) -> Result<Vec<f32>> {
        match self.never {}
    }
    fn zeros(&self, _: usize) -> Result<Vec<f32>> {
        match self.never {}
    }
    fn len(&self, _: &Vec<f32>) -> usize {
        match self.never {}
    }
    fn copy(&self, _: &Vec<f32>, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn gemm(&self, _: Gemm, _: &Vec<f32>, _: &Vec<f32>, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn relu(&self, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn relu_backward(&self, _: &Vec<f32>, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn im2col(&self, _: &Vec<f32>, _: [usize; 4], _: Window2d, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn basis(&self, _: &Array2<f32>) -> Result<()> {
        match self.never {}
    }
    fn project_rows(&self, _: &(), _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn axpy(&self, _: f32, _: &Vec<f32>, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn scale(&self, _: f32, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn fisher_accumulate(&self, _: &Vec<f32>, _: f32, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
    fn became_terms(&self, _: &Vec<f32>, _: &Vec<f32>, _: &Vec<f32>, _: &Vec<f32>) -> Result<(f64, f64)> {
        match self.never {}
    }
    fn interpolate(&self, _: &Vec<f32>, _: &Vec<f32>, _: f64, _: &mut Vec<f32>) -> Result<()> {
        match self.never {}
    }
}

impl Offload for CudaBackend {
    fn name(&self) -> &'static str {
        match self.never {}
    }
    fn gemm(&self, _: Gemm, _: &[f32], _: &[f32], _: &mut [f32]) -> Result<()> {
        match self.never {}
    }
}
