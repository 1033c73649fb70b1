//! GFLA's training loop as a burn-train learning strategy, and a plain-text renderer.
//!
//! [`GflaStrategy`] is what `SupervisedTraining::launch` runs: for each of the learner's epochs
//! (here, one checkpoint interval of the step stream) it runs the learner's training steps,
//! stops before an update whose losses are not finite, feeds every step to burn-train's event
//! processor (metrics, renderer, metric logs), writes sample pictures, scores the held-out pairs
//! (the valid split), and checkpoints through burn-train's checkpointer. What burn-train does not
//! know about is kept here: the global step count, `losses.csv`, the native
//! `generator.safetensors`, and which step each checkpoint was taken at.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::Device;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, MetricName};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent,
    SupervisedLearningStrategy, SupervisedTrainingEventProcessor, TrainLoader, TrainingComponents,
    TrainingError, TrainingItem, ValidLoader,
};
use gfla_model::{ModelSpec, PoseTransfer};

use crate::dataset::PairBatch;
use crate::learner::{Gfla, GflaOutput};
use crate::train::{StepLog, sample_picture};

/// The next batch of a split, or `None` at its end or after a loading error, which stops the
/// run through `interrupter`.
fn next_batch<B, E: Into<TrainingError>>(
    batches: &mut impl Iterator<Item = std::result::Result<B, E>>,
    interrupter: &Interrupter,
) -> Option<B> {
    match batches.next()? {
        Ok(batch) => Some(batch),
        Err(e) => {
            interrupter.fail(e);
            None
        }
    }
}

/// The folder (under the run's) of burn-train's checkpoints and of our step files.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// What a run is to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub out: PathBuf,
    pub spec: ModelSpec,
    /// The step the run starts after (0, or the step of the checkpoint it resumes from).
    pub start_step: usize,
    pub total_steps: usize,
    /// Sample pictures every this many steps (0 = never).
    pub sample_every: usize,
}

/// What a run did, for the caller of `launch`.
#[derive(Debug, Default)]
pub struct Journal {
    pub steps: Vec<StepLog>,
    /// Why the run stopped early, when a loss stopped being finite or a file could not be
    /// written.
    pub failure: Option<String>,
    /// Why the run was stopped from outside (burn-train's interrupter, e.g. the TUI's quit).
    pub stopped: Option<String>,
    /// The learner epoch and the step of the last checkpoint written.
    pub last_checkpoint: Option<(usize, usize)>,
}

/// GFLA's learning strategy on one device.
pub struct GflaStrategy {
    pub device: Device,
    pub plan: Plan,
    /// Fixed held-out pairs drawn every `sample_every` steps.
    pub samples: Option<PairBatch>,
    pub journal: Arc<Mutex<Journal>>,
}

/// The step file of learner epoch `epoch`: which step its checkpoint holds.
pub fn step_file(out: &Path, epoch: usize) -> PathBuf {
    out.join(CHECKPOINT_DIR).join(format!("step-{epoch}"))
}

