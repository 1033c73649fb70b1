//! Block (patch) extraction: the official `BlockExtractor` op.

use burn::tensor::{Tensor, TensorData};

use crate::sample::{Padding, PixelRows, bilinear_sample, split_flow};

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
    let (fx, fy) = split_flow(flow);
    let sx = (fx + off_x) + grid_x;
    let sy = (fy + off_y) + grid_y;
    bilinear_sample(source, sx, sy, Padding::Border).reshape([b, c, hh, ww])
}

/// Extracts the plain `k x k` neighbourhoods (zero flow) of `x`, with replicate padding:
/// `[B, C, k*H, k*W]`. The target side of the local attention.
///
/// Equal to [`extract_blocks`] with a zero flow, but the positions are integers, so it reads one
/// pixel per sample instead of four.
pub fn extract_blocks_identity(x: Tensor<4>, k: usize) -> Tensor<4> {
    assert!(
        k > 0,
        "extract_blocks_identity: kernel size must be positive, got {k}"
    );
    let [b, c, h, w] = x.dims();
    let (hh, ww) = (h * k, w * k);
    let device = x.device();
    let [off_x, off_y, grid_x, grid_y] = tile_geometry(h, w, k);
    let pos = |off: Vec<f32>, grid: Vec<f32>| {
        let v: Vec<f32> = off.iter().zip(&grid).map(|(o, g)| o + g).collect();
        Tensor::<2>::from_data(TensorData::new(v, [1, hh * ww]), (&device, x.dtype()))
            .expand([b, hh * ww])
    };
    let (sx, sy) = (pos(off_x, grid_x), pos(off_y, grid_y));
    PixelRows::new(x)
        .at(sx, sy)
        .swap_dims(1, 2)
        .reshape([b, c, hh, ww])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn ramp(shape: [usize; 4], device: &Device) -> Tensor<4> {
        let n: usize = shape.iter().product();
        Tensor::from_data(
            TensorData::new((0..n).map(|i| i as f32).collect::<Vec<_>>(), shape),
            device,
        )
    }

    #[test]
    fn zero_flow_is_unfold_with_replicate_padding() {
        let device = Device::flex();
        // 1 x 1 x 3 x 4 map with values 0..12; tile of cell (0, 0) with k = 3.
        let x = ramp([1, 1, 3, 4], &device);
        let out: Vec<f32> = extract_blocks_identity(x, 3).try_into_vec_as().unwrap();
        let tile = |yf: usize, xf: usize| -> Vec<f32> {
            (0..3)
                .flat_map(|u| (0..3).map(move |v| (u, v)))
                .map(|(u, v)| out[(yf * 3 + u) * 12 + xf * 3 + v])
                .collect()
        };
        // Row -1 and column -1 replicate row 0 and column 0.
        assert_eq!(tile(0, 0), vec![0., 0., 1., 0., 0., 1., 4., 4., 5.]);
        assert_eq!(tile(1, 2), vec![1., 2., 3., 5., 6., 7., 9., 10., 11.]);
        assert_eq!(tile(2, 3), vec![6., 7., 7., 10., 11., 11., 10., 11., 11.]);
    }

    #[test]
    fn half_pixel_flow_averages_neighbours() {
        let device = Device::flex();
        let x = ramp([1, 1, 3, 4], &device);
        let flow = Tensor::<4>::from_data(
            TensorData::new(
                vec![0.5f32; 12]
                    .into_iter()
                    .chain(vec![0.0; 12])
                    .collect::<Vec<_>>(),
                [1, 2, 3, 4],
            ),
            &device,
        );
        let out: Vec<f32> = extract_blocks(x, flow, 1).try_into_vec_as().unwrap();
        // Half a pixel to the right: mean of a pixel and its right neighbour, clamped at the edge.
        assert_eq!(
            out,
            vec![0.5, 1.5, 2.5, 3., 4.5, 5.5, 6.5, 7., 8.5, 9.5, 10.5, 11.]
        );
    }

    #[test]
    fn even_k_window_is_shifted_up_left() {
        let device = Device::flex();
        let x = ramp([1, 1, 3, 4], &device);
        let out: Vec<f32> = extract_blocks_identity(x, 2).try_into_vec_as().unwrap();
        // Cell (1, 1) with k = 2 reads rows 0..=1 and columns 0..=1 (offsets -1 and 0).
        let w = 8;
        assert_eq!(
            [
                out[2 * w + 2],
                out[2 * w + 3],
                out[3 * w + 2],
                out[3 * w + 3]
            ],
            [0., 1., 4., 5.]
        );
    }

    #[test]
    fn identity_fast_path_equals_zero_flow_extraction() {
        let device = Device::flex();
        let x = ramp([2, 3, 5, 4], &device);
        for k in [2usize, 3, 5] {
            let fast: Vec<f32> = extract_blocks_identity(x.clone(), k)
                .try_into_vec_as()
                .unwrap();
            let slow: Vec<f32> = extract_blocks(x.clone(), Tensor::zeros([2, 2, 5, 4], &device), k)
                .try_into_vec_as()
                .unwrap();
            assert_eq!(fast, slow, "k = {k}");
        }
    }

    #[test]
    #[should_panic(expected = "flow must have 2 channels")]
    fn rejects_a_three_channel_flow() {
        let device = Device::flex();
        extract_blocks(ramp([1, 1, 3, 4], &device), ramp([1, 3, 3, 4], &device), 3);
    }

    #[test]
    #[should_panic(expected = "differ in batch size")]
    fn rejects_mismatched_batches() {
        let device = Device::flex();
        extract_blocks(ramp([2, 1, 3, 4], &device), ramp([1, 2, 3, 4], &device), 3);
    }
}
