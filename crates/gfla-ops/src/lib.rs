//! # gfla-ops
//!
//! The building blocks of GFLA (Ren et al., CVPR 2020, "Deep Image Spatial Transformation for
//! Person Image Generation") as Burn tensor operations: they run on every Burn backend (CPU,
//! wgpu, CUDA) and under autodiff, where the official code needs three CUDA-only extensions.
//!
//! | official op | here |
//! |---|---|
//! | `BlockExtractor` | [`extract_blocks`] |
//! | `LocalAttnReshape` | [`local_attn_reshape`] |
//! | `ExtractorAttn` pooling (`AvgPool_k(R_k(A) * E)`) | [`attend_blocks`], [`local_attention`] |
//! | mask blending in `PoseTargetNet` | [`blend`] |
//! | `Resample2d` (Gaussian, K=4, sigma=2) | [`resample_gaussian`] |
//! | `grid_sample` warping | [`warp_bilinear`] |
//! | `AffineRegularizationLoss` | [`affine_regularization`] |
//! | `PerceptualCorrectness` | [`sampling_correctness`] |
//! | `VGGLoss` content / style | [`content_loss`], [`style_loss`] |
//!
//! Conventions: NCHW; a flow has channel 0 = x (column, right), channel 1 = y (row, down), in
//! pixels of its own grid, and warps backwards (the value at `p` is read at `p + flow(p)`).
//! Bad shapes panic with a message naming them, as Burn's own ops do.

#[cfg(feature = "flex")]
#[macro_use]
mod simd;

mod activation;
mod affine;
mod attention;
#[cfg(any(feature = "flex", feature = "cube"))]
mod autodiff;
mod block;
pub mod conv;
mod device;
mod flow;
pub mod fused;
mod loss;
mod memory;
mod norm;
mod pad;
mod sample;
mod warp;

pub use activation::leaky_relu;
pub use affine::{affine_regularization, residual_projector};
pub use attention::{attend_blocks, blend, local_attention, local_attn_reshape};
pub use block::{extract_blocks, extract_blocks_identity};
pub use device::{cpu_pool, join, on_pool};
pub use flow::{flow_to_color, heatmap, resize_flow};
pub use fused::{
    KernelPrediction, extract_patches, extractor_attention, local_attention_fused,
    sampled_convolution,
};
pub use loss::{
    best_similarity, content_loss, gram, l1, sampling_correctness, style_loss, style_term,
};
pub use memory::reuse_freed_memory;
pub use norm::instance_norm_leaky_relu;
pub use pad::{leaky_relu_pad, pad};
pub use sample::{Padding, bilinear_sample};
pub use warp::{resample_gaussian, warp_bilinear};

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// `n` reproducible values in `[-scale / 2, scale / 2)` (a 64-bit LCG's top bits).
    pub(crate) fn lcg(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                scale * (((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5)
            })
            .collect()
    }
}
