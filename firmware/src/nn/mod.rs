//! Trainable layers, the model container, loss and optimizer.

mod activation;
mod layer;
mod linear;
mod loss;
mod model;
pub mod ops;
mod optim;
mod param;
pub mod zoo;

pub use activation::Relu;
pub use layer::{Layer, Mode};
pub use linear::Linear;
pub use loss::{argmax_rows, softmax_cross_entropy};
pub use model::{Model, batch_tensor};
pub use optim::Sgd;
pub use param::{Param, ParamInfo};
