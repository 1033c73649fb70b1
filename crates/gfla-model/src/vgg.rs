//! The VGG19 feature extractor the perceptual, style and correctness losses need
//! (torchvision's `vgg19().features`, frozen ImageNet weights).
//!
//! The official losses feed it images in [-1, 1] with no ImageNet normalisation; so does this.

use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::store::ModuleSnapshot;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use crate::weights::{WeightsError, check_applied, read_pytorch, rename};

/// Output channels of the 16 convolutions; a max-pool follows the 2nd, 4th, 8th, 12th (and 16th).
const CHANNELS: [usize; 16] = [
    64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512,
];
/// torchvision's `features` index of each convolution.
const FEATURE_INDEX: [usize; 16] = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34];

/// The activations the GFLA losses use.
#[derive(Debug, Clone)]
pub struct VggFeatures {
    pub relu1_1: Tensor<4>,
    pub relu2_1: Tensor<4>,
    pub relu2_2: Tensor<4>,
    pub relu3_1: Tensor<4>,
    pub relu3_4: Tensor<4>,
    pub relu4_1: Tensor<4>,
    pub relu4_4: Tensor<4>,
    pub relu5_1: Tensor<4>,
    pub relu5_2: Tensor<4>,
}

impl VggFeatures {
    /// The content-loss layers (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1).
    pub fn content(&self) -> Vec<Tensor<4>> {
        vec![
            self.relu1_1.clone(),
            self.relu2_1.clone(),
            self.relu3_1.clone(),
            self.relu4_1.clone(),
            self.relu5_1.clone(),
        ]
    }

    /// The style-loss layers (relu2_2, relu3_4, relu4_4, relu5_2).
    pub fn style(&self) -> Vec<Tensor<4>> {
        vec![
            self.relu2_2.clone(),
            self.relu3_4.clone(),
            self.relu4_4.clone(),
            self.relu5_2.clone(),
        ]
    }

    /// The layer the sampling-correctness loss pairs with attention layer `layer`
    /// (2 -> relu3_1, 3 -> relu4_1, 1 -> relu2_1).
    pub fn for_attention_layer(&self, layer: usize) -> Option<Tensor<4>> {
        match layer {
            1 => Some(self.relu2_1.clone()),
            2 => Some(self.relu3_1.clone()),
            3 => Some(self.relu4_1.clone()),
            _ => None,
        }
    }
}

/// VGG19's convolutional part.
#[derive(Module, Debug)]
pub struct Vgg19 {
    pub convs: Vec<Conv2d>,
}

impl Vgg19 {
    /// A VGG19 with random weights; load real ones with [`Vgg19::load_torchvision`].
    /// `width_divisor` shrinks every layer (1 = the real network; larger only for tests).
    pub fn new(width_divisor: usize, device: &Device) -> Self {
        let mut cin = 3;
        let convs = CHANNELS
            .iter()
            .map(|c| {
                let cout = c / width_divisor;
                let conv = Conv2dConfig::new([cin, cout], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device);
                cin = cout;
                conv
            })
            .collect();
        Self { convs }
    }

    /// The torchvision key of module path `convs.{j}.{param}`, and back.
    pub fn torchvision_key(conv: usize, param: &str) -> String {
        format!("features.{}.{param}", FEATURE_INDEX[conv])
    }

    /// Loads torchvision's `vgg19` state dict (e.g. `vgg19-dcbb9e9d.pth`); the classifier is
    /// ignored. Every convolution must be present with the right shape.
    pub fn load_torchvision(&mut self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        let all = read_pytorch(path)?;
        // The classifier has no place here and is left unused.
        let renamed = rename(&all, |key| {
            let (index, param) = key.strip_prefix("features.")?.split_once('.')?;
            let j = FEATURE_INDEX.iter().position(|i| i.to_string() == index)?;
            Some(format!("convs.{j}.{param}"))
        });
        let result = self.apply(renamed.tensors, None, None, false);
        check_applied(path, &result, None, |_| false)
    }

    /// All loss layers of `x` (`[B, 3, H, W]`, [-1, 1] as the official losses use it).
    pub fn forward(&self, x: Tensor<4>) -> VggFeatures {
        let c = |j: usize, x: Tensor<4>| relu(crate::flops::conv2d(&self.convs[j], x));
        let pool = |x: Tensor<4>| max_pool2d(x, MaxPoolOptions::new([2, 2]).with_stride([2, 2]));
        let relu1_1 = c(0, x);
        let relu2_1 = c(2, pool(c(1, relu1_1.clone())));
        let relu2_2 = c(3, relu2_1.clone());
        let relu3_1 = c(4, pool(relu2_2.clone()));
        let relu3_4 = c(7, c(6, c(5, relu3_1.clone())));
        let relu4_1 = c(8, pool(relu3_4.clone()));
        let relu4_4 = c(11, c(10, c(9, relu4_1.clone())));
        let relu5_1 = c(12, pool(relu4_4.clone()));
        let relu5_2 = c(13, relu5_1.clone());
        VggFeatures {
            relu1_1,
            relu2_1,
            relu2_2,
            relu3_1,
            relu3_4,
            relu4_1,
            relu4_4,
            relu5_1,
            relu5_2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg19_layout_and_feature_shapes() {
        let device = Device::flex();
        // The real network: 20,024,384 parameters in torchvision's 16 convolutions.
        assert_eq!(Vgg19::new(1, &device).num_params(), 20_024_384);
        assert_eq!(Vgg19::torchvision_key(15, "weight"), "features.34.weight");
        let small = Vgg19::new(16, &device);
        let f = small.forward(Tensor::zeros([1, 3, 32, 16], &device));
        assert_eq!(f.relu1_1.dims(), [1, 4, 32, 16]);
        assert_eq!(f.relu2_2.dims(), [1, 8, 16, 8]);
        assert_eq!(f.relu3_4.dims(), [1, 16, 8, 4]);
        assert_eq!(f.relu4_4.dims(), [1, 32, 4, 2]);
        assert_eq!(f.relu5_2.dims(), [1, 32, 2, 1]);
    }
}
