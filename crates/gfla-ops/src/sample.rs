//! Bilinear sampling at arbitrary positions, the primitive under block extraction and warping.
//!
//! Everything here is written with Burn tensor primitives (row gathers + arithmetic), so it runs
//! on every backend and autodiff derives the exact gradient of the official CUDA kernels: the
//! floor and clamp of the sample position are constants, the bilinear fractions carry the
//! gradient.

use burn::tensor::{Int, Tensor, TensorData};

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
        self.rows
            .clone()
            .select(0, index)
            .reshape([b, n, self.channels])
    }
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
