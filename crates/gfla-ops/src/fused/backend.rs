//! The fused ops as a Burn backend extension, and the backward step their autodiff
//! implementations share.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::Ops;
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

/// The backward step all fused ops share: their `N` inputs come back from the checkpointer,
/// `grads_of(inputs, upstream, k, wanted)` computes what the tracked parents need, and each
/// gradient is registered.
pub(super) fn backward_step<B: Backend, const N: usize>(
    ops: Ops<([NodeId; N], usize), N>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
    grads_of: impl FnOnce(
        [FloatTensor<B>; N],
        FloatTensor<B>,
        usize,
        [bool; N],
    ) -> [Option<FloatTensor<B>>; N],
) {
    let grad = grads.consume::<B>(&ops.node);
    let (ids, k) = ops.state;
    let inputs = ids.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
    let want = ops.parents.each_ref().map(Option::is_some);
    let computed = grads_of(inputs, grad, k, want);
    for (node, g) in ops.parents.into_iter().zip(computed) {
        if let (Some(node), Some(g)) = (node, g) {
            grads.register::<B>(node.id, g);
        }
    }
}
