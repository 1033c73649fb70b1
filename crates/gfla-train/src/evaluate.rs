//! Held-out scores of a trained generator against the copy-the-source baseline (the output a
//! network that learnt nothing about poses would give): L1 and SSIM on the 8-bit pictures, as
//! `gfla-eval` computes them.

use anyhow::Result;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use gfla_eval::{Image, SsimProtocol, l1};
use gfla_model::PoseTransfer;
use gfla_model::picture::tensor_to_images;
use serde::{Deserialize, Serialize};

use crate::dataset::{PairBatcher, PairDataset};

/// Mean scores over the first `pairs` test pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    pub pairs: usize,
    /// Mean |generated - target| on [0, 1] pictures (lower is better).
    pub model_l1: f64,
    /// Mean SSIM (Gaussian sigma 1.5, 11 taps; higher is better).
    pub model_ssim: f64,
    /// The same with the source picture as the answer.
    pub copy_l1: f64,
    pub copy_ssim: f64,
}

/// Scores `model` on the first `n` pairs of `data`, in batches of 8.
pub fn score_pairs(model: &PoseTransfer, data: &PairDataset, n: usize) -> Result<Scores> {
    let n = n.min(data.len());
    let mut sums = [0.0f64; 4];
    for start in (0..n).step_by(8) {
        let items = (start..(start + 8).min(n))
            .map(|i| data.get(i).map_err(|e| anyhow::anyhow!("data: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let batch = PairBatcher.batch(items, model.device());
        let out = model
            .generator
            .forward(batch.p1.clone(), batch.bp1, batch.bp2);
        let generated = tensor_to_images(out.image.detach());
        let sources = tensor_to_images(batch.p1);
        let targets = tensor_to_images(batch.p2);
        for ((g, s), t) in generated.iter().zip(&sources).zip(&targets) {
            let (g, s, t) = (
                Image::from_rgb8(g),
                Image::from_rgb8(s),
                Image::from_rgb8(t),
            );
            sums[0] += l1(&t, &g)?;
            sums[1] += SsimProtocol::Gaussian11.compute(&t, &g)?;
            sums[2] += l1(&t, &s)?;
            sums[3] += SsimProtocol::Gaussian11.compute(&t, &s)?;
        }
    }
    let mean = |v: f64| v / n.max(1) as f64;
    Ok(Scores {
        pairs: n,
        model_l1: mean(sums[0]),
        model_ssim: mean(sums[1]),
        copy_l1: mean(sums[2]),
        copy_ssim: mean(sums[3]),
    })
}
