//! FID of a generated folder against a real folder, as the GFLA script computes it
//! (reference §9, `FID.calculate_from_disk`).
//!
//! * Files: every `*.jpg`, then every `*.png` of each folder (the script's two globs; the
//!   extensions are matched case-sensitively as on Linux), read as `f32 / 255`; sizes may
//!   differ, each image is resized to 299×299 by the network ([`crate::inception`]).
//! * Batches: the real folder first, in batches of 64, lowered to the folder size when it
//!   holds fewer; then the generated folder with that batch size, lowered again if needed
//!   (the script keeps the lowered size in `self.batch_size`). Only `⌊N / batch⌋ · batch`
//!   images of each folder count; the rest are dropped.
//! * Statistics: mean and covariance (`N − 1`) of the pool3 features, then the Fréchet
//!   distance ([`crate::frechet`]).
//!
//! Differences that remain: the script drops whatever its directory-order glob put last,
//! here the last in file-name order (jpg before png); it caches `statistics.npz` inside each
//! folder and silently reuses it, gfla-eval always recomputes and writes nothing there.
//!
//! With pytorch-fid's weights ([`InceptionWeights::PytorchFid`]) pytorch-fid's own protocol
//! is followed instead: every image is used (nothing dropped).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::frechet::{Statistics, StatisticsAccumulator, frechet_distance};
use crate::image_io::{Image, read_rgb8};
use crate::inception::InceptionWeights;
use crate::networks::FeatureExtractor;

/// The GFLA script's FID batch size.
pub const FID_BATCH: usize = 64;

/// The image files FID reads from `dir`: the `*.jpg` files, then the `*.png` files, each in
/// file-name order (hidden files included, as `pathlib`'s glob does).
pub fn fid_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut by_ext: [Vec<PathBuf>; 2] = [vec![], vec![]];
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let slot = match path.extension().and_then(|e| e.to_str()) {
            Some("jpg") => 0,
            Some("png") => 1,
            _ => continue,
        };
        if path.is_file() {
            by_ext[slot].push(path);
        }
    }
    let [mut jpg, mut png] = by_ext;
    jpg.sort();
    png.sort();
    jpg.extend(png);
    Ok(jpg)
}

/// Which images of the two folders count, and in batches of what size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FidBatches {
    pub real_batch: usize,
    pub real_used: usize,
    pub generated_batch: usize,
    pub generated_used: usize,
}

impl FidBatches {
    /// The script's rule for `n_real` real and `n_generated` generated images (both ≥ 1):
    /// batch `min(64, n_real)` for the real folder, then `min(that, n_generated)` for the
    /// generated one, the remainder of each dropped. pytorch-fid uses everything.
    pub fn new(weights: InceptionWeights, n_real: usize, n_generated: usize) -> Self {
        match weights {
            InceptionWeights::Torchvision => {
                let real_batch = FID_BATCH.min(n_real).max(1);
                let generated_batch = real_batch.min(n_generated).max(1);
                Self {
                    real_batch,
                    real_used: n_real / real_batch * real_batch,
                    generated_batch,
                    generated_used: n_generated / generated_batch * generated_batch,
                }
            }
            InceptionWeights::PytorchFid => Self {
                real_batch: FID_BATCH,
                real_used: n_real,
                generated_batch: FID_BATCH,
                generated_used: n_generated,
            },
        }
    }
}

/// The FID of a run and what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FidScores {
    pub fid: f64,
    /// `torchvision` (the GFLA protocol) or `pytorch-fid`.
    pub weights: &'static str,
    /// The weight file.
    pub weights_file: String,
    /// The real folder (the script's `--fid_real_path`, the training set).
    pub real_dir: String,
    pub real_images: usize,
    pub generated_images: usize,
    #[serde(flatten)]
    pub batches: FidBatches,
}

impl FidScores {
    /// Images left out of the statistics, real and generated.
    pub fn dropped(&self) -> (usize, usize) {
        (
            self.real_images - self.batches.real_used,
            self.generated_images - self.batches.generated_used,
        )
    }
}

