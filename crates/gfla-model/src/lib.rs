//! # gfla-model
//!
//! The GFLA networks on Burn: the global flow field estimator F, the generator G with its
//! local-attention texture renderer, the discriminator D and the VGG19 feature extractor, with
//! loading of the official checkpoints. Being built (issue #3); the operators it stands on are in
//! [`gfla_ops`].

pub use gfla_ops;
