//! GFLA as a burn-train learner model: G and D in one module whose training step is the
//! official G step and D step, one optimiser per network, and a metric for every loss term.
//!
//! The two steps of one iteration both start from the same weights, so they can be taken
//! together: G's gradient comes from G's loss (with D's score of the generated picture), D's
//! from D's loss (the real target against the generated picture cut from G's graph), and one
//! optimiser step over the whole module equals the step of G followed by the step of D. The
//! optimiser holds two Adams (betas (0, 0.999)), one for G's parameters and one for D's
//! (`discriminator.*`), and the learning-rate scheduler gives D a tenth of G's rate.

use std::sync::Arc;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{ExecutionError, Tensor, TensorReadError};
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, SerializedEntry,
};
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use gfla_model::{Discriminator, Generator, GeneratorConfig, Vgg19};

use crate::dataset::PairBatch;
use crate::losses::{LossWeights, generator_losses, lsgan};

/// What the losses need besides the networks (not parameters: never saved, never trained).
#[derive(Debug, Clone)]
pub struct LossSetup {
    pub weights: LossWeights,
    pub config: GeneratorConfig,
    /// VGG19 on the training device, without gradients of its own.
    pub vgg: Option<Arc<Vgg19>>,
    /// The same VGG19 off the autodiff graph, for held-out pairs.
    pub vgg_valid: Option<Arc<Vgg19>>,
}

impl LossSetup {
    pub fn new(weights: LossWeights, config: GeneratorConfig, vgg: Option<&Vgg19>) -> Self {
        Self {
            weights,
            config,
            vgg: vgg.map(|v| Arc::new(v.clone().no_grad())),
            vgg_valid: vgg.map(|v| Arc::new(v.valid())),
        }
    }
}

/// G, and D when the adversarial term is on: the learner's model.
#[derive(Module, Debug)]
pub struct Gfla {
    pub generator: Generator,
    pub discriminator: Option<Discriminator>,
    #[module(skip)]
    pub losses: LossSetup,
}

/// The loss values of one step (or one held-out batch), read back from the device.
#[derive(Debug, Clone, PartialEq)]
pub struct GflaOutput {
    pub batch_size: usize,
    /// Unweighted generator terms, then `adversarial` (with D), then `total` (G's weighted
    /// sum), then `discriminator` (D's LSGAN loss, with D).
    pub values: Vec<(&'static str, f64)>,
}

impl GflaOutput {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| *n == name).map(|t| t.1)
    }

    /// One read for every value.
    fn read(batch_size: usize, terms: Vec<(&'static str, Tensor<1>)>) -> Self {
        let (names, tensors): (Vec<_>, Vec<_>) = terms.into_iter().unzip();
        let values = Tensor::cat(tensors, 0)
            .detach()
            .try_into_vec_as::<f32>()
            .expect("the losses can be read");
        Self {
            batch_size,
            values: names
                .into_iter()
                .zip(values.into_iter().map(f64::from))
                .collect(),
        }
    }
}

impl ItemLazy for GflaOutput {
    fn sync(self) -> Result<Self, ExecutionError> {
        Ok(self)
    }
}

impl Gfla {
    /// Every loss term of a batch; `train` selects the training forward of D (one power
    /// iteration of its spectral norms per call, as PyTorch in training mode) and the VGG with
    /// gradients. Returns the named terms, G's weighted total and D's loss.
    fn losses_of(
        &self,
        batch: &PairBatch,
        train: bool,
    ) -> (Vec<(&'static str, Tensor<1>)>, Tensor<1>, Option<Tensor<1>>) {
        let setup = &self.losses;
        let output = self
            .generator
            .forward(batch.p1.clone(), batch.bp1.clone(), batch.bp2.clone());
        let vgg = match train {
            true => setup.vgg.as_deref(),
            false => setup.vgg_valid.as_deref(),
        };
        let losses = generator_losses(
            &output,
            &setup.config,
            batch.p1.clone(),
            batch.p2.clone(),
            &setup.weights,
            vgg,
        );
        let (mut terms, mut total) = (losses.terms, losses.total);
        let score = |d: &Discriminator, image: Tensor<4>| match train {
            true => d.forward_train(image),
            false => d.forward(image),
        };
        let d_loss = self.discriminator.as_ref().map(|d| {
            // G's step: D's score of the generated picture (D's share of this gradient is
            // dropped in `step`).
            let adversarial = lsgan(score(d, output.image.clone()), 1.0);
            terms.push(("adversarial", adversarial.clone()));
            total = total.clone() + adversarial * setup.weights.adversarial;
            // D's step: the real target against the generated picture, cut from G's graph.
            let real = lsgan(score(d, batch.p2.clone()), 1.0);
            let fake = lsgan(score(d, output.image.clone().detach()), 0.0);
            (real + fake) * 0.5
        });
        terms.push(("total", total.clone()));
        if let Some(d) = &d_loss {
            terms.push(("discriminator", d.clone()));
        }
        (terms, total, d_loss)
    }
}

impl TrainStep for Gfla {
    type Input = PairBatch;
    type Output = GflaOutput;

