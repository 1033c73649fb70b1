//! # gfla-train
//!
//! Datasets (official DeepFashion / Market-1501 layouts and a synthetic generator) and the
//! two-stage GFLA training with burn-train.
//!
//! * [`augment`]: the official Market-1501 training augmentation (random affine transforms).
//! * [`dataset`]: the official layouts (pairs and annotation CSVs, image folders) read lazily
//!   with Burn's dataset API, and the batcher.
//! * [`losses`]: the paper's loss terms and weights (Eq. 15).
//! * [`train`]: training through burn-train's `SupervisedTraining` and `Learner` (Adam,
//!   checkpoints and resume, metrics, samples, NaN stop).
//! * [`learner`]: G and D as the learner's model: the G and D steps, the two optimisers, a
//!   metric per loss term.
//! * [`strategy`]: the learning strategy burn-train runs, and a plain-text metrics renderer.
//! * [`stream`]: the training data as numbered steps (what a resumed run reads is what an
//!   uninterrupted one would), one checkpoint interval per learner epoch.
//! * [`synth`]: a synthetic pose-transfer dataset (textured figures in random poses over random
//!   backgrounds) written in the official layout, for testing the pipeline without the real
//!   data: `gfla-train synth --out DIR`.
//!
//! A program that trains on the CPU should call `gfla_model::gfla_ops::reuse_freed_memory()`
//! once at its start, as the `gfla-train` binary does: the step's large tensors are then reused
//! instead of mapped afresh (a DeepFashion step 15 % faster on the README's machine).

pub use gfla_model;

pub mod augment;
pub mod dataset;
pub mod evaluate;
pub mod learner;
pub mod losses;
pub mod strategy;
pub mod stream;
pub mod synth;
pub mod train;
