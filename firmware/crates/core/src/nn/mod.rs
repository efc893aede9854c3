//! Trainable layers, the model container, loss and optimizer.

pub mod activation;
mod conv;
mod dropout;
mod flatten;
pub mod gemm;
#[cfg(test)]
mod gradcheck;
pub mod jvp;
mod layer;
mod linear;
mod loss;
mod mode;
mod model;
mod norm;
pub mod offload;
pub mod ops;
mod optim;
mod param;
mod pool;
mod projector;
mod random_features;
pub mod zoo;

pub use activation::Relu;
pub use conv::Conv2d;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use jvp::jvp;
pub use layer::Layer;
pub use linear::Linear;
pub use loss::{argmax_rows, softmax_cross_entropy, softmax_cross_entropy_over};
pub use mode::Mode;
pub use model::{Model, ParamGrowth, batch_tensor};
pub use norm::{BATCH_NORM_EPS, BatchNorm};
pub use optim::Sgd;
pub use param::{Param, ParamInfo};
pub use pool::MaxPool2d;
pub use projector::{Projector, orthonormal_complement};
pub use random_features::{RANDOM_FEATURES_SEED, RandomFeatures, RandomFourier, rbf_input_stats};
