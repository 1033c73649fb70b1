//! Scoring image pairs: reading both files, checking sizes, and computing every metric.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::MetricError;
use crate::image_io::{Image, Resize, read_rgb8};
use crate::mask::{Annotations, MARKET_SIZE, Mask, apply_mask, body_mask};
use crate::networks::PerceptualDistance;
use crate::pairing::{Pair, file_name};
use crate::psnr::{l1, mae, psnr};
use crate::ssim::SsimProtocol;

/// Metrics of one pair. Non-finite values (PSNR of identical images) serialise as `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairMetrics {
    /// Generated file name.
    pub generated: String,
    /// Ground-truth file name.
    pub ground_truth: String,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// Every metric of one image pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// [`SsimProtocol::Gfla`].
    pub ssim: f64,
    /// [`SsimProtocol::Gfla256`].
    pub ssim_256: f64,
    /// [`SsimProtocol::Gaussian11`].
    pub ssim_11: f64,
    /// [`psnr`]; `+inf` for identical images.
    pub psnr: f64,
    pub l1: f64,
    pub mae: f64,
    /// Present when a body mask was given.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub masked: Option<MaskedMetrics>,
}

/// Metrics on the masked images ([`apply_mask`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MaskedMetrics {
    /// [`SsimProtocol::Gfla`] on the masked images.
    pub mask_ssim: f64,
    /// [`SsimProtocol::Gfla256`] on the masked images.
    pub mask_ssim_256: f64,
    /// [`l1`] on the masked images.
    pub mask_l1: f64,
}

/// Computes all metrics for a `[0, 1]` pair, masked ones too when `mask` is given (the mask
/// of the ground truth's pose).
pub fn compute_metrics(
    ground_truth: &Image,
    generated: &Image,
    mask: Option<&Mask>,
) -> Result<Metrics, MetricError> {
    let masked = match mask {
        Some(mask) => {
            let gt = apply_mask(ground_truth, mask)?;
            let generated = apply_mask(generated, mask)?;
            Some(MaskedMetrics {
                mask_ssim: SsimProtocol::Gfla.compute(&gt, &generated)?,
                mask_ssim_256: SsimProtocol::Gfla256.compute(&gt, &generated)?,
                mask_l1: l1(&gt, &generated)?,
            })
        }
        None => None,
    };
    Ok(Metrics {
        ssim: SsimProtocol::Gfla.compute(ground_truth, generated)?,
        ssim_256: SsimProtocol::Gfla256.compute(ground_truth, generated)?,
        ssim_11: SsimProtocol::Gaussian11.compute(ground_truth, generated)?,
        psnr: psnr(ground_truth, generated)?,
        l1: l1(ground_truth, generated)?,
        mae: mae(ground_truth, generated)?,
        masked,
    })
}

/// How pairs are read and which extras are computed.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub resize: Resize,
    /// Market keypoints (in the 128×64 frame): enables the masked metrics.
    pub annotations: Option<Annotations>,
}

/// One pair read from disk as `[0, 1]` images, with the ground truth's body mask when
/// annotations were given.
#[derive(Debug, Clone)]
pub struct LoadedPair {
    pub generated_name: String,
    pub ground_truth_name: String,
    pub generated: Image,
    pub ground_truth: Image,
    pub mask: Option<Mask>,
}

/// Reads one pair (resizing as asked) and its mask. Errors name the files involved.
pub fn load_pair(pair: &Pair, options: &EvalOptions) -> anyhow::Result<LoadedPair> {
    let gen_name = file_name(&pair.generated);
    let gt_name = file_name(&pair.ground_truth);
    let generated = options.resize.apply(read_rgb8(&pair.generated)?);
    let ground_truth = options.resize.apply(read_rgb8(&pair.ground_truth)?);
    let size = |img: &image::RgbImage| format!("{}x{}", img.height(), img.width());
    if generated.dimensions() != ground_truth.dimensions() {
        bail!(
            "size mismatch: generated {gen_name} is {} but ground truth {gt_name} is {} \
             (HxW); pass --resize HxW to resize both",
            size(&generated),
            size(&ground_truth)
        );
    }
    let mask = match &options.annotations {
        Some(annotations) => Some(market_mask(annotations, &gt_name, &ground_truth)?),
        None => None,
    };
    Ok(LoadedPair {
        generated_name: gen_name,
        ground_truth_name: gt_name,
        generated: Image::from_rgb8(&generated),
        ground_truth: Image::from_rgb8(&ground_truth),
        mask,
    })
}

/// Reads one pair and scores it. Errors name the files involved.
pub fn evaluate_pair(pair: &Pair, options: &EvalOptions) -> anyhow::Result<PairMetrics> {
    let p = load_pair(pair, options)?;
    let metrics =
        compute_metrics(&p.ground_truth, &p.generated, p.mask.as_ref()).with_context(|| {
            format!(
                "cannot score {} against {}",
                p.generated_name, p.ground_truth_name
            )
        })?;
    Ok(PairMetrics {
        generated: p.generated_name,
        ground_truth: p.ground_truth_name,
        metrics,
    })
}