    fn step(&self, batch: PairBatch) -> TrainOutput<GflaOutput> {
        let batch_size = batch.p1.dims()[0];
        let (terms, total, d_loss) = self.losses_of(&batch, true);
        // G's parameters get the gradient of G's loss, D's that of D's loss.
        let mut grads = GradientsParams::from_grads(total.backward(), &self.generator);
        if let (Some(d), Some(d_loss)) = (&self.discriminator, d_loss) {
            let mut moved = MoveGrads {
                from: GradientsParams::from_grads(d_loss.backward(), d),
                into: &mut grads,
            };
            d.visit(&mut moved);
        }
        TrainOutput {
            grads,
            item: GflaOutput::read(batch_size, terms),
        }
    }
}

/// Moves the gradients of a module's parameters from one set into another.
struct MoveGrads<'a> {
    from: GradientsParams,
    into: &'a mut GradientsParams,
}

impl ModuleVisitor for MoveGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.from.remove::<D>(param.id) {
            self.into.register::<D>(param.id, grad);
        }
    }
}

impl InferenceStep for Gfla {
    type Input = PairBatch;
    type Output = GflaOutput;

    fn step(&self, batch: PairBatch) -> GflaOutput {
        let batch_size = batch.p1.dims()[0];
        GflaOutput::read(batch_size, self.losses_of(&batch, false).0)
    }
}

/// D's parameters (for its optimiser and its learning rate).
pub fn discriminator_group() -> ParamGroup {
    ParamGroup::from_regex(r"^discriminator\.").expect("a valid pattern")
}

/// The official optimisers: Adam with betas (0, 0.999) for G, and another for D.
pub fn optimizer() -> ModuleOptimizer {
    let adam = AdamConfig::new().with_beta_1(0.0).with_beta_2(0.999);
    ModuleOptimizer::from(adam.build()).with_group(discriminator_group(), adam.build(), None)
}

/// The official learning rates: `lr` for G, a tenth of it for D.
pub fn learning_rates(lr: f64) -> ModuleLrScheduler {
    ModuleLrScheduler::new(lr).with_group(discriminator_group(), lr * 0.1)
}

/// The loss terms a run logs, in the order of [`GflaOutput::values`].
pub fn loss_names(weights: &LossWeights, vgg: bool) -> Vec<&'static str> {
    let vgg_terms = |w: f64| vgg && w > 0.0;
    let mut names = vec![];
    if weights.regularization > 0.0 {
        names.push("regularization");
    }
    if weights.l1 > 0.0 {
        names.push("l1");
    }
    if vgg_terms(weights.correctness) {
        names.push("correctness");
    }
    if vgg_terms(weights.perceptual) {
        names.push("perceptual");
    }
    if vgg_terms(weights.style) {
        names.push("style");
    }
    if weights.adversarial > 0.0 {
        names.push("adversarial");
    }
    names.push("total");
    if weights.adversarial > 0.0 {
        names.push("discriminator");
    }
    names
}

/// The loss values a [`LossMetric`] reads.
pub struct LossValues(GflaOutput);

impl Adaptor<LossValues> for GflaOutput {
    fn adapt(&self) -> LossValues {
        LossValues(self.clone())
    }
}

/// One loss term as a burn-train numeric metric (shown by its renderers, logged by its metric
/// loggers under the term's name, mean over the interval at its end).
#[derive(Clone)]
pub struct LossMetric {
    name: MetricName,
    state: NumericMetricState,
    count: usize,
}

impl LossMetric {
    pub fn new(term: &str) -> Self {
        Self {
            name: Arc::new(term.to_string()),
            state: NumericMetricState::new(),
            count: 0,
        }
    }

    fn format(&self) -> FormatOptions {
        FormatOptions::new(self.name.clone()).precision(4)
    }
}

