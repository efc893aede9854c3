//! # host — the workstation side of the product
//!
//! Real data ([`data`]), task streams, the simulation of the device learner over a stream ([`simulate`]) and
//! reports ([`report`]). The learner itself is the `firmware` crate; the host only drives it.
#![warn(missing_docs)]

pub mod data;
pub mod error;

pub use error::{Error, Result};
