//! Bilinear sampling at arbitrary positions, the primitive under block extraction and warping.
//!
//! Everything here is written with Burn tensor primitives (row gathers + arithmetic), so it runs
//! on every backend and autodiff derives the exact gradient of the official CUDA kernels: the
//! floor and clamp of the sample position are constants, the bilinear fractions carry the
//! gradient.

use burn::tensor::{Int, Tensor, TensorData};

use crate::device::{Kernels, kernels};

/// Border handling of [`bilinear_sample`] for points outside the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Out-of-range neighbours are clamped onto the border pixel (the block extractor's rule,
    /// `grid_sample(padding_mode="border", align_corners=True)`).
    Border,
    /// Out-of-range neighbours read zero (`grid_sample(padding_mode="zeros", align_corners=True)`).
    Zeros,
}

/// The x and y components of a flow flattened to `[B, 2, N]`, each `[B, N]`.
pub(crate) fn split_flow(flow: Tensor<3>) -> (Tensor<2>, Tensor<2>) {
    let [b, _, n] = flow.dims();
    let fx = flow.clone().slice_dim(1, 0..1).reshape([b, n]);
    let fy = flow.slice_dim(1, 1..2).reshape([b, n]);
    (fx, fy)
}

/// A feature map laid out channels-last (`[B*H*W, C]`), so that reading one pixel's channel
/// vector is one row of a `select`: one index per sample instead of one per sample and channel,
/// and contiguous copies.
pub(crate) struct PixelRows {
    rows: Tensor<2>,
    channels: usize,
    height: usize,
    width: usize,
}

impl PixelRows {
    pub(crate) fn new(source: Tensor<4>) -> Self {
        let [batch, channels, height, width] = source.dims();
        let rows = source
            .permute([0, 2, 3, 1])
            .reshape([batch * height * width, channels]);
        Self {
            rows,
            channels,
            height,
            width,
        }
    }

    /// The pixels at integer positions `x`, `y` (`[B, N]`, float, clamped here onto the map):
    /// `[B, N, C]`.
    pub(crate) fn at(&self, x: Tensor<2>, y: Tensor<2>) -> Tensor<3> {
        let [b, n] = x.dims();
        let (h, w) = (self.height as i64, self.width as i64);
        let xi: Tensor<2, Int> = x.clamp(0.0, (w - 1) as f64).int();
        let yi: Tensor<2, Int> = y.clamp(0.0, (h - 1) as f64).int();
        let offsets: Vec<i64> = (0..b as i64).map(|i| i * h * w).collect();
        let offsets = Tensor::<2, Int>::from_data(TensorData::new(offsets, [b, 1]), &xi.device());
        let index = (yi * w + xi + offsets).reshape([b * n]);
        select_rows(self.rows.clone(), index).reshape([b, n, self.channels])
    }
}

/// The most index rows one `select` takes on CubeCL devices: there Burn 0.22.1's `select`
/// backward adds only the first 65,535 rows' gradients (its forward is right), which made the
/// source gradients of `extract_blocks` wrong at the 64 x 64, k = 5 layer on wgpu.
const CUBE_SELECT_ROWS: usize = 65_535;

/// `rows.select(0, index)`, in pieces of [`CUBE_SELECT_ROWS`] on CubeCL devices.
fn select_rows(rows: Tensor<2>, index: Tensor<1, Int>) -> Tensor<2> {
    if kernels(&rows) == Kernels::Cube {
        select_in_pieces(rows, index, CUBE_SELECT_ROWS)
    } else {
        rows.select(0, index)
    }
}

fn select_in_pieces(rows: Tensor<2>, index: Tensor<1, Int>, piece: usize) -> Tensor<2> {
    let n = index.dims()[0];
    if n <= piece {
        return rows.select(0, index);
    }
    let pieces = (0..n)
        .step_by(piece)
        .map(|start| {
            rows.clone()
                .select(0, index.clone().slice(start..(start + piece).min(n)))
        })
        .collect();
    Tensor::cat(pieces, 0)
}

