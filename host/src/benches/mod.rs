//! Benchmarks (timings, not tests): one task's update phase by phase against PyTorch ([`update`]), the
//! exemplar memory's time and heap ([`replay`]), the GEMM kernels ([`gemm`]) and the fleet's traffic and merge
//! ([`fleet`]).

pub mod fleet;
pub mod gemm;
pub mod inbox;
pub mod replay;
pub mod update;