impl Metric for LossMetric {
    type Input = LossValues;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn description(&self) -> Option<String> {
        Some(format!("the GFLA {} loss (unweighted)", self.name))
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(
        &mut self,
        input: &LossValues,
        _metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        Ok(match input.0.get(&self.name) {
            Some(value) => {
                self.state.update(value, input.0.batch_size);
                self.count += 1;
                self.state.compute_update(self.format())
            }
            None => SerializedEntry::not_available(None),
        })
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        Ok(match self.count {
            0 => SerializedEntry::not_available(None),
            _ => self.state.compute_final(self.format()),
        })
    }

    fn clear(&mut self) {
        self.state.reset();
        self.count = 0;
    }
}

impl Numeric for LossMetric {
    fn value(&self) -> Option<NumericEntry> {
        (self.count > 0).then(|| self.state.current_value())
    }

    fn running_value(&self) -> Option<NumericEntry> {
        (self.count > 0).then(|| self.state.running_value())
    }

    fn final_value(&self) -> NumericEntry {
        self.state.final_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Device;
    use gfla_model::DiscriminatorConfig;

    /// Every parameter tensor of a module, flattened, with its path.
    #[derive(Default)]
    struct Values {
        path: Vec<String>,
        tensors: Vec<(String, Vec<f32>)>,
    }

    impl ModuleVisitor for Values {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().try_into_vec_as::<f32>().unwrap();
            self.tensors.push((self.path.join("."), values));
        }
    }

    /// The largest change of each parameter tensor (the spectral norms' power-iteration
    /// vectors `u`, `v` left out: no optimiser moves them).
    fn moves<M: Module>(before: &M, after: &M) -> Vec<(String, f64)> {
        let (mut a, mut b) = (Values::default(), Values::default());
        before.visit(&mut a);
        after.visit(&mut b);
        a.tensors
            .into_iter()
            .zip(b.tensors)
            .filter(|((path, _), _)| !path.ends_with(".u") && !path.ends_with(".v"))
            .map(|((path, x), (_, y))| {
                let most = x
                    .iter()
                    .zip(&y)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                (path, most as f64)
            })
            .collect()
    }

    #[test]
    fn the_names_follow_the_weights() {
        let all = loss_names(&LossWeights::end_to_end(), true);
        assert_eq!(
            all,
            [
                "regularization",
                "l1",
                "correctness",
                "perceptual",
                "style",
                "adversarial",
                "total",
                "discriminator"
            ]
        );
        assert_eq!(
            loss_names(&LossWeights::end_to_end(), false),
            [
                "regularization",
                "l1",
                "adversarial",
                "total",
                "discriminator"
            ]
        );
        assert_eq!(
            loss_names(&LossWeights::flow_pretraining(), true),
            ["regularization", "correctness", "total"]
        );
    }

    /// With betas (0, 0.999), Adam's first step moves every parameter with a gradient by about
    /// the learning rate: G's by `lr`, D's by a tenth of it.
    #[test]
    fn d_learns_at_a_tenth_of_gs_rate() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let config = GeneratorConfig::market()
            .with_channels(4)
            .with_flow_channels(4)
            .with_attention_hidden(8);
        let model = Gfla {
            generator: config.init(&device),
            discriminator: Some(DiscriminatorConfig::market().init(&device)),
            losses: LossSetup::new(
                LossWeights::end_to_end().without_vgg(),
                config.clone(),
                None,
            ),
        };
        let noise = |c| {
            Tensor::<4>::random(
                [1, c, 128, 64],
                burn::tensor::Distribution::Uniform(-1.0, 1.0),
                &device,
            )
        };
        let batch = PairBatch {
            p1: noise(3),
            p2: noise(3),
            bp1: noise(18),
            bp2: noise(18),
        };
        let out = TrainStep::step(&model, batch);
        let lr = 1e-2;
        let after = optimizer().step(learning_rates(lr).step(), model.clone(), out.grads);
        let g_moves = moves(&model.generator, &after.generator);
        let g_move = g_moves.iter().map(|m| m.1).fold(0.0, f64::max);
        assert!((g_move - lr).abs() < 0.05 * lr, "G moved {g_move}");
        // Every parameter of D, biases included, takes its step.
        let d_moves = moves(
            model.discriminator.as_ref().unwrap(),
            after.discriminator.as_ref().unwrap(),
        );
        assert_eq!(d_moves.len(), 20, "{d_moves:?}");
        for (path, moved) in d_moves {
            assert!(
                (moved - lr / 10.0).abs() < 0.05 * lr / 10.0,
                "D's {path} moved {moved}"
            );
        }
    }
}