/// The latest complete checkpoint in `out`: its learner epoch and step. Complete means that
/// burn-train's three records (model, optimiser, scheduler; each written to a scratch file and
/// renamed into place) and our step file are all there, so a run killed while checkpointing
/// resumes from the previous checkpoint.
pub fn latest_checkpoint(out: &Path) -> Option<(usize, usize)> {
    let dir = out.join(CHECKPOINT_DIR);
    let mut found: Vec<(usize, usize)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let epoch: usize = name.strip_prefix("step-")?.parse().ok()?;
            let step = std::fs::read_to_string(dir.join(&name))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            ["model", "optim", "scheduler"]
                .iter()
                .all(|r| dir.join(format!("{r}-{epoch}.bpk")).is_file())
                .then_some((epoch, step))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Writes `contents` to `path` through a scratch file renamed into place.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let scratch = path.with_extension("partial");
    std::fs::write(&scratch, contents)
        .and_then(|_| std::fs::rename(&scratch, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `losses.csv`: every term of every step. A resumed run keeps the rows up to its checkpoint
/// and appends.
struct LossLog {
    file: BufWriter<File>,
    has_header: bool,
}

impl LossLog {
    fn open(path: &Path, resumed_at: usize) -> Result<Self> {
        let kept: Vec<String> = match resumed_at {
            0 => vec![],
            at => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.split(',')
                        .next()
                        .and_then(|s| s.parse::<usize>().ok())
                        .is_none_or(|s| s <= at)
                })
                .map(str::to_string)
                .collect(),
        };
        let mut file = BufWriter::new(
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        );
        for line in &kept {
            writeln!(file, "{line}")?;
        }
        Ok(Self {
            file,
            has_header: !kept.is_empty(),
        })
    }

    fn push(&mut self, step: &StepLog) -> std::io::Result<()> {
        if !self.has_header {
            let names: Vec<&str> = step.terms.iter().map(|t| t.0.as_str()).collect();
            writeln!(self.file, "step,{},discriminator", names.join(","))?;
            self.has_header = true;
        }
        let values: Vec<String> = step.terms.iter().map(|t| format!("{:.6}", t.1)).collect();
        writeln!(
            self.file,
            "{},{},{}",
            step.step,
            values.join(","),
            step.discriminator
                .map_or(String::new(), |d| format!("{d:.6}"))
        )
    }
}

impl GflaStrategy {
    fn fail(&self, message: String) {
        let mut journal = self.journal.lock().unwrap();
        journal.failure.get_or_insert(message);
    }

    fn last_checkpoint_note(&self) -> String {
        match self.journal.lock().unwrap().last_checkpoint {
            Some((_, step)) => format!("last checkpoint at step {step} in {}", self.where_()),
            None => match self.plan.start_step {
                0 => format!("no checkpoint yet in {}", self.where_()),
                at => format!("last checkpoint at step {at} in {}", self.where_()),
            },
        }
    }

    fn where_(&self) -> String {
        self.plan.out.join(CHECKPOINT_DIR).display().to_string()
    }

    fn write_sample(&self, learner: &Learner<Gfla>, step: usize) -> Result<()> {
        let Some(samples) = &self.samples else {
            return Ok(());
        };
        let picture = sample_picture(&learner.model().generator, samples);
        let path = self
            .plan
            .out
            .join("samples")
            .join(format!("step_{step:06}.png"));
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        picture
            .save(&path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// `generator.safetensors` and the step file of `epoch` (burn-train's checkpointer writes
    /// the rest).
    fn write_checkpoint_files(&self, model: &Gfla, epoch: usize, step: usize) -> Result<()> {
        let out = &self.plan.out;
        let scratch = out.join("generator.partial.safetensors");
        PoseTransfer::new(
            model.generator.clone(),
            self.plan.spec.clone(),
            &self.device,
        )
        .save(&scratch, false)
        .map_err(|e| anyhow::anyhow!(e))?;
        let path = out.join("generator.safetensors");
        std::fs::rename(&scratch, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let file = step_file(out, epoch);
        std::fs::create_dir_all(file.parent().expect("a folder"))?;
        write_atomically(&file, step.to_string().as_bytes())
    }
}

/// Merges the spectral norms' pending power-iteration vectors into their stored values, so that
/// a checkpoint holds exactly the vectors the next training forward reads (Burn's running
/// states keep the latest update of a thread apart until the next one).
fn settle_spectral_norms(model: &Gfla) {
    if let Some(d) = &model.discriminator {
        for conv in d.spectral_convs() {
            conv.u.value_sync();
            conv.v.value_sync();
        }
    }
}

impl SupervisedLearningStrategy<Gfla> for GflaStrategy {
    fn fit(
        &self,
        components: TrainingComponents<Gfla>,
        mut learner: Learner<Gfla>,
        dataloader_train: TrainLoader<Gfla>,
        dataloader_valid: ValidLoader<Gfla>,
        starting_epoch: usize,
    ) -> (Gfla, SupervisedTrainingEventProcessor<Gfla>) {
        let TrainingComponents {
            num_epochs,
            mut checkpointer,
            interrupter,
            mut event_processor,
            event_store,
            ..
        } = components;
        let valid = dataloader_valid.to_device(&self.device.clone().inner());
        let mut step = self.plan.start_step;
        let csv = self.plan.out.join("losses.csv");
        let mut losses = match LossLog::open(&csv, step) {
            Ok(log) => log,
            Err(e) => {
                self.fail(format!("{e:#}"));
                interrupter.stop(Some("cannot write losses.csv"));
                return (learner.model(), event_processor);
            }
        };

        for epoch in starting_epoch..=num_epochs {
            let mut batches = dataloader_train.iter();
            interrupter.fail_on_error(event_processor.process_train(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: batches.progress().items_total,
            }));
            // Within the epoch, as burn-train's own strategies count (its iteration-speed
            // metric divides it by the epoch's time).
            let mut iteration = 0;
            while let Some(batch) = next_batch(&mut batches, &interrupter) {
                step += 1;
                iteration += 1;
                let output = learner.train_step(batch);
                let log = StepLog::from_output(step, &output.item);
                if let Some((name, value)) = log.non_finite() {
                    let message = format!(
                        "step {step}: the {name} loss is {value}; stopping ({})",
                        self.last_checkpoint_note()
                    );
                    self.fail(message.clone());
                    interrupter.stop(Some(&message));
                    break;
                }
                learner.lr_step();
                learner.optimizer_step(output.grads);
                if let Err(e) = losses.push(&log) {
                    self.fail(format!("cannot write {}: {e}", csv.display()));
                    interrupter.stop(Some("cannot write losses.csv"));
                }
                self.journal.lock().unwrap().steps.push(log);
                let item = TrainingItem::new(
                    output.item,
                    batches.progress(),
                    Some(iteration),
                    Some(learner.lr_current()),
                );
                interrupter.fail_on_error(
                    event_processor.process_train(LearnerEvent::ProcessedItem(item)),
                );
                let every = self.plan.sample_every;
                if every > 0
                    && (step.is_multiple_of(every) || step == self.plan.total_steps)
                    && let Err(e) = self.write_sample(&learner, step)
                {
                    self.fail(format!("{e:#}"));
                    interrupter.stop(Some("cannot write a sample picture"));
                }
                if interrupter.should_stop() {
                    break;
                }
            }
            drop(batches);
            if let Err(e) = losses.file.flush() {
                self.fail(format!("cannot write {}: {e}", csv.display()));
                interrupter.stop(Some("cannot write losses.csv"));
            }
            interrupter.fail_on_error(event_processor.process_train(LearnerEvent::EndSplit(epoch)));
            if interrupter.should_stop() {
                break;
            }

            settle_spectral_norms(&learner.model());
            if valid.num_items() > 0 {
                let model = learner.model().valid();
                interrupter.fail_on_error(event_processor.process_valid(
                    LearnerEvent::StartSplit {
                        epoch_number: epoch,
                        total_items: valid.num_items(),
                    },
                ));
                let mut batches = valid.iter();
                let mut iteration = 0;
                while let Some(batch) = next_batch(&mut batches, &interrupter) {
                    iteration += 1;
                    let output: GflaOutput = InferenceStep::step(&model, batch);
                    let item = TrainingItem::new(output, batches.progress(), Some(iteration), None);
                    interrupter.fail_on_error(
                        event_processor.process_valid(LearnerEvent::ProcessedItem(item)),
                    );
                }
                interrupter
                    .fail_on_error(event_processor.process_valid(LearnerEvent::EndSplit(epoch)));
            }
            interrupter.fail_on_error(event_processor.process_train(LearnerEvent::EndEpoch(epoch)));
            interrupter.fail_on_error(event_processor.flush());
            if interrupter.should_stop() {
                break;
            }

            let model = learner.model();
            if let Err(e) = self.write_checkpoint_files(&model, epoch, step) {
                self.fail(format!("{e:#}"));
                interrupter.stop(Some("cannot write a checkpoint"));
                break;
            }
            if let Some(checkpointer) = &mut checkpointer {
                checkpointer.checkpoint(&learner, epoch, &event_store);
                // burn-train's strategy keeps the last two; so do the step files.
                if epoch > 2 {
                    let _ = std::fs::remove_file(step_file(&self.plan.out, epoch - 2));
                }
            }
            self.journal.lock().unwrap().last_checkpoint = Some((epoch, step));
        }
        if interrupter.should_stop() {
            self.journal.lock().unwrap().stopped = Some(
                interrupter
                    .get_message()
                    .unwrap_or_else(|| "stopped without a reason".into()),
            );
        }
        // Waits for the checkpointer's thread to finish writing.
        drop(checkpointer);
        (learner.model(), event_processor)
    }
}

/// Renders burn-train's metrics as text lines, one per split of each epoch (for a terminal
/// without the TUI, a log file or a pipe): `epoch 2/4 train  l1 0.1432  total 0.7310 ...`.
#[derive(Default)]
pub struct LineRenderer {
    names: HashMap<MetricId, MetricName>,
    /// The latest value of each metric of the current split, in registration order.
    values: Vec<(MetricName, f64)>,
    split: String,
    epoch: usize,
    epochs: usize,
}

impl LineRenderer {
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, Some(value)) = state
            && let Some(name) = self.names.get(&entry.metric_id)
        {
            match self.values.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.current(),
                None => self.values.push((name.clone(), value.current())),
            }
        }
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.update(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.update(state);
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.update(state);
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch;
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_string();
        self.values.clear();
    }

    fn update_split(&mut self, _items_processed: usize) {}

    fn end_split(&mut self) {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|(name, v)| match v.abs() {
                a if (a > 0.0 && a < 1e-3) || a >= 1e5 => format!("{name} {v:.2e}"),
                _ => format!("{name} {v:.4}"),
            })
            .collect();
        println!(
            "epoch {}/{} {:<5}  {}",
            self.epoch,
            self.epochs,
            self.split,
            values.join("  ")
        );
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, _total_items: usize) {
        self.split = name.to_string();
        self.values.clear();
    }

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {}

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
