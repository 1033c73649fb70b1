//! Inception-v3 up to its pool3 features (2048-d), FID's feature network, on Burn, from
//! user-supplied weights.
//!
//! The GFLA script (reference §9) wraps the blocks of torchvision's `inception_v3(pretrained=
//! True)` the way the early `pytorch-fid` did: `f32 / 255` images, bilinear resize to 299×299
//! (PyTorch 1.0's `F.upsample(..., mode='bilinear')`, i.e. `align_corners=False`), then per
//! channel `x·(s/0.5) + (m − 0.5)/0.5` with the ImageNet `m`, `s`, then `Conv2d_1a_3x3` …
//! `Mixed_7c` and a global average pool. Every `BasicConv2d` is convolution (no bias) →
//! batch norm (ε = 0.001, running statistics) → ReLU.
//!
//! Two weight layouts are read ([`InceptionWeights`]), told apart by the rows of `fc.weight`:
//!
//! * **torchvision** (`inception_v3_google-1a9a5a14.pth`, later `-0cc3c7bd.pth`; `fc` has 1000
//!   rows, `AuxLogits.*` present): the network the GFLA script uses, with its preprocessing.
//!   This is the published protocol.
//! * **pytorch-fid** (`pt_inception-2015-12-05-6726825d.pth`: the TF-FID Inception ported to
//!   PyTorch; `fc` has 1008 rows, no `AuxLogits`): the same keys, but the blocks are
//!   pytorch-fid's `FIDInceptionA/C/E_1/E_2` (the 3×3 average pools of the pool branches exclude
//!   the padding, and `Mixed_7c`'s pool branch max-pools) and inputs are `2x − 1`, as
//!   pytorch-fid does. Values are then comparable with pytorch-fid/TTUR, not with GFLA's table.
//!
//! `AuxLogits.*`, `fc.*` and `num_batches_tracked` entries are not needed and are ignored;
//! every other parameter must be present with its shape, and any other key is reported.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::store::ModuleSnapshot;
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};

use crate::image_io::Image;
use crate::networks::FeatureExtractor;
use crate::weights::{FileTensors, Misfit, apply_named, read_pth};

/// Length of the pool3 feature vector.
pub const FEATURES: usize = 2048;

/// Side of the square the images are resized to.
pub const INPUT_SIZE: usize = 299;

/// torchvision's `BasicConv2d` batch-norm epsilon.
pub const BN_EPS: f64 = 1e-3;

/// ImageNet channel means and standard deviations of the GFLA normalisation.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Images per forward pass. Features do not depend on it (batch norm uses its running
/// statistics); it only bounds memory (about 60 MB of activations per image at 299×299).
const CHUNK: usize = 8;

/// Which weights (and so which blocks and preprocessing) the network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InceptionWeights {
    /// torchvision's ImageNet Inception-v3 with the GFLA preprocessing (the published protocol).
    Torchvision,
    /// pytorch-fid's port of the TF-FID Inception with pytorch-fid's preprocessing.
    PytorchFid,
}

impl InceptionWeights {
    /// `torchvision` or `pytorch-fid`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Torchvision => "torchvision",
            Self::PytorchFid => "pytorch-fid",
        }
    }

    /// The layout of a file: from the rows of `fc.weight` (1000 torchvision, 1008
    /// pytorch-fid), else torchvision when it has `AuxLogits.*` keys; `None` when it cannot
    /// be told.
    pub fn detect(file: &FileTensors) -> Option<Self> {
        if let Some(fc) = file.get("fc.weight") {
            return match fc.shape.as_slice().first() {
                Some(1000) => Some(Self::Torchvision),
                Some(1008) => Some(Self::PytorchFid),
                _ => None,
            };
        }
        file.keys()
            .any(|k| k.starts_with("AuxLogits."))
            .then_some(Self::Torchvision)
    }

    /// Pool branches of `Mixed_5b..5d` (InceptionA), `Mixed_6b..6e` (InceptionC), `Mixed_7b`
    /// and `Mixed_7c` (InceptionE).
    pub fn pools(self) -> [BranchPool; 4] {
        match self {
            Self::Torchvision => [BranchPool::Average; 4],
            Self::PytorchFid => [
                BranchPool::AverageExcludingPadding,
                BranchPool::AverageExcludingPadding,
                BranchPool::AverageExcludingPadding,
                BranchPool::Max,
            ],
        }
    }

    /// Per-channel `(a, b)` of the input map `x ↦ a·x + b` on `[0, 1]` samples, in `f32` as
    /// the scripts apply them: GFLA `a = s/0.5`, `b = (m − 0.5)/0.5`; pytorch-fid `2x − 1`.
    pub fn input_affine(self) -> [(f32, f32); 3] {
        match self {
            Self::Torchvision => std::array::from_fn(|c| {
                (
                    (IMAGENET_STD[c] / 0.5) as f32,
                    ((IMAGENET_MEAN[c] - 0.5) / 0.5) as f32,
                )
            }),
            Self::PytorchFid => [(2.0, -1.0); 3],
        }
    }
}

impl fmt::Display for InceptionWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InceptionWeights {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "torchvision" => Ok(Self::Torchvision),
            "pytorch-fid" => Ok(Self::PytorchFid),
            _ => Err(format!(
                "expected `torchvision` or `pytorch-fid`, got `{s}`"
            )),
        }
    }
}

/// The 3×3 stride-1 pooling (padding 1) in front of a pool branch's 1×1 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchPool {
    /// `F.avg_pool2d(x, 3, 1, 1)`: zero padding counted in the mean (torchvision).
    Average,
    /// `count_include_pad=False`: border means over the in-image samples only (TF, pytorch-fid).
    AverageExcludingPadding,
    /// `F.max_pool2d(x, 3, 1, 1)` (pytorch-fid's `Mixed_7c`).
    Max,
}

