//! The official DeepFashion and Market-1501 dataset layouts (reference §8): an image folder per
//! phase, a pairs CSV (`from,to`) and an annotation CSV (`name:keypoints_y:keypoints_x`), read
//! lazily through Burn's dataset API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail, ensure};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Tensor, TensorData};
use gfla_model::picture::{normalised, resized};
use gfla_model::pose::JOINTS;
use gfla_model::{ModelSpec, Pose};
use serde::{Deserialize, Serialize};

use crate::augment::{Affine, Augmentation};
use crate::synth::{Rng, mix_seed};

/// Which official layout (file names, input size, annotation frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// DeepFashion: `fasion-*.csv` (sic), pictures stretched to 256 x 256, annotations in
    /// 256 x 176.
    Fashion,
    /// Market-1501: `market-*.csv`, 128 x 64 pictures and annotations.
    Market,
}

impl Layout {
    fn prefix(self) -> &'static str {
        match self {
            Self::Fashion => "fasion",
            Self::Market => "market",
        }
    }

    /// The pairs CSV of a phase (`train`, `test`).
    pub fn pairs_file(self, phase: &str) -> String {
        format!("{}-pairs-{phase}.csv", self.prefix())
    }

    /// The annotation CSV of a phase.
    pub fn annotation_file(self, phase: &str) -> String {
        format!("{}-annotation-{phase}.csv", self.prefix())
    }

    /// The released model of this data set: its layout, input size and annotation frame.
    pub fn spec(self) -> ModelSpec {
        match self {
            Self::Fashion => ModelSpec::fashion(),
            Self::Market => ModelSpec::market(),
        }
    }

    /// Network input `[height, width]`.
    pub fn image_size(self) -> [usize; 2] {
        self.spec().image_size
    }

    /// `[height, width]` of the annotation coordinates (the official `old_size`).
    pub fn annotation_frame(self) -> [usize; 2] {
        self.spec().annotation_frame
    }
}

/// One training pair in network form, on the host: pictures in [-1, 1] and heat maps in [0, 1],
/// channel-major.
#[derive(Debug, Clone)]
pub struct PairItem {
    pub p1: Vec<f32>,
    pub p2: Vec<f32>,
    pub bp1: Vec<f32>,
    pub bp2: Vec<f32>,
    pub size: [usize; 2],
    /// `from` and `to` file names.
    pub names: (String, String),
}

/// The pairs of one phase, read lazily: pictures are opened when an item is asked for.
#[derive(Debug, Clone)]
pub struct PairDataset {
    images: PathBuf,
    pairs: Arc<Vec<(String, String)>>,
    poses: Arc<HashMap<String, Pose>>,
    layout: Layout,
    /// Random affine transforms and their seed (the Market training augmentation).
    augmentation: Option<(Augmentation, u64)>,
    /// How often each pair was read: the epoch of its next draw, so that the transforms are the
    /// same from run to run whatever order the workers read in.
    draws: Arc<Vec<AtomicU32>>,
}

