//! The discriminator D (official `ResDiscriminator`): unconditional, residual, spectral
//! normalisation on every convolution, no normalisation layers.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor};

use crate::blocks::lrelu;
use crate::spectral::SpectralConv2d;

/// Configuration of D.
#[derive(Config, Debug)]
pub struct DiscriminatorConfig {
    /// Number of down-sampling blocks (the stem included): 4 for DeepFashion, 3 for Market.
    pub layers: usize,
    #[config(default = 3)]
    pub input_channels: usize,
    /// Base width (official ndf).
    #[config(default = 32)]
    pub width: usize,
    /// Widest layer (official img_f).
    #[config(default = 128)]
    pub max_width: usize,
}

impl DiscriminatorConfig {
    pub fn fashion() -> Self {
        Self::new(4)
    }

    pub fn market() -> Self {
        Self::new(3)
    }

    pub fn init(&self, device: &Device) -> Discriminator {
        assert!(self.layers >= 1, "DiscriminatorConfig: at least one block");
        let width = |i: usize| (self.width << i).min(self.max_width);
        Discriminator {
            stem: ResBlockEncoder::new(self.input_channels, self.width, self.width, device),
            encoders: (0..self.layers - 1)
                .map(|i| ResBlockEncoder::new(width(i), width(i + 1), width(i), device))
                .collect(),
            head: SpectralConv2d::new(width(self.layers - 1), 1, 1, 1, 0, device),
        }
    }
}

/// `ResBlockEncoder`: `conv2(LReLU(conv1(LReLU(x)))) + conv1x1(avgpool2(x))`, halving H and W.
#[derive(Module, Debug)]
pub struct ResBlockEncoder {
    pub conv1: SpectralConv2d,
    pub conv2: SpectralConv2d,
    pub shortcut: SpectralConv2d,
}

impl ResBlockEncoder {
    pub fn new(cin: usize, cout: usize, hidden: usize, device: &Device) -> Self {
        Self {
            conv1: SpectralConv2d::new(cin, hidden, 3, 1, 1, device),
            conv2: SpectralConv2d::new(hidden, cout, 4, 2, 1, device),
            shortcut: SpectralConv2d::new(cin, cout, 1, 1, 0, device),
        }
    }

    fn run(
        &self,
        x: Tensor<4>,
        conv: impl Fn(&SpectralConv2d, Tensor<4>) -> Tensor<4>,
    ) -> Tensor<4> {
        let y = conv(&self.conv2, lrelu(conv(&self.conv1, lrelu(x.clone()))));
        y + conv(&self.shortcut, avg_pool2d(x, AvgPoolOptions::new([2, 2])))
    }
}

/// D.
#[derive(Module, Debug)]
pub struct Discriminator {
    pub stem: ResBlockEncoder,
    pub encoders: Vec<ResBlockEncoder>,
    pub head: SpectralConv2d,
}

impl Discriminator {
    fn run(
        &self,
        x: Tensor<4>,
        conv: impl Fn(&SpectralConv2d, Tensor<4>) -> Tensor<4> + Copy,
    ) -> Tensor<4> {
        let mut x = self.stem.run(x, conv);
        for enc in &self.encoders {
            x = enc.run(x, conv);
        }
        conv(&self.head, lrelu(x))
    }

    /// Eval mode (stored spectral-norm vectors): the raw score map `[B, 1, H/2^L, W/2^L]`.
    pub fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        self.run(image, |c, x| c.forward(x))
    }

    /// Training mode: every spectral norm advances one power iteration.
    pub fn forward_train(&self, image: Tensor<4>) -> Tensor<4> {
        self.run(image, |c, x| c.forward_train(x))
    }

    /// Every spectral-normalised convolution, in state-dict order.
    pub fn spectral_convs(&self) -> Vec<&SpectralConv2d> {
        let mut out = vec![];
        for block in std::iter::once(&self.stem).chain(&self.encoders) {
            out.extend([&block.conv1, &block.conv2, &block.shortcut]);
        }
        out.push(&self.head);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_official_discriminators() {
        let device = Device::flex();
        // Burn counts the spectral-norm vectors u, v too; PyTorch keeps them as buffers.
        let trainable = |d: Discriminator| {
            let buffers: usize = d
                .spectral_convs()
                .iter()
                .map(|c| c.u.value().dims()[0] + c.v.value().dims()[0])
                .sum();
            d.num_params() - buffers
        };
        assert_eq!(
            trainable(DiscriminatorConfig::fashion().init(&device)),
            664_577
        );
        assert_eq!(
            trainable(DiscriminatorConfig::market().init(&device)),
            238_209
        );
    }
}