impl BranchPool {
    pub fn apply(self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Average | Self::AverageExcludingPadding => avg_pool2d(
                x,
                AvgPoolOptions::new([3, 3])
                    .with_stride([1, 1])
                    .with_padding([1, 1])
                    .with_count_include_pad(self == Self::Average),
            ),
            Self::Max => max_pool2d(
                x,
                MaxPoolOptions::new([3, 3])
                    .with_stride([1, 1])
                    .with_padding([1, 1]),
            ),
        }
    }
}

/// `F.max_pool2d(x, kernel_size=3, stride=2)`, between stages and in the reduction blocks.
pub fn reduce_pool(x: Tensor<4>) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]))
}

/// torchvision's `BasicConv2d`: convolution without bias, batch norm (ε = 0.001), ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl BasicConv2d {
    /// `kernel`, `padding` as `[height, width]`.
    pub fn new(
        channels: [usize; 2],
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
        device: &Device,
    ) -> Self {
        let [ph, pw] = padding;
        Self {
            conv: Conv2dConfig::new(channels, kernel)
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(channels[1])
                .with_epsilon(BN_EPS)
                .init(device),
        }
    }

    /// Square kernel, same padding on every side.
    fn square(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, d: &Device) -> Self {
        Self::new([cin, cout], [k, k], stride, [pad, pad], d)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// `Mixed_5b..5d`: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | pool→1×1.
#[derive(Module, Debug)]
pub struct InceptionA {
    pub branch1x1: BasicConv2d,
    pub branch5x5_1: BasicConv2d,
    pub branch5x5_2: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    pub branch_pool: BasicConv2d,
    #[module(skip)]
    pub pool: BranchPool,
}

impl InceptionA {
    /// `(64 + 64 + 96 + pool_features) / d` output channels.
    pub fn new(cin: usize, pool_features: usize, d: usize, pool: BranchPool, dev: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch1x1: BasicConv2d::square(cin, c(64), 1, 1, 0, dev),
            branch5x5_1: BasicConv2d::square(cin, c(48), 1, 1, 0, dev),
            branch5x5_2: BasicConv2d::square(c(48), c(64), 5, 1, 2, dev),
            branch3x3dbl_1: BasicConv2d::square(cin, c(64), 1, 1, 0, dev),
            branch3x3dbl_2: BasicConv2d::square(c(64), c(96), 3, 1, 1, dev),
            branch3x3dbl_3: BasicConv2d::square(c(96), c(96), 3, 1, 1, dev),
            branch_pool: BasicConv2d::square(cin, c(pool_features), 1, 1, 0, dev),
            pool,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_1.forward(x.clone());
        let b3 = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(b3));
        let bp = self.branch_pool.forward(self.pool.apply(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// `Mixed_6a`: stride-2 3×3 | 1×1→3×3→stride-2 3×3 | max-pool.
#[derive(Module, Debug)]
pub struct InceptionB {
    pub branch3x3: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    /// `(384 + 96) / d + cin` output channels.
    pub fn new(cin: usize, d: usize, dev: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch3x3: BasicConv2d::square(cin, c(384), 3, 2, 0, dev),
            branch3x3dbl_1: BasicConv2d::square(cin, c(64), 1, 1, 0, dev),
            branch3x3dbl_2: BasicConv2d::square(c(64), c(96), 3, 1, 1, dev),
            branch3x3dbl_3: BasicConv2d::square(c(96), c(96), 3, 2, 0, dev),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_1.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(self.branch3x3dbl_2.forward(bd));
        Tensor::cat(vec![b3, bd, reduce_pool(x)], 1)
    }
}

/// `Mixed_6b..6e`: 1×1 | factorised 7×7 | doubly factorised 7×7 | pool→1×1.
#[derive(Module, Debug)]
pub struct InceptionC {
    pub branch1x1: BasicConv2d,
    pub branch7x7_1: BasicConv2d,
    pub branch7x7_2: BasicConv2d,
    pub branch7x7_3: BasicConv2d,
    pub branch7x7dbl_1: BasicConv2d,
    pub branch7x7dbl_2: BasicConv2d,
    pub branch7x7dbl_3: BasicConv2d,
    pub branch7x7dbl_4: BasicConv2d,
    pub branch7x7dbl_5: BasicConv2d,
    pub branch_pool: BasicConv2d,
    #[module(skip)]
    pub pool: BranchPool,
}

impl InceptionC {
    /// `768 / d` output channels; `c7` is the width inside the 7×7 branches.
    pub fn new(cin: usize, c7: usize, d: usize, pool: BranchPool, dev: &Device) -> Self {
        let c = |n: usize| n / d;
        let c7 = c(c7);
        let row = |i, o| BasicConv2d::new([i, o], [1, 7], 1, [0, 3], dev);
        let col = |i, o| BasicConv2d::new([i, o], [7, 1], 1, [3, 0], dev);
        Self {
            branch1x1: BasicConv2d::square(cin, c(192), 1, 1, 0, dev),
            branch7x7_1: BasicConv2d::square(cin, c7, 1, 1, 0, dev),
            branch7x7_2: row(c7, c7),
            branch7x7_3: col(c7, c(192)),
            branch7x7dbl_1: BasicConv2d::square(cin, c7, 1, 1, 0, dev),
            branch7x7dbl_2: col(c7, c7),
            branch7x7dbl_3: row(c7, c7),
            branch7x7dbl_4: col(c7, c7),
            branch7x7dbl_5: row(c7, c(192)),
            branch_pool: BasicConv2d::square(cin, c(192), 1, 1, 0, dev),
            pool,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = self.branch7x7_1.forward(x.clone());
        let b7 = self.branch7x7_3.forward(self.branch7x7_2.forward(b7));
        let bd = self.branch7x7dbl_1.forward(x.clone());
        let bd = self.branch7x7dbl_3.forward(self.branch7x7dbl_2.forward(bd));
        let bd = self.branch7x7dbl_5.forward(self.branch7x7dbl_4.forward(bd));
        let bp = self.branch_pool.forward(self.pool.apply(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// `Mixed_7a`: 1×1→stride-2 3×3 | 1×1→1×7→7×1→stride-2 3×3 | max-pool.
#[derive(Module, Debug)]
pub struct InceptionD {
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2: BasicConv2d,
    pub branch7x7x3_1: BasicConv2d,
    pub branch7x7x3_2: BasicConv2d,
    pub branch7x7x3_3: BasicConv2d,
    pub branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    /// `(320 + 192) / d + cin` output channels.
    pub fn new(cin: usize, d: usize, dev: &Device) -> Self {
        let c = |n: usize| n / d;
        Self {
            branch3x3_1: BasicConv2d::square(cin, c(192), 1, 1, 0, dev),
            branch3x3_2: BasicConv2d::square(c(192), c(320), 3, 2, 0, dev),
            branch7x7x3_1: BasicConv2d::square(cin, c(192), 1, 1, 0, dev),
            branch7x7x3_2: BasicConv2d::new([c(192), c(192)], [1, 7], 1, [0, 3], dev),
            branch7x7x3_3: BasicConv2d::new([c(192), c(192)], [7, 1], 1, [3, 0], dev),
            branch7x7x3_4: BasicConv2d::square(c(192), c(192), 3, 2, 0, dev),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let b7 = self.branch7x7x3_1.forward(x.clone());
        let b7 = self.branch7x7x3_3.forward(self.branch7x7x3_2.forward(b7));
        let b7 = self.branch7x7x3_4.forward(b7);
        Tensor::cat(vec![b3, b7, reduce_pool(x)], 1)
    }
}

/// `Mixed_7b`, `Mixed_7c`: 1×1 | 1×1→(1×3 ‖ 3×1) | 1×1→3×3→(1×3 ‖ 3×1) | pool→1×1.
#[derive(Module, Debug)]
pub struct InceptionE {
    pub branch1x1: BasicConv2d,
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2a: BasicConv2d,
    pub branch3x3_2b: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3a: BasicConv2d,
    pub branch3x3dbl_3b: BasicConv2d,
    pub branch_pool: BasicConv2d,
    #[module(skip)]
    pub pool: BranchPool,
}

impl InceptionE {
    /// `2048 / d` output channels.
    pub fn new(cin: usize, d: usize, pool: BranchPool, dev: &Device) -> Self {
        let c = |n: usize| n / d;
        let row = |i, o| BasicConv2d::new([i, o], [1, 3], 1, [0, 1], dev);
        let col = |i, o| BasicConv2d::new([i, o], [3, 1], 1, [1, 0], dev);
        Self {
            branch1x1: BasicConv2d::square(cin, c(320), 1, 1, 0, dev),
            branch3x3_1: BasicConv2d::square(cin, c(384), 1, 1, 0, dev),
            branch3x3_2a: row(c(384), c(384)),
            branch3x3_2b: col(c(384), c(384)),
            branch3x3dbl_1: BasicConv2d::square(cin, c(448), 1, 1, 0, dev),
            branch3x3dbl_2: BasicConv2d::square(c(448), c(384), 3, 1, 1, dev),
            branch3x3dbl_3a: row(c(384), c(384)),
            branch3x3dbl_3b: col(c(384), c(384)),
            branch_pool: BasicConv2d::square(cin, c(192), 1, 1, 0, dev),
            pool,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(b3.clone()),
                self.branch3x3_2b.forward(b3),
            ],
            1,
        );
        let bd = self.branch3x3dbl_1.forward(x.clone());
        let bd = self.branch3x3dbl_2.forward(bd);
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(bd.clone()),
                self.branch3x3dbl_3b.forward(bd),
            ],
            1,
        );
        let bp = self.branch_pool.forward(self.pool.apply(x));
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

/// Inception-v3 from the input to the pool3 features (`Conv2d_1a_3x3` … `Mixed_7c`, then a
/// global average pool). Field names are torchvision's in snake case.
#[derive(Module, Debug)]
pub struct InceptionV3 {
    pub conv2d_1a_3x3: BasicConv2d,
    pub conv2d_2a_3x3: BasicConv2d,
    pub conv2d_2b_3x3: BasicConv2d,
    pub conv2d_3b_1x1: BasicConv2d,
    pub conv2d_4a_3x3: BasicConv2d,
    pub mixed_5b: InceptionA,
    pub mixed_5c: InceptionA,
    pub mixed_5d: InceptionA,
    pub mixed_6a: InceptionB,
    pub mixed_6b: InceptionC,
    pub mixed_6c: InceptionC,
    pub mixed_6d: InceptionC,
    pub mixed_6e: InceptionC,
    pub mixed_7a: InceptionD,
    pub mixed_7b: InceptionE,
    pub mixed_7c: InceptionE,
    #[module(skip)]
    pub weights: InceptionWeights,
}

/// Why Inception weights could not be loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum InceptionLoadError {
    /// The file could not be read or parsed.
    Read { path: String, message: String },
    /// Neither `fc.weight` nor `AuxLogits.*` tells torchvision from pytorch-fid.
    UnknownLayout { path: String },
    /// The file does not fit the network; keys are the file's own names.
    Mismatch {
        path: String,
        weights: InceptionWeights,
        misfit: Misfit,
    },
}

impl fmt::Display for InceptionLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, message } => {
                write!(f, "cannot read Inception-v3 weights {path}: {message}")
            }
            Self::UnknownLayout { path } => write!(
                f,
                "cannot tell the layout of Inception-v3 weights {path}: no `fc.weight` with \
                 1000 (torchvision) or 1008 (pytorch-fid) rows and no `AuxLogits.*`; name it \
                 with --fid-weights torchvision|pytorch-fid"
            ),
            Self::Mismatch {
                path,
                weights,
                misfit,
            } => write!(
                f,
                "Inception-v3 weights {path} do not fit the {weights} layout{}",
                misfit.describe()
            ),
        }
    }
}

impl std::error::Error for InceptionLoadError {}

/// The torchvision state-dict key of a module path of [`InceptionV3`]:
/// `mixed_5b.branch1x1.bn.gamma` → `Mixed_5b.branch1x1.bn.weight`.
pub fn torchvision_key(module_path: &str) -> String {
    let mut key = String::with_capacity(module_path.len());
    let mut chars = module_path.chars();
    key.extend(chars.next().map(|c| c.to_ascii_uppercase()));
    key.extend(chars);
    for (burn, torch) in [(".bn.gamma", ".bn.weight"), (".bn.beta", ".bn.bias")] {
        if let Some(stem) = key.strip_suffix(burn) {
            return format!("{stem}{torch}");
        }
    }
    key
}

/// File keys a state dict may hold that the feature network does not need.
pub fn is_ignored_key(key: &str) -> bool {
    key.starts_with("AuxLogits.") || key.starts_with("fc.") || key.ends_with(".num_batches_tracked")
}

impl InceptionV3 {
    /// Random weights; `width_divisor` divides every layer's width (1 = the real network,
    /// 2048 features; it must divide 16, larger only for tests).
    pub fn new(weights: InceptionWeights, width_divisor: usize, device: &Device) -> Self {
        assert!(
            width_divisor > 0 && 16 % width_divisor == 0,
            "width divisor must divide 16, got {width_divisor}"
        );
        let d = width_divisor;
        let c = |n: usize| n / d;
        let [pool_a, pool_c, pool_e1, pool_e2] = weights.pools();
        Self {
            conv2d_1a_3x3: BasicConv2d::square(3, c(32), 3, 2, 0, device),
            conv2d_2a_3x3: BasicConv2d::square(c(32), c(32), 3, 1, 0, device),
            conv2d_2b_3x3: BasicConv2d::square(c(32), c(64), 3, 1, 1, device),
            conv2d_3b_1x1: BasicConv2d::square(c(64), c(80), 1, 1, 0, device),
            conv2d_4a_3x3: BasicConv2d::square(c(80), c(192), 3, 1, 0, device),
            mixed_5b: InceptionA::new(c(192), 32, d, pool_a, device),
            mixed_5c: InceptionA::new(c(256), 64, d, pool_a, device),
            mixed_5d: InceptionA::new(c(288), 64, d, pool_a, device),
            mixed_6a: InceptionB::new(c(288), d, device),
            mixed_6b: InceptionC::new(c(768), 128, d, pool_c, device),
            mixed_6c: InceptionC::new(c(768), 160, d, pool_c, device),
            mixed_6d: InceptionC::new(c(768), 160, d, pool_c, device),
            mixed_6e: InceptionC::new(c(768), 192, d, pool_c, device),
            mixed_7a: InceptionD::new(c(768), d, device),
            mixed_7b: InceptionE::new(c(1280), d, pool_e1, device),
            mixed_7c: InceptionE::new(c(2048), d, pool_e2, device),
            weights,
        }
    }

    /// The full-size network with the weights of `path`, whose layout is `weights` or, when
    /// `None`, detected from the file ([`InceptionWeights::detect`]).
    pub fn load(
        path: impl AsRef<Path>,
        weights: Option<InceptionWeights>,
        device: &Device,
    ) -> Result<Self, InceptionLoadError> {
        Self::load_with_width(path, weights, 1, device)
    }

    /// [`Self::load`] into a network of `width_divisor` (for tests with small files).
    pub fn load_with_width(
        path: impl AsRef<Path>,
        weights: Option<InceptionWeights>,
        width_divisor: usize,
        device: &Device,
    ) -> Result<Self, InceptionLoadError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let file = read_pth(path).map_err(|message| InceptionLoadError::Read {
            path: shown.clone(),
            message,
        })?;
        let weights = weights
            .or_else(|| InceptionWeights::detect(&file))
            .ok_or_else(|| InceptionLoadError::UnknownLayout {
                path: shown.clone(),
            })?;
        let mut net = Self::new(weights, width_divisor, device);
        let misfit = net.apply_file(&file);
        if misfit.is_empty() {
            Ok(net)
        } else {
            Err(InceptionLoadError::Mismatch {
                path: shown,
                weights,
                misfit,
            })
        }
    }

    /// Applies a state dict read with [`read_pth`]: every parameter and running statistic
    /// must be there with its shape; keys outside the network other than
    /// [`is_ignored_key`] ones are reported as unexpected.
    pub fn apply_file(&mut self, file: &FileTensors) -> Misfit {
        let names = self.keys().into_iter().collect();
        apply_named(self, file, &names, "", |k| !is_ignored_key(k))
    }

    /// Every module path with its torchvision key, in the network's order.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.collect(None, None, false)
            .into_iter()
            .map(|t| {
                let key = torchvision_key(&t.name);
                (t.name, key)
            })
            .collect()
    }

    /// Width of the feature vector (2048 / width divisor).
    pub fn feature_dim(&self) -> usize {
        self.mixed_7c.branch1x1.bn.gamma.shape().dims::<1>()[0]
            + 2 * self.mixed_7c.branch3x3_2a.bn.gamma.shape().dims::<1>()[0]
            + 2 * self.mixed_7c.branch3x3dbl_3a.bn.gamma.shape().dims::<1>()[0]
            + self.mixed_7c.branch_pool.bn.gamma.shape().dims::<1>()[0]
    }

    /// `[B, 3, 299, 299]` normalised input → `[B, 192, 35, 35]` (before `Mixed_5b`).
    pub fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv2d_1a_3x3.forward(x);
        let x = self.conv2d_2a_3x3.forward(x);
        let x = reduce_pool(self.conv2d_2b_3x3.forward(x));
        let x = self.conv2d_3b_1x1.forward(x);
        reduce_pool(self.conv2d_4a_3x3.forward(x))
    }

    /// The `[B, 2048, 8, 8]` output of `Mixed_7c` for a `[B, 3, 299, 299]` normalised input.
    pub fn feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.stem(x);
        let x = self.mixed_5b.forward(x);
        let x = self.mixed_5c.forward(x);
        let x = self.mixed_5d.forward(x);
        let x = self.mixed_6a.forward(x);
        let x = self.mixed_6b.forward(x);
        let x = self.mixed_6c.forward(x);
        let x = self.mixed_6d.forward(x);
        let x = self.mixed_6e.forward(x);
        let x = self.mixed_7a.forward(x);
        let x = self.mixed_7b.forward(x);
        self.mixed_7c.forward(x)
    }

    /// pool3 features `[B, 2048]` of a normalised `[B, 3, H, W]` input (299×299 in FID).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.feature_map(x);
        let [b, c, _, _] = x.dims();
        adaptive_avg_pool2d(x, [1, 1]).reshape([b, c])
    }

    /// One image as the network's `3 × 299 × 299` input: [`resize_bilinear`] then the
    /// per-channel map of [`InceptionWeights::input_affine`].
    pub fn preprocess(&self, img: &Image) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(
            img.channels() == 3,
            "Inception needs RGB images, got {} channels",
            img.channels()
        );
        let resized = resize_bilinear(img, INPUT_SIZE, INPUT_SIZE);
        let affine = self.weights.input_affine();
        let plane = INPUT_SIZE * INPUT_SIZE;
        Ok(resized
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (a, b) = affine[i / plane];
                v * a + b
            })
            .collect())
    }

    fn device(&self) -> Device {
        self.conv2d_1a_3x3.conv.weight.val().device()
    }
}

