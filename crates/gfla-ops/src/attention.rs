//! The local attention of GFLA's `ExtractorAttn`, once the attention weights are known.
//!
//! The kernel-prediction network (two convolutions) has parameters and lives in `gfla-model`;
//! these are the parameter-free parts: the weight reshape, the weighted pooling and the blend.

use burn::tensor::Tensor;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

use crate::block::extract_blocks;

/// The official `LocalAttnReshape`: `[B, k*k, h, w]` -> `[B, 1, k*h, k*w]` with
/// `out[b, 0, y*k + u, x*k + v] = in[b, u*k + v, y, x]` (row-major channel order in a tile).
///
/// # Panics
/// If the channel count is not `k * k`.
pub fn local_attn_reshape(weights: Tensor<4>, k: usize) -> Tensor<4> {
    let [b, kk, h, w] = weights.dims();
    assert_eq!(
        kk,
        k * k,
        "local_attn_reshape: expected {} = k*k channels for k = {k}, got shape {:?}",
        k * k,
        weights.dims()
    );
    weights
        .reshape([b, k, k, h, w])
        .permute([0, 3, 1, 4, 2])
        .reshape([b, 1, h * k, w * k])
}

/// Pools extracted blocks with attention weights, exactly as the official op:
/// `AvgPool_k(R_k(weights) * blocks)`, i.e. the weighted tile sum **divided by `k*k`**
/// (the official networks were trained with that factor, so checkpoints need it).
///
/// * `blocks`: `[B, C, k*h, k*w]` from [`extract_blocks`];
/// * `weights`: `[B, k*k, h, w]`, normally a softmax over the channel axis;
/// * returns `[B, C, h, w]`.
pub fn attend_blocks(blocks: Tensor<4>, weights: Tensor<4>, k: usize) -> Tensor<4> {
    let [b, _, hh, ww] = blocks.dims();
    let [bw, _, h, w] = weights.dims();
    assert!(
        b == bw && hh == h * k && ww == w * k,
        "attend_blocks: blocks {:?} do not tile weights {:?} with k = {k}",
        blocks.dims(),
        weights.dims()
    );
    let tiles = local_attn_reshape(weights, k);
    avg_pool2d(tiles * blocks, AvgPoolOptions::new([k, k]))
}

/// The whole local attention given its weights: samples the `k x k` source neighbourhoods at
/// `flow` and mixes them with `weights` (`[B, k*k, h, w]`). Includes the official `1/k^2`.
pub fn local_attention(
    source: Tensor<4>,
    flow: Tensor<4>,
    weights: Tensor<4>,
    k: usize,
) -> Tensor<4> {
    attend_blocks(extract_blocks(source, flow, k), weights, k)
}

/// Occlusion-mask blending: `target * (1 - mask) + attended * mask`; `mask` is `[B, 1, h, w]`
/// and broadcasts over channels (1 = take the attended source feature).
pub fn blend(target: Tensor<4>, attended: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
    assert_eq!(
        target.dims(),
        attended.dims(),
        "blend: target {:?} and attended {:?} differ",
        target.dims(),
        attended.dims()
    );
    let [b, _, h, w] = target.dims();
    assert_eq!(
        mask.dims(),
        [b, 1, h, w],
        "blend: mask {:?} must be [B, 1, H, W] = {:?}",
        mask.dims(),
        [b, 1, h, w]
    );
    target * (mask.clone().neg() + 1.0) + attended * mask
}
