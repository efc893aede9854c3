//! Stochastic gradient descent.

use ndarray::ArrayD;

use super::model::Model;
use crate::error::{Error, Result};

/// SGD with optional (PyTorch-style) momentum: `v ← μ v + g`, `θ ← θ − η v`.
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Learning rate η.
    pub lr: f32,
    /// Momentum μ (0 = plain SGD).
    pub momentum: f32,
    velocity: Vec<ArrayD<f32>>,
}

impl Sgd {
    /// A fresh optimizer (no velocity yet).
    pub fn new(lr: f32, momentum: f32) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Config(format!("learning rate must be positive and finite, got {lr}")));
        }
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::Config(format!("momentum must be in [0, 1), got {momentum}")));
        }
        Ok(Self { lr, momentum, velocity: Vec::new() })
    }

    /// Apply one update from the gradients currently stored in the model; gradients are left untouched.
    pub fn step(&mut self, model: &mut Model) -> Result<()> {
        let lr = self.lr;
        let mut params = model.params_mut();
        if self.momentum == 0.0 {
            for p in params.iter_mut() {
                p.value.scaled_add(-lr, &p.grad);
            }
            return Ok(());
        }
        if self.velocity.len() != params.len() {
            self.velocity = params.iter().map(|p| ArrayD::zeros(p.value.raw_dim())).collect();
        }
        for (p, v) in params.iter_mut().zip(self.velocity.iter_mut()) {
            if v.shape() != p.value.shape() {
                *v = ArrayD::zeros(p.value.raw_dim());
            }
            v.mapv_inplace(|x| x * self.momentum);
            *v += &p.grad;
            p.value.scaled_add(-lr, v);
        }
        Ok(())
    }
}
