//! # gfla-model
//!
//! The GFLA networks on Burn: the global flow field estimator F ([`FlowEstimator`]), the
//! generator G ([`Generator`]) with its local-attention [`TextureRenderer`], and loading of the
//! official checkpoints ([`weights`]). The operators they stand on are in [`gfla_ops`].
//!
//! ```no_run
//! use burn::tensor::{Device, Tensor};
//! use gfla_model::{GeneratorConfig, weights};
//!
//! let device = Device::flex();
//! let mut g = GeneratorConfig::market().init(&device);
//! weights::load_generator(&mut g, &GeneratorConfig::market(), "latest_net_G.pth").unwrap();
//! let (img, bp1, bp2) = (
//!     Tensor::zeros([1, 3, 128, 64], &device),
//!     Tensor::zeros([1, 18, 128, 64], &device),
//!     Tensor::zeros([1, 18, 128, 64], &device),
//! );
//! let out = g.forward(img, bp1, bp2);
//! println!("{:?} {} flows", out.image.dims(), out.flows.len());
//! ```

pub mod attention;
pub mod blocks;
pub mod discriminator;
pub mod flops;
pub mod flow;
pub mod generator;
pub mod picture;
pub mod pose;
pub mod skeleton;
pub mod spectral;
pub mod transfer;
pub mod vgg;
pub mod visualize;
pub mod weights;

pub use attention::{AttentionOutput, LocalAttention};
pub use discriminator::{Discriminator, DiscriminatorConfig};
pub use flow::{FlowEstimator, FlowHead};
pub use generator::{
    AttentionLayerConfig, Generator, GeneratorConfig, GeneratorOutput, SourceSampling,
    TextureRenderer,
};
pub use gfla_ops;
pub use pose::{NamedPose, Pose, PoseError, PoseFrame};
pub use spectral::SpectralConv2d;
pub use transfer::{ModelSpec, PoseTransfer};
pub use vgg::{Vgg19, VggFeatures};
