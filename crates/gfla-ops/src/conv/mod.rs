//! Convolutions for the CPU as a few large matrix products: drop-in replacements for
//! [`burn::tensor::module::conv2d`] and [`burn::tensor::module::conv_transpose2d`].
//!
//! On the Flex backend in float32 (and under autodiff, with a handwritten backward that runs
//! the same kernels) the input is copied once, padded and channels-last; every kernel row is
//! then one matrix product over a strided view of that copy, so no `k*k`-times larger im2col
//! matrix is built. Strided convolutions run on space-to-depth pixels and transposed ones as
//! one stride-1 product per output parity, so neither multiplies zeros. 3x3 stride-1 layers
//! (forward, and their input gradient) use Winograd's F(2x2, 3x3), which needs 16 instead of 36
//! multiply-adds per 2x2 output tile, and large 4x4 stride-2 layers F(2x2, 2x2) over
//! space-to-depth pixels (9 instead of 16). A weight that needs no gradient (inference, a
//! frozen network) keeps its reordered or transformed kernel between calls, up to a limit
//! ([`set_kernel_cache_limit`]). Other backends, dtypes, dilations and groups call Burn's
//! convolutions. On CPUs with AVX-512 BF16, [`set_bf16_products`] makes the forward products
//! of such kept weights bfloat16 (opt-in, about 1.6x faster; sums stay float32).

use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, Tensor};

use crate::device::{Kernels, kernels};

#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod avx512;
#[cfg(feature = "flex")]
pub(crate) mod bf16;
#[cfg(feature = "flex")]
pub(crate) mod cache;
#[cfg(feature = "flex")]
mod cpu;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
pub(crate) mod panel;
#[cfg(feature = "flex")]
mod planar;
#[cfg(feature = "flex")]
mod winograd;

#[cfg(feature = "flex")]
pub use bf16::{bf16_products, bf16_supported, set_bf16_products};
#[cfg(feature = "flex")]
pub use cache::{
    DEFAULT_KERNEL_CACHE_LIMIT, clear_kernel_cache, kernel_cache_bytes, set_kernel_cache_limit,
};
#[cfg(feature = "flex")]
pub use cpu::{ConvGeometry, TransposedGeometry};
#[cfg(feature = "flex")]
pub use flex::GemmConvBackend;

/// Whether the GEMM kernels serve tensors on `t`'s device and dtype.
fn gemm_available(t: &Tensor<4>) -> bool {
    t.dtype() == DType::F32 && kernels(t) == Kernels::Flex
}

/// [`burn::tensor::module::conv2d`]: `x` `[B, C, H, W]`, `weight` `[O, C / groups, kh, kw]`,
/// `bias` `[O]`. Same values and gradients; faster on Flex for dilation 1 and one group.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if !(gemm_available(&x)
        && gemm_available(&weight)
        && options.dilation == [1, 1]
        && options.groups == 1)
    {
        return module::conv2d(x, weight, bias, options);
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        let [o, c, kh, kw] = weight.dims();
        assert_eq!(
            x.dims()[1],
            c,
            "conv2d: input {:?} and weight {:?} differ in channels",
            x.dims(),
            weight.dims()
        );
        let [(top, bottom), (left, right)] = options.padding;
        let geometry = ConvGeometry {
            input: x.dims(),
            out_channels: o,
            kernel: [kh, kw],
            stride: options.stride,
            padding: [top, left, bottom, right],
        };
        let bias = bias.unwrap_or_else(|| Tensor::zeros([o], &x.device()));
        Tensor::from_dispatch(<Dispatch as GemmConvBackend>::gemm_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
            geometry,
        ))
    }
    #[cfg(not(feature = "flex"))]
    unreachable!()
}

