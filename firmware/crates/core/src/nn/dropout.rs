//! Inverted dropout with its own deterministic random stream.

use ndarray::ArrayD;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mode::Mode;
use crate::error::{Error, Result, shape_err};

/// Inverted dropout: in [`Mode::Train`] each element is zeroed with probability `p` and the survivors are
/// scaled by `1/(1−p)`; in [`Mode::Eval`] (and for `p = 0`) it is the identity.
///
/// Masks come from the layer's own ChaCha8 stream, seeded at construction, so a run is reproducible; cloning
/// the layer clones the stream (the clone draws the same next mask).
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    seed: u64,
    rng: ChaCha8Rng,
    /// Scaled keep-mask of the last training forward pass; `None` after an identity pass.
    mask: Option<ArrayD<f32>>,
    /// Shape of the last input (for backward's shape check).
    shape: Option<Vec<usize>>,
}

impl Dropout {
    /// Dropout with drop probability `p ∈ [0, 1)` and a mask stream seeded from `seed`.
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Config(format!("dropout probability must be in [0, 1), got {p}")));
        }
        Ok(Self { p, seed, rng: ChaCha8Rng::seed_from_u64(seed), mask: None, shape: None })
    }

    /// Drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// The seed the mask stream was created from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Restart the mask stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Apply a fresh mask (training) or pass through (evaluation, `p = 0`).
    pub fn forward(&mut self, x: ArrayD<f32>, mode: Mode) -> Result<ArrayD<f32>> {
        self.shape = Some(x.shape().to_vec());
        if mode == Mode::Eval || self.p == 0.0 {
            self.mask = None;
            return Ok(x);
        }
        // Standard layout first, so the mask is drawn in C order whatever the input's memory layout.
        let mut x = super::ops::standard(x);
        let (p, scale) = (self.p, 1.0 / (1.0 - self.p));
        let rng = &mut self.rng;
        let mask = x.map(|_| if rng.random::<f32>() < p { 0.0 } else { scale });
        x *= &mask;
        self.mask = Some(mask);
        Ok(x)
    }

    /// Multiply the gradient by the last mask (identity after an identity pass).
    pub fn backward(&mut self, grad: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.tangent(grad)
    }

    /// Forward-mode tangent of the last forward pass, `ẏ = ẋ ⊙ mask`: the same diagonal map as backward.
    pub fn tangent(&self, mut dx: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let shape = self.shape.as_ref().ok_or_else(|| Error::Config("Dropout before forward".into()))?;
        if dx.shape() != shape.as_slice() {
            return Err(shape_err("Dropout grad/tangent", shape, dx.shape()));
        }
        if let Some(mask) = &self.mask {
            dx *= mask;
        }
        Ok(dx)
    }

    /// Drop the cached mask.
    pub fn clear_cache(&mut self) {
        self.mask = None;
        self.shape = None;
    }
}
