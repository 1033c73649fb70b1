//! Block (patch) extraction: the official `BlockExtractor` op.

use burn::tensor::{Tensor, TensorData};

use crate::sample::{Padding, bilinear_sample};

/// Per output pixel of a `k x k`-tiled map of `h x w` cells: the in-tile offset minus `k / 2`
/// (x and y) and the cell's grid coordinate (x and y), in the kernel's float order.
fn tile_geometry(h: usize, w: usize, k: usize) -> [Vec<f32>; 4] {
    let (hh, ww) = (h * k, w * k);
    let half = (k / 2) as f32;
    let mut out: [Vec<f32>; 4] = std::array::from_fn(|_| Vec::with_capacity(hh * ww));
    for yy in 0..hh {
        for xx in 0..ww {
            out[0].push((xx % k) as f32 - half);
            out[1].push((yy % k) as f32 - half);
            out[2].push((xx / k) as f32);
            out[3].push((yy / k) as f32);
        }
    }
    out
}

/// Repeats every cell of `[B, C, h, w]` into a `k x k` tile: `[B, C, k*h, k*w]`.
pub(crate) fn upsample_tiles(x: Tensor<4>, k: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, k, w, k])
        .reshape([b, c, h * k, w * k])
}

/// Extracts, for every cell of `flow`, the `k x k` neighbourhood of `source` around
/// `cell + flow`, sampled bilinearly with border clamping.
///
/// * `source`: `[B, C, H, W]`.
/// * `flow`: `[B, 2, Hf, Wf]`, channel 0 = x (column) and 1 = y (row) displacement in pixels.
/// * returns `[B, C, k*Hf, k*Wf]`: tile `(yf, xf)` holds the samples at offsets
///   `(u - k/2, v - k/2)` for `u, v in 0..k` (even `k` gives a window shifted up-left, as the
///   official op).
///
/// Output pixel `(yf*k + u, xf*k + v)` samples `source` at
/// `x = (flow_x + (v - k/2)) + xf`, `y = (flow_y + (u - k/2)) + yf`, the official additions in
/// the official order, so values match the CUDA kernel bit for bit in float32. The gradient with
/// respect to `source` and `flow` is the true derivative (autodiff), which is what the official
/// kernel computes for batch 1 and what it should compute for larger batches.
///
/// # Panics
/// If `k == 0`, the flow does not have 2 channels, or the batch sizes differ.
pub fn extract_blocks(source: Tensor<4>, flow: Tensor<4>, k: usize) -> Tensor<4> {
    let [b, c, h, w] = source.dims();
    let [bf, cf, hf, wf] = flow.dims();
    assert!(
        k > 0,
        "extract_blocks: kernel size must be positive, got {k}"
    );
    assert_eq!(
        cf,
        2,
        "extract_blocks: flow must have 2 channels (x, y), got shape {:?}",
        flow.dims()
    );
    assert_eq!(
        b,
        bf,
        "extract_blocks: source {:?} and flow {:?} differ in batch size",
        [b, c, h, w],
        flow.dims()
    );
    let (hh, ww) = (hf * k, wf * k);
    let device = flow.device();
    let dtype = flow.dtype();
    let [off_x, off_y, grid_x, grid_y] = tile_geometry(hf, wf, k)
        .map(|v| Tensor::<2>::from_data(TensorData::new(v, [1, hh * ww]), (&device, dtype)));

    let flow = upsample_tiles(flow, k).reshape([b, 2, hh * ww]);
    let fx = flow.clone().slice_dim(1, 0..1).reshape([b, hh * ww]);
    let fy = flow.slice_dim(1, 1..2).reshape([b, hh * ww]);
    let sx = (fx + off_x) + grid_x;
    let sy = (fy + off_y) + grid_y;
    bilinear_sample(source, sx, sy, Padding::Border).reshape([b, c, hh, ww])
}

/// Extracts the plain `k x k` neighbourhoods (zero flow) of `x`, with replicate padding:
/// `[B, C, k*H, k*W]`. The target side of the local attention.
pub fn extract_blocks_identity(x: Tensor<4>, k: usize) -> Tensor<4> {
    let [b, _, h, w] = x.dims();
    let flow = Tensor::zeros([b, 2, h, w], (&x.device(), x.dtype()));
    extract_blocks(x, flow, k)
}