/// [`burn::tensor::module::conv_transpose2d`]: `x` `[B, C, H, W]`, `weight`
/// `[C, O / groups, kh, kw]`, `bias` `[O]`. Same values and gradients; faster on Flex for
/// dilation 1, one group and an output padding no larger than the padding (GFLA's decoders).
pub fn conv_transpose2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<4> {
    let fits = options.dilation == [1, 1]
        && options.groups == 1
        && (0..2).all(|i| options.padding_out[i] <= options.padding[i]);
    if !(fits && gemm_available(&x) && gemm_available(&weight)) {
        return module::conv_transpose2d(x, weight, bias, options);
    }
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        let [c, o, kh, kw] = weight.dims();
        let [_, ci, h, w] = x.dims();
        assert_eq!(
            ci,
            c,
            "conv_transpose2d: input {:?} and weight {:?} differ in channels",
            x.dims(),
            weight.dims()
        );
        let size = |len: usize, i: usize, k: usize| {
            (len - 1) * options.stride[i] + k + options.padding_out[i] - 2 * options.padding[i]
        };
        let geometry = TransposedGeometry {
            input: x.dims(),
            out_channels: o,
            kernel: [kh, kw],
            stride: options.stride,
            crop: options.padding,
            output: [size(h, 0, kh), size(w, 1, kw)],
        };
        let bias = bias.unwrap_or_else(|| Tensor::zeros([o], &x.device()));
        Tensor::from_dispatch(<Dispatch as GemmConvBackend>::gemm_conv_transpose2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
            geometry,
        ))
    }
    #[cfg(not(feature = "flex"))]
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
    }

    /// Values and all three gradients against Burn's own convolution.
    fn compare(
        ours: impl Fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>,
        burns: impl Fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>,
        x: [usize; 4],
        w: [usize; 4],
        o: usize,
    ) {
        let device = Device::flex().autodiff();
        let (x, w) = (random(x, &device), random(w, &device));
        let b = Tensor::<1>::random([o], Distribution::Uniform(-1.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>| {
            let (x, w, b) = (
                x.clone().detach().require_grad(),
                w.clone().detach().require_grad(),
                b.clone().detach().require_grad(),
            );
            let y = f(x.clone(), w.clone(), b.clone());
            // A non-uniform upstream gradient, so that every position's weight matters.
            let probe = y.clone().detach().cos();
            let grads = (y.clone() * probe).sum().backward();
            (
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
                b.grad(&grads).unwrap().into_data(),
            )
        };
        let (a, b2) = (run(&ours), run(&burns));
        let tol = Tolerance::<f32>::absolute(2e-4);
        a.0.assert_approx_eq(&b2.0, tol);
        a.1.assert_approx_eq(&b2.1, tol);
        a.2.assert_approx_eq(&b2.2, tol);
        a.3.assert_approx_eq(&b2.3, tol);
    }

    #[test]
    fn conv2d_matches_burn_with_gradients() {
        for (x, w, stride, padding) in [
            ([2, 3, 9, 7], [4, 3, 3, 3], [1, 1], [(1, 1), (1, 1)]),
            ([1, 5, 8, 8], [6, 5, 4, 4], [2, 2], [(1, 1), (1, 1)]),
            ([1, 4, 9, 11], [3, 4, 4, 4], [2, 2], [(1, 1), (1, 1)]),
            ([1, 3, 10, 9], [5, 3, 7, 5], [1, 1], [(0, 1), (2, 0)]),
            ([2, 2, 11, 13], [3, 2, 5, 3], [3, 2], [(2, 2), (1, 1)]),
            // Rows of 8 pixels and blocks of 8 channels written out together, and the rest; the
            // weight gradient of a small map split by channels, over two items.
            ([2, 3, 6, 11], [20, 3, 5, 3], [1, 1], [(2, 2), (1, 1)]),
            // Winograd's, forward (3x3 and 4x4 stride 2) and, for 3x3, the input gradient.
            ([2, 8, 7, 6], [16, 8, 3, 3], [1, 1], [(1, 1), (1, 1)]),
            ([1, 4, 10, 9], [16, 4, 4, 4], [2, 2], [(1, 1), (1, 1)]),
        ] {
            let options = ConvOptions::new_with_padding(stride, padding, [1, 1], 1);
            compare(
                |x, w, b| conv2d(x, w, Some(b), options.clone()),
                |x, w, b| module::conv2d(x, w, Some(b), options.clone()),
                x,
                w,
                w[0],
            );
        }
    }

    #[test]
    fn conv_transpose2d_matches_burn_with_gradients() {
        for (x, w, stride, padding, padding_out) in [
            ([2, 3, 5, 4], [3, 4, 3, 3], [2, 2], [1, 1], [1, 1]),
            ([1, 5, 4, 6], [5, 3, 4, 4], [2, 2], [1, 1], [0, 0]),
            ([1, 2, 5, 5], [2, 2, 3, 3], [1, 1], [1, 1], [0, 0]),
            ([1, 3, 4, 5], [3, 2, 5, 3], [3, 2], [2, 1], [1, 1]),
            // Pairs of column parities written out in blocks of 8 pixels and channels, with
            // and without a last odd column.
            ([1, 4, 3, 9], [4, 20, 3, 3], [2, 2], [1, 1], [1, 1]),
            ([1, 4, 3, 9], [4, 20, 3, 3], [2, 2], [1, 1], [0, 0]),
        ] {
            let options = ConvTransposeOptions::new(stride, padding, padding_out, [1, 1], 1);
            compare(
                |x, w, b| conv_transpose2d(x, w, Some(b), options.clone()),
                |x, w, b| module::conv_transpose2d(x, w, Some(b), options.clone()),
                x,
                w,
                w[1],
            );
        }
    }

    /// Inference (no autodiff) keeps each weight's prepared kernel between calls: the second
    /// call gives the same values, a call at another batch size Burn's, and a weight changed by
    /// an op (which Flex would do in place on a tensor that owned its storage alone) or dropped
    /// and replaced is prepared anew.
    #[test]
    fn inference_reuses_kernels_and_follows_weight_changes() {
        let device = Device::flex();
        let tol = Tolerance::<f32>::absolute(2e-4);
        type Conv = Box<dyn Fn(Tensor<4>, Tensor<4>) -> Tensor<4>>;
        let conv = |stride, padding| -> [Conv; 2] {
            let options = ConvOptions::new_with_padding(stride, padding, [1, 1], 1);
            let o2 = options.clone();
            [
                Box::new(move |x, w| conv2d(x, w, None, options.clone())),
                Box::new(move |x, w| module::conv2d(x, w, None, o2.clone())),
            ]
        };
        let transposed = |stride, padding, out| -> [Conv; 2] {
            let options = ConvTransposeOptions::new(stride, padding, out, [1, 1], 1);
            let o2 = options.clone();
            [
                Box::new(move |x, w| conv_transpose2d(x, w, None, options.clone())),
                Box::new(move |x, w| module::conv_transpose2d(x, w, None, o2.clone())),
            ]
        };
        let cases: [([usize; 4], [usize; 4], [Conv; 2]); 5] = [
            // Winograd 3x3 and 4x4 stride 2, the GEMM path, transposed stride 2 and stride 1.
            ([1, 8, 9, 7], [16, 8, 3, 3], conv([1, 1], [(1, 1), (1, 1)])),
            ([1, 4, 10, 8], [16, 4, 4, 4], conv([2, 2], [(1, 1), (1, 1)])),
            ([2, 3, 9, 8], [5, 3, 5, 3], conv([1, 2], [(2, 1), (0, 1)])),
            (
                [1, 6, 5, 4],
                [6, 5, 3, 3],
                transposed([2, 2], [1, 1], [1, 1]),
            ),
            (
                [1, 8, 6, 5],
                [8, 16, 3, 3],
                transposed([1, 1], [1, 1], [0, 0]),
            ),
        ];
        for (xs, ws, [ours, burns]) in cases {
            let x = random(xs, &device);
            let w = random(ws, &device);
            let first = ours(x.clone(), w.clone()).into_data();
            first.assert_approx_eq(&burns(x.clone(), w.clone()).into_data(), tol);
            ours(x.clone(), w.clone())
                .into_data()
                .assert_eq(&first, true);
            // Another batch size, with the kernel kept from the first.
            let x3 = Tensor::cat(vec![x.clone(), x.clone().flip([3]), x.clone().neg()], 0);
            let y = ours(x3.clone(), w.clone()).into_data();
            y.assert_approx_eq(&burns(x3, w.clone()).into_data(), tol);
            // The only reference outside the cache, so a candidate for an in-place update.
            let w = w.add_scalar(0.5);
            let y = ours(x.clone(), w.clone()).into_data();
            y.assert_approx_eq(&burns(x.clone(), w.clone()).into_data(), tol);
            drop(w);
            let w = random(ws, &device);
            let y = ours(x.clone(), w.clone()).into_data();
            y.assert_approx_eq(&burns(x, w).into_data(), tol);
        }
    }

    /// Under autodiff, a weight without a gradient (a frozen network's) keeps its prepared
    /// kernels, for the forward and for the input gradient: values and the input's gradient
    /// are Burn's, on the first call and the next.
    #[test]
    fn a_constant_weight_keeps_its_kernels_under_autodiff() {
        let device = Device::flex().autodiff();
        let tol = Tolerance::<f32>::absolute(2e-4);
        let (w, wt) = (
            random([16, 8, 3, 3], &device),
            random([8, 6, 3, 3], &device),
        );
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let t_options = ConvTransposeOptions::new([2, 2], [1, 1], [1, 1], [1, 1], 1);
        type Layer<'a> = Box<dyn Fn(Tensor<4>) -> Tensor<4> + 'a>;
        let layers: [(Layer, Layer); 2] = [
            (
                Box::new(|x| conv2d(x, w.clone(), None, options.clone())),
                Box::new(|x| module::conv2d(x, w.clone(), None, options.clone())),
            ),
            (
                Box::new(|x| conv_transpose2d(x, wt.clone(), None, t_options.clone())),
                Box::new(|x| module::conv_transpose2d(x, wt.clone(), None, t_options.clone())),
            ),
        ];
        for _ in 0..2 {
            for (ours, burns) in &layers {
                let x = random([1, 8, 9, 7], &device);
                let run = |f: &Layer| {
                    let x = x.clone().require_grad();
                    let y = f(x.clone());
                    let probe = y.clone().detach().cos();
                    let grads = (y.clone() * probe).sum().backward();
                    (y.into_data(), x.grad(&grads).unwrap().into_data())
                };
                let (a, b) = (run(ours), run(burns));
                a.0.assert_approx_eq(&b.0, tol);
                a.1.assert_approx_eq(&b.1, tol);
            }
        }
    }

    #[test]
    fn other_cases_fall_back_to_burn() {
        // Dilation 2 and two groups run Burn's convolution: same result, no panic.
        let device = Device::flex();
        let x = random([1, 4, 9, 9], &device);
        let w = random([4, 2, 3, 3], &device);
        let options = ConvOptions::new([1, 1], [2, 2], [2, 2], 2);
        conv2d(x.clone(), w.clone(), None, options.clone())
            .into_data()
            .assert_eq(&module::conv2d(x, w, None, options).into_data(), true);
    }
}
