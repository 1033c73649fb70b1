//! InstanceNorm followed by LeakyReLU, GFLA's pre-activation, in one pass on the CPU.

use burn::nn::InstanceNorm;
use burn::tensor::Tensor;

/// `leaky_relu(norm.forward(x), slope)` for `x` `[B, C, H, W]`. On Flex in float32 it is one
/// parallel kernel: per channel plane the mean and variance (in float64), then one pass that
/// normalises, scales, shifts and rectifies; under autodiff its backward is one too (three
/// passes per plane after the statistics). Burn's InstanceNorm and the activation are eight
/// memory-bound passes forward, some on one thread, over maps of up to 64 x 256 x 256 in GFLA,
/// and more backward, each op keeping its own intermediate. Elsewhere it runs exactly
/// those.
pub fn instance_norm_leaky_relu(norm: &InstanceNorm, x: Tensor<4>, slope: f64) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        use crate::device::{Kernels, kernels};
        let flex = kernels(&x) == Kernels::Flex;
        if flex && x.dtype() == burn::tensor::DType::F32 && x.dims()[1] == norm.num_channels {
            return flex::forward(norm, x, slope);
        }
    }
    crate::leaky_relu(norm.forward(x), slope)
}

#[cfg(feature = "flex")]
mod flex {
    use std::mem::MaybeUninit;

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops};
    use burn::backend::autodiff::{Autodiff, NodeId};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Dispatch, Flex, backend_extension};
    use burn::nn::InstanceNorm;
    use burn::tensor::Tensor;
    use rayon::prelude::*;

    use crate::autodiff::{backward_step, record};
    use crate::simd::{Disjoint, sum8, values};

    /// The fused pre-activation, on Flex and `Autodiff<Flex>` ([`super`] calls it there only).
    /// `scale_shift` is `[gamma; beta]`, `[2C]`.
    #[backend_extension(Flex, Autodiff)]
    pub trait NormActivationBackend: Backend {
        fn instance_norm_leaky_relu(
            x: FloatTensor<Self>,
            scale_shift: FloatTensor<Self>,
            epsilon: f64,
            slope: f64,
        ) -> FloatTensor<Self>;
    }

    fn norm_forward(x: &FlexTensor, affine: &FlexTensor, epsilon: f64, slope: f64) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let (c, plane) = (shape[1], shape[2] * shape[3]);
        let (x, affine) = (values(x), values(affine));
        let slope = slope as f32;
        // Written whole below, so not zeroed first (the zeroing was 1.5 % of a Market
        // generator's forward).
        let len = x.len();
        let mut out = Vec::<f32>::with_capacity(len);
        if plane > 0 {
            out.spare_capacity_mut()[..len]
                .par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each(|(i, (y, x))| {
                    let gamma_beta = [affine[i % c], affine[c + i % c]];
                    normalize_plane(x, y, gamma_beta, epsilon, slope);
                });
        }
        // SAFETY: every plane was written above.
        unsafe { out.set_len(len) };
        crate::simd::tensor(out, shape)
    }

    impl NormActivationBackend for Flex {
        fn instance_norm_leaky_relu(
            x: FlexTensor,
            affine: FlexTensor,
            epsilon: f64,
            slope: f64,
        ) -> FlexTensor {
            norm_forward(&x, &affine, epsilon, slope)
        }
    }

    /// `[epsilon, slope]`.
    type NormState = [f64; 2];

    #[derive(Debug)]
    struct NormBackward;

    impl Backward<Flex, 2> for NormBackward {
        type State = ([NodeId; 2], NormState);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
            backward_step::<Flex, _, _>(ops, grads, cp, |[x, affine], dy, state, want| {
                norm_backward(&x, &affine, &dy, state, want)
            });
        }
    }

    impl<C: CheckpointStrategy> NormActivationBackend for Autodiff<Flex, C> {
        fn instance_norm_leaky_relu(
            x: FloatTensor<Self>,
            affine: FloatTensor<Self>,
            epsilon: f64,
            slope: f64,
        ) -> FloatTensor<Self> {
            record::<C, _, _, _, _>(NormBackward, [&x, &affine], [epsilon, slope], || {
                norm_forward(x.primitive(), affine.primitive(), epsilon, slope)
            })
        }
    }

    /// Gradients of [`norm_forward`], `[x, [gamma; beta]]`, each `None` unless wanted. Per
    /// plane, with `h = (x - mean) / sd` and `dz = dy * (z > 0 ? 1 : slope)` for
    /// `z = gamma * h + beta` (PyTorch's slope at 0): `dbeta = sum dz`, `dgamma = sum dz * h`
    /// and `dx = gamma / sd * (dz - mean(dz) - h * mean(dz * h))`.
    fn norm_backward(
        x: &FlexTensor,
        affine: &FlexTensor,
        dy: &FlexTensor,
        [epsilon, slope]: NormState,
        want: [bool; 2],
    ) -> [Option<FlexTensor>; 2] {
        let shape = x.layout().shape().clone();
        let (c, plane) = (shape[1], shape[2] * shape[3]);
        let (x, affine, dy) = (values(x), values(affine), values(dy));
        // Also the scratch of `dz` when the input needs no gradient.
        let mut dx = crate::simd::zeros(x.len());
        let out = Disjoint(dx.as_mut_ptr());
        // Per plane `[sum dz, sum dz * h]`.
        let sums: Vec<[f64; 2]> = (0..x.len() / plane.max(1))
            .into_par_iter()
            .map(|i| {
                let range = i * plane..(i + 1) * plane;
                // SAFETY: plane `i` of `dx` is written by this task only.
                let dx =
                    unsafe { std::slice::from_raw_parts_mut(out.ptr().add(range.start), plane) };
                let gamma_beta = [affine[i % c], affine[c + i % c]];
                let (x, dy) = (&x[range.clone()], &dy[range]);
                let mut sums = [0.0f64; 2];
                plane_backward(x, dy, dx, gamma_beta, [epsilon, slope], &mut sums);
                sums
            })
            .collect();
        let daffine = want[1].then(|| {
            let mut d = vec![0.0f64; 2 * c];
            for (i, [dz, dzh]) in sums.iter().enumerate() {
                d[c + i % c] += dz;
                d[i % c] += dzh;
            }
            crate::simd::tensor(d.into_iter().map(|v| v as f32).collect(), [2 * c])
        });
        let dx = want[0].then(|| crate::simd::tensor(dx, shape));
        [dx, daffine]
    }

    /// Mean and `1 / sd` of a plane, as [`normalize_plane`] computes them.
    #[inline(always)]
    fn statistics(x: &[f32], epsilon: f64) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = sum8(x, |v| v as f64) / n;
        let var = sum8(x, |v| (v as f64 - mean).powi(2)) / n;
        (mean, 1.0 / (var + epsilon).sqrt())
    }

    multiversion! {
        /// One plane of [`norm_backward`]: `sums` gets `[sum dz, sum dz * h]`, and `dx` the
        /// input gradient, in three passes over the plane (which stays in L2): `dz`, the sums,
        /// the gradient in place. (In one pass with the sums, the selection of the slope became
        /// a branch per lane.)
        fn plane_backward(
            x: &[f32],
            dy: &[f32],
            dx: &mut [f32],
            gamma_beta: [f32; 2],
            epsilon_slope: [f64; 2],
            sums: &mut [f64; 2],
        ) {
            let [epsilon, slope] = epsilon_slope;
            let (mean, rstd) = statistics(x, epsilon);
            let [gamma, beta] = gamma_beta;
            let (mean, rstd, slope) = (mean as f32, rstd as f32, slope as f32);
            for ((dz, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                let z = (x - mean) * rstd * gamma + beta;
                *dz = if z > 0.0 { dy } else { dy * slope };
            }
            // Lane sums in float32 over runs of 64 x 8 values, added up in float64.
            let mut total = [0.0f64; 2];
            for (dz, x) in dx.chunks(512).zip(x.chunks(512)) {
                let mut acc = [[0.0f32; 8]; 2];
                let (dzs, dz_rest) = dz.as_chunks::<8>();
                let (xs, x_rest) = x.as_chunks::<8>();
                for (dz, x) in dzs.iter().zip(xs) {
                    for l in 0..8 {
                        acc[0][l] += dz[l];
                        acc[1][l] += dz[l] * ((x[l] - mean) * rstd);
                    }
                }
                for (&dz, &x) in dz_rest.iter().zip(x_rest) {
                    acc[0][0] += dz;
                    acc[1][0] += dz * ((x - mean) * rstd);
                }
                for (total, acc) in total.iter_mut().zip(&acc) {
                    *total += acc.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            *sums = total;
            let n = x.len() as f64;
            let (mean_dz, mean_dzh) = ((total[0] / n) as f32, (total[1] / n) as f32);
            let scale = gamma * rstd;
            for (dx, &x) in dx.iter_mut().zip(x) {
                *dx = scale * (*dx - mean_dz - (x - mean) * rstd * mean_dzh);
            }
        }
    }

    multiversion! {
        /// One channel plane: mean and variance in float64, then `y = lrelu((x - mean) * gamma / sqrt(var + eps) + beta)`,
        /// centred first as Burn's InstanceNorm.
        fn normalize_plane(x: &[f32], y: &mut [MaybeUninit<f32>], gamma_beta: [f32; 2], epsilon: f64, slope: f32) {
            let (mean, rstd) = statistics(x, epsilon);
            let [gamma, beta] = gamma_beta;
            let scale = (gamma as f64 * rstd) as f32;
            let mean = mean as f32;
            for (y, &x) in y.iter_mut().zip(x) {
                let v = (x - mean) * scale + beta;
                y.write(if v < 0.0 { v * slope } else { v });
            }
        }
    }

    pub(super) fn forward(norm: &InstanceNorm, x: Tensor<4>, slope: f64) -> Tensor<4> {
        let c = norm.num_channels;
        let device = x.device();
        let ones = || Tensor::<1>::ones([c], &device);
        let zeros = || Tensor::<1>::zeros([c], &device);
        let (gamma, beta) = match (&norm.gamma, &norm.beta, norm.affine) {
            (Some(g), Some(b), true) => (g.val(), b.val()),
            _ => (ones(), zeros()),
        };
        let affine = Tensor::cat(vec![gamma, beta], 0);
        Tensor::from_dispatch(
            <Dispatch as NormActivationBackend>::instance_norm_leaky_relu(
                x.into_dispatch(),
                affine.into_dispatch(),
                norm.epsilon,
                slope,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::InstanceNormConfig;
    use burn::tensor::{Device, Distribution, Tolerance};

    #[test]
    fn the_fused_pre_activation_equals_instance_norm_then_leaky_relu() {
        let device = Device::flex();
        let mut norm = InstanceNormConfig::new(5).with_affine(true).init(&device);
        let random = |shape: [usize; 1]| {
            Tensor::<1>::random(shape, Distribution::Uniform(-2.0, 2.0), &device)
        };
        norm.gamma = Some(burn::module::Param::from_tensor(random([5])));
        norm.beta = Some(burn::module::Param::from_tensor(random([5])));
        let x = Tensor::<4>::random([2, 5, 7, 9], Distribution::Uniform(-3.0, 5.0), &device);
        let fused = instance_norm_leaky_relu(&norm, x.clone(), 0.1);
        let composed = burn::tensor::activation::leaky_relu(norm.forward(x), 0.1);
        fused
            .into_data()
            .assert_approx_eq::<f32>(&composed.into_data(), Tolerance::absolute(2e-5));
        // A constant plane has variance 0: its output is exactly beta, rectified (Burn's float32
        // mean leaves a residue there that the division by sqrt(eps) magnifies).
        let constant = Tensor::<4>::ones([1, 5, 3, 3], &device) * 4.0;
        let beta = norm.beta.as_ref().unwrap().val();
        let expected = burn::tensor::activation::leaky_relu(beta, 0.1)
            .reshape([1, 5, 1, 1])
            .expand([1, 5, 3, 3]);
        instance_norm_leaky_relu(&norm, constant, 0.1)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }

    /// Under autodiff the fused op and its backward give Burn's values and the gradients of
    /// the input, gamma and beta (planes of 8 values and more, with a remainder past them, and
    /// of several runs of 512), and without autodiff the same values.
    #[test]
    fn under_autodiff_it_has_burns_values_and_gradients() {
        let device = Device::flex().autodiff();
        let mut norm = InstanceNormConfig::new(3).with_affine(true).init(&device);
        let random = |shape: [usize; 1]| {
            Tensor::<1>::random(shape, Distribution::Uniform(-2.0, 2.0), &device)
        };
        norm.gamma = Some(burn::module::Param::from_tensor(random([3])));
        norm.beta = Some(burn::module::Param::from_tensor(random([3])));
        for shape in [[2, 3, 5, 4], [1, 3, 13, 11], [1, 3, 40, 30]] {
            let x = Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 3.0), &device);
            let probe = Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let x = x.clone().require_grad();
                let y = f(x.clone());
                let grads = (y.clone() * probe.clone()).sum().backward();
                let param = |p: &Option<burn::module::Param<Tensor<1>>>| {
                    p.as_ref().unwrap().val().grad(&grads).unwrap().into_data()
                };
                (
                    y.into_data(),
                    x.grad(&grads).unwrap().into_data(),
                    param(&norm.gamma),
                    param(&norm.beta),
                )
            };
            let ours = run(&|x| instance_norm_leaky_relu(&norm, x, 0.2));
            // Burn's own LeakyReLU, differentiated through its masked selects.
            let burns = run(&|x| burn::tensor::activation::leaky_relu(norm.forward(x), 0.2));
            let tol = Tolerance::absolute(2e-5);
            ours.0.assert_approx_eq::<f32>(&burns.0, tol);
            ours.1.assert_approx_eq::<f32>(&burns.1, tol);
            ours.2
                .assert_approx_eq::<f32>(&burns.2, Tolerance::absolute(1e-4));
            ours.3
                .assert_approx_eq::<f32>(&burns.3, Tolerance::absolute(1e-4));
            // Without autodiff, the same values.
            let plain = Device::flex();
            let mut inference = InstanceNormConfig::new(3).with_affine(true).init(&plain);
            let copy = |p: &Option<burn::module::Param<Tensor<1>>>| {
                let t = p.as_ref().unwrap().val().into_data();
                Some(burn::module::Param::from_tensor(Tensor::from_data(
                    t, &plain,
                )))
            };
            inference.gamma = copy(&norm.gamma);
            inference.beta = copy(&norm.beta);
            let x_plain = Tensor::<4>::from_data(x.into_data(), &plain);
            instance_norm_leaky_relu(&inference, x_plain, 0.2)
                .into_data()
                .assert_approx_eq::<f32>(&ours.0, tol);
        }
    }
}
