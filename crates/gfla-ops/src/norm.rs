//! InstanceNorm followed by LeakyReLU, GFLA's pre-activation, in one pass on the CPU.

use burn::nn::InstanceNorm;
use burn::tensor::Tensor;

/// `leaky_relu(norm.forward(x), slope)` for `x` `[B, C, H, W]`. Without autodiff on Flex in
/// float32 it is one parallel kernel: per channel plane the mean and variance (in float64),
/// then one pass that normalises, scales, shifts and rectifies. Burn's InstanceNorm and the
/// activation are eight memory-bound passes, some on one thread, over maps of up to
/// 64 x 256 x 256 in GFLA. Elsewhere it runs exactly those.
pub fn instance_norm_leaky_relu(norm: &InstanceNorm, x: Tensor<4>, slope: f64) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        use crate::device::{Kernels, kernels};
        let plain_flex = kernels(&x) == Kernels::Flex && !x.device().is_autodiff();
        if plain_flex && x.dtype() == burn::tensor::DType::F32 && x.dims()[1] == norm.num_channels {
            return flex::forward(norm, x, slope);
        }
    }
    crate::leaky_relu(norm.forward(x), slope)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Dispatch, Flex, backend_extension};
    use burn::nn::InstanceNorm;
    use burn::tensor::Tensor;
    use rayon::prelude::*;

    use crate::simd::values;

    /// The fused pre-activation; only plain Flex implements it ([`super`] calls it there only).
    #[backend_extension(Flex)]
    pub trait NormActivationBackend: Backend {
        fn instance_norm_leaky_relu(
            x: FloatTensor<Self>,
            scale_shift: FloatTensor<Self>,
            epsilon: f64,
            slope: f64,
        ) -> FloatTensor<Self>;
    }

    impl NormActivationBackend for Flex {
        fn instance_norm_leaky_relu(
            x: FlexTensor,
            affine: FlexTensor,
            epsilon: f64,
            slope: f64,
        ) -> FlexTensor {
            let shape = x.layout().shape().clone();
            let (c, plane) = (shape[1], shape[2] * shape[3]);
            let (x, affine) = (values(&x), values(&affine));
            let slope = slope as f32;
            let mut out = crate::simd::zeros(x.len());
            out.par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each(|(i, (y, x))| {
                    let gamma_beta = [affine[i % c], affine[c + i % c]];
                    normalize_plane(x, y, gamma_beta, epsilon, slope);
                });
            crate::simd::tensor(out, shape)
        }
    }

    /// `sum f(x)` with eight partial sums, so that the reduction vectorises.
    #[inline(always)]
    fn sum8(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
        let mut acc = [0.0f64; 8];
        let (chunks, rest) = x.as_chunks::<8>();
        for chunk in chunks {
            for l in 0..8 {
                acc[l] += f(chunk[l]);
            }
        }
        acc.iter().sum::<f64>() + rest.iter().map(|&v| f(v)).sum::<f64>()
    }

    multiversion! {
        /// One channel plane: mean and variance in float64, then `y = lrelu((x - mean) * gamma / sqrt(var + eps) + beta)`,
        /// centred first as Burn's InstanceNorm.
        fn normalize_plane(x: &[f32], y: &mut [f32], gamma_beta: [f32; 2], epsilon: f64, slope: f32) {
            let n = x.len() as f64;
            let mean = sum8(x, |v| v as f64) / n;
            let var = sum8(x, |v| (v as f64 - mean).powi(2)) / n;
            let [gamma, beta] = gamma_beta;
            let scale = (gamma as f64 / (var + epsilon).sqrt()) as f32;
            let mean = mean as f32;
            for (y, &x) in y.iter_mut().zip(x) {
                let v = (x - mean) * scale + beta;
                *y = if v < 0.0 { v * slope } else { v };
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

    #[test]
    fn under_autodiff_it_has_the_kernels_values_and_burns_gradient() {
        let device = Device::flex().autodiff();
        let norm = InstanceNormConfig::new(3).with_affine(true).init(&device);
        let x = Tensor::<4>::random([2, 3, 5, 4], Distribution::Uniform(-1.0, 1.0), &device);
        let probe = Tensor::<4>::random([2, 3, 5, 4], Distribution::Uniform(-1.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * probe.clone()).sum().backward();
            (y.into_data(), x.grad(&grads).unwrap().into_data())
        };
        let ours = run(&|x| instance_norm_leaky_relu(&norm, x, 0.1));
        // Burn's own LeakyReLU, differentiated through its masked selects.
        let burns = run(&|x| burn::tensor::activation::leaky_relu(norm.forward(x), 0.1));
        let tol = Tolerance::absolute(1e-5);
        ours.0.assert_approx_eq::<f32>(&burns.0, tol);
        ours.1.assert_approx_eq::<f32>(&burns.1, tol);
        // Without autodiff the one-pass kernel gives the same values (the same default
        // gamma = 1, beta = 0).
        let plain = InstanceNormConfig::new(3)
            .with_affine(true)
            .init(&Device::flex());
        let x_plain = Tensor::<4>::from_data(x.into_data(), &Device::flex());
        instance_norm_leaky_relu(&plain, x_plain, 0.1)
            .into_data()
            .assert_approx_eq::<f32>(&ours.0, tol);
    }
}