/// Feature statistics of the first `used` of `files`, read and fed to `net` `batch` at a
/// time; `progress` is called once per image.
pub fn folder_statistics(
    files: &[PathBuf],
    used: usize,
    batch: usize,
    net: &mut dyn FeatureExtractor,
    progress: &dyn Fn(),
) -> anyhow::Result<Statistics> {
    anyhow::ensure!(batch > 0, "batch size must be positive");
    let mut acc = StatisticsAccumulator::new(net.dim());
    for chunk in files[..used.min(files.len())].chunks(batch) {
        let images = chunk
            .iter()
            .map(|p| Ok(Image::from_rgb8(&read_rgb8(p)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let names = || {
            format!(
                "{} .. {}",
                chunk[0].display(),
                chunk[chunk.len() - 1].display()
            )
        };
        let features = net
            .features(&images)
            .with_context(|| format!("Inception features of {}", names()))?;
        acc.add(&features)?;
        for _ in chunk {
            progress();
        }
    }
    Ok(acc.finish()?)
}

/// FID of the images of `generated_dir` against those of `real_dir` ([`fid_images`]), with
/// the batching of `weights`' protocol ([`FidBatches::new`]): the real statistics first, as
/// the script. `progress` is called once per image used.
pub fn fid_folders(
    generated_dir: &Path,
    real_dir: &Path,
    net: &mut dyn FeatureExtractor,
    weights: InceptionWeights,
    weights_file: &str,
    progress: &dyn Fn(),
) -> anyhow::Result<FidScores> {
    let real = fid_images(real_dir)?;
    let generated = fid_images(generated_dir)?;
    for (files, dir) in [(&real, real_dir), (&generated, generated_dir)] {
        if files.len() < 2 {
            bail!(
                "FID needs at least 2 .jpg/.png images in {}, found {}",
                dir.display(),
                files.len()
            );
        }
    }
    let batches = FidBatches::new(weights, real.len(), generated.len());
    let real_stats = folder_statistics(&real, batches.real_used, batches.real_batch, net, progress)
        .with_context(|| format!("FID statistics of {}", real_dir.display()))?;
    let generated_stats = folder_statistics(
        &generated,
        batches.generated_used,
        batches.generated_batch,
        net,
        progress,
    )
    .with_context(|| format!("FID statistics of {}", generated_dir.display()))?;
    let fid = frechet_distance(&real_stats, &generated_stats)?;
    Ok(FidScores {
        fid,
        weights: weights.name(),
        weights_file: weights_file.to_string(),
        real_dir: real_dir.display().to_string(),
        real_images: real.len(),
        generated_images: generated.len(),
        batches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use crate::networks::ChannelMeans;

    #[test]
    fn batches_follow_the_script() {
        let gfla = |r, g| FidBatches::new(InceptionWeights::Torchvision, r, g);
        // The usual case: 64 on both sides, remainders dropped.
        assert_eq!(
            gfla(12_936, 8_570),
            FidBatches {
                real_batch: 64,
                real_used: 12_928,
                generated_batch: 64,
                generated_used: 8_512,
            }
        );
        // Fewer generated images than a batch: all of them, in one batch.
        assert_eq!(gfla(100, 30).generated_batch, 30);
        assert_eq!(gfla(100, 30).generated_used, 30);
        // A small real folder lowers the batch for the generated folder too.
        assert_eq!(
            gfla(50, 120),
            FidBatches {
                real_batch: 50,
                real_used: 50,
                generated_batch: 50,
                generated_used: 100,
            }
        );
        let fid = FidBatches::new(InceptionWeights::PytorchFid, 99, 70);
        assert_eq!((fid.real_used, fid.generated_used), (99, 70));
    }

    #[test]
    fn folders_list_jpg_then_png_and_fid_of_a_folder_with_itself_is_zero() {
        let dir = std::env::temp_dir().join(format!("gfla-eval-fid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (real, generated) = (dir.join("real"), dir.join("gen"));
        for d in [&real, &generated] {
            std::fs::create_dir_all(d).unwrap();
        }
        let flat = |v: [u8; 3]| image::RgbImage::from_pixel(8, 6, image::Rgb(v));
        let real_colours = [[10, 20, 30], [200, 100, 0], [50, 50, 50], [90, 80, 70]];
        for (i, v) in real_colours.iter().enumerate() {
            flat(*v).save(real.join(format!("r{i}.png"))).unwrap();
        }
        // What the two globs pick up, and in which order.
        for name in ["b.jpg", "a.jpg", "c.jpeg", "d.PNG", "e.JPG"] {
            flat([1, 2, 3]).save(real.join(name)).unwrap();
        }
        std::fs::write(real.join("notes.txt"), "x").unwrap();
        let names: Vec<String> = fid_images(&real)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["a.jpg", "b.jpg", "r0.png", "r1.png", "r2.png", "r3.png"]
        );
        for name in ["b.jpg", "a.jpg", "c.jpeg", "d.PNG", "e.JPG", "notes.txt"] {
            std::fs::remove_file(real.join(name)).unwrap();
        }

        // The same folder on both sides: FID 0 up to round-off.
        let net = &mut ChannelMeans(Cell::new(0));
        let count = Cell::new(0);
        let tick = || count.set(count.get() + 1);
        let s = fid_folders(&real, &real, net, InceptionWeights::Torchvision, "w", &tick).unwrap();
        assert!(s.fid.abs() < 1e-12, "{s:?}");
        assert_eq!((s.real_images, s.batches.real_used), (4, 4));
        assert_eq!((count.get(), net.0.get()), (8, 8));

        // A black and a white generated image: the Fréchet distance of the channel-mean
        // statistics, computed here from the colours.
        flat([0, 0, 0]).save(generated.join("g0.png")).unwrap();
        flat([255, 255, 255])
            .save(generated.join("g1.png"))
            .unwrap();
        let s = fid_folders(
            &generated,
            &real,
            net,
            InceptionWeights::Torchvision,
            "w",
            &tick,
        )
        .unwrap();
        let features = |colours: &[[u8; 3]]| {
            let f: Vec<Vec<f64>> = colours
                .iter()
                .map(|v| v.iter().map(|&x| f64::from(f32::from(x) / 255.0)).collect())
                .collect();
            Statistics::from_features(&f).unwrap()
        };
        let expected = frechet_distance(
            &features(&real_colours),
            &features(&[[0, 0, 0], [255, 255, 255]]),
        )
        .unwrap();
        assert!(
            (s.fid - expected).abs() < 1e-9 * expected,
            "{} vs {expected}",
            s.fid
        );
        assert!(s.fid > 0.5, "{s:?}");
        assert_eq!(s.dropped(), (0, 0));

        // One generated image is too few.
        std::fs::remove_file(generated.join("g1.png")).unwrap();
        let err = fid_folders(
            &generated,
            &real,
            net,
            InceptionWeights::Torchvision,
            "w",
            &tick,
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 2"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
