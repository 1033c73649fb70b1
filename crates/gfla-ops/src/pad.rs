//! Padding of NCHW maps by the same margin on every side, optionally after a LeakyReLU, in one
//! pass on the CPU.

use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

/// `x.pad((p, p, p, p), mode)` for `x` `[B, C, H, W]`: the same values as Burn's `pad`. On Flex
/// in float32 without autodiff it is one parallel pass that writes each output row once. Burn's
/// zero-fills the output, copies the interior and then each border as slices, on one thread:
/// GFLA's reflection pads (the flow estimator's skip adapters and the output layer) and the
/// attention's edge pads took 4 % of a Market generator's forward that way.
pub fn pad(x: Tensor<4>, padding: usize, mode: PadMode) -> Tensor<4> {
    padded(x, None, padding, mode)
}

/// `pad(leaky_relu(x, slope), padding, mode)`, the activation applied in the same pass (a
/// constant border stays the constant, as in that composition).
pub fn leaky_relu_pad(x: Tensor<4>, slope: f64, padding: usize, mode: PadMode) -> Tensor<4> {
    padded(x, Some(slope), padding, mode)
}

fn padded(x: Tensor<4>, slope: Option<f64>, padding: usize, mode: PadMode) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let [_, _, h, w] = x.dims();
        // Reflection needs `padding < H, W` (Burn's check, and its error, otherwise).
        let fits = !matches!(mode, PadMode::Reflect) || (padding < h && padding < w);
        if crate::cpu_pool(&x) && x.dtype() == burn::tensor::DType::F32 && fits {
            return flex::forward(x, slope, padding, mode);
        }
    }
    let x = match slope {
        Some(slope) => crate::leaky_relu(x, slope),
        None => x,
    };
    if padding == 0 {
        return x;
    }
    x.pad((padding, padding, padding, padding), mode)
}

