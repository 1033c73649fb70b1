//! `gfla-train`: the command line of the training crate.
//!
//! ```text
//! gfla-train synth --out DIR [--preset market|fashion] [--identities-train N]
//!                  [--identities-test N] [--poses N] [--seed S]
//! gfla-train train --data DIR --out DIR [--layout market|fashion] [--config FILE.json]
//!                  [--steps N] [--batch N] [--lr LR] [--seed S] [--checkpoint-every N]
//!                  [--sample-every N] [--channels N]
//!                  [--vgg FILE | --without-vgg] [--stage flow|end-to-end] [--no-adversarial]
//!                  [--init WEIGHTS | --resume] [--no-augmentation] [--eval-pairs N]
//!                  [--valid-pairs N] [--no-tui]
//! gfla-train demo --data DIR --weights FILE --out assets/demo
//! gfla-train export --weights FILE [--preset market|fashion] --out FILE.safetensors [--half]
//! ```

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use gfla_train::augment::Augmentation;
use gfla_train::dataset::{Layout, PairDataset};
use gfla_train::evaluate::{Scores, score_pairs};
use gfla_train::losses::LossWeights;
use gfla_train::synth::{self, SynthConfig};
use gfla_train::train::{Resume, Run, Start, TrainConfig, first_pairs, train};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(
    name = "gfla-train",
    version,
    about = "Datasets and training of GFLA pose-guided person image generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic pose-transfer dataset (textured figures in random poses) in the
    /// official Market-1501 or DeepFashion layout.
    Synth(SynthArgs),
    /// Train G (end to end, with D) on a dataset in the official layout; writes
    /// generator.safetensors, samples and, at the end, held-out scores against the
    /// copy-the-source baseline.
    Train(TrainArgs),
    /// Write the pose_transfer example's embedded demo: a held-out synthetic person with its
    /// pose (OpenPose JSON), a pose sequence (annotation CSV) and the weights in half precision.
    Demo(DemoArgs),
    /// Convert weights (an official checkpoint, or a native file) into a native, self-describing
    /// safetensors file that `pose_transfer --weights` and `train --init` take without a preset.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The weights: an official latest_net_G.pth, or a native .safetensors.
    #[arg(long)]
    weights: PathBuf,
    /// The preset of an official checkpoint (official files do not say).
    #[arg(long, value_enum)]
    preset: Option<Layout>,
    /// The native file to write.
    #[arg(long)]
    out: PathBuf,
    /// Store the weights in half precision (half the size).
    #[arg(long)]
    half: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// The synthetic dataset's configuration (its synth.json), to draw a test person.
    #[arg(long)]
    data: PathBuf,
    /// Trained native weights (a train run's generator.safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Output folder (the repository's assets/demo).
    #[arg(long)]
    out: PathBuf,
    /// Key poses of the sequence; frames are interpolated between them.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Frames from one key pose to the next.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Dataset root in the official layout (train/, test/, pairs and annotation CSVs).
    #[arg(long)]
    data: PathBuf,
    /// Output folder: generator.safetensors, losses.csv, samples/, config.json, scores.json,
    /// and burn-train's checkpoint/, train/ and valid/ (metric logs) and experiment.log.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Layout::Market)]
    layout: Layout,
    /// A TrainConfig as JSON; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// A checkpoint every this many steps (one epoch of burn-train's learner).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// A sample picture every this many steps (0 = never).
    #[arg(long)]
    sample_every: Option<usize>,
    /// Base width of G (official 64; the flow estimator gets half, the attention twice).
    #[arg(long, default_value_t = 64)]
    channels: usize,
    /// Torchvision VGG19 weights (vgg19-dcbb9e9d.pth) for the correctness, perceptual and
    /// style losses.
    #[arg(long, conflicts_with = "without_vgg")]
    vgg: Option<PathBuf>,
    /// Train without VGG19: only the L1, regulariser and adversarial terms.
    #[arg(long)]
    without_vgg: bool,
    /// `flow`: stage 1 of the official schedule, the flow estimator alone with the correctness
    /// (20) and regulariser (0.01) terms; `end-to-end`: stage 2, every term (start it from the
    /// stage-1 file with --init).
    #[arg(long, value_enum, default_value_t = Stage::EndToEnd)]
    stage: Stage,
    /// Switch the adversarial term (and D) off.
    #[arg(long)]
    no_adversarial: bool,
    /// Carry on a run that stopped (killed, or with more --steps): G, D, both optimisers and
    /// the step come back from the latest complete checkpoint in OUT/checkpoint/ (through
    /// burn-train's checkpointer), the configuration from OUT/config.json.
    #[arg(long, conflicts_with_all = ["init", "config"])]
    resume: bool,
    /// Start from these native weights (a previous run's generator.safetensors) instead of
    /// the orthogonal initialisation; the model is the one the file describes.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Switch off the official Market training augmentation (random rotation, shift and scale
    /// of both pictures with their keypoints); DeepFashion has none.
    #[arg(long)]
    no_augmentation: bool,
    /// Held-out test pairs scored at the end (0 = none).
    #[arg(long, default_value_t = 64)]
    eval_pairs: usize,
    /// Held-out test pairs whose losses are measured at every checkpoint (burn-train's valid
    /// split) [default: 16].
    #[arg(long)]
    valid_pairs: Option<usize>,
    /// One text line per split of each epoch instead of burn-train's terminal dashboard.
    #[arg(long)]
    no_tui: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    Flow,
    EndToEnd,
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Dataset root to write (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Layout and image size (Market 128 x 64; DeepFashion 256 x 176, its annotation frame).
    #[arg(long, value_enum, default_value_t = Layout::Market)]
    preset: Layout,
    /// Training identities [default: 64].
    #[arg(long)]
    identities_train: Option<usize>,
    /// Test identities, disjoint from the training ones [default: 8].
    #[arg(long)]
    identities_test: Option<usize>,
    /// Images (poses) per identity, at least 2 [default: 6].
    #[arg(long)]
    poses: Option<usize>,
    /// Seed of everything [default: 0].
    #[arg(long)]
    seed: Option<u64>,
}

fn synth(args: SynthArgs) -> Result<()> {
    let mut config = match args.preset {
        Layout::Market => SynthConfig::market(),
        Layout::Fashion => SynthConfig::fashion(),
    };
    config.identities_train = args.identities_train.unwrap_or(config.identities_train);
    config.identities_test = args.identities_test.unwrap_or(config.identities_test);
    config.poses_per_identity = args.poses.unwrap_or(config.poses_per_identity);
    config.seed = args.seed.unwrap_or(config.seed);

    let bar = ProgressBar::new(config.total_images() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images [{elapsed} < {eta}]")?
            .progress_chars("=> "),
    );
    let summary = synth::generate(&config, &args.out, |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    println!("{}", summary?);
    Ok(())
}

fn run_train(args: TrainArgs) -> Result<()> {
    use anyhow::{Context, bail};
    use burn::module::Module;
    use burn::tensor::Device;
    use gfla_model::{ModelSpec, PoseTransfer, Vgg19};

    let layout = args.layout;
    let config_file = if args.resume {
        Some(args.out.join("config.json"))
    } else {
        args.config.clone()
    };
    let mut config = match &config_file {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{}: not a training configuration", path.display()))?,
        None => TrainConfig::default(),
    };
    config.steps = args.steps.unwrap_or(config.steps);
    config.batch_size = args.batch.unwrap_or(config.batch_size);
    config.lr = args.lr.unwrap_or(config.lr);
    config.seed = args.seed.unwrap_or(config.seed);
    config.valid_pairs = args.valid_pairs.unwrap_or(config.valid_pairs);
    config.checkpoint_every = args.checkpoint_every.unwrap_or(config.checkpoint_every);
    config.sample_every = args.sample_every.unwrap_or(config.sample_every);
    if args.stage == Stage::Flow {
        config.weights = LossWeights::flow_pretraining();
    }
    if args.no_adversarial {
        config.weights.adversarial = 0.0;
    }
    let device = Device::flex().autodiff();
    let vgg = match (&args.vgg, args.without_vgg) {
        (Some(path), _) => {
            let mut vgg = Vgg19::new(1, &device);
            vgg.load_torchvision(path)?;
            Some(vgg)
        }
        (None, true) => {
            config.weights = config.weights.clone().without_vgg();
            None
        }
        (None, false) if config.weights.needs_vgg() => bail!(
            "the correctness, perceptual and style losses need VGG19: pass --vgg vgg19-dcbb9e9d.pth (torchvision's ImageNet weights), or --without-vgg to train with the L1, regulariser and adversarial terms only"
        ),
        (None, false) => None,
    };
    let base = layout.spec();
    let c = args.channels;
    let spec = ModelSpec {
        name: if c == 64 {
            base.name.clone()
        } else {
            format!("{}-c{c}", base.name)
        },
        config: base
            .config
            .clone()
            .with_channels(c)
            .with_flow_channels((c / 2).max(1))
            .with_attention_hidden(2 * c),
        ..base
    };
    // Seeded before the weights are drawn, so that a seed fixes the whole run.
    device.seed(config.seed);
    let start = if args.resume {
        // The spec is the one the run's own checkpoint names.
        let spec = PoseTransfer::open(&args.out.join("generator.safetensors"), None, &device)
            .context("--resume needs the folder of an earlier run")?
            .spec;
        let resume = Resume::latest(&args.out, spec, &device)?;
        println!("resuming at step {}", resume.step);
        Start::Resume(resume)
    } else {
        Start::Fresh(match &args.init {
            Some(path) => PoseTransfer::open(path, None, &device)?,
            None => PoseTransfer::init(spec, &device),
        })
    };
    let spec = start.model().spec.clone();
    let mut data = PairDataset::open(&args.data, layout, "train")?;
    if layout == Layout::Market && !args.no_augmentation {
        data = data.with_augmentation(Augmentation::market(), config.seed);
    }
    let test = PairDataset::open(&args.data, layout, "test").ok();
    let samples = match &test {
        Some(t) => Some(first_pairs(t, 4, &device)?),
        None => Some(first_pairs(&data, 4, &device)?),
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    println!(
        "training {} on {} pairs for {} steps (batch {}, {:.2} M parameters)",
        spec.name,
        burn::data::dataset::Dataset::len(&data),
        config.steps,
        config.batch_size,
        start.model().generator.num_params() as f64 / 1e6
    );
    let run = Run {
        data,
        held_out: test.clone(),
        samples,
        vgg: vgg.as_ref(),
        out: args.out.clone(),
        tui: !args.no_tui,
    };
    let trained = train(start, run, &config)?;
    println!(
        "wrote {}, {} and burn-train's logs and checkpoints in {}",
        args.out.join("generator.safetensors").display(),
        args.out.join("losses.csv").display(),
        args.out.display()
    );
    if let (Some(test), true) = (&test, args.eval_pairs > 0) {
        let scores = score_pairs(&trained.model, test, args.eval_pairs)?;
        print_scores(&scores);
        std::fs::write(
            args.out.join("scores.json"),
            serde_json::to_string_pretty(&scores)?,
        )?;
    }
    Ok(())
}

fn demo(args: DemoArgs) -> Result<()> {
    use anyhow::Context;
    use burn::tensor::Device;
    use gfla_model::{Pose, PoseTransfer};

    let config_path = args.data.join("synth.json");
    let config: SynthConfig = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?,
    )?;
    let model = PoseTransfer::open(&args.weights, None, &Device::flex())?;
    // The first test identity: a person the network never saw, in a view showing the face.
    let (_, pose, picture) = (0..config.poses_per_identity)
        .map(|p| synth::sample(&config, config.identities_train, p))
        .find(|s| s.1.joints[0].is_some())
        .context("no test picture shows a face")?;
    std::fs::create_dir_all(&args.out)?;
    picture.save(args.out.join("source.png"))?;
    let keypoints: Vec<f64> = pose
        .joints
        .iter()
        .flat_map(|j| match j {
            Some([x, y]) => [*x, *y, 1.0],
            None => [0.0, 0.0, 0.0],
        })
        .collect();
    let json = serde_json::json!({"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": keypoints}]});
    std::fs::write(args.out.join("source_pose.json"), json.to_string())?;
    // Key poses, the first being the source's own, with linear interpolation between them.
    let mut rng = synth::Rng::new(args.seed);
    let mut keys = vec![pose.clone()];
    keys.extend(
        (1..args.keys.max(2)).map(|_| synth::random_pose(&mut rng, config.height, config.width)),
    );
    keys.push(pose);
    let mut csv = String::from("name:keypoints_y:keypoints_x\n");
    let mut frame = 0;
    for pair in keys.windows(2) {
        for s in 0..args.steps.max(1) {
            let t = s as f64 / args.steps.max(1) as f64;
            let joints = std::array::from_fn(|j| match (pair[0].joints[j], pair[1].joints[j]) {
                (Some(a), Some(b)) => Some([a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]),
                // A joint seen in one key pose only shows up in the nearer half.
                (a, b) => {
                    if t < 0.5 {
                        a
                    } else {
                        b
                    }
                }
            });
            let p = synth::snap_to_pixels(&Pose { joints });
            csv.push_str(&synth::annotation_row(&format!("frame{frame:02}.png"), &p));
            csv.push('\n');
            frame += 1;
        }
    }
    std::fs::write(args.out.join("target_poses.csv"), csv)?;
    model.save(&args.out.join("generator.safetensors"), true)?;
    println!(
        "wrote the demo ({} frames, {} model) to {}",
        frame,
        model.spec.name,
        args.out.display()
    );
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    use burn::module::Module;
    use burn::tensor::Device;
    use gfla_model::PoseTransfer;

    let model = PoseTransfer::open(
        &args.weights,
        args.preset.map(Layout::spec),
        &Device::flex(),
    )?;
    model.save(&args.out, args.half)?;
    println!(
        "wrote {} ({} model, {}x{}, {:.2} M parameters{})",
        args.out.display(),
        model.spec.name,
        model.spec.image_size[0],
        model.spec.image_size[1],
        model.generator.num_params() as f64 / 1e6,
        if args.half { ", half precision" } else { "" }
    );
    Ok(())
}

fn print_scores(s: &Scores) {
    println!(
        "held-out test pairs: {}\n{:<22}{:>10}{:>10}\n{:<22}{:>10.4}{:>10.4}\n{:<22}{:>10.4}{:>10.4}",
        s.pairs,
        "",
        "L1",
        "SSIM",
        "GFLA (this model)",
        s.model_l1,
        s.model_ssim,
        "copy the source",
        s.copy_l1,
        s.copy_ssim
    );
}

fn main() {
    // Tensors freed on every step are reused, not mapped afresh (see the function).
    gfla_model::gfla_ops::reuse_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Synth(args) => synth(args),
        Command::Train(args) => run_train(args),
        Command::Demo(args) => demo(args),
        Command::Export(args) => export(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
