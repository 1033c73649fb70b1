//! Training on a tiny synthetic set: the losses fall, a seed fixes the run, a blow-up stops it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::Device;
use gfla_model::{GeneratorConfig, ModelSpec, PoseTransfer, Vgg19};
use gfla_train::dataset::{Layout, PairDataset};
use gfla_train::losses::LossWeights;
use gfla_train::synth::{SynthConfig, generate};
use gfla_train::train::{Start, StepLog, TrainConfig, load_state, train};

/// The backend's random generator is one per process: tests that seed it run one at a time.
static SEEDED: Mutex<()> = Mutex::new(());

/// Two identities of two poses each (two training pairs), written once per test binary.
fn tiny_set(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("gfla-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let config = SynthConfig {
        identities_train: 1,
        identities_test: 1,
        poses_per_identity: 2,
        seed: 3,
        ..SynthConfig::market()
    };
    generate(&config, &root, |_, _| {}).unwrap();
    root
}

fn tiny_spec() -> ModelSpec {
    ModelSpec {
        name: "tiny".into(),
        config: GeneratorConfig::market()
            .with_channels(4)
            .with_flow_channels(4)
            .with_attention_hidden(8),
        ..ModelSpec::market()
    }
}

fn run(root: &Path, config: &TrainConfig, vgg: Option<&Vgg19>) -> anyhow::Result<Vec<StepLog>> {
    let device = Device::flex().autodiff();
    device.seed(config.seed);
    let model = PoseTransfer::init(tiny_spec(), &device);
    let data = PairDataset::open(root, Layout::Market, "train")?;
    let mut logs = Vec::new();
    train(
        Start::Fresh(model),
        data,
        None,
        config,
        vgg,
        &root.join("run"),
        |s| logs.push(s.clone()),
    )?;
    Ok(logs)
}

fn mean(logs: &[StepLog], name: &str) -> f64 {
    logs.iter().map(|l| l.get(name).unwrap()).sum::<f64>() / logs.len() as f64
}

#[test]
fn the_losses_fall_over_a_few_dozen_steps() {
    let _one_at_a_time = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let root = tiny_set("fall");
    let device = Device::flex().autodiff();
    device.seed(11);
    // A narrow VGG19 with random weights: the VGG terms are real objectives all the same.
    let vgg = Vgg19::new(16, &device);
    let config = TrainConfig {
        steps: 40,
        batch_size: 2,
        lr: 2e-3,
        seed: 5,
        weights: LossWeights::end_to_end(),
        checkpoint_every: 40,
        sample_every: 0,
        workers: 1,
    };
    let logs = run(&root, &config, Some(&vgg)).unwrap();
    assert_eq!(logs.len(), 40);
    let (first, last) = (&logs[..5], &logs[35..]);
    for term in ["l1", "perceptual", "style", "total"] {
        let (a, b) = (mean(first, term), mean(last, term));
        assert!(
            b < a,
            "{term}: {a} over the first 5 steps, {b} over the last 5"
        );
    }
    // The regulariser starts at zero (zero flows are affine) and must stay small.
    assert!(mean(last, "regularization") < 1.0);
    let d: Vec<f64> = logs.iter().map(|l| l.discriminator.unwrap()).collect();
    assert!(
        d[35..].iter().sum::<f64>() < d[..5].iter().sum::<f64>(),
        "D learns: {d:?}"
    );
    assert!(root.join("run/generator.safetensors").is_file());

    // Stage 1 (flow pre-training): the sampling correctness is the flows' own objective.
    let stage1 = TrainConfig {
        weights: LossWeights::flow_pretraining(),
        steps: 30,
        ..config
    };
    let logs = run(&root, &stage1, Some(&vgg)).unwrap();
    let (a, b) = (
        mean(&logs[..5], "correctness"),
        mean(&logs[25..], "correctness"),
    );
    assert!(
        b < a,
        "correctness: {a} over the first 5 steps, {b} over the last 5"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_seed_fixes_the_run_and_a_blow_up_stops_it() {
    let _one_at_a_time = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let root = tiny_set("seed");
    let config = TrainConfig {
        steps: 3,
        batch_size: 2,
        weights: LossWeights::end_to_end().without_vgg(),
        checkpoint_every: 100,
        sample_every: 0,
        workers: 1,
        ..TrainConfig::default()
    };
    let a = run(&root, &config, None).unwrap();
    let b = run(&root, &config, None).unwrap();
    let values = |logs: &[StepLog]| -> Vec<f64> {
        logs.iter()
            .flat_map(|l| l.terms.iter().map(|t| t.1))
            .collect()
    };
    assert_eq!(values(&a), values(&b));
    let c = run(
        &root,
        &TrainConfig {
            seed: 1,
            ..config.clone()
        },
        None,
    )
    .unwrap();
    assert_ne!(values(&a), values(&c));

    let blow_up = TrainConfig {
        steps: 6,
        lr: 1e30,
        ..config
    };
    let err = run(&root, &blow_up, None).unwrap_err().to_string();
    assert!(
        err.contains("loss is NaN") || err.contains("loss is inf"),
        "{err}"
    );
    assert!(err.contains("stopping"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_vgg_terms_refuse_to_run_without_vgg() {
    let _one_at_a_time = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let root = tiny_set("novgg");
    let config = TrainConfig {
        steps: 1,
        batch_size: 2,
        ..TrainConfig::default()
    };
    let err = run(&root, &config, None).unwrap_err().to_string();
    assert!(err.contains("need VGG19 weights"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_resumed_run_carries_on_exactly_where_it_stopped() {
    let _one_at_a_time = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let root = tiny_set("resume");
    // No D and no augmentation: with the two pairs in one batch, every step sees the same data,
    // so the only state is G's weights and Adam's moments.
    let config = TrainConfig {
        steps: 6,
        batch_size: 2,
        lr: 1e-3,
        weights: LossWeights {
            adversarial: 0.0,
            ..LossWeights::end_to_end().without_vgg()
        },
        checkpoint_every: 3,
        sample_every: 0,
        workers: 1,
        ..TrainConfig::default()
    };
    let straight = run(&root, &config, None).unwrap();
    std::fs::remove_dir_all(root.join("run")).unwrap();
    // A run "killed" after its step-3 checkpoint, then resumed to step 6.
    let first = run(
        &root,
        &TrainConfig {
            steps: 3,
            ..config.clone()
        },
        None,
    )
    .unwrap();
    assert_eq!(first.len(), 3);
    let device = Device::flex().autodiff();
    let state = load_state(&root.join("run"), tiny_spec(), false, &device).unwrap();
    assert_eq!(state.step, 3);
    let data = PairDataset::open(&root, Layout::Market, "train").unwrap();
    let mut resumed = Vec::new();
    train(
        Start::Resume(state),
        data,
        None,
        &config,
        None,
        &root.join("run"),
        |s| resumed.push(s.clone()),
    )
    .unwrap();
    assert_eq!(
        resumed.iter().map(|s| s.step).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    for (a, b) in straight[3..].iter().zip(&resumed) {
        assert_eq!(a.terms.len(), b.terms.len());
        for ((name, x), (_, y)) in a.terms.iter().zip(&b.terms) {
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1e-6),
                "step {}: {name} {x} straight, {y} resumed",
                a.step
            );
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
