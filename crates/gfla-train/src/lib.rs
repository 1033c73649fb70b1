//! # gfla-train
//!
//! Datasets (official DeepFashion / Market-1501 layouts and a synthetic generator) and the
//! two-stage GFLA training with burn-train. Being built (issue #5).
//!
//! * [`augment`]: the official Market-1501 training augmentation (random affine transforms).
//! * [`dataset`]: the official layouts (pairs and annotation CSVs, image folders) read lazily
//!   with Burn's dataset API, and the batcher.
//! * [`losses`]: the paper's loss terms and weights (Eq. 15).
//! * [`train`]: the training loop (Adam, checkpoints, samples, NaN stop).
//! * [`synth`]: a synthetic pose-transfer dataset (textured figures in random poses over random
//!   backgrounds) written in the official layout, for testing the pipeline without the real
//!   data: `gfla-train synth --out DIR`.

pub use gfla_model;

pub mod augment;
pub mod dataset;
pub mod evaluate;
pub mod losses;
pub mod stream;
pub mod synth;
pub mod train;
