//! Spectral normalisation of a convolution, as PyTorch's `torch.nn.utils.spectral_norm`
//! (one power iteration per training forward, eps 1e-12, dim 0). Burn has none.

use burn::module::{Module, RunningState};
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use gfla_ops::conv::conv2d;

use crate::blocks::conv;

const EPS: f64 = 1e-12;

/// A convolution whose weight is divided by its largest singular value, estimated by power
/// iteration with persistent vectors `u` (length out) and `v` (length in * kh * kw).
///
/// [`forward`](Self::forward) uses the stored `u`, `v` (PyTorch's eval mode);
/// [`forward_train`](Self::forward_train) first advances them by one power iteration (without
/// gradient), as every training-mode forward in PyTorch.
#[derive(Module, Debug)]
pub struct SpectralConv2d {
    /// Holds the un-normalised weight (`weight_orig`) and the bias.
    pub conv: Conv2d,
    pub u: RunningState<Tensor<1>>,
    pub v: RunningState<Tensor<1>>,
    pub padding: usize,
}

fn normalize(x: Tensor<1>) -> Tensor<1> {
    let norm = x.clone().square().sum().sqrt().clamp_min(EPS);
    x / norm
}

/// One half step of the power iteration: `normalize(W^T u)`.
fn power_v(w: Tensor<2>, u: Tensor<1>) -> Tensor<1> {
    normalize(w.transpose().matmul(u.unsqueeze_dim(1)).squeeze_dim(1))
}

impl SpectralConv2d {
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Self {
        let conv = conv(cin, cout, k, stride, padding, device);
        let u = normalize(Tensor::random(
            [cout],
            Distribution::Normal(0.0, 1.0),
            device,
        ));
        let v = normalize(Tensor::random(
            [cin * k * k],
            Distribution::Normal(0.0, 1.0),
            device,
        ));
        Self {
            conv,
            u: RunningState::new(u),
            v: RunningState::new(v),
            padding,
        }
    }

    fn matrix(&self) -> Tensor<2> {
        let [o, i, kh, kw] = self.conv.weight.dims();
        self.conv.weight.val().reshape([o, i * kh * kw])
    }

    /// `v = normalize(W^T u)`: PyTorch's rebuild of a missing `weight_v` from `weight_u`.
    pub fn recompute_v(&self) {
        self.v
            .update(power_v(self.matrix().detach(), self.u.value().detach()));
    }

    fn convolve(&self, x: Tensor<4>, u: Tensor<1>, v: Tensor<1>) -> Tensor<4> {
        let w = self.matrix();
        let sigma = u
            .unsqueeze_dim::<2>(0)
            .matmul(w.matmul(v.unsqueeze_dim(1)))
            .reshape([1]);
        let weight = self.conv.weight.val() / sigma.reshape([1, 1, 1, 1]);
        let s = self.conv.stride;
        let p = self.padding;
        conv2d(
            x,
            weight,
            self.conv.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(s, [p, p], [1, 1], 1),
        )
    }

    /// Eval mode: normalise with the stored `u`, `v`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.convolve(x, self.u.value(), self.v.value())
    }

    /// Training mode: one power iteration, then normalise.
    pub fn forward_train(&self, x: Tensor<4>) -> Tensor<4> {
        let w = self.matrix().detach();
        let v = power_v(w.clone(), self.u.value().detach());
        let u = normalize(w.matmul(v.clone().unsqueeze_dim(1)).squeeze_dim(1));
        self.u.update(u.clone());
        self.v.update(v.clone());
        self.convolve(x, u, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn power_iteration_converges_to_the_largest_singular_value() {
        let device = Device::flex();
        let mut sn = SpectralConv2d::new(2, 2, 1, 1, 0, &device);
        // W = diag(3, 1) as a 1 x 1 convolution: sigma = 3.
        sn.conv.weight = burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![3.0f32, 0.0, 0.0, 1.0], [2, 2, 1, 1]),
            &device,
        ));
        sn.conv.bias = None;
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 1.0], [1, 2, 1, 1]), &device);
        let mut out = vec![];
        for _ in 0..30 {
            out = sn
                .forward_train(x.clone())
                .try_into_vec_as::<f32>()
                .unwrap();
        }
        assert!(
            (out[0] - 1.0).abs() < 1e-4 && (out[1] - 1.0 / 3.0).abs() < 1e-4,
            "{out:?}"
        );
        // Eval mode reuses the converged vectors.
        let eval: Vec<f32> = sn.forward(x).try_into_vec_as().unwrap();
        assert!((eval[0] - 1.0).abs() < 1e-4, "{eval:?}");
    }
}
