//! Where the learned metrics plug in. FID and LPIPS need pretrained networks whose weights
//! this crate does not ship (the user supplies them): LPIPS is [`crate::lpips::Lpips`], FID's
//! Inception-v3 is [`crate::inception::InceptionV3`], a [`FeatureExtractor`] whose statistics
//! [`crate::fid`] compares with [`crate::frechet`].
//!
//! Conventions of the GFLA script (reference §9):
//!
//! * **FID**: every `*.jpg`/`*.png` of the generated folder against the whole real (training)
//!   folder; images as `f32 / 255`, bilinear resize to 299×299, then per channel
//!   `x·(s/0.5) + (m − 0.5)/0.5` with ImageNet `m = (0.485, 0.456, 0.406)`,
//!   `s = (0.229, 0.224, 0.225)`; torchvision Inception-v3 pool3 (2048-d). Batches of 64 and
//!   only `⌊N/64⌋·64` images are used. Torchvision weights, not the TF-FID ones, so values
//!   are not comparable with `pytorch-fid`.
//! * **LPIPS**: legacy `PerceptualSimilarity` `net-lin` over AlexNet on `[-1, 1]` images
//!   (`v / 127.5 − 1`), batches of 64 with the remainder dropped, mean of per-image distances.
//! * **mask-LPIPS** (Market): the same on both images multiplied by the target-pose body mask
//!   ([`crate::mask::body_mask`], [`crate::mask::apply_mask`]).

use crate::frechet::Statistics;
use crate::image_io::Image;

/// A network mapping images to fixed-length feature vectors (Inception-v3 pool3 for FID).
pub trait FeatureExtractor {
    /// Length of each feature vector (2048 for FID).
    fn dim(&self) -> usize;

    /// Features of a batch of `[0, 1]` images, one vector per image.
    fn features(&mut self, batch: &[Image]) -> anyhow::Result<Vec<Vec<f64>>>;

    /// Mean and covariance of the features of `images`, in batches of `batch_size`. As in the
    /// GFLA script, a final partial batch is dropped (`⌊N / batch_size⌋` batches).
    fn statistics(&mut self, images: &[Image], batch_size: usize) -> anyhow::Result<Statistics> {
        anyhow::ensure!(batch_size > 0, "batch size must be positive");
        let mut features = Vec::with_capacity(images.len());
        for batch in images.chunks_exact(batch_size) {
            features.extend(self.features(batch)?);
        }
        Ok(Statistics::from_features(&features)?)
    }
}

/// A learned perceptual distance between images (LPIPS: [`crate::lpips::Lpips`]).
pub trait PerceptualDistance {
    /// Distances of a batch of `[0, 1]` image pairs `(a[i], b[i])`, one per pair; all images
    /// of a batch have the same size.
    fn distances(&mut self, a: &[Image], b: &[Image]) -> anyhow::Result<Vec<f64>>;

    /// Distance between two `[0, 1]` images of the same size.
    fn distance(&mut self, a: &Image, b: &Image) -> anyhow::Result<f64> {
        let d = self.distances(std::slice::from_ref(a), std::slice::from_ref(b))?;
        d.first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no distance returned"))
    }

    /// Per-pair distances in batches of `batch_size`. As in the GFLA script, a final partial
    /// batch is dropped: only the first `⌊N / batch_size⌋ · batch_size` pairs are scored.
    fn batched_distances(
        &mut self,
        a: &[Image],
        b: &[Image],
        batch_size: usize,
    ) -> anyhow::Result<Vec<f64>> {
        anyhow::ensure!(batch_size > 0, "batch size must be positive");
        anyhow::ensure!(a.len() == b.len(), "unpaired images");
        let mut out = Vec::with_capacity(a.len());
        for (x, y) in a.chunks_exact(batch_size).zip(b.chunks_exact(batch_size)) {
            out.extend(self.distances(x, y)?);
        }
        Ok(out)
    }
}

/// A feature extractor for tests: the mean of each channel of the image, enough to check
/// batching and the statistics plumbing; counts the images it sees.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct ChannelMeans(pub(crate) std::cell::Cell<usize>);

#[cfg(test)]
impl FeatureExtractor for ChannelMeans {
    fn dim(&self) -> usize {
        3
    }

    fn features(&mut self, batch: &[Image]) -> anyhow::Result<Vec<Vec<f64>>> {
        self.0.set(self.0.get() + batch.len());
        Ok(batch
            .iter()
            .map(|img| {
                (0..3)
                    .map(|c| {
                        let p = img.plane(c);
                        p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_drop_the_partial_batch() {
        let flat = |v: f32| Image::new(3, 2, 2, vec![v; 12]).unwrap();
        let images = [flat(0.0), flat(1.0), flat(0.5)];
        // Batch 2: only the first two images count → mean 0.5, variance 0.5 per channel.
        let s = ChannelMeans::default().statistics(&images, 2).unwrap();
        assert_eq!(s.mean, [0.5; 3]);
        assert_eq!(s.covariance, [0.5; 9]);
    }

    /// Distance = |mean(a) − mean(b)|; records the batch sizes it is called with.
    struct MeanGap(Vec<usize>);

    impl PerceptualDistance for MeanGap {
        fn distances(&mut self, a: &[Image], b: &[Image]) -> anyhow::Result<Vec<f64>> {
            self.0.push(a.len());
            let mean = |i: &Image| i.data().iter().map(|&v| f64::from(v)).sum::<f64>();
            Ok(a.iter()
                .zip(b)
                .map(|(x, y)| (mean(x) - mean(y)).abs() / x.data().len() as f64)
                .collect())
        }
    }

    #[test]
    fn distances_drop_the_partial_batch() {
        let flat = |v: f32| Image::new(3, 2, 2, vec![v; 12]).unwrap();
        let a = [flat(0.0), flat(0.0), flat(0.0), flat(0.0), flat(0.0)];
        let b = [flat(0.5), flat(0.25), flat(1.0), flat(0.0), flat(0.75)];
        let mut net = MeanGap(vec![]);
        assert_eq!(
            net.batched_distances(&a, &b, 2).unwrap(),
            [0.5, 0.25, 1.0, 0.0]
        );
        assert_eq!(net.0, [2, 2]);
        assert_eq!(net.distance(&a[0], &b[4]).unwrap(), 0.75);
        assert!(net.batched_distances(&a, &b[..4], 2).is_err());
    }
}
