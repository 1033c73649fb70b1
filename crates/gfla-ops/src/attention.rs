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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn uniform_weights_give_the_tile_mean_over_k_squared() {
        let device = Device::flex();
        let k = 3;
        let source = Tensor::<4>::from_data(
            TensorData::new((0..12).map(|i| i as f32).collect::<Vec<_>>(), [1, 1, 3, 4]),
            &device,
        );
        let flow = Tensor::<4>::zeros([1, 2, 3, 4], &device);
        let weights = Tensor::<4>::ones([1, 9, 3, 4], &device) / 9.0;
        let out: Vec<f32> = local_attention(source, flow, weights, k)
            .try_into_vec_as()
            .unwrap();
        // Centre cell (1, 1): the 3 x 3 mean is 5; the official op divides once more by k^2.
        assert!((out[5] - 5.0 / 9.0).abs() < 1e-6, "got {}", out[5]);
    }

    #[test]
    fn one_hot_weights_select_one_offset() {
        let device = Device::flex();
        let source = Tensor::<4>::from_data(
            TensorData::new((0..12).map(|i| i as f32).collect::<Vec<_>>(), [1, 1, 3, 4]),
            &device,
        );
        let flow = Tensor::<4>::zeros([1, 2, 3, 4], &device);
        // All weight on channel u*k + v = 5: offset (0, +1), the right neighbour.
        let mut w = vec![0.0f32; 9 * 12];
        w[5 * 12..6 * 12].fill(1.0);
        let weights = Tensor::<4>::from_data(TensorData::new(w, [1, 9, 3, 4]), &device);
        let out: Vec<f32> = local_attention(source, flow, weights, 3)
            .try_into_vec_as()
            .unwrap();
        let expect: Vec<f32> = [1., 2., 3., 3., 5., 6., 7., 7., 9., 10., 11., 11.]
            .iter()
            .map(|v| v / 9.0)
            .collect();
        for (g, e) in out.iter().zip(&expect) {
            assert!((g - e).abs() < 1e-6, "{out:?} vs {expect:?}");
        }
    }

    #[test]
    fn blend_follows_the_mask() {
        let device = Device::flex();
        let t = Tensor::<4>::ones([1, 2, 1, 2], &device);
        let a = Tensor::<4>::ones([1, 2, 1, 2], &device) * 3.0;
        let m = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 0.25], [1, 1, 1, 2]), &device);
        let out: Vec<f32> = blend(t, a, m).try_into_vec_as().unwrap();
        assert_eq!(out, vec![1.0, 1.5, 1.0, 1.5]);
    }

    #[test]
    #[should_panic(expected = "expected 25 = k*k channels for k = 5")]
    fn reshape_rejects_wrong_weight_count() {
        let device = Device::flex();
        local_attn_reshape(Tensor::<4>::zeros([1, 9, 2, 2], &device), 5);
    }
}
