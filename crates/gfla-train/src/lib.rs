//! # gfla-train
//!
//! Datasets (official DeepFashion / Market-1501 layouts and a synthetic generator) and the
//! two-stage GFLA training with burn-train. Being built (issue #5).

pub use gfla_model;
