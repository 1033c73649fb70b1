//! The fused ops as a Burn backend extension.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};

/// The fused local-attention operations. Implemented for Flex (CPU kernels), the CubeCL
/// backend (GPU kernels, through Burn's fusion) and their `Autodiff` wrappers; the `Tensor`
/// functions of [`super`] fall back to the composed ops on other backends.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
    Autodiff,
)]
pub trait FusedAttentionBackend: Backend {
    /// See [`super::local_attention_fused`].
    #[fusion(dtype = source, shape = {
        let mut shape = source.clone();
        shape[2] = flow[2];
        shape[3] = flow[3];
        shape
    })]
    fn fused_local_attention(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self>;

    /// See [`super::extract_patches`].
    #[fusion(dtype = source, shape = {
        burn::tensor::Shape::new([source[0], flow[2] * flow[3], *k * *k * source[1]])
    })]
    fn fused_patches(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self>;

    /// See [`super::sampled_convolution`].
    #[fusion(dtype = source, shape = {
        burn::tensor::Shape::new([source[0], flow[2] * flow[3], weight[0]])
    })]
    fn fused_sampled_conv(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self>;
}
