//! The mode of a forward pass: training or evaluation. A leaf of `nn`: the layers that behave differently in
//! training ([`super::Dropout`]) and the container of all layers ([`super::Layer`]) both take it.

/// Whether a forward pass is for training (dropout active, caches kept) or evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: dropout samples masks; batch statistics are used by batch norm.
    Train,
    /// Evaluation: dropout is the identity; batch norm still uses batch statistics (no running stats).
    Eval,
}
