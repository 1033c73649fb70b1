//! Flow-field utilities: resizing with the right scaling and pictures of flows and attention.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};

/// Resizes a flow (`[B, 2, h, w]`, pixels of its own grid) to `[height, width]` bilinearly
/// and rescales the displacements to the new grid (x by `width / w`, y by `height / h`), so the
/// resized flow points at the same image content.
pub fn resize_flow(flow: Tensor<4>, height: usize, width: usize) -> Tensor<4> {
    let [_, c, h, w] = flow.dims();
    assert_eq!(
        c,
        2,
        "resize_flow: flow must have 2 channels, got {:?}",
        flow.dims()
    );
    assert!(
        height > 0 && width > 0,
        "resize_flow: target size {height} x {width} is empty"
    );
    let resized = if (h, w) == (height, width) {
        flow
    } else {
        interpolate(
            flow,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(false)
                .with_output_size([height, width]),
        )
    };
    let scale = Tensor::<4>::from_data(
        TensorData::new(
            vec![
                (width as f64 / w as f64) as f32,
                (height as f64 / h as f64) as f32,
            ],
            [1, 2, 1, 1],
        ),
        (&resized.device(), resized.dtype()),
    );
    resized * scale
}

/// The Middlebury colour wheel (55 hues: RY 15, YG 6, GC 4, CB 11, BM 13, MR 6), as 0..255 RGB.
fn color_wheel() -> Vec<[f32; 3]> {
    let (ry, yg, gc, cb, bm, mr) = (15, 6, 4, 11, 13, 6);
    let mut wheel = Vec::with_capacity(55);
    let ramp = |i: usize, n: usize| 255.0 * i as f32 / n as f32;
    for i in 0..ry {
        wheel.push([255.0, ramp(i, ry), 0.0]);
    }
    for i in 0..yg {
        wheel.push([255.0 - ramp(i, yg), 255.0, 0.0]);
    }
    for i in 0..gc {
        wheel.push([0.0, 255.0, ramp(i, gc)]);
    }
    for i in 0..cb {
        wheel.push([0.0, 255.0 - ramp(i, cb), 255.0]);
    }
    for i in 0..bm {
        wheel.push([ramp(i, bm), 0.0, 255.0]);
    }
    for i in 0..mr {
        wheel.push([255.0, 0.0, 255.0 - ramp(i, mr)]);
    }
    wheel
}

