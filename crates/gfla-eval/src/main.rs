//! `gfla-eval`: scores a folder of generated images against the ground truth with the GFLA
//! evaluation protocol, prints a table and optionally writes a JSON report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::Device;
use clap::Parser;
use gfla_eval::evaluate::default_threads;
use gfla_eval::evaluate::lpips_scores;
use gfla_eval::fid::{FidBatches, fid_folders, fid_images};
use gfla_eval::inception::{InceptionV3, InceptionWeights};
use gfla_eval::lpips::LPIPS_BATCH;
use gfla_eval::{
    Annotations, EvalOptions, Lpips, PairingMode, Report, Resize, RunInfo, evaluate_pairs,
    pair_folders,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Pose-transfer metrics (SSIM, PSNR, L1, MAE, Market masked variants, and LPIPS and FID when
/// their weights are given) computed exactly as the official GFLA evaluation script does.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Folder of generated images (`*.jpg`, `*.png`).
    #[arg(long, value_name = "DIR")]
    generated: PathBuf,

    /// Folder of ground-truth images.
    #[arg(long, value_name = "DIR")]
    ground_truth: PathBuf,

    /// `gfla`: `<P1>_2_<P2>_vis.<ext>` pairs with `<P2>.jpg`; `same-name`: identical file
    /// names.
    #[arg(long, default_value = "gfla", value_name = "gfla|same-name")]
    pairing: PairingMode,

    /// Resize both images of each pair first: `none` or HEIGHTxWIDTH (e.g. 256x176,
    /// 256x256, 128x64). With `none` a size mismatch is an error.
    #[arg(long, default_value = "none", value_name = "none|HxW")]
    resize: Resize,

    /// Market annotation CSV (`name:keypoints_y:keypoints_x`); enables the masked metrics
    /// (images must be 128x64).
    #[arg(long, value_name = "CSV")]
    market_annotation: Option<PathBuf>,

    /// Write the JSON report (per-image values, means, protocol) here.
    #[arg(long, value_name = "OUT.json")]
    json: Option<PathBuf>,

    /// torchvision AlexNet weights (`alexnet-owt-*.pth`) for LPIPS; needs --lpips-lin.
    #[arg(long, value_name = "FILE", requires = "lpips_lin")]
    lpips_alexnet: Option<PathBuf>,

    /// LPIPS v0.1 linear-layer weights (`weights/v0.1/alex.pth` of PerceptualSimilarity);
    /// needs --lpips-alexnet. LPIPS runs in batches of 64 pairs and, as in the GFLA script,
    /// a final partial batch is dropped; with --market-annotation mask-LPIPS is computed too.
    #[arg(long, value_name = "FILE", requires = "lpips_alexnet")]
    lpips_lin: Option<PathBuf>,

    /// Inception-v3 weights for FID, needs --fid-real: torchvision's `inception_v3_google-*.pth`
    /// (the GFLA protocol) or pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
    /// (pytorch-fid's protocol, stated as not GFLA's in the report).
    #[arg(long, value_name = "FILE", requires = "fid_real")]
    fid_inception: Option<PathBuf>,

    /// Real image folder FID compares the generated folder with (the script's --fid_real_path:
    /// the training images at the generation size, e.g. train_12864 or train_256); needs
    /// --fid-inception. Every *.jpg and *.png of both folders is read.
    #[arg(long, value_name = "DIR", requires = "fid_inception")]
    fid_real: Option<PathBuf>,

    /// Layout of the --fid-inception file: `auto` tells torchvision from pytorch-fid by the
    /// rows of `fc.weight` (1000 or 1008).
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|torchvision|pytorch-fid",
        value_parser = parse_fid_weights
    )]
    fid_weights: FidWeights,

    /// Worker threads (default: all available cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// `--fid-weights`: `None` for `auto`.
#[derive(Debug, Clone, Copy)]
struct FidWeights(Option<InceptionWeights>);

fn parse_fid_weights(s: &str) -> Result<FidWeights, String> {
    match s {
        "auto" => Ok(FidWeights(None)),
        _ => s
            .parse()
            .map(|w| FidWeights(Some(w)))
            .map_err(|_| format!("expected `auto`, `torchvision` or `pytorch-fid`, got `{s}`")),
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let pairs = pair_folders(&args.generated, &args.ground_truth, args.pairing)?;
    // Load the networks first, so a bad weight file fails before the long part.
    let mut lpips = match (&args.lpips_alexnet, &args.lpips_lin) {
        (Some(alexnet), Some(lin)) => Some(Lpips::load(alexnet, lin, &Device::flex())?),
        _ => None,
    };
    let mut inception = match (&args.fid_inception, &args.fid_real) {
        (Some(weights), Some(real)) => {
            let net = InceptionV3::load(weights, args.fid_weights.0, &Device::flex())?;
            // The folders' image counts, checked now rather than after the paired metrics.
            let (n_real, n_generated) =
                (fid_images(real)?.len(), fid_images(&args.generated)?.len());
            for (n, dir) in [(n_real, real), (n_generated, &args.generated)] {
                anyhow::ensure!(
                    n >= 2,
                    "FID needs at least 2 .jpg/.png images in {}, found {n}",
                    dir.display()
                );
            }
            let used = FidBatches::new(net.weights, n_real, n_generated);
            Some((net, weights, real, used))
        }
        _ => None,
    };
    let annotations = args
        .market_annotation
        .as_deref()
        .map(Annotations::read)
        .transpose()?;
    let options = EvalOptions {
        resize: args.resize,
        annotations,
    };

    let bar = ProgressBar::new(pairs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pairs [{elapsed_precise}, ETA {eta}]")
            .expect("valid progress template"),
    );
    let tick = || bar.inc(1);
    let threads = args.threads.unwrap_or_else(default_threads);
    let images = evaluate_pairs(&pairs, &options, threads, &tick);
    bar.finish_and_clear();
    let images = images?;

    let lpips = match lpips.as_mut() {
        Some(net) => {
            let bar = ProgressBar::new((pairs.len() / LPIPS_BATCH * LPIPS_BATCH) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} pairs (LPIPS) [{elapsed_precise}, ETA {eta}]",
                )
                .expect("valid progress template"),
            );
            let scores = lpips_scores(&pairs, &options, net, LPIPS_BATCH, &|| bar.inc(1));
            bar.finish_and_clear();
            Some(scores?)
        }
        None => None,
    };

    let fid = match inception.as_mut() {
        Some((net, weights_file, real, used)) => {
            let bar = ProgressBar::new((used.real_used + used.generated_used) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} images (FID) [{elapsed_precise}, ETA {eta}]",
                )
                .expect("valid progress template"),
            );
            let weights = net.weights;
            let shown = weights_file.display().to_string();
            let scores = fid_folders(&args.generated, real, net, weights, &shown, &|| bar.inc(1));
            bar.finish_and_clear();
            Some(scores?)
        }
        None => None,
    };

    let mut report = Report::new(
        RunInfo {
            generated_dir: args.generated.display().to_string(),
            ground_truth_dir: args.ground_truth.display().to_string(),
            pairing: args.pairing,
            resize: args.resize,
            annotation: args
                .market_annotation
                .as_ref()
                .map(|p| p.display().to_string()),
        },
        images,
    );
    if let Some(scores) = lpips {
        report = report.with_lpips(scores);
    }
    if let Some(scores) = fid {
        report = report.with_fid(scores);
    }
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("JSON report written to {}", path.display());
    }
    Ok(())
}
