//! The local attention block (official `ExtractorAttn`) with its kernel-prediction network.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};
use gfla_ops::{KernelPrediction, extractor_attention};

use crate::blocks::{LEAKY_SLOPE, conv};

/// Hidden width of the kernel-prediction network in the official code.
pub const OFFICIAL_HIDDEN: usize = 128;

/// Local attention: for every target location, a `k x k` source neighbourhood sampled at the
/// flow is mixed with softmax weights predicted from the target and source neighbourhoods.
#[derive(Module, Debug)]
pub struct LocalAttention {
    /// `k x k` convolution with stride `k` over the concatenated (target, source) tiles:
    /// a fully connected layer over one neighbourhood (`fully_connect_layer.0`).
    pub fuse: Conv2d,
    /// `1 x 1` convolution to the `k^2` attention logits (`fully_connect_layer.2`).
    pub logits: Conv2d,
    pub kernel_size: usize,
}

/// What one attention block produced, for inspection.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// The attended source features, `[B, C, h, w]` (including the official `1/k^2`).
    pub features: Tensor<4>,
    /// The softmax weights, `[B, k*k, h, w]` (channel `u*k + v` = offset `(u - k/2, v - k/2)`).
    pub weights: Tensor<4>,
}

impl LocalAttention {
    /// `hidden`: width of the kernel-prediction network ([`OFFICIAL_HIDDEN`] = 128).
    pub fn new(channels: usize, kernel_size: usize, hidden: usize, device: &Device) -> Self {
        let k = kernel_size;
        Self {
            fuse: conv(2 * channels, hidden, k, k, 0, device),
            logits: conv(hidden, k * k, 1, 1, 0, device),
            kernel_size,
        }
    }

    /// `source`, `target`: `[B, C, h, w]`; `flow`: `[B, 2, h, w]`.
    pub fn forward(
        &self,
        source: Tensor<4>,
        target: Tensor<4>,
        flow: Tensor<4>,
    ) -> AttentionOutput {
        // The fused op: the same sums as the official convolutions over the concatenated
        // (target, source) blocks, without building the blocks.
        let net = KernelPrediction {
            fuse_weight: self.fuse.weight.val(),
            fuse_bias: self.fuse.bias.as_ref().map(|b| b.val()),
            logits_weight: self.logits.weight.val(),
            logits_bias: self.logits.bias.as_ref().map(|b| b.val()),
            slope: LEAKY_SLOPE,
        };
        let k = self.kernel_size;
        let [b, c, h, w] = target.dims();
        let hidden = self.fuse.weight.dims()[0];
        // Per cell: the two halves of the k x k convolution, the 1 x 1 one, and the pooling's
        // four-corner sampling and weighting of k*k C-vectors.
        crate::flops::add(
            ((2 * c * k * k * hidden + hidden * k * k + 5 * k * k * c) * b * h * w) as u64,
        );
        let (features, weights) = extractor_attention(source, target, flow, &net, k);
        AttentionOutput { features, weights }
    }
}
