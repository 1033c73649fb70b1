//! The training loop: G (and D when the adversarial term is on) with Adam, betas (0, 0.999), the
//! official learning rates (1e-4 for G, a tenth for D), checkpoints and sample pictures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::{AdamConfig, GradientsParams, OptimizerRecord};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Tensor};
use gfla_model::picture::tensor_to_images;
use gfla_model::visualize::panel;
use gfla_model::{Discriminator, DiscriminatorConfig, Generator, PoseTransfer, Vgg19};
use serde::{Deserialize, Serialize};

use crate::dataset::{PairBatch, PairBatcher, PairDataset};
use crate::losses::{LossWeights, generator_losses, lsgan};

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
    /// Write `generator.safetensors` every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Write a sample picture every this many steps (0 = never).
    pub sample_every: usize,
    /// Data-loading threads.
    pub workers: usize,
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
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct StepLog {
    pub step: usize,
    /// Unweighted generator terms (and `adversarial`), then `total` (weighted sum).
    pub terms: Vec<(String, f64)>,
    /// D's LSGAN loss, when D trains.
    pub discriminator: Option<f64>,
}

impl StepLog {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.terms.iter().find(|(n, _)| n == name).map(|t| t.1)
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

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// Trains `model` (built on an autodiff device) on `data` for `config.steps` steps, writing
/// checkpoints and samples into `out`. Stops with an error naming the step and the term when a
/// loss stops being finite. `on_step` sees every step's losses.
pub fn train(
    start: Start,
    data: PairDataset,
    samples: Option<PairBatch>,
    config: &TrainConfig,
    vgg: Option<&Vgg19>,
    out: &Path,
    mut on_step: impl FnMut(&StepLog),
) -> Result<PoseTransfer> {
    ensure!(
        config.steps > 0 && config.batch_size > 0,
        "steps and batch size must be positive"
    );
    ensure!(
        vgg.is_some() || !config.weights.needs_vgg(),
        "the correctness, perceptual and style losses need VGG19 weights"
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let adam = AdamConfig::new().with_beta_1(0.0).with_beta_2(0.999);
    let (model, mut d, mut optim_g, mut optim_d, mut step) = match start {
        Start::Fresh(model) => {
            let device = model.device().clone();
            device.seed(config.seed);
            let d = (config.weights.adversarial > 0.0)
                .then(|| discriminator_config(&model.spec).init(&device));
            (model, d, adam.init(), adam.init(), 0)
        }
        Start::Resume(state) => (
            state.model,
            state.discriminator,
            adam.init().load_record(state.optim_g),
            match state.optim_d {
                Some(record) => adam.init().load_record(record),
                None => adam.init(),
            },
            state.step,
        ),
    };
    ensure!(
        step < config.steps,
        "the run is already at step {step} of {}",
        config.steps
    );
    let device = model.device().clone();
    let spec = model.spec.clone();
    let mut g: Generator = model.generator;
    let loader = DataLoaderBuilder::new(PairBatcher)
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .num_workers(config.workers.max(1))
        .set_device(device.clone())
        .build(data);

    let save = |g: &Generator, name: &str| -> Result<PathBuf> {
        let path = out.join(name);
        PoseTransfer::new(g.clone(), spec.clone(), &device)
            .save(&path, false)
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(path)
    };

    'epochs: loop {
        for batch in loader.iter() {
            let batch = batch.map_err(|e| anyhow::anyhow!("data: {e}"))?;
            step += 1;
            let output = g.forward(batch.p1.clone(), batch.bp1.clone(), batch.bp2.clone());
            let losses = generator_losses(
                &output,
                &spec.config,
                batch.p1.clone(),
                batch.p2.clone(),
                &config.weights,
                vgg,
            );
            let mut total = losses.total;
            let mut terms: Vec<(String, f64)> = losses
                .terms
                .into_iter()
                .map(|(n, v)| (n.to_string(), scalar(v)))
                .collect();
            if let Some(d) = &d {
                let adv = lsgan(d.forward_train(output.image.clone()), 1.0);
                terms.push(("adversarial".into(), scalar(adv.clone())));
                total = total + adv * config.weights.adversarial;
            }
            terms.push(("total".into(), scalar(total.clone())));
            if let Some((name, value)) = terms.iter().find(|(_, v)| !v.is_finite()) {
                bail!(
                    "step {step}: the {name} loss is {value}; stopping (last checkpoint in {})",
                    out.display()
                );
            }
            let grads = GradientsParams::from_grads(total.backward(), &g);
            g = optim_g.step(config.lr, g, grads);

            let mut d_loss = None;
            if let Some(dm) = d.take() {
                let real = lsgan(dm.forward_train(batch.p2.clone()), 1.0);
                let fake = lsgan(dm.forward_train(output.image.detach()), 0.0);
                let loss = (real + fake) * 0.5;
                let value = scalar(loss.clone());
                if !value.is_finite() {
                    bail!("step {step}: the discriminator loss is {value}; stopping");
                }
                d_loss = Some(value);
                let grads = GradientsParams::from_grads(loss.backward(), &dm);
                d = Some(optim_d.step(config.lr * 0.1, dm, grads));
            }
            let log = StepLog {
                step,
                terms,
                discriminator: d_loss,
            };
            on_step(&log);

            if config.sample_every > 0
                && (step % config.sample_every == 0 || step == config.steps)
                && let Some(samples) = &samples
            {
                let picture = sample_picture(&g, samples);
                let path = out.join("samples").join(format!("step_{step:06}.png"));
                std::fs::create_dir_all(path.parent().expect("a folder"))?;
                picture
                    .save(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if step % config.checkpoint_every.max(1) == 0 || step == config.steps {
                save(&g, "generator.safetensors")?;
                save_state(out, step, &g, d.as_ref(), &optim_g, &optim_d)?;
            }
            if step == config.steps {
                break 'epochs;
            }
        }
    }
    Ok(PoseTransfer::new(g, spec, &device))
}

/// How a run starts: from a model, or from the state a previous run left in its folder.
#[allow(clippy::large_enum_variant)] // made once per run and moved straight in
pub enum Start {
    Fresh(PoseTransfer),
    Resume(State),
}

impl Start {
    /// The generator the run starts from.
    pub fn model(&self) -> &PoseTransfer {
        match self {
            Self::Fresh(model) => model,
            Self::Resume(state) => &state.model,
        }
    }
}

/// Everything a run needs to carry on where it stopped: the step, G and D with their parameter
/// identities (burnpack keeps them) and both optimisers' moments.
pub struct State {
    pub step: usize,
    pub model: PoseTransfer,
    pub discriminator: Option<Discriminator>,
    pub optim_g: OptimizerRecord,
    pub optim_d: Option<OptimizerRecord>,
}

fn discriminator_config(spec: &gfla_model::ModelSpec) -> DiscriminatorConfig {
    if spec.image_size[0] >= 256 {
        DiscriminatorConfig::fashion()
    } else {
        DiscriminatorConfig::market()
    }
}

/// Writes `out/state/` (step, G, D, optimisers) through a scratch folder renamed into place,
/// so a kill at any moment leaves the previous state or the new one, never half of one.
fn save_state(
    out: &Path,
    step: usize,
    g: &Generator,
    d: Option<&Discriminator>,
    optim_g: &burn::optim::ModuleOptimizer,
    optim_d: &burn::optim::ModuleOptimizer,
) -> Result<()> {
    let scratch = out.join("state.tmp");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let pack = |name: &str| BurnpackStore::from_file(scratch.join(name)).overwrite(true);
    g.save_into(&mut pack("generator.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot write the state: {e}"))?;
    optim_g
        .to_record()
        .save(scratch.join("optim_g.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot write the state: {e:?}"))?;
    if let Some(d) = d {
        d.save_into(&mut pack("discriminator.bpk"))
            .map_err(|e| anyhow::anyhow!("cannot write the state: {e}"))?;
        optim_d
            .to_record()
            .save(scratch.join("optim_d.bpk"))
            .map_err(|e| anyhow::anyhow!("cannot write the state: {e:?}"))?;
    }
    std::fs::write(scratch.join("step"), step.to_string())?;
    let state = out.join("state");
    let old = out.join("state.old");
    let _ = std::fs::remove_dir_all(&old);
    if state.exists() {
        std::fs::rename(&state, &old)?;
    }
    std::fs::rename(&scratch, &state)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads the state a run left in `out/state/` for a model of `spec` on `device`.
pub fn load_state(
    out: &Path,
    spec: gfla_model::ModelSpec,
    adversarial: bool,
    device: &Device,
) -> Result<State> {
    let dir = out.join("state");
    let step: usize = std::fs::read_to_string(dir.join("step"))
        .with_context(|| format!("{}: no training state to resume", out.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{}: a damaged step file", dir.display()))?;
    let mut model = PoseTransfer::init(spec.clone(), device);
    let path = dir.join("generator.bpk");
    model
        .generator
        .load_from(&mut BurnpackStore::from_file(&path))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let record = |name: &str| -> Result<OptimizerRecord> {
        let path = dir.join(name);
        OptimizerRecord::load(&path).map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))
    };
    let (discriminator, optim_d) = if adversarial {
        let mut d = discriminator_config(&spec).init(device);
        let path = dir.join("discriminator.bpk");
        d.load_from(&mut BurnpackStore::from_file(&path))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        (Some(d), Some(record("optim_d.bpk")?))
    } else {
        (None, None)
    };
    Ok(State {
        step,
        model,
        discriminator,
        optim_g: record("optim_g.bpk")?,
        optim_d,
    })
}

/// One row per sample: source | target pose | target picture | generated.
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