/// Samples `source` (`[B, C, H, W]`) bilinearly at the absolute pixel positions `sx`, `sy`
/// (`[B, N]`, pixel centres at integers, x = column, y = row). Returns `[B, C, N]`.
///
/// The fractions are taken from the unclamped point and the four neighbours are clamped after
/// flooring, exactly as the official `BlockExtractor` kernel; the terms are summed top-left,
/// top-right, bottom-left, bottom-right.
pub fn bilinear_sample(
    source: Tensor<4>,
    sx: Tensor<2>,
    sy: Tensor<2>,
    padding: Padding,
) -> Tensor<3> {
    let [b, c, h, w] = source.dims();
    assert_eq!(
        sx.dims(),
        sy.dims(),
        "bilinear_sample: x positions {:?} and y positions {:?} differ in shape",
        sx.dims(),
        sy.dims()
    );
    let [bx, _] = sx.dims();
    assert_eq!(
        b,
        bx,
        "bilinear_sample: source batch {b} (source {:?}) differs from positions batch {bx}",
        [b, c, h, w]
    );
    let dtype = sx.dtype();
    // Constants of the sampling: the integer corner and the masks are not differentiated.
    let x0 = sx.clone().detach().floor();
    let y0 = sy.clone().detach().floor();
    let alpha = sx - x0.clone();
    let beta = sy - y0.clone();
    let x1 = x0.clone() + 1.0;
    let y1 = y0.clone() + 1.0;

    let pixels = PixelRows::new(source);
    let mut tl = pixels.at(x0.clone(), y0.clone());
    let mut tr = pixels.at(x1.clone(), y0.clone());
    let mut bl = pixels.at(x0.clone(), y1.clone());
    let mut br = pixels.at(x1.clone(), y1.clone());

    if padding == Padding::Zeros {
        let inside = |xi: &Tensor<2>, yi: &Tensor<2>| -> Tensor<3> {
            let ok = xi
                .clone()
                .greater_equal_elem(0.0)
                .bool_and(xi.clone().lower_equal_elem((w - 1) as f64))
                .bool_and(yi.clone().greater_equal_elem(0.0))
                .bool_and(yi.clone().lower_equal_elem((h - 1) as f64));
            ok.float().cast(dtype).unsqueeze_dim(2)
        };
        tl = tl * inside(&x0, &y0);
        tr = tr * inside(&x1, &y0);
        bl = bl * inside(&x0, &y1);
        br = br * inside(&x1, &y1);
    }

    let one_a = alpha.clone().neg() + 1.0;
    let one_b = beta.clone().neg() + 1.0;
    let w_tl = (one_a.clone() * one_b.clone()).unsqueeze_dim(2);
    let w_tr = (alpha.clone() * one_b).unsqueeze_dim(2);
    let w_bl = (one_a * beta.clone()).unsqueeze_dim(2);
    let w_br = (alpha * beta).unsqueeze_dim(2);
    let out = tl * w_tl + tr * w_tr + bl * w_bl + br * w_br;
    out.swap_dims(1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Values and source gradients of `bilinear_sample` with `n` samples on `device`, from
    /// inputs that depend on `n` only.
    #[cfg(feature = "wgpu")]
    fn sample_with_grads(device: &Device, n: usize) -> (TensorData, TensorData) {
        let spread = |i: usize| (i as f32 * 0.618_034).fract();
        let data = |values: Vec<f32>, shape: Vec<usize>| TensorData::new(values, shape);
        let source = data(
            (0..768).map(|i| (i as f32).sin()).collect(),
            vec![1, 3, 16, 16],
        );
        let source = Tensor::<4>::from_data(source, device).require_grad();
        let at = |shift: usize| {
            let v = (0..n).map(|i| -2.0 + 20.0 * spread(i + shift)).collect();
            Tensor::<2>::from_data(data(v, vec![1, n]), device)
        };
        let probe = data((0..n).map(|i| (i as f32).cos()).collect(), vec![1, 1, n]);
        let out = bilinear_sample(source.clone(), at(0), at(n), Padding::Border);
        let grads = (out.clone() * Tensor::<3>::from_data(probe, device))
            .sum()
            .backward();
        (out.into_data(), source.grad(&grads).unwrap().into_data())
    }

    #[test]
    fn selecting_in_pieces_gives_the_whole_selections_values_and_gradients() {
        let device = Device::flex().autodiff();
        let rows = Tensor::<2>::random([9, 4], Distribution::Uniform(-1.0, 1.0), &device);
        let index = Tensor::<1, Int>::from_ints([8, 0, 3, 3, 7, 1, 8, 8, 2, 5, 4, 0, 6], &device);
        let run = |piece: usize| {
            let rows = rows.clone().detach().require_grad();
            let picked = select_in_pieces(rows.clone(), index.clone(), piece);
            let weights = Tensor::<2>::from_data(
                TensorData::new((0..52).map(|i| i as f32).collect::<Vec<_>>(), [13, 4]),
                &device,
            );
            let grads = (picked.clone() * weights).sum().backward();
            (picked.into_data(), rows.grad(&grads).unwrap().into_data())
        };
        let (whole, pieces) = (run(13), run(5));
        pieces.0.assert_eq(&whole.0, true);
        pieces
            .1
            .assert_approx_eq::<f32>(&whole.1, Tolerance::absolute(1e-5));
    }

    /// Burn 0.22.1's `select` backward on wgpu drops index rows past 65,535: with 70,000
    /// samples the source gradient must still equal the CPU's.
    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu_source_gradients_of_many_samples_equal_the_cpus() {
        let gpu = sample_with_grads(&Device::wgpu(Default::default()).autodiff(), 70_000);
        let cpu = sample_with_grads(&Device::flex().autodiff(), 70_000);
        let tol = Tolerance::absolute(1e-3);
        gpu.0.assert_approx_eq::<f32>(&cpu.0, tol);
        gpu.1.assert_approx_eq::<f32>(&cpu.1, tol);
    }
}