/// Colours a flow (`[B, 2, h, w]`) with the Middlebury wheel as the official `flow2color`:
/// hue from the direction, saturation from the magnitude relative to the largest displacement
/// of each image. Returns RGB in `[0, 1]`, `[B, 3, h, w]` (computed on the host: it is a picture).
pub fn flow_to_color(flow: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = flow.dims();
    assert_eq!(
        c,
        2,
        "flow_to_color: flow must have 2 channels, got {:?}",
        flow.dims()
    );
    let device = flow.device();
    let data: Vec<f32> = flow.try_into_vec_as::<f32>().expect("float flow data");
    let wheel = color_wheel();
    let ncols = wheel.len() as f32;
    let n = h * w;
    let mut out = vec![0.0f32; b * 3 * n];
    for bi in 0..b {
        // The official code swaps the channels: u := y, v := x.
        let u = &data[(bi * 2 + 1) * n..(bi * 2 + 2) * n];
        let v = &data[(bi * 2) * n..(bi * 2 + 1) * n];
        let maxrad = u
            .iter()
            .zip(v)
            .map(|(a, b)| (a * a + b * b).sqrt())
            .filter(|r| r.is_finite())
            .fold(-1.0f32, f32::max);
        for p in 0..n {
            let (uu, vv) = (u[p] / (maxrad + 1e-5), v[p] / (maxrad + 1e-5));
            let rad = (uu * uu + vv * vv).sqrt();
            let a = (-vv).atan2(-uu) / std::f32::consts::PI;
            let fk = (a + 1.0) / 2.0 * (ncols - 1.0);
            let k0 = (fk.floor().max(0.0) as usize).min(wheel.len() - 1);
            let k1 = if k0 + 1 == wheel.len() { 0 } else { k0 + 1 };
            let f = fk - k0 as f32;
            for ch in 0..3 {
                let col0 = wheel[k0][ch] / 255.0;
                let col1 = wheel[k1][ch] / 255.0;
                let mut col = (1.0 - f) * col0 + f * col1;
                if rad <= 1.0 {
                    col = 1.0 - rad * (1.0 - col);
                } else {
                    col *= 0.75;
                }
                out[(bi * 3 + ch) * n + p] = if col.is_finite() { col } else { 0.0 };
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [b, 3, h, w]), &device)
}

/// Maps a one-channel map (`[B, 1, h, w]`) to a "jet" heat map in `[0, 1]`, `[B, 3, h, w]`,
/// normalised per image to its own min..max. Used for attention weights (after
/// [`crate::local_attn_reshape`], each `k x k` tile shows one location's distribution) and masks.
pub fn heatmap(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    assert_eq!(c, 1, "heatmap: expects one channel, got {:?}", x.dims());
    let device = x.device();
    let data: Vec<f32> = x.try_into_vec_as::<f32>().expect("float data");
    let n = h * w;
    let mut out = vec![0.0f32; b * 3 * n];
    for bi in 0..b {
        let img = &data[bi * n..(bi + 1) * n];
        let lo = img.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = img.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        for (p, &v) in img.iter().enumerate() {
            let t = ((v - lo) / span).clamp(0.0, 1.0);
            let rgb = [
                (1.5 - (4.0 * t - 3.0).abs()).clamp(0.0, 1.0),
                (1.5 - (4.0 * t - 2.0).abs()).clamp(0.0, 1.0),
                (1.5 - (4.0 * t - 1.0).abs()).clamp(0.0, 1.0),
            ];
            for ch in 0..3 {
                out[(bi * 3 + ch) * n + p] = rgb[ch];
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [b, 3, h, w]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn resizing_scales_displacements_to_the_new_grid() {
        let device = Device::flex();
        let v: Vec<f32> = std::iter::repeat_n(1.0, 8)
            .chain(std::iter::repeat_n(-2.0, 8))
            .collect();
        let flow = Tensor::<4>::from_data(TensorData::new(v, [1, 2, 2, 4]), &device);
        let out: Vec<f32> = resize_flow(flow, 8, 8).try_into_vec_as().unwrap();
        // 4 -> 8 columns doubles x; 2 -> 8 rows multiplies y by 4.
        assert!(out[..64].iter().all(|v| (v - 2.0).abs() < 1e-6));
        assert!(out[64..].iter().all(|v| (v + 8.0).abs() < 1e-6));
    }

    #[test]
    fn flow_colours_follow_the_middlebury_wheel() {
        let device = Device::flex();
        // Cell 0 points right at full length, cell 1 is still.
        let flow = Tensor::<4>::from_data(
            TensorData::new(vec![3.0f32, 0.0, 0.0, 0.0], [1, 2, 1, 2]),
            &device,
        );
        let c: Vec<f32> = flow_to_color(flow).try_into_vec_as().unwrap();
        // Right: between wheel entries 13 and 14 of the red-yellow ramp.
        let g = 0.5 * (221.0 + 238.0) / 255.0;
        assert!(
            (c[0] - 1.0).abs() < 1e-4 && (c[2] - g).abs() < 1e-4 && c[4].abs() < 1e-4,
            "{c:?}"
        );
        // Zero flow is white.
        assert_eq!([c[1], c[3], c[5]], [1.0, 1.0, 1.0]);
    }

    #[test]
    fn heatmap_spans_blue_to_red() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 1.0], [1, 1, 1, 2]), &device);
        let c: Vec<f32> = heatmap(x).try_into_vec_as().unwrap();
        // [R0, R1, G0, G1, B0, B1]: minimum is dark blue, maximum dark red.
        assert_eq!(c, vec![0.0, 0.5, 0.0, 0.0, 0.5, 0.0]);
    }
}