/// LPIPS (and mask-LPIPS) over the pairs, the GFLA way: batches of [`LpipsScores::batch_size`]
/// pairs in pairing order, the final partial batch dropped, mean of the per-pair distances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LpipsScores {
    pub batch_size: usize,
    /// Pairs scored (`⌊N / batch_size⌋ · batch_size`, the first ones in pairing order).
    pub pairs_used: usize,
    /// Pairs of the dropped partial batch.
    pub pairs_dropped: usize,
    /// Mean LPIPS; `None` (JSON `null`) when there is no full batch.
    pub lpips: Option<f64>,
    /// Mean mask-LPIPS, when annotations were given (`None` without a full batch too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_lpips: Option<f64>,
    /// Per-pair LPIPS of the scored pairs, in pairing order.
    pub per_pair: Vec<f64>,
    /// Per-pair mask-LPIPS of the scored pairs, when annotations were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_per_pair: Option<Vec<f64>>,
}

/// Scores the pairs with a perceptual distance (LPIPS) in batches of `batch_size`, dropping
/// the final partial batch as the GFLA script does; with annotations, mask-LPIPS too (both
/// images masked with the ground truth's body mask: background 0 in `[-1, 1]`). `progress`
/// is called once per pair scored.
pub fn lpips_scores(
    pairs: &[Pair],
    options: &EvalOptions,
    net: &mut dyn PerceptualDistance,
    batch_size: usize,
    progress: &dyn Fn(),
) -> anyhow::Result<LpipsScores> {
    anyhow::ensure!(batch_size > 0, "batch size must be positive");
    let masked = options.annotations.is_some();
    let mut per_pair = vec![];
    let mut mask_per_pair = vec![];
    for batch in pairs.chunks_exact(batch_size) {
        let loaded = batch
            .iter()
            .map(|p| load_pair(p, options))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let names = || {
            format!(
                "{} .. {}",
                loaded[0].generated_name,
                loaded[loaded.len() - 1].generated_name
            )
        };
        let gt: Vec<Image> = loaded.iter().map(|p| p.ground_truth.clone()).collect();
        let generated: Vec<Image> = loaded.iter().map(|p| p.generated.clone()).collect();
        per_pair.extend(
            net.distances(&gt, &generated)
                .with_context(|| format!("LPIPS of the batch {}", names()))?,
        );
        if masked {
            let mut mgt = Vec::with_capacity(loaded.len());
            let mut mgen = Vec::with_capacity(loaded.len());
            for p in &loaded {
                let mask = p.mask.as_ref().context("mask missing")?;
                mgt.push(apply_mask(&p.ground_truth, mask)?);
                mgen.push(apply_mask(&p.generated, mask)?);
            }
            mask_per_pair.extend(
                net.distances(&mgt, &mgen)
                    .with_context(|| format!("mask-LPIPS of the batch {}", names()))?,
            );
        }
        for _ in batch {
            progress();
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Ok(LpipsScores {
        batch_size,
        pairs_used: per_pair.len(),
        pairs_dropped: pairs.len() - per_pair.len(),
        lpips: mean(&per_pair),
        mask_lpips: if masked { mean(&mask_per_pair) } else { None },
        per_pair,
        mask_per_pair: masked.then_some(mask_per_pair),
    })
}

fn market_mask(
    annotations: &Annotations,
    gt_name: &str,
    ground_truth: &image::RgbImage,
) -> anyhow::Result<Mask> {
    let (h, w) = (
        ground_truth.height() as usize,
        ground_truth.width() as usize,
    );
    if (h, w) != MARKET_SIZE {
        bail!(
            "masked metrics need {}x{} images (the Market annotation frame) but {gt_name} is \
             {h}x{w}; pass --resize {}x{}",
            MARKET_SIZE.0,
            MARKET_SIZE.1,
            MARKET_SIZE.0,
            MARKET_SIZE.1
        );
    }
    let pose = annotations
        .get(gt_name)
        .with_context(|| format!("no keypoints for {gt_name} in the annotation file"))?;
    Ok(body_mask(pose, h, w))
}

/// Scores all pairs on `threads` worker threads (at least one), calling `progress` after each
/// pair. Results keep the order of `pairs`; the first failing pair (in that order) is the
/// error, and workers stop picking up new pairs once one has failed.
pub fn evaluate_pairs(
    pairs: &[Pair],
    options: &EvalOptions,
    threads: usize,
    progress: &(dyn Fn() + Sync),
) -> anyhow::Result<Vec<PairMetrics>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<PairMetrics>>>> =
        Mutex::new((0..pairs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, pairs.len().max(1)) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(pair) = pairs.get(i) else { break };
                    let result = evaluate_pair(pair, options);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                    progress();
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(pairs.len());
    for result in results {
        match result {
            Some(r) => out.push(r?),
            // Only reachable after a failure, which the loop above has already returned.
            None => bail!("evaluation stopped early"),
        }
    }
    Ok(out)
}

/// Number of worker threads to use by default: the available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{JOINTS, Joint};

    fn gradient(h: usize, w: usize, offset: f32) -> Image {
        let data = (0..3 * h * w)
            .map(|i| ((i % (h * w)) as f32 / (h * w) as f32 * 0.8 + offset).min(1.0))
            .collect();
        Image::new(3, h, w, data).unwrap()
    }

    #[test]
    fn identical_images_score_perfectly() {
        let img = gradient(64, 64, 0.1);
        let m = compute_metrics(&img, &img, None).unwrap();
        assert_eq!(m.psnr, f64::INFINITY);
        assert_eq!((m.l1, m.mae), (0.0, 0.0));
        for s in [m.ssim, m.ssim_256, m.ssim_11] {
            assert!((s - 1.0).abs() < 1e-12);
        }
        assert!(m.masked.is_none());
    }

    #[test]
    fn masked_metrics_ignore_the_background() {
        let (h, w) = MARKET_SIZE;
        let mut pose = [None; JOINTS];
        pose[1] = Some(Joint { x: 32.0, y: 30.0 });
        pose[8] = Some(Joint { x: 32.0, y: 100.0 });
        let mask = body_mask(&pose, h, w);
        let gt = gradient(h, w, 0.0);
        // Change the generated image only where the mask is off.
        let plane = h * w;
        let data = gt
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| if mask.data()[i % plane] { v } else { 1.0 - v })
            .collect();
        let generated = Image::new(3, h, w, data).unwrap();
        let m = compute_metrics(&gt, &generated, Some(&mask)).unwrap();
        let masked = m.masked.unwrap();
        assert!(m.l1 > 0.1);
        assert_eq!(masked.mask_l1, 0.0);
        assert!((masked.mask_ssim - 1.0).abs() < 1e-12);
        assert!((masked.mask_ssim_256 - 1.0).abs() < 1e-12);
    }

    /// Distance = mean |a − b|; records batch sizes and whether inputs were masked.
    struct MeanAbs {
        batches: Vec<usize>,
        saw_gray: bool,
    }

    impl PerceptualDistance for MeanAbs {
        fn distances(&mut self, a: &[Image], b: &[Image]) -> anyhow::Result<Vec<f64>> {
            self.batches.push(a.len());
            self.saw_gray |= a.iter().any(|img| img.data().contains(&0.5));
            Ok(a.iter().zip(b).map(|(x, y)| l1(x, y).unwrap()).collect())
        }
    }

    #[test]
    fn lpips_scores_drop_the_partial_batch_and_mask_both_images() {
        let dir = std::env::temp_dir().join(format!("gfla-eval-lpips-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (h, w) = MARKET_SIZE;
        let mut pairs = vec![];
        let mut csv = String::from("name:keypoints_y:keypoints_x\n");
        for (i, (g, t)) in [(10u8, 30u8), (50, 50), (0, 100)].into_iter().enumerate() {
            let gen_path = dir.join(format!("g{i}.png"));
            let gt_path = dir.join(format!("t{i}.png"));
            image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([g; 3]))
                .save(&gen_path)
                .unwrap();
            image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([t; 3]))
                .save(&gt_path)
                .unwrap();
            let ys = "[30, 100, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]";
            let xs = "[32, 32, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]";
            csv.push_str(&format!("t{i}.png:{ys}:{xs}\n"));
            pairs.push(Pair {
                generated: gen_path,
                ground_truth: gt_path,
            });
        }
        let mut options = EvalOptions::default();
        let mut net = MeanAbs {
            batches: vec![],
            saw_gray: false,
        };
        let count = AtomicUsize::new(0);
        let tick = || {
            count.fetch_add(1, Ordering::Relaxed);
        };
        let s = lpips_scores(&pairs, &options, &mut net, 2, &tick).unwrap();
        assert_eq!(net.batches, [2]);
        assert_eq!((s.pairs_used, s.pairs_dropped), (2, 1));
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert!((s.per_pair[0] - 20.0 / 255.0).abs() < 1e-6);
        assert_eq!(s.per_pair[1], 0.0);
        assert!((s.lpips.unwrap() - 10.0 / 255.0).abs() < 1e-6);
        assert_eq!((s.mask_lpips, s.mask_per_pair.as_ref()), (None, None));
        assert!(!net.saw_gray);

        // Masked: the background of both images becomes 0.5, so the masked distance shrinks.
        options.annotations = Some(Annotations::parse(&csv).unwrap());
        let s = lpips_scores(&pairs, &options, &mut net, 2, &tick).unwrap();
        assert_eq!(net.batches, [2, 2, 2]);
        assert!(net.saw_gray);
        let masked = s.mask_per_pair.unwrap();
        assert!(masked[0] > 0.0 && masked[0] < s.per_pair[0], "{masked:?}");
        assert_eq!(s.mask_lpips, Some((masked[0] + masked[1]) / 2.0));

        // Fewer pairs than a batch: nothing scored.
        let s = lpips_scores(&pairs[..1], &options, &mut net, 2, &tick).unwrap();
        assert_eq!((s.pairs_used, s.pairs_dropped, s.lpips), (0, 1, None));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
