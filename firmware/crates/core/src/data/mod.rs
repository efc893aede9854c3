//! Labelled samples as the learner sees them: flat `f32` rows plus integer labels, and the [`idx`] reader for
//! MNIST-style data files (gzipped or raw) that the device reads real samples from.

pub mod idx;

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{Error, Result, shape_err};

/// A set of labelled samples, one flattened sample per row of `x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// `(n, features)` inputs.
    pub x: Array2<f32>,
    /// `n` labels, local to the head they are trained on.
    pub y: Vec<usize>,
}

impl Samples {
    /// Check lengths and finiteness; labels are checked against a head later.
    pub fn new(x: Array2<f32>, y: Vec<usize>) -> Result<Self> {
        if x.nrows() != y.len() {
            return Err(shape_err("samples: rows vs labels", x.nrows(), y.len()));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("sample {} (flat index {i})", i / x.ncols().max(1))));
        }
        Ok(Self { x, y })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Width of one flattened sample.
    pub fn features(&self) -> usize {
        self.x.ncols()
    }

    /// `self`'s samples followed by `other`'s; [`Error::Shape`] when their widths differ.
    pub fn concat(&self, other: &Samples) -> Result<Self> {
        if other.features() != self.features() {
            return Err(shape_err("concatenated samples", self.features(), other.features()));
        }
        let x = ndarray::concatenate(ndarray::Axis(0), &[self.x.view(), other.x.view()])
            .map_err(|e| shape_err("concatenated samples", self.features(), e))?;
        let mut y = self.y.clone();
        y.extend_from_slice(&other.y);
        Samples::new(x, y)
    }

    /// The samples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Self {
        Self { x: self.x.select(Axis(0), idx), y: idx.iter().map(|&i| self.y[i]).collect() }
    }

    /// Contiguous rows `start..end` as a view plus labels.
    pub fn slice(&self, start: usize, end: usize) -> (ArrayView2<'_, f32>, &[usize]) {
        (self.x.slice(ndarray::s![start..end, ..]), &self.y[start..end])
    }

    /// Fail with [`Error::LabelOutOfRange`] if a label is `>= classes`.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        match self.y.iter().find(|&&y| y >= classes) {
            Some(&label) => Err(Error::LabelOutOfRange { label, classes }),
            None => Ok(()),
        }
    }

    /// Bytes held by the inputs and labels.
    pub fn bytes(&self) -> usize {
        self.x.len() * std::mem::size_of::<f32>() + self.y.len() * std::mem::size_of::<usize>()
    }
}

/// One task's data handed to a learning method.
#[derive(Debug, Clone, Copy)]
pub struct TaskData<'a> {
    /// Position of the task in the stream (0-based).
    pub task_id: usize,
    /// Which head of the model this task trains and is evaluated on.
    pub head: usize,
    /// Training split.
    pub train: &'a Samples,
    /// Validation split (held out of the training split).
    pub val: &'a Samples,
}
