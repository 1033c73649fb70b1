//! # gfla
//!
//! Umbrella crate of the gfla-rs workspace, holding the examples, benchmarks and cross-crate
//! tests. Applications depend on the member crates directly:
//!
//! * [`gfla_ops`]: the local attention, block extraction, warping, regulariser and loss kernels.

pub use gfla_ops as ops;
