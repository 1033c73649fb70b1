//! The GEMM convolutions as a Burn backend extension: Flex kernels and a handwritten backward
//! for `Autodiff<Flex>` that runs the same kernels.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use super::cache::{self, Purpose};
use super::cpu::{self, ConvGeometry, TransposedGeometry};
use crate::autodiff::{backward_step, record};
use crate::simd::{tensor, values};

/// Convolutions run as a few large matrix products (see [`super`]). Implemented for Flex and
/// `Autodiff<Flex>`; [`super::conv2d`] and [`super::conv_transpose2d`] call Burn's own
/// convolutions on other backends.
#[backend_extension(Flex, Autodiff)]
pub trait GemmConvBackend: Backend {
    /// A convolution with dilation 1 and one group; `bias` is `[O]`.
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self>;

    /// A transposed convolution with dilation 1 and one group; `bias` is `[O]`.
    fn gemm_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: TransposedGeometry,
    ) -> FloatTensor<Self>;
}

/// [`cpu::conv2d`]; `constant`: the weight needs no gradient, so its prepared kernel is kept
/// between calls ([`cache`]); `bf16` (only with `constant`): the products in bfloat16.
fn conv2d(
    x: &[f32],
    w: &FlexTensor,
    b: Option<&[f32]>,
    g: &ConvGeometry,
    constant: bool,
    bf16: bool,
) -> Vec<f32> {
    if !constant {
        return cpu::conv2d(x, &values(w), b, g);
    }
    let kernel = cache::prepared(w, Purpose::conv(g), cpu::ConvKernel::bytes, |reused| {
        cpu::prepare_conv(&values(w), g, reused)
    });
    cpu::conv2d_prepared(x, &kernel, b, g, bf16)
}

/// [`cpu::conv_transpose2d`]; `constant` and `bf16` as in [`conv2d`].
fn conv_transpose2d(
    x: &[f32],
    w: &FlexTensor,
    b: Option<&[f32]>,
    g: &TransposedGeometry,
    constant: bool,
    bf16: bool,
) -> Vec<f32> {
    if !constant {
        return cpu::conv_transpose2d(x, &values(w), b, g);
    }
    let kernel = cache::prepared(
        w,
        Purpose::transposed(g),
        cpu::TransposedKernel::bytes,
        |reused| cpu::prepare_transposed(&values(w), g, reused),
    );
    cpu::conv_transpose2d_prepared(x, &kernel, b, g, bf16)
}

fn conv_forward([x, w, b]: [&FlexTensor; 3], g: &ConvGeometry, constant: bool) -> FlexTensor {
    let [n, _, _, _] = g.input;
    let [oh, ow] = g.output();
    // Only a forward's products: the backward's stay float32.
    let bf16 = constant && super::bf16::bf16_products();
    let y = conv2d(&values(x), w, Some(&values(b)), g, constant, bf16);
    tensor(y, [n, g.out_channels, oh, ow])
}

fn transposed_forward(
    [x, w, b]: [&FlexTensor; 3],
    g: &TransposedGeometry,
    constant: bool,
) -> FlexTensor {
    let [n, _, _, _] = g.input;
    let [oh, ow] = g.output;
    let bf16 = constant && super::bf16::bf16_products();
    let y = conv_transpose2d(&values(x), w, Some(&values(b)), g, constant, bf16);
    tensor(y, [n, g.out_channels, oh, ow])
}

multiversion! {
    /// `sum` gets the sum of `x` in float64.
    fn plane_sum(x: &[f32], sum: &mut f64) {
        *sum = crate::simd::sum8(x, |v| v as f64);
    }
}

/// Sum of `dy` (`[B, O, h, w]`) over everything but the channel: the bias gradient. Planes in
/// parallel, each in eight float64 lanes: one sequential sum per plane was 1 % of a training
/// step.
fn bias_grad(dy: &[f32], channels: usize, [h, w]: [usize; 2]) -> FlexTensor {
    use rayon::prelude::*;
    let plane = (h * w).max(1);
    let planes: Vec<f64> = dy
        .par_chunks_exact(plane)
        .map(|x| {
            let mut sum = 0.0;
            plane_sum(x, &mut sum);
            sum
        })
        .collect();
    let mut sums = vec![0.0f64; channels];
    for (i, s) in planes.iter().enumerate() {
        sums[i % channels] += s;
    }
    tensor(sums.into_iter().map(|v| v as f32).collect(), [channels])
}