impl FeatureExtractor for InceptionV3 {
    fn dim(&self) -> usize {
        self.feature_dim()
    }

    fn features(&mut self, batch: &[Image]) -> anyhow::Result<Vec<Vec<f64>>> {
        let device = self.device();
        let dim = self.feature_dim();
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(CHUNK) {
            let mut data = Vec::with_capacity(chunk.len() * 3 * INPUT_SIZE * INPUT_SIZE);
            for img in chunk {
                data.extend(self.preprocess(img)?);
            }
            let x = Tensor::<4>::from_data(
                TensorData::new(data, [chunk.len(), 3, INPUT_SIZE, INPUT_SIZE]),
                &device,
            );
            let f: Vec<f32> = self
                .forward(x)
                .try_into_vec_as()
                .map_err(|e| anyhow::anyhow!("cannot read Inception features: {e:?}"))?;
            out.extend(
                f.chunks_exact(dim)
                    .map(|v| v.iter().map(|&x| f64::from(x)).collect()),
            );
        }
        Ok(out)
    }
}

/// Bilinear resize as PyTorch's `upsample_bilinear2d` with `align_corners=False` and no
/// anti-aliasing (what `F.upsample`/`F.interpolate(mode='bilinear')` did in the scripts), in
/// `f32` as its CUDA kernel computes it: scale `in/out`, source `scale·(dst + 0.5) − 0.5`
/// clamped at 0, the lower neighbour by truncation and the upper one clamped to the edge,
/// `h0·(w0·a + w1·b) + h1·(w0·c + w1·d)`. (The CUDA compiler may fuse some of these
/// multiply-adds, which can move the last bit of a sample.)
pub fn resize_bilinear(img: &Image, out_h: usize, out_w: usize) -> Image {
    let (channels, in_h, in_w) = img.shape();
    let taps = |input: usize, output: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = if output > 1 {
            input as f32 / output as f32
        } else {
            0.0
        };
        (0..output)
            .map(|dst| {
                let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
                let lo = src as usize;
                let step = usize::from(lo < input - 1);
                let lambda1 = src - lo as f32;
                (lo, lo + step, 1.0 - lambda1, lambda1)
            })
            .collect()
    };
    let rows = taps(in_h, out_h);
    let cols = taps(in_w, out_w);
    let mut data = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        let p = img.plane(c);
        for &(h0, h1, lh0, lh1) in &rows {
            for &(w0, w1, lw0, lw1) in &cols {
                let top = lw0 * p[h0 * in_w + w0] + lw1 * p[h0 * in_w + w1];
                let bottom = lw0 * p[h1 * in_w + w0] + lw1 * p[h1 * in_w + w1];
                data.push(lh0 * top + lh1 * bottom);
            }
        }
    }
    Image::new(channels, out_h, out_w, data).expect("sizes agree")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Param, RunningState};

    fn device() -> Device {
        Device::flex()
    }

    fn tensor4(data: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(data, shape), &device())
    }

    fn tensor1(data: Vec<f32>) -> Tensor<1> {
        let n = data.len();
        Tensor::from_data(TensorData::new(data, [n]), &device())
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.try_into_vec_as().unwrap()
    }

    fn image(c: usize, h: usize, w: usize, seed: f32) -> Image {
        let data = (0..c * h * w)
            .map(|i| 0.5 + 0.45 * ((i as f32) * 0.37 + seed).sin())
            .collect();
        Image::new(c, h, w, data).unwrap()
    }

    /// Zero convolution weights and batch-norm `(γ, β, mean, var) = (1, beta, 0, 1 − ε)`: the
    /// unit outputs exactly `relu(beta)` everywhere, whatever its input.
    fn constant(b: &mut BasicConv2d, beta: f32) {
        let w = b.conv.weight.val();
        b.conv.weight = Param::from_tensor(w.zeros_like());
        let n = b.bn.beta.shape().dims::<1>()[0];
        b.bn.gamma = Param::from_tensor(tensor1(vec![1.0; n]));
        b.bn.beta = Param::from_tensor(tensor1(vec![beta; n]));
        b.bn.running_mean = RunningState::new(tensor1(vec![0.0; n]));
        b.bn.running_var = RunningState::new(tensor1(vec![(1.0 - BN_EPS) as f32; n]));
    }

    /// The per-channel values of a spatially constant `[1, C, H, W]` map.
    fn channel_values(t: Tensor<4>) -> Vec<f32> {
        let [_, c, h, w] = t.dims();
        let v = values(t);
        (0..c)
            .map(|ch| {
                let plane = &v[ch * h * w..(ch + 1) * h * w];
                assert!(
                    plane.iter().all(|&x| x == plane[0]),
                    "channel {ch} not constant"
                );
                plane[0]
            })
            .collect()
    }

    fn runs(groups: &[(f32, usize)]) -> Vec<f32> {
        groups
            .iter()
            .flat_map(|&(v, n)| std::iter::repeat_n(v, n))
            .collect()
    }

    #[test]
    fn full_size_layout() {
        let net = InceptionV3::new(InceptionWeights::Torchvision, 1, &device());
        // torchvision's inception_v3 has 27,161,264 parameters; less AuxLogits (3,326,696)
        // and fc (2,049,000) leaves 21,785,568 (convolutions and batch-norm γ, β). Burn also
        // counts the running mean and variance of the 17,216 batch-norm channels.
        assert_eq!(net.num_params(), 21_785_568 + 2 * 17_216);
        assert_eq!(net.feature_dim(), FEATURES);
        let keys = net.keys();
        // 94 BasicConv2d × (conv weight + 4 batch-norm tensors).
        assert_eq!(keys.len(), 470);
        let key_of = |path: &str| keys.iter().find(|(p, _)| p == path).unwrap().1.clone();
        assert_eq!(
            key_of("conv2d_1a_3x3.conv.weight"),
            "Conv2d_1a_3x3.conv.weight"
        );
        assert_eq!(
            key_of("mixed_6b.branch7x7dbl_5.bn.gamma"),
            "Mixed_6b.branch7x7dbl_5.bn.weight"
        );
        assert_eq!(
            key_of("mixed_7c.branch_pool.bn.beta"),
            "Mixed_7c.branch_pool.bn.bias"
        );
        assert_eq!(
            key_of("mixed_7b.branch3x3dbl_3a.bn.running_var"),
            "Mixed_7b.branch3x3dbl_3a.bn.running_var"
        );
        assert!(is_ignored_key("AuxLogits.conv0.conv.weight"));
        assert!(is_ignored_key("fc.bias"));
        assert!(is_ignored_key("Mixed_5b.branch1x1.bn.num_batches_tracked"));
        assert!(!is_ignored_key("Mixed_5b.branch1x1.bn.weight"));
    }

    #[test]
    fn block_shapes_through_the_network() {
        let net = InceptionV3::new(InceptionWeights::Torchvision, 16, &device());
        let x = Tensor::<4>::zeros([2, 3, INPUT_SIZE, INPUT_SIZE], &device());
        let x = net.conv2d_1a_3x3.forward(x);
        assert_eq!(x.dims(), [2, 2, 149, 149]);
        let x = net.conv2d_2a_3x3.forward(x);
        assert_eq!(x.dims(), [2, 2, 147, 147]);
        let x = reduce_pool(net.conv2d_2b_3x3.forward(x));
        assert_eq!(x.dims(), [2, 4, 73, 73]);
        let x = net.conv2d_4a_3x3.forward(net.conv2d_3b_1x1.forward(x));
        assert_eq!(x.dims(), [2, 12, 71, 71]);
        let x = reduce_pool(x);
        assert_eq!(x.dims(), [2, 12, 35, 35]);
        let mut dims = vec![];
        let mut x = net.mixed_5b.forward(x);
        dims.push(x.dims());
        for block in [&net.mixed_5c, &net.mixed_5d] {
            x = block.forward(x);
            dims.push(x.dims());
        }
        x = net.mixed_6a.forward(x);
        dims.push(x.dims());
        for block in [&net.mixed_6b, &net.mixed_6c, &net.mixed_6d, &net.mixed_6e] {
            x = block.forward(x);
            dims.push(x.dims());
        }
        x = net.mixed_7a.forward(x);
        dims.push(x.dims());
        for block in [&net.mixed_7b, &net.mixed_7c] {
            x = block.forward(x);
            dims.push(x.dims());
        }
        // Full width: 256, 288, 288, 768 ×5, 1280, 2048, 2048 channels.
        let channels: Vec<usize> = dims.iter().map(|d| d[1]).collect();
        assert_eq!(channels, [16, 18, 18, 48, 48, 48, 48, 48, 80, 128, 128]);
        let sides: Vec<usize> = dims.iter().map(|d| d[2]).collect();
        assert_eq!(sides, [35, 35, 35, 17, 17, 17, 17, 17, 8, 8, 8]);
        let features = net.forward(Tensor::zeros([2, 3, INPUT_SIZE, INPUT_SIZE], &device()));
        assert_eq!(features.dims(), [2, 128]);
    }

    #[test]
    fn full_size_network_maps_any_image_to_2048_features() {
        let mut net = InceptionV3::new(InceptionWeights::Torchvision, 1, &device());
        let x = Tensor::<4>::zeros([1, 3, INPUT_SIZE, INPUT_SIZE], &device());
        assert_eq!(net.feature_map(x).dims(), [1, FEATURES, 8, 8]);
        // A Market-sized and a square image, resized to 299×299 by the extractor.
        let f = net
            .features(&[image(3, 128, 64, 0.0), image(3, 299, 299, 1.0)])
            .unwrap();
        assert_eq!(f.len(), 2);
        for v in &f {
            assert_eq!(v.len(), FEATURES);
            // Averages of ReLU outputs.
            assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
            assert!(v.iter().any(|x| *x > 0.0));
        }
        assert_ne!(f[0], f[1]);
    }

    #[test]
    fn basic_conv_by_hand() {
        // 1×1 convolution 1 → 2 channels with weights (2, −1), then batch norm with
        // γ = (1, 0.5), β = (0.1, 0.2), mean = (0.5, 0), var + ε = (4, 1), then ReLU:
        // x = 1.5: (3 − 0.5)/2 + 0.1 = 1.35 and −1.5·0.5 + 0.2 < 0 → 0;
        // x = −1: (−2 − 0.5)/2 + 0.1 < 0 → 0 and 1·0.5 + 0.2 = 0.7.
        let mut b = BasicConv2d::new([1, 2], [1, 1], 1, [0, 0], &device());
        b.conv.weight = Param::from_tensor(tensor4(vec![2.0, -1.0], [2, 1, 1, 1]));
        b.bn.gamma = Param::from_tensor(tensor1(vec![1.0, 0.5]));
        b.bn.beta = Param::from_tensor(tensor1(vec![0.1, 0.2]));
        b.bn.running_mean = RunningState::new(tensor1(vec![0.5, 0.0]));
        // torchvision's ε is 0.001 (a literal here, so a wrong BN_EPS fails).
        b.bn.running_var = RunningState::new(tensor1(vec![4.0 - 0.001, 1.0 - 0.001]));
        let out = values(b.forward(tensor4(vec![1.5, -1.0], [1, 1, 1, 2])));
        for (got, want) in out.iter().zip([1.35, 0.0, 0.0, 0.7]) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
        // Padding and strides as asked: 1×7 with padding (0, 3) keeps the size, 3×3 stride 2.
        let row = BasicConv2d::new([1, 1], [1, 7], 1, [0, 3], &device());
        assert_eq!(row.conv.weight.shape().dims::<4>(), [1, 1, 1, 7]);
        assert_eq!(
            row.forward(Tensor::zeros([1, 1, 5, 9], &device())).dims(),
            [1, 1, 5, 9]
        );
        let down = BasicConv2d::new([1, 1], [3, 3], 2, [0, 0], &device());
        assert_eq!(
            down.forward(Tensor::zeros([1, 1, 35, 35], &device()))
                .dims(),
            [1, 1, 17, 17]
        );
    }

    #[test]
    fn pool_branches_by_hand() {
        let x = || tensor4((1..=9).map(|v| v as f32).collect(), [1, 1, 3, 3]);
        // Corner, edge, centre, opposite corner of [[1 2 3] [4 5 6] [7 8 9]].
        let pick = |v: Vec<f32>| [v[0], v[1], v[4], v[8]];
        let avg = pick(values(BranchPool::Average.apply(x())));
        let want = [12.0 / 9.0, 21.0 / 9.0, 5.0, 28.0 / 9.0];
        for (g, w) in avg.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{avg:?}");
        }
        let tf = pick(values(BranchPool::AverageExcludingPadding.apply(x())));
        for (g, w) in tf.iter().zip([3.0, 3.5, 5.0, 7.0]) {
            assert!((g - w).abs() < 1e-6, "{tf:?}");
        }
        assert_eq!(
            pick(values(BranchPool::Max.apply(x()))),
            [5.0, 6.0, 9.0, 9.0]
        );
        // The max pool pads with −∞, not 0.
        assert_eq!(
            pick(values(BranchPool::Max.apply(-x()))),
            [-1.0, -1.0, -1.0, -5.0]
        );
        // The reduction pool: 3×3 stride 2, no padding.
        let r = values(reduce_pool(tensor4(
            (0..25).map(|v| v as f32).collect(),
            [1, 1, 5, 5],
        )));
        assert_eq!(r, [12.0, 14.0, 22.0, 24.0]);
        assert_eq!(
            InceptionWeights::PytorchFid.pools(),
            [
                BranchPool::AverageExcludingPadding,
                BranchPool::AverageExcludingPadding,
                BranchPool::AverageExcludingPadding,
                BranchPool::Max
            ]
        );
    }

    #[test]
    fn branches_are_concatenated_in_torchvision_order() {
        let dev = device();
        let x = || Tensor::<4>::ones([1, 16, 9, 9], &dev).mul_scalar(0.25);
        // InceptionA at width 1/16: 1x1 (4), 5x5 (4), 3x3dbl (6), pool (2).
        let mut a = InceptionA::new(16, 32, 16, BranchPool::Average, &dev);
        for (b, v) in [
            (&mut a.branch1x1, 1.0),
            (&mut a.branch5x5_1, 9.0),
            (&mut a.branch5x5_2, 2.0),
            (&mut a.branch3x3dbl_1, 9.0),
            (&mut a.branch3x3dbl_2, 9.0),
            (&mut a.branch3x3dbl_3, 3.0),
            (&mut a.branch_pool, 4.0),
        ] {
            constant(b, v);
        }
        let want = runs(&[(1.0, 4), (2.0, 4), (3.0, 6), (4.0, 2)]);
        assert_eq!(channel_values(a.forward(x())), want);
        // InceptionB: 3x3 stride 2 (24), 3x3dbl (6), then the max-pooled input (16).
        let mut b = InceptionB::new(16, 16, &dev);
        constant(&mut b.branch3x3, 1.0);
        constant(&mut b.branch3x3dbl_1, 9.0);
        constant(&mut b.branch3x3dbl_2, 9.0);
        constant(&mut b.branch3x3dbl_3, 2.0);
        let out = b.forward(x());
        assert_eq!(out.dims(), [1, 46, 4, 4]);
        assert_eq!(
            channel_values(out),
            runs(&[(1.0, 24), (2.0, 6), (0.25, 16)])
        );
        // InceptionC: 1x1 (12), 7x7 (12), 7x7dbl (12), pool (12).
        let mut c = InceptionC::new(16, 128, 16, BranchPool::Average, &dev);
        for b in [
            &mut c.branch7x7_1,
            &mut c.branch7x7_2,
            &mut c.branch7x7dbl_1,
            &mut c.branch7x7dbl_2,
            &mut c.branch7x7dbl_3,
            &mut c.branch7x7dbl_4,
        ] {
            constant(b, 9.0);
        }
        constant(&mut c.branch1x1, 1.0);
        constant(&mut c.branch7x7_3, 2.0);
        constant(&mut c.branch7x7dbl_5, 3.0);
        constant(&mut c.branch_pool, 4.0);
        let want = runs(&[(1.0, 12), (2.0, 12), (3.0, 12), (4.0, 12)]);
        assert_eq!(channel_values(c.forward(x())), want);
        // InceptionD: 3x3 (20), 7x7x3 (12), the max-pooled input (16).
        let mut d = InceptionD::new(16, 16, &dev);
        for b in [
            &mut d.branch3x3_1,
            &mut d.branch7x7x3_1,
            &mut d.branch7x7x3_2,
            &mut d.branch7x7x3_3,
        ] {
            constant(b, 9.0);
        }
        constant(&mut d.branch3x3_2, 1.0);
        constant(&mut d.branch7x7x3_4, 2.0);
        let out = d.forward(x());
        assert_eq!(out.dims(), [1, 48, 4, 4]);
        assert_eq!(
            channel_values(out),
            runs(&[(1.0, 20), (2.0, 12), (0.25, 16)])
        );
        // InceptionE: 1x1 (20), 3x3 a | b (24 | 24), 3x3dbl a | b (24 | 24), pool (12).
        let mut e = InceptionE::new(16, 16, BranchPool::Max, &dev);
        for b in [
            &mut e.branch3x3_1,
            &mut e.branch3x3dbl_1,
            &mut e.branch3x3dbl_2,
        ] {
            constant(b, 9.0);
        }
        for (b, v) in [
            (&mut e.branch1x1, 1.0),
            (&mut e.branch3x3_2a, 2.0),
            (&mut e.branch3x3_2b, 3.0),
            (&mut e.branch3x3dbl_3a, 4.0),
            (&mut e.branch3x3dbl_3b, 5.0),
            (&mut e.branch_pool, 6.0),
        ] {
            constant(b, v);
        }
        let want = runs(&[
            (1.0, 20),
            (2.0, 24),
            (3.0, 24),
            (4.0, 24),
            (5.0, 24),
            (6.0, 12),
        ]);
        assert_eq!(channel_values(e.forward(x())), want);
    }

    #[test]
    fn bilinear_resize_matches_pytorch() {
        // F.interpolate([[1 2] [3 4]], size=4, mode='bilinear', align_corners=False).
        let img = Image::new(1, 2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let up = resize_bilinear(&img, 4, 4);
        #[rustfmt::skip]
        let want = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(up.data(), want);
        // Shrinking without anti-aliasing: each output averages its two nearest inputs; a
        // single output row takes row 0 (PyTorch's scale is 0 for an output of size 1).
        let row = Image::new(1, 2, 4, vec![0.0, 1.0, 2.0, 3.0, 9.0, 9.0, 9.0, 9.0]).unwrap();
        assert_eq!(resize_bilinear(&row, 1, 2).data(), [0.5, 2.5]);
        // Same size: a copy, bit for bit.
        let img = image(3, 17, 11, 0.3);
        assert_eq!(resize_bilinear(&img, 17, 11), img);
        // Market 128×64 → 299×299: corners are the corner samples, values stay in range.
        let img = image(3, 128, 64, 0.7);
        let big = resize_bilinear(&img, INPUT_SIZE, INPUT_SIZE);
        assert_eq!(big.shape(), (3, INPUT_SIZE, INPUT_SIZE));
        for c in 0..3 {
            let (p, q) = (img.plane(c), big.plane(c));
            assert_eq!(q[0], p[0]);
            assert_eq!(q[q.len() - 1], p[p.len() - 1]);
            let (lo, hi) = p
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            assert!(q.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        }
    }

    #[test]
    fn preprocessing_of_each_layout() {
        // s/0.5 and (m − 0.5)/0.5 for m = (0.485, 0.456, 0.406), s = (0.229, 0.224, 0.225).
        let affine = InceptionWeights::Torchvision.input_affine();
        for ((a, b), (want_a, want_b)) in
            affine
                .iter()
                .zip([(0.458, -0.03), (0.448, -0.088), (0.45, -0.188)])
        {
            assert!(
                (a - want_a).abs() < 1e-7 && (b - want_b).abs() < 1e-7,
                "{affine:?}"
            );
        }
        let flat = Image::new(3, 5, 4, vec![0.2; 60]).unwrap();
        let net = InceptionV3::new(InceptionWeights::Torchvision, 16, &device());
        let x = net.preprocess(&flat).unwrap();
        assert_eq!(x.len(), 3 * INPUT_SIZE * INPUT_SIZE);
        for (c, (a, b)) in affine.iter().enumerate() {
            let want = 0.2 * a + b;
            let plane = &x[c * INPUT_SIZE * INPUT_SIZE..(c + 1) * INPUT_SIZE * INPUT_SIZE];
            assert!(plane.iter().all(|v| (v - want).abs() < 1e-6), "channel {c}");
        }
        let net = InceptionV3::new(InceptionWeights::PytorchFid, 16, &device());
        let black = Image::new(3, 2, 2, vec![0.0; 12]).unwrap();
        assert!(net.preprocess(&black).unwrap().iter().all(|&v| v == -1.0));
        let white = Image::new(3, 2, 2, vec![1.0; 12]).unwrap();
        assert!(net.preprocess(&white).unwrap().iter().all(|&v| v == 1.0));
        assert!(
            net.preprocess(&Image::new(1, 2, 2, vec![0.0; 4]).unwrap())
                .is_err()
        );
    }

    #[test]
    fn features_do_not_depend_on_the_batch() {
        let mut net = InceptionV3::new(InceptionWeights::PytorchFid, 16, &device());
        let images: Vec<Image> = (0..CHUNK + 1).map(|i| image(3, 40, 30, i as f32)).collect();
        let together = net.features(&images).unwrap();
        assert_eq!(together.len(), CHUNK + 1);
        for (img, f) in images.iter().zip(&together).step_by(4) {
            let alone = net.features(std::slice::from_ref(img)).unwrap();
            for (x, y) in alone[0].iter().zip(f) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1e-3), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn layout_names_parse() {
        for w in [InceptionWeights::Torchvision, InceptionWeights::PytorchFid] {
            assert_eq!(w.to_string().parse::<InceptionWeights>(), Ok(w));
        }
        assert!("tf".parse::<InceptionWeights>().is_err());
    }
}
