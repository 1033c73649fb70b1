//! Training GFLA with burn-train: G (and D when the adversarial term is on) with Adam, betas
//! (0, 0.999), the official learning rates (1e-4 for G, a tenth for D), through burn-train's
//! `SupervisedTraining` and `Learner` with the learning strategy of [`crate::strategy`]: its
//! metrics (one per loss term), renderers (TUI or text lines), metric logs, checkpointer and
//! resume; plus sample pictures, `losses.csv`, `generator.safetensors` and a NaN/inf stop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail, ensure};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::transform::PartialDataset;
use burn::tensor::Device;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::metric::{IterationSpeedMetric, LearningRateMetric};
use burn::train::{Learner, SupervisedTraining, TrainingStrategy};
use gfla_model::picture::tensor_to_images;
use gfla_model::visualize::panel;
use gfla_model::{DiscriminatorConfig, Generator, ModelSpec, PoseTransfer, Vgg19};
use serde::{Deserialize, Serialize};

use crate::dataset::{PairBatch, PairBatcher, PairDataset};
use crate::learner::{
    Gfla, GflaOutput, LossMetric, LossSetup, learning_rates, loss_names, optimizer,
};
use crate::losses::LossWeights;
use crate::strategy::{CHECKPOINT_DIR, GflaStrategy, Journal, LineRenderer, Plan};
use crate::stream::{StepLoader, intervals};

pub use crate::strategy::latest_checkpoint;

/// How to train (a file of this, as JSON, is what `gfla-train train --config` reads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Optimisation steps.
    pub steps: usize,
    pub batch_size: usize,
    /// Adam learning rate of G (official 1e-4); D uses a tenth.
    pub lr: f64,
    pub seed: u64,
    pub weights: LossWeights,
    /// A checkpoint (burn-train's, and `generator.safetensors`) every this many steps and at
    /// the end; one epoch of the learner is this many steps.
    pub checkpoint_every: usize,
    /// Write a sample picture every this many steps (0 = never).
    pub sample_every: usize,
    /// Data-loading threads.
    pub workers: usize,
    /// Held-out pairs scored at every checkpoint (burn-train's valid split; 0 = none).
    #[serde(default = "default_valid_pairs")]
    pub valid_pairs: usize,
}

fn default_valid_pairs() -> usize {
    16
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 8,
            lr: 1e-4,
            seed: 0,
            weights: LossWeights::end_to_end(),
            checkpoint_every: 500,
            sample_every: 100,
            workers: 2,
            valid_pairs: default_valid_pairs(),
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLog {
    pub step: usize,
    /// Unweighted generator terms (and `adversarial`), then `total` (weighted sum).
    pub terms: Vec<(String, f64)>,
    /// D's LSGAN loss, when D trains.
    pub discriminator: Option<f64>,
}

impl StepLog {
    pub fn from_output(step: usize, output: &GflaOutput) -> Self {
        Self {
            step,
            terms: output
                .values
                .iter()
                .filter(|(n, _)| *n != "discriminator")
                .map(|(n, v)| (n.to_string(), *v))
                .collect(),
            discriminator: output.get("discriminator"),
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "discriminator" => self.discriminator,
            _ => self.terms.iter().find(|(n, _)| n == name).map(|t| t.1),
        }
    }

    /// The first loss that is NaN or infinite.
    pub fn non_finite(&self) -> Option<(&str, f64)> {
        self.terms
            .iter()
            .map(|(n, v)| (n.as_str(), *v))
            .chain(self.discriminator.map(|d| ("discriminator", d)))
            .find(|(_, v)| !v.is_finite())
    }

    /// `l1 0.412 regularization 0.0031 ... total 2.07`.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .terms
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        if let Some(d) = self.discriminator {
            parts.push(format!("D {d:.4}"));
        }
        parts.join("  ")
    }
}

/// How a run starts: from a model, or from the latest checkpoint a previous run left in its
/// folder.
#[allow(clippy::large_enum_variant)] // made once per run and moved straight in
pub enum Start {
    Fresh(PoseTransfer),
    Resume(Resume),
}