#[cfg(feature = "flex")]
mod flex {
    use std::mem::MaybeUninit;

    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Dispatch, Flex, backend_extension};
    use burn::tensor::Tensor;
    use burn::tensor::ops::PadMode;
    use rayon::prelude::*;

    use crate::simd::values;

    /// [`super::padded`] on Flex: `border` 0 reflects, 1 repeats the edge, 2 writes `value`;
    /// `slope` is NaN for no activation.
    #[backend_extension(Flex)]
    pub trait PadBackend: Backend {
        fn activated_pad(
            x: FloatTensor<Self>,
            padding: usize,
            border: usize,
            value: f64,
            slope: f64,
        ) -> FloatTensor<Self>;
    }

    impl PadBackend for Flex {
        fn activated_pad(
            x: FlexTensor,
            padding: usize,
            border: usize,
            value: f64,
            slope: f64,
        ) -> FlexTensor {
            let shape = x.layout().shape().clone();
            let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
            let (ph, pw) = (h + 2 * padding, w + 2 * padding);
            let x = values(&x);
            let len = n * c * ph * pw;
            let mut out = Vec::<f32>::with_capacity(len);
            let border = match border {
                0 => Border::Reflect,
                1 => Border::Edge,
                _ => Border::Constant(value as f32),
            };
            let slope = (!slope.is_nan()).then_some(slope as f32);
            if len > 0 {
                out.spare_capacity_mut()[..len]
                    .par_chunks_mut(ph * pw)
                    .zip(x.par_chunks(h * w))
                    .for_each(|(dst, src)| plane(src, dst, [h, w], padding, border, slope));
            }
            // SAFETY: every plane's `ph * pw` values were written above.
            unsafe { out.set_len(len) };
            crate::simd::tensor(out, [n, c, ph, pw])
        }
    }

    #[derive(Clone, Copy)]
    enum Border {
        Reflect,
        Edge,
        Constant(f32),
    }

    impl Border {
        /// The source index of padded index `i` (`i - padding` in `0..len` is inside);
        /// `None`: the constant.
        fn source(self, i: usize, padding: usize, len: usize) -> Option<usize> {
            let at = i as isize - padding as isize;
            let last = len as isize - 1;
            match self {
                Border::Reflect if at < 0 => Some((-at) as usize),
                Border::Reflect if at > last => Some((2 * last - at) as usize),
                Border::Edge => Some(at.clamp(0, last) as usize),
                Border::Constant(_) if at < 0 || at > last => None,
                _ => Some(at as usize),
            }
        }
    }

    /// One plane: each output row from its source row (or the constant), the interior
    /// activated in a loop of its own, so that it vectorises.
    fn plane(
        src: &[f32],
        dst: &mut [MaybeUninit<f32>],
        [h, w]: [usize; 2],
        padding: usize,
        border: Border,
        slope: Option<f32>,
    ) {
        let pw = w + 2 * padding;
        let activate = |v: f32| match slope {
            Some(s) if v < 0.0 => v * s,
            _ => v,
        };
        for (i, row) in dst.chunks_exact_mut(pw).enumerate() {
            let Some(y) = border.source(i, padding, h) else {
                let Border::Constant(v) = border else {
                    unreachable!("only a constant border has no source")
                };
                for d in row {
                    d.write(v);
                }
                continue;
            };
            let src = &src[y * w..][..w];
            let (left, rest) = row.split_at_mut(padding);
            let (middle, right) = rest.split_at_mut(w);
            interior(src, middle, slope.unwrap_or(1.0));
            for (j, d) in left.iter_mut().enumerate() {
                d.write(match (border, border.source(j, padding, w)) {
                    (_, Some(x)) => activate(src[x]),
                    (Border::Constant(v), None) => v,
                    _ => unreachable!("only a constant border has no source"),
                });
            }
            for (j, d) in right.iter_mut().enumerate() {
                d.write(match (border, border.source(padding + w + j, padding, w)) {
                    (_, Some(x)) => activate(src[x]),
                    (Border::Constant(v), None) => v,
                    _ => unreachable!("only a constant border has no source"),
                });
            }
        }
    }

    multiversion! {
        /// `dst = leaky_relu(src, slope)` (slope 1: a copy).
        fn interior(src: &[f32], dst: &mut [MaybeUninit<f32>], slope: f32) {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(if v < 0.0 { v * slope } else { v });
            }
        }
    }

    pub(super) fn forward(
        x: Tensor<4>,
        slope: Option<f64>,
        padding: usize,
        mode: PadMode,
    ) -> Tensor<4> {
        let (border, value) = match mode {
            PadMode::Reflect => (0, 0.0),
            PadMode::Edge => (1, 0.0),
            PadMode::Constant(v) => (2, v as f64),
        };
        Tensor::from_dispatch(<Dispatch as PadBackend>::activated_pad(
            x.into_dispatch(),
            padding,
            border,
            value,
            slope.unwrap_or(f64::NAN),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData, Tolerance};

    fn lcg_tensor(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
        let n = shape.iter().product();
        Tensor::from_data(
            TensorData::new(crate::testing::lcg(n, seed, 1.0), shape),
            device,
        )
    }

    /// One 2 x 3 plane by hand: reflection mirrors about the edge pixel, the edge repeats it.
    #[test]
    fn pads_a_small_plane_as_written_out_by_hand() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 3.0, -4.0, 5.0, -6.0], [1, 1, 2, 3]),
            &device,
        );
        let reflect = leaky_relu_pad(x.clone(), 0.5, 1, PadMode::Reflect);
        #[rustfmt::skip]
        let want = vec![
            5.0f32, -2.0, 5.0, -3.0, 5.0,
            -1.0, 1.0, -1.0, 3.0, -1.0,
            5.0, -2.0, 5.0, -3.0, 5.0,
            -1.0, 1.0, -1.0, 3.0, -1.0,
        ];
        reflect
            .into_data()
            .assert_eq(&TensorData::new(want, [1, 1, 4, 5]), true);
        let edge = pad(x, 1, PadMode::Edge);
        #[rustfmt::skip]
        let want = vec![
            1.0f32, 1.0, -2.0, 3.0, 3.0,
            1.0, 1.0, -2.0, 3.0, 3.0,
            -4.0, -4.0, 5.0, -6.0, -6.0,
            -4.0, -4.0, 5.0, -6.0, -6.0,
        ];
        edge.into_data()
            .assert_eq(&TensorData::new(want, [1, 1, 4, 5]), true);
    }

    /// Every mode, margins 1-3, odd and even sizes, batch 2, with and without the activation,
    /// against Burn's `leaky_relu` then `pad` (the composition runs on autodiff Flex, where
    /// the fast path is not taken).
    #[test]
    fn matches_burns_leaky_relu_then_pad() {
        let device = Device::flex();
        let tracked = Device::flex().autodiff();
        for (shape, padding) in [([2, 3, 5, 4], 1), ([1, 2, 7, 9], 3), ([1, 17, 4, 4], 2)] {
            for mode in [PadMode::Reflect, PadMode::Edge, PadMode::Constant(0.25)] {
                for slope in [None, Some(0.1)] {
                    let x = lcg_tensor(shape, 7, &device);
                    let reference = padded(
                        Tensor::from_data(x.to_data(), &tracked).require_grad(),
                        slope,
                        padding,
                        mode,
                    );
                    padded(x, slope, padding, mode)
                        .into_data()
                        .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-6));
                }
            }
        }
    }
}
