//! # gfla
//!
//! Umbrella crate of the gfla-rs workspace, holding the examples, benchmarks and cross-crate
//! tests. Applications depend on the member crates directly:
//!
//! * [`gfla_ops`]: the local attention, block extraction, warping, regulariser and loss kernels.
//! * [`gfla_model`]: the networks, weights loading, poses and pictures.
//!
//! [`pose_transfer`] is the engine of `cargo run --example pose_transfer`.

pub use gfla_model as model;
pub use gfla_ops as ops;

pub mod pose_transfer;