impl Start {
    /// The generator the run starts from (for a resumed run, before its weights are loaded).
    pub fn model(&self) -> &PoseTransfer {
        match self {
            Self::Fresh(model) => model,
            Self::Resume(resume) => &resume.model,
        }
    }
}

/// Where a run carries on: the learner epoch and step of its latest complete checkpoint, and a
/// model of its architecture that burn-train's checkpointer loads G (and D), both optimisers
/// and the learning-rate schedule into.
pub struct Resume {
    pub model: PoseTransfer,
    pub epoch: usize,
    pub step: usize,
}

impl Resume {
    /// The latest complete checkpoint in `out`, for a model of `spec` on `device`.
    pub fn latest(out: &Path, spec: ModelSpec, device: &Device) -> Result<Self> {
        let (epoch, step) = latest_checkpoint(out).with_context(|| {
            format!(
                "{}: no complete checkpoint to resume from",
                out.join(CHECKPOINT_DIR).display()
            )
        })?;
        Ok(Self {
            model: PoseTransfer::init(spec, device),
            epoch,
            step,
        })
    }
}

/// The data and the output of a run.
pub struct Run<'a> {
    /// Training pairs.
    pub data: PairDataset,
    /// Held-out pairs for the valid split (the first `valid_pairs`).
    pub held_out: Option<PairDataset>,
    /// Fixed pairs drawn into `samples/` every `sample_every` steps.
    pub samples: Option<PairBatch>,
    /// VGG19 for the correctness, perceptual and style terms.
    pub vgg: Option<&'a Vgg19>,
    pub out: PathBuf,
    /// burn-train's terminal dashboard when standard output is a terminal (otherwise, and when
    /// false, one line per split of each epoch).
    pub tui: bool,
}

/// A finished run: the trained generator (off the autodiff graph) and every step's losses.
pub struct Trained {
    pub model: PoseTransfer,
    pub steps: Vec<StepLog>,
}

fn discriminator_config(spec: &ModelSpec) -> DiscriminatorConfig {
    if spec.image_size[0] >= 256 {
        DiscriminatorConfig::fashion()
    } else {
        DiscriminatorConfig::market()
    }
}