fn read_csv(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

impl PairDataset {
    /// Opens `root/<phase>/`, `root/<prefix>-pairs-<phase>.csv` and
    /// `root/<prefix>-annotation-<phase>.csv`, checking that every pair has both pictures and
    /// both poses.
    pub fn open(root: &Path, layout: Layout, phase: &str) -> Result<Self> {
        let images = root.join(phase);
        ensure!(
            images.is_dir(),
            "{}: no such image folder (expected the official {layout:?} layout)",
            images.display()
        );
        let pairs_path = root.join(layout.pairs_file(phase));
        let mut pairs = Vec::new();
        for (i, line) in read_csv(&pairs_path)?.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((from, to)) = line.split_once(',') else {
                bail!(
                    "{}:{}: expected from,to, got {line:?}",
                    pairs_path.display(),
                    i + 1
                );
            };
            pairs.push((from.trim().to_string(), to.trim().to_string()));
        }
        ensure!(!pairs.is_empty(), "{}: no pairs", pairs_path.display());
        let ann_path = root.join(layout.annotation_file(phase));
        let mut poses = HashMap::new();
        for (i, line) in read_csv(&ann_path)?.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let (name, pose) = Pose::from_annotation_row(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", ann_path.display(), i + 1))?;
            poses.insert(name, pose);
        }
        for (from, to) in &pairs {
            for name in [from, to] {
                ensure!(
                    poses.contains_key(name),
                    "{}: {name} has no row in {}",
                    pairs_path.display(),
                    ann_path.display()
                );
                ensure!(
                    images.join(name).is_file(),
                    "{}: {name} is not in {}",
                    pairs_path.display(),
                    images.display()
                );
            }
        }
        let draws = Arc::new((0..pairs.len()).map(|_| AtomicU32::new(0)).collect());
        Ok(Self {
            images,
            pairs: Arc::new(pairs),
            poses: Arc::new(poses),
            layout,
            augmentation: None,
            draws,
        })
    }

    /// Applies random affine transforms drawn from `augmentation` with `seed` (the official
    /// Market-1501 training does, with [`Augmentation::market`]).
    pub fn with_augmentation(mut self, augmentation: Augmentation, seed: u64) -> Self {
        self.augmentation = Some((augmentation, seed));
        self
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// A picture in network form, `3 x H x W` in [-1, 1], resized and transformed as the
    /// official loader does.
    fn picture(&self, name: &str, transform: &Affine) -> Result<Vec<f32>, DatasetError> {
        let [h, w] = self.layout.image_size();
        let path = self.images.join(name);
        // Read per batch, long after the set was opened: the error names the file.
        let img = image::open(&path)
            .map_err(|e| {
                DatasetError::new(std::io::Error::other(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            })?
            .to_rgb8();
        Ok(normalised(&transform.apply_image(&resized(&img, h, w))))
    }

    /// The heat maps of a picture's pose: keypoints scaled to the network size, moved by the
    /// picture's transform, then drawn (truncated) as the official loader does.
    fn maps(&self, name: &str, transform: &Affine) -> Vec<f32> {
        let [h, w] = self.layout.image_size();
        let [fh, fw] = self.layout.annotation_frame();
        let pose = Pose {
            joints: self.poses[name].joints.map(|j| {
                j.map(|[x, y]| {
                    let p = [x * w as f64 / fw as f64, y * h as f64 / fh as f64];
                    transform.apply_point(p, w as u32, h as u32)
                })
            }),
        };
        pose.heatmaps([h, w], h, w)
    }

    /// The transforms of the next read of pair `index`.
    fn transforms(&self, index: usize) -> (Affine, Affine) {
        let epoch = match &self.augmentation {
            Some(_) => self.draws[index].fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        self.transforms_at(index, epoch as usize)
    }

    /// The transforms of pair `index` in data epoch `epoch` (its `epoch`-th draw).
    fn transforms_at(&self, index: usize, epoch: usize) -> (Affine, Affine) {
        match &self.augmentation {
            Some((augmentation, seed)) => {
                let mut rng = Rng::new(mix_seed(&[*seed, index as u64, epoch as u64]));
                augmentation.draw(&mut rng)
            }
            None => (Affine::IDENTITY, Affine::IDENTITY),
        }
    }

    /// Pair `index` as read in data epoch `epoch` (0-based): what [`Dataset::get`] gives on
    /// the pair's `epoch + 1`-th read, without counting a read. The training stream asks for
    /// its items this way, so that a resumed run draws what an uninterrupted one would.
    pub fn item_at(&self, index: usize, epoch: usize) -> Result<PairItem, DatasetError> {
        let (t1, t2) = self.transforms_at(index, epoch);
        self.item_with(index, t1, t2)
    }

    fn item_with(&self, index: usize, t1: Affine, t2: Affine) -> Result<PairItem, DatasetError> {
        let (from, to) = &self.pairs[index];
        Ok(PairItem {
            p1: self.picture(from, &t1)?,
            p2: self.picture(to, &t2)?,
            bp1: self.maps(from, &t1),
            bp2: self.maps(to, &t2),
            size: self.layout.image_size(),
            names: (from.clone(), to.clone()),
        })
    }
}

impl Dataset<PairItem> for PairDataset {
    fn get(&self, index: usize) -> Result<PairItem, DatasetError> {
        let (t1, t2) = self.transforms(index);
        self.item_with(index, t1, t2)
    }

    fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// A batch of pairs: `P1`, `P2` `[B, 3, H, W]`, `BP1`, `BP2` `[B, 18, H, W]`.
#[derive(Debug, Clone)]
pub struct PairBatch {
    pub p1: Tensor<4>,
    pub p2: Tensor<4>,
    pub bp1: Tensor<4>,
    pub bp2: Tensor<4>,
}

/// Stacks [`PairItem`]s into a [`PairBatch`].
#[derive(Debug, Clone, Default)]
pub struct PairBatcher;

impl Batcher<PairItem, PairBatch> for PairBatcher {
    fn batch(&self, items: Vec<PairItem>, device: &Device) -> PairBatch {
        let [h, w] = items[0].size;
        let b = items.len();
        let stack = |get: &dyn Fn(&PairItem) -> &Vec<f32>, c: usize| {
            let v: Vec<f32> = items.iter().flat_map(|i| get(i).iter().copied()).collect();
            Tensor::from_data(TensorData::new(v, [b, c, h, w]), device)
        };
        PairBatch {
            p1: stack(&|i| &i.p1, 3),
            p2: stack(&|i| &i.p2, 3),
            bp1: stack(&|i| &i.bp1, JOINTS),
            bp2: stack(&|i| &i.bp2, JOINTS),
        }
    }
}
