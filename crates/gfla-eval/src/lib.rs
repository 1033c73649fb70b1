//! # gfla-eval
//!
//! Pose-transfer metrics computed the way published numbers are (issue #7): the protocol of
//! the official GFLA `script/metrics.py` (reference §9), reproduced operation by operation
//! rather than approximated.
//!
//! * [`mod@ssim`]: scikit-image SSIM in `f64` — GFLA's uniform 51×51 variant, its Gaussian
//!   `ssim_256` variant as the script's scikit-image ran it, and the modern 11-tap setting.
//! * [`mod@psnr`]: PSNR (data range 1), L1 and GFLA's "mae".
//! * [`mask`]: the Market body mask (23 limbs, discs, 5×5 closing) and its annotation CSV.
//! * [`lpips`]: LPIPS v0.1 (`net-lin` over AlexNet) on Burn, from user-supplied weights.
//! * [`inception`]: Inception-v3 to its pool3 features on Burn, from a user-supplied
//!   torchvision (GFLA's) or pytorch-fid state dict, with the script's preprocessing.
//! * [`fid`]: FID of a generated folder against a real folder with the script's file
//!   selection and batching; [`frechet`]: the statistics and the Fréchet distance.
//! * [`networks`]: the traits the learned metrics' networks implement; [`weights`]: reading
//!   `.pth` state dicts into them with every misfit named by its key.
//! * [`pairing`], [`evaluate`], [`report`]: folders to pairs to metrics to a table and JSON;
//!   the `gfla-eval` binary drives them.
//!
//! No network weights ship with the crate: LPIPS and FID run only when the user names the
//! files (torchvision's AlexNet and LPIPS's `alex.pth`; torchvision's Inception-v3).

pub mod error;
pub mod evaluate;
pub mod fid;
pub mod filter;
pub mod frechet;
pub mod image_io;
pub mod inception;
pub mod lpips;
pub mod mask;
pub mod networks;
pub mod pairing;
pub mod psnr;
pub mod report;
pub mod ssim;
pub mod weights;

pub use error::MetricError;
pub use evaluate::{
    EvalOptions, LpipsScores, MaskedMetrics, Metrics, PairMetrics, compute_metrics, evaluate_pair,
    evaluate_pairs, lpips_scores,
};
pub use fid::{FidBatches, FidScores, fid_folders};
pub use frechet::{Statistics, StatisticsAccumulator, SymmetricEigen, frechet_distance};
pub use image_io::{Image, Resize, read_rgb8};
pub use inception::{InceptionLoadError, InceptionV3, InceptionWeights};
pub use lpips::{Lpips, LpipsLoadError};
pub use mask::{Annotations, Joint, Mask, Pose, apply_mask, body_mask};
pub use networks::{FeatureExtractor, PerceptualDistance};
pub use pairing::{Pair, PairingMode, pair_folders};
pub use psnr::{l1, mae, psnr};
pub use report::{Report, RunInfo};
pub use ssim::{SsimConfig, SsimProtocol, ssim, ssim_map, ssim_plane};