/// Gradients of [`cpu::conv2d`]: `[x, weight, bias]`, each `None` unless wanted.
fn conv_backward(
    [x, w, _]: [FlexTensor; 3],
    dy: FlexTensor,
    g: &ConvGeometry,
    want: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let dy = values(&dy);
    let [n, c, h, wd] = g.input;
    let oc = g.out_channels;
    let out = g.output();
    // The input gradient is the transposed convolution of the output gradient with the same
    // weight, cropped by the leading padding and cut to the input's size.
    let dx = want[0].then(|| {
        let t = TransposedGeometry {
            input: [n, oc, out[0], out[1]],
            out_channels: c,
            kernel: g.kernel,
            stride: g.stride,
            crop: [g.padding[0], g.padding[1]],
            output: [h, wd],
        };
        // A weight without a gradient (a frozen network's) keeps its prepared kernel.
        tensor(
            conv_transpose2d(&dy, &w, None, &t, !want[1], false),
            g.input,
        )
    });
    let dw = want[1].then(|| {
        let shape = w.layout().shape().clone();
        tensor(cpu::conv2d_weight_grad(&values(&x), &dy, g), shape)
    });
    [dx, dw, want[2].then(|| bias_grad(&dy, oc, out))]
}

/// Gradients of [`cpu::conv_transpose2d`]: `[x, weight, bias]`, each `None` unless wanted.
fn transposed_backward(
    [x, w, _]: [FlexTensor; 3],
    dy: FlexTensor,
    g: &TransposedGeometry,
    want: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let dy = values(&dy);
    let [n, c, _, _] = g.input;
    let oc = g.out_channels;
    let [oh, ow] = g.output;
    let [ct, cl] = g.crop;
    // The transposed convolution is the adjoint of this convolution (its padding extended at
    // the end so that its output is exactly the transposed input).
    let conv = ConvGeometry {
        input: [n, oc, oh, ow],
        out_channels: c,
        kernel: g.kernel,
        stride: g.stride,
        padding: [
            ct,
            cl,
            end_padding(g.input[2], g.stride[0], g.kernel[0], oh, ct),
            end_padding(g.input[3], g.stride[1], g.kernel[1], ow, cl),
        ],
    };
    debug_assert_eq!(conv.output(), [g.input[2], g.input[3]]);
    let dx = want[0].then(|| tensor(conv2d(&dy, &w, None, &conv, !want[1], false), g.input));
    let dw = want[1].then(|| {
        let shape = w.layout().shape().clone();
        tensor(cpu::conv2d_weight_grad(&dy, &values(&x), &conv), shape)
    });
    [dx, dw, want[2].then(|| bias_grad(&dy, oc, g.output))]
}

/// The end padding that makes a convolution of an `out`-long axis (leading padding `begin`)
/// exactly `len` long: `(len - 1) * stride + kernel - out - begin`, at least 0 (extra input
/// rows past the last window are never read).
fn end_padding(len: usize, stride: usize, kernel: usize, out: usize, begin: usize) -> usize {
    ((len - 1) * stride + kernel).saturating_sub(out + begin)
}

impl GemmConvBackend for Flex {
    fn gemm_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        geometry: ConvGeometry,
    ) -> FlexTensor {
        conv_forward([&x, &weight, &bias], &geometry, true)
    }

    fn gemm_conv_transpose2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        geometry: TransposedGeometry,
    ) -> FlexTensor {
        transposed_forward([&x, &weight, &bias], &geometry, true)
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = ([NodeId; 3], ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Flex, _, _>(ops, grads, cp, |inputs, dy, g, want| {
            conv_backward(inputs, dy, &g, want)
        });
    }
}

#[derive(Debug)]
struct TransposedBackward;

impl Backward<Flex, 3> for TransposedBackward {
    type State = ([NodeId; 3], TransposedGeometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Flex, _, _>(ops, grads, cp, |inputs, dy, g, want| {
            transposed_backward(inputs, dy, &g, want)
        });
    }
}

impl<C: CheckpointStrategy> GemmConvBackend for Autodiff<Flex, C> {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: ConvGeometry,
    ) -> FloatTensor<Self> {
        let constant = !weight.is_tracked();
        record::<C, _, _, _, _>(ConvBackward, [&x, &weight, &bias], geometry, || {
            conv_forward(
                [x.primitive(), weight.primitive(), bias.primitive()],
                &geometry,
                constant,
            )
        })
    }

    fn gemm_conv_transpose2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        geometry: TransposedGeometry,
    ) -> FloatTensor<Self> {
        let constant = !weight.is_tracked();
        record::<C, _, _, _, _>(TransposedBackward, [&x, &weight, &bias], geometry, || {
            transposed_forward(
                [x.primitive(), weight.primitive(), bias.primitive()],
                &geometry,
                constant,
            )
        })
    }
}
