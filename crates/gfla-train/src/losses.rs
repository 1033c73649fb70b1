//! The generator's losses as the paper's Eq. 15 and the official code weigh them, each kept
//! apart so it can be logged.

use burn::tensor::Tensor;
use gfla_model::gfla_ops::{
    affine_regularization, content_loss, l1, sampling_correctness, style_loss,
};
use gfla_model::{GeneratorConfig, GeneratorOutput, Vgg19};
use serde::{Deserialize, Serialize};

/// Loss weights (stage 2 of the official schedule; stage 1 uses correctness 20 and
/// regularisation 0.01 and nothing else).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LossWeights {
    /// Sampling correctness (lambda_c), needs VGG19.
    pub correctness: f64,
    /// Affine regularisation of the flows (lambda_r).
    pub regularization: f64,
    /// L1 reconstruction (lambda_l1).
    pub l1: f64,
    /// LSGAN adversarial loss (lambda_a).
    pub adversarial: f64,
    /// VGG content loss (lambda_p), needs VGG19.
    pub perceptual: f64,
    /// VGG style loss (lambda_s), needs VGG19.
    pub style: f64,
}

impl LossWeights {
    /// Stage 2, end-to-end (official `--model=pose`): 5, 0.0025, 5, 2, 0.5, 500.
    pub fn end_to_end() -> Self {
        Self {
            correctness: 5.0,
            regularization: 0.0025,
            l1: 5.0,
            adversarial: 2.0,
            perceptual: 0.5,
            style: 500.0,
        }
    }

    /// Stage 1, flow pre-training (official `--model=poseflownet`): correctness 20,
    /// regularisation 0.01.
    pub fn flow_pretraining() -> Self {
        Self {
            correctness: 20.0,
            regularization: 0.01,
            l1: 0.0,
            adversarial: 0.0,
            perceptual: 0.0,
            style: 0.0,
        }
    }

    /// Whether any weighted term needs VGG19 features.
    pub fn needs_vgg(&self) -> bool {
        self.correctness > 0.0 || self.perceptual > 0.0 || self.style > 0.0
    }

    /// The same weights with the VGG terms switched off.
    pub fn without_vgg(mut self) -> Self {
        self.correctness = 0.0;
        self.perceptual = 0.0;
        self.style = 0.0;
        self
    }
}

/// The generator's loss terms of one step, unweighted, and their weighted sum.
#[derive(Debug, Clone)]
pub struct GeneratorLosses {
    pub total: Tensor<1>,
    /// `(name, unweighted value)` for logging.
    pub terms: Vec<(&'static str, Tensor<1>)>,
}

/// The window of the affine regulariser for each flow, coarse to fine: the attention kernel of
/// that layer (reference §5.6).
pub fn flow_kernels(config: &GeneratorConfig) -> Vec<usize> {
    config
        .coarse_to_fine()
        .iter()
        .map(|a| a.kernel_size)
        .collect()
}

/// Every generator term except the adversarial one (which needs D): correctness, regulariser,
/// L1, perceptual and style, as weighted by `weights`; terms of weight 0 are not computed.
pub fn generator_losses(
    out: &GeneratorOutput,
    config: &GeneratorConfig,
    p1: Tensor<4>,
    p2: Tensor<4>,
    weights: &LossWeights,
    vgg: Option<&Vgg19>,
) -> GeneratorLosses {
    let device = out.image.device();
    let mut total = Tensor::<1>::zeros([1], &device);
    let mut terms = Vec::new();
    let mut add = |name, weight: f64, value: Tensor<1>| {
        total = total.clone() + value.clone() * weight;
        terms.push((name, value));
    };
    let layers: Vec<usize> = config.coarse_to_fine().iter().map(|a| a.layer).collect();
    if weights.regularization > 0.0 {
        let reg = out
            .flows
            .iter()
            .zip(flow_kernels(config))
            .map(|(f, k)| affine_regularization(f.clone(), k))
            .reduce(|a, b| a + b);
        if let Some(reg) = reg {
            add("regularization", weights.regularization, reg);
        }
    }
    if weights.l1 > 0.0 {
        add("l1", weights.l1, l1(out.image.clone(), p2.clone()));
    }
    if weights.needs_vgg() {
        let vgg = vgg.expect("the VGG terms need VGG19 weights");
        // VGG is frozen and the pictures are data: only the generated image carries gradients.
        let real = vgg.forward(p2.detach());
        if weights.correctness > 0.0 {
            let source = vgg.forward(p1.detach());
            let corr = out
                .flows
                .iter()
                .zip(&layers)
                .filter_map(|(f, l)| {
                    Some(sampling_correctness(
                        source.for_attention_layer(*l)?,
                        real.for_attention_layer(*l)?,
                        f.clone(),
                    ))
                })
                .reduce(|a, b| a + b);
            if let Some(corr) = corr {
                add("correctness", weights.correctness, corr);
            }
        }
        if weights.perceptual > 0.0 || weights.style > 0.0 {
            let fake = vgg.forward(out.image.clone());
            if weights.perceptual > 0.0 {
                add(
                    "perceptual",
                    weights.perceptual,
                    content_loss(&fake.content(), &real.content()),
                );
            }
            if weights.style > 0.0 {
                add(
                    "style",
                    weights.style,
                    style_loss(&fake.style(), &real.style()),
                );
            }
        }
    }
    GeneratorLosses { total, terms }
}

/// LSGAN: mean squared distance of every score to `target` (1 = real, 0 = fake).
pub fn lsgan(scores: Tensor<4>, target: f64) -> Tensor<1> {
    (scores - target).powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn kernels_pair_with_flows_coarse_to_fine() {
        assert_eq!(flow_kernels(&GeneratorConfig::fashion()), vec![3, 5]);
        assert_eq!(flow_kernels(&GeneratorConfig::market()), vec![3]);
    }

    #[test]
    fn lsgan_is_the_mean_squared_distance() {
        let d = Tensor::<4>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 2.0, 3.0], [1, 1, 2, 2]),
            &Device::flex(),
        );
        // (1 + 0 + 1 + 4) / 4 against 1; (0 + 1 + 4 + 9) / 4 against 0.
        assert_eq!(lsgan(d.clone(), 1.0).into_scalar::<f32>(), 1.5);
        assert_eq!(lsgan(d, 0.0).into_scalar::<f32>(), 3.5);
    }
}
