//! Whole-map warping of a feature map by a flow field.

use burn::tensor::{Tensor, TensorData};

use crate::sample::{Padding, PixelRows, bilinear_sample, split_flow};

/// Absolute sampling positions `grid + flow` of a `[B, 2, h, w]` flow, as `[B, h*w]` x and y.
fn positions(flow: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
    let [b, c, h, w] = flow.dims();
    assert_eq!(
        c,
        2,
        "flow must have 2 channels (x, y), got shape {:?}",
        flow.dims()
    );
    let device = flow.device();
    let dtype = flow.dtype();
    let gx: Vec<f32> = (0..h * w).map(|i| (i % w) as f32).collect();
    let gy: Vec<f32> = (0..h * w).map(|i| (i / w) as f32).collect();
    let gx = Tensor::<2>::from_data(TensorData::new(gx, [1, h * w]), (&device, dtype));
    let gy = Tensor::<2>::from_data(TensorData::new(gy, [1, h * w]), (&device, dtype));
    let flow = flow.reshape([b, 2, h * w]);
    let (fx, fy) = split_flow(flow);
    (gx + fx, gy + fy)
}

fn check_pair(name: &str, source: &Tensor<4>, flow: &Tensor<4>) {
    let [b, ..] = source.dims();
    let [bf, cf, ..] = flow.dims();
    assert!(
        b == bf && cf == 2,
        "{name}: source {:?} and flow {:?} must share the batch size and the flow needs 2 channels",
        source.dims(),
        flow.dims()
    );
}

/// Backward-warps `source` (`[B, C, H, W]`) by `flow` (`[B, 2, h, w]`, pixels of the source
/// grid): `out[b, :, y, x] = source[b, :, y + flow_y, x + flow_x]`, bilinear, align-corners
/// geometry. The output has the flow's size. [`Padding::Border`] is the block extractor's rule
/// with `k = 1` (the paper's bilinear-sampling ablation); [`Padding::Zeros`] is the official
/// stage-1 visualisation.
pub fn warp_bilinear(source: Tensor<4>, flow: Tensor<4>, padding: Padding) -> Tensor<4> {
    check_pair("warp_bilinear", &source, &flow);
    let [b, c, ..] = source.dims();
    let [_, _, h, w] = flow.dims();
    let (sx, sy) = positions(flow);
    bilinear_sample(source, sx, sy, padding).reshape([b, c, h, w])
}

/// The official `Resample2d` with window 4, dilation 1 and sigma 2, used by the
/// sampling-correctness loss: a Gaussian-weighted, normalised average of the 4 x 4 neighbourhood
/// `floor(p) - 1 ..= floor(p) + 2` of every sample point `p = grid + flow`, neighbours clamped to
/// the map. The gradient with respect to `flow` is the exact derivative (floor and clamp are
/// constants), as the official CUDA kernel's.
pub fn resample_gaussian(source: Tensor<4>, flow: Tensor<4>) -> Tensor<4> {
    check_pair("resample_gaussian", &source, &flow);
    let [b, c, ..] = source.dims();
    let [_, _, h, w] = flow.dims();
    let (sx, sy) = positions(flow);
    let x0 = sx.clone().detach().floor();
    let y0 = sy.clone().detach().floor();
    let alpha = sx - x0.clone();
    let beta = sy - y0.clone();
    // Tap t in 0..4 sits at floor + t - 1, at distance |alpha - (t - 1)| from the point.
    let gauss = |d: Tensor<2>| (d.square() * (-1.0 / 8.0)).exp();
    let wx: Vec<Tensor<2>> = (0..4)
        .map(|t| gauss(alpha.clone() - (t as f64 - 1.0)))
        .collect();
    let wy: Vec<Tensor<2>> = (0..4)
        .map(|t| gauss(beta.clone() - (t as f64 - 1.0)))
        .collect();
    let pixels = PixelRows::new(source);
    let mut num: Option<Tensor<3>> = None;
    for (j, wyj) in wy.iter().enumerate() {
        let yi = y0.clone() + (j as f64 - 1.0);
        for (i, wxi) in wx.iter().enumerate() {
            let xi = x0.clone() + (i as f64 - 1.0);
            let term = pixels.at(xi, yi.clone()) * (wxi.clone() * wyj.clone()).unsqueeze_dim(2);
            num = Some(match num {
                Some(acc) => acc + term,
                None => term,
            });
        }
    }
    let sum_x = wx.into_iter().reduce(|a, b| a + b).expect("4 taps");
    let sum_y = wy.into_iter().reduce(|a, b| a + b).expect("4 taps");
    let den = (sum_x * sum_y).unsqueeze_dim(2);
    (num.expect("16 taps") / den)
        .swap_dims(1, 2)
        .reshape([b, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn map(device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new((0..12).map(|i| i as f32).collect::<Vec<_>>(), [1, 1, 3, 4]),
            device,
        )
    }

    fn constant_flow(fx: f32, fy: f32, device: &Device) -> Tensor<4> {
        let v: Vec<f32> = std::iter::repeat_n(fx, 12)
            .chain(std::iter::repeat_n(fy, 12))
            .collect();
        Tensor::from_data(TensorData::new(v, [1, 2, 3, 4]), device)
    }

    #[test]
    fn integer_flow_shifts_with_border_or_zeros() {
        let device = Device::flex();
        let border: Vec<f32> = warp_bilinear(
            map(&device),
            constant_flow(1.0, 1.0, &device),
            Padding::Border,
        )
        .try_into_vec_as()
        .unwrap();
        assert_eq!(
            border,
            vec![5., 6., 7., 7., 9., 10., 11., 11., 9., 10., 11., 11.]
        );
        let zeros: Vec<f32> = warp_bilinear(
            map(&device),
            constant_flow(1.0, 1.0, &device),
            Padding::Zeros,
        )
        .try_into_vec_as()
        .unwrap();
        assert_eq!(
            zeros,
            vec![5., 6., 7., 0., 9., 10., 11., 0., 0., 0., 0., 0.]
        );
    }

    #[test]
    fn gaussian_resampler_keeps_constants_and_weights_a_delta() {
        let device = Device::flex();
        let ones = Tensor::<4>::ones([1, 2, 3, 4], &device) * 2.5;
        let out: Vec<f32> = resample_gaussian(ones, constant_flow(0.3, -0.7, &device))
            .try_into_vec_as()
            .unwrap();
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-6));

        // A delta at (1, 1) seen from (1, 1) with zero flow (inside, no clamping in a 5 x 5 map):
        // weight g(0)^2 over (sum of g(-1), g(0), g(1), g(2))^2, g(t) = exp(-t^2 / 8).
        let mut v = vec![0.0f32; 25];
        v[6] = 1.0;
        let delta = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 5, 5]), &device);
        let out: Vec<f32> = resample_gaussian(delta, Tensor::zeros([1, 2, 5, 5], &device))
            .try_into_vec_as()
            .unwrap();
        let g = |t: f64| (-t * t / 8.0).exp();
        let s = g(1.0) + g(0.0) + g(1.0) + g(2.0);
        assert!(
            (out[6] as f64 - 1.0 / (s * s)).abs() < 1e-6,
            "got {}",
            out[6]
        );
    }
}