/// Trains with burn-train: a [`SupervisedTraining`] over the step stream, with a [`Learner`] of
/// G and D ([`Gfla`]), the official optimisers and learning rates, a metric per loss term for
/// the training and held-out splits, burn-train's file checkpointer (the last two checkpoints
/// kept) and the GFLA strategy. Writes into `run.out`: `checkpoint/`, `train/` and `valid/`
/// (burn-train's metric logs), `experiment.log`, `losses.csv`, `generator.safetensors` and
/// `samples/`. Stops with an error naming the step and the term when a loss stops being finite.
pub fn train(start: Start, run: Run<'_>, config: &TrainConfig) -> Result<Trained> {
    ensure!(
        config.steps > 0 && config.batch_size > 0,
        "steps and batch size must be positive"
    );
    ensure!(
        run.vgg.is_some() || !config.weights.needs_vgg(),
        "the correctness, perceptual and style losses need VGG19 weights"
    );
    let out = run.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (model, epoch, done) = match start {
        Start::Fresh(model) => {
            // Seeded before D's weights are drawn.
            model.device().seed(config.seed);
            (model, 0, 0)
        }
        Start::Resume(resume) => (resume.model, resume.epoch, resume.step),
    };
    ensure!(
        done < config.steps,
        "the run is already at step {done} of {}",
        config.steps
    );
    let device = model.device().clone();
    ensure!(device.is_autodiff(), "training needs an autodiff device");
    let spec = model.spec.clone();
    let discriminator =
        (config.weights.adversarial > 0.0).then(|| discriminator_config(&spec).init(&device));
    let gfla = Gfla {
        generator: model.generator,
        discriminator,
        losses: LossSetup::new(config.weights.clone(), spec.config.clone(), run.vgg),
    };

    let every = config.checkpoint_every.max(1);
    // Without held-out pairs the valid split is empty (burn-train wants a loader all the same).
    let (held_out, valid_pairs) = match run.held_out {
        Some(h) => {
            let n = config
                .valid_pairs
                .min(burn::data::dataset::Dataset::len(&h));
            (h, n)
        }
        None => (run.data.clone(), 0),
    };
    let valid = DataLoaderBuilder::new(PairBatcher)
        .batch_size(config.batch_size)
        .set_device(device.clone().inner())
        .build(PartialDataset::new(held_out, 0, valid_pairs));
    let loader = StepLoader::new(
        run.data,
        config.batch_size,
        config.seed,
        config.workers,
        device.clone(),
        every,
        done,
        config.steps,
    );
    let journal = Arc::new(Mutex::new(Journal::default()));
    let strategy = GflaStrategy {
        device: device.clone(),
        plan: Plan {
            out: out.clone(),
            spec: spec.clone(),
            start_step: done,
            total_steps: config.steps,
            sample_every: config.sample_every,
        },
        samples: run.samples,
        journal: journal.clone(),
    };

    let mut training = SupervisedTraining::new(&out, Arc::new(loader), valid)
        .with_training_strategy(TrainingStrategy::Custom(Arc::new(strategy)))
        .with_default_checkpointers()
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .num_epochs(epoch + intervals(done, every, config.steps))
        .label(&format!("GFLA {} (an epoch is {every} steps)", spec.name));
    for name in loss_names(&config.weights, run.vgg.is_some()) {
        training = training
            .metric_train_numeric(LossMetric::new(name))
            .metric_valid_numeric(LossMetric::new(name));
    }
    training = training
        .metric_train_numeric(IterationSpeedMetric::new())
        .metric_train_numeric(LearningRateMetric::new());
    if !(run.tui && std::io::IsTerminal::is_terminal(&std::io::stdout())) {
        training = training.renderer(Box::new(LineRenderer::new()));
    }
    if epoch > 0 {
        training = training.checkpoint(epoch);
    }
    let result = training.launch(Learner::new(gfla, optimizer(), learning_rates(config.lr)));

    let journal = std::mem::take(&mut *journal.lock().unwrap());
    if let Some(failure) = journal.failure {
        bail!(failure);
    }
    if let Some(error) = result.error {
        bail!("training failed: {error}");
    }
    let last = journal.steps.last().map_or(done, |s| s.step);
    if last < config.steps {
        let reason = journal
            .stopped
            .or_else(|| result.interrupted.and_then(|i| i.reason))
            .unwrap_or_else(|| "no reason given".into());
        bail!(
            "stopped at step {last} of {} ({reason}); {} (carry on with --resume)",
            config.steps,
            match journal.last_checkpoint {
                Some((_, step)) => format!("the last checkpoint is at step {step}"),
                None => "no checkpoint was written".into(),
            }
        );
    }
    Ok(Trained {
        model: PoseTransfer::new(result.model.generator, spec, &device.inner()),
        steps: journal.steps,
    })
}

/// One row per sample: source | target picture | generated.
pub fn sample_picture(g: &Generator, batch: &PairBatch) -> image::RgbImage {
    let out = g.forward(batch.p1.clone(), batch.bp1.clone(), batch.bp2.clone());
    let sources = tensor_to_images(batch.p1.clone());
    let targets = tensor_to_images(batch.p2.clone());
    let generated = tensor_to_images(out.image.detach());
    let rows: Vec<image::RgbImage> = sources
        .iter()
        .zip(&targets)
        .zip(&generated)
        .map(|((s, t), o)| panel(&[s, t, o], 2))
        .collect();
    let (w, h) = rows[0].dimensions();
    let mut sheet =
        image::RgbImage::from_pixel(w, (h + 2) * rows.len() as u32, image::Rgb([255; 3]));
    for (i, row) in rows.iter().enumerate() {
        image::imageops::replace(&mut sheet, row, 0, (i as u32 * (h + 2)) as i64);
    }
    sheet
}

/// The first `n` pairs of a dataset as one batch on `device` (fixed samples to watch).
pub fn first_pairs(data: &PairDataset, n: usize, device: &Device) -> Result<PairBatch> {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    let items = (0..n.min(data.len()))
        .map(|i| data.get(i).map_err(|e| anyhow::anyhow!("data: {e}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(PairBatcher.batch(items, device))
}
