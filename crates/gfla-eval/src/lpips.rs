//! LPIPS v0.1 (`net-lin` over AlexNet), as the legacy `PerceptualSimilarity` `DistModel` the
//! GFLA script uses computes it (reference §9).
//!
//! For `[-1, 1]` images `x0`, `x1`: both go through the scaling layer
//! `(x − shift) / scale` (per channel, `shift = (−.030, −.088, −.188)`,
//! `scale = (.458, .448, .450)`) and torchvision's `alexnet().features`; at each of the five
//! ReLU outputs the features are unit-normalised over channels (`f / (‖f‖₂ + 1e−10)`), their
//! squared difference goes through a 1×1 convolution with the learned non-negative weights
//! `lin{k}.model.1.weight` (`[1, C_k, 1, 1]`, no bias) and is averaged over space; the
//! distance is the sum over the five layers.
//!
//! Weights are two user-supplied files: torchvision's `alexnet` state dict
//! (`alexnet-owt-7be5be79.pth` / `alexnet-owt-4df8aa71.pth`, keys
//! `features.{0,3,6,8,10}.{weight,bias}`; the classifier is ignored) and LPIPS v0.1's
//! `weights/v0.1/alex.pth` (keys `lin{0..4}.model.1.weight`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::image_io::Image;
use crate::networks::PerceptualDistance;
use crate::weights::{apply_named, read_pth};

/// `(torchvision features index, output channels, kernel, stride, padding)` of the five
/// AlexNet convolutions; a 3×3 stride-2 max-pool follows the first two ReLUs.
const CONVS: [(usize, usize, usize, usize, usize); 5] = [
    (0, 64, 11, 4, 2),
    (3, 192, 5, 1, 2),
    (6, 384, 3, 1, 1),
    (8, 256, 3, 1, 1),
    (10, 256, 3, 1, 1),
];

/// The scaling layer's per-channel shift and scale.
pub const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
pub const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// The smallest side AlexNet's two max-pools accept (31 -> 7 -> 3 -> 3 -> 1).
pub const MIN_SIZE: usize = 31;

/// Pairs per LPIPS batch in the GFLA script (a final partial batch is dropped).
pub const LPIPS_BATCH: usize = 64;

/// Added to the channel norm before dividing (`normalize_tensor`'s `eps`).
pub const NORM_EPS: f32 = 1e-10;

/// Why LPIPS weights could not be loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum LpipsLoadError {
    /// The file could not be read or parsed.
    Read { path: String, message: String },
    /// The file does not fit the network; keys are the file's own names.
    Mismatch {
        path: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        shapes: Vec<String>,
    },
}

impl fmt::Display for LpipsLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, message } => {
                write!(f, "cannot read LPIPS weights {path}: {message}")
            }
            Self::Mismatch {
                path,
                missing,
                unexpected,
                shapes,
            } => {
                write!(f, "LPIPS weights {path} do not fit the network")?;
                for (what, items) in [
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("with the wrong shape", shapes),
                ] {
                    if !items.is_empty() {
                        write!(f, "; {} {what}: {}", items.len(), items.join(", "))?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LpipsLoadError {}

/// torchvision's `alexnet().features` up to the last ReLU.
#[derive(Module, Debug)]
pub struct AlexNetFeatures {
    pub convs: Vec<Conv2d>,
}

impl AlexNetFeatures {
    /// Random weights; `width_divisor` shrinks every layer (1 = the real network).
    pub fn new(width_divisor: usize, device: &Device) -> Self {
        let mut cin = 3;
        let convs = CONVS
            .iter()
            .map(|&(_, c, k, s, p)| {
                let cout = c / width_divisor;
                let conv = Conv2dConfig::new([cin, cout], [k, k])
                    .with_stride([s, s])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device);
                cin = cout;
                conv
            })
            .collect();
        Self { convs }
    }

    /// The torchvision key of convolution `conv`'s `param` (`features.{0,3,6,8,10}.*`).
    pub fn torchvision_key(conv: usize, param: &str) -> String {
        format!("features.{}.{param}", CONVS[conv].0)
    }

    /// The five ReLU outputs (relu1 … relu5) of a `[B, 3, H, W]` input.
    pub fn forward(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let pool = |x: Tensor<4>| max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]));
        let mut taps = Vec::with_capacity(CONVS.len());
        let mut h = x;
        for (j, conv) in self.convs.iter().enumerate() {
            if j == 1 || j == 2 {
                h = pool(h);
            }
            h = relu(conv.forward(h));
            taps.push(h.clone());
        }
        taps
    }
}

/// LPIPS v0.1 with AlexNet.
#[derive(Module, Debug)]
pub struct Lpips {
    pub alexnet: AlexNetFeatures,
    /// The five 1×1 `[1, C_k, 1, 1]` convolutions (no bias).
    pub lins: Vec<Conv2d>,
}

/// The LPIPS key of layer `k`'s linear weights.
pub fn lin_key(k: usize) -> String {
    format!("lin{k}.model.1.weight")
}

impl Lpips {
    /// Random weights; `width_divisor` shrinks every layer (1 = the real network; larger
    /// only for tests).
    pub fn new(width_divisor: usize, device: &Device) -> Self {
        let lins = CONVS
            .iter()
            .map(|&(_, c, ..)| {
                Conv2dConfig::new([c / width_divisor, 1], [1, 1])
                    .with_bias(false)
                    .init(device)
            })
            .collect();
        Self {
            alexnet: AlexNetFeatures::new(width_divisor, device),
            lins,
        }
    }

    /// The full-size network with torchvision's AlexNet weights (`alexnet_pth`) and LPIPS
    /// v0.1's linear layers (`lin_pth`, `weights/v0.1/alex.pth`).
    pub fn load(
        alexnet_pth: impl AsRef<Path>,
        lin_pth: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, LpipsLoadError> {
        let mut net = Self::new(1, device);
        net.load_weights(alexnet_pth, lin_pth)?;
        Ok(net)
    }

    /// Fills this network (of any width) from the two files; every parameter must be present
    /// with the right shape. Keys of `alexnet_pth` outside `features` are ignored; every key
    /// of `lin_pth` must be used.
    pub fn load_weights(
        &mut self,
        alexnet_pth: impl AsRef<Path>,
        lin_pth: impl AsRef<Path>,
    ) -> Result<(), LpipsLoadError> {
        let alexnet_pth = alexnet_pth.as_ref();
        let mut names = BTreeMap::new();
        for j in 0..CONVS.len() {
            for param in ["weight", "bias"] {
                names.insert(
                    format!("alexnet.convs.{j}.{param}"),
                    AlexNetFeatures::torchvision_key(j, param),
                );
            }
        }
        self.load_file(alexnet_pth, &names, "alexnet.", false)?;
        let names = (0..CONVS.len())
            .map(|k| (format!("lins.{k}.weight"), lin_key(k)))
            .collect();
        self.load_file(lin_pth.as_ref(), &names, "lins.", true)
    }

    /// Applies the tensors of `path` named in `names` (module path -> file key); parameters
    /// under `prefix` must all be filled.
    fn load_file(
        &mut self,
        path: &Path,
        names: &BTreeMap<String, String>,
        prefix: &str,
        strict: bool,
    ) -> Result<(), LpipsLoadError> {
        let shown = path.display().to_string();
        let file = read_pth(path).map_err(|message| LpipsLoadError::Read {
            path: shown.clone(),
            message,
        })?;
        let misfit = apply_named(self, &file, names, prefix, |_| strict);
        if misfit.is_empty() {
            return Ok(());
        }
        Err(LpipsLoadError::Mismatch {
            path: shown,
            missing: misfit.missing,
            unexpected: misfit.unexpected,
            shapes: misfit.shapes,
        })
    }

    /// The scaling layer: `(x − shift) / scale` per channel.
    pub fn scale_input(x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let shift = Tensor::<4>::from_data(TensorData::new(SHIFT.to_vec(), [1, 3, 1, 1]), &device);
        let scale = Tensor::<4>::from_data(TensorData::new(SCALE.to_vec(), [1, 3, 1, 1]), &device);
        (x - shift) / scale
    }

    /// Unit-normalises features over channels: `f / (sqrt(Σ_c f²) + 1e−10)`.
    pub fn normalize(f: Tensor<4>) -> Tensor<4> {
        let norm = (f.clone() * f.clone())
            .sum_dim(1)
            .sqrt()
            .add_scalar(NORM_EPS);
        f / norm
    }

    /// Per-layer distances `[B]` (spatial means of the weighted squared differences) of two
    /// `[B, 3, H, W]` batches in `[-1, 1]`; their sum is the LPIPS distance.
    pub fn layer_distances(&self, x0: Tensor<4>, x1: Tensor<4>) -> Vec<Tensor<1>> {
        let batch = x0.dims()[0];
        // Two separate passes, so identical inputs give bitwise identical features.
        let f0 = self.alexnet.forward(Self::scale_input(x0));
        let f1 = self.alexnet.forward(Self::scale_input(x1));
        f0.into_iter()
            .zip(f1)
            .zip(&self.lins)
            .map(|((a, b), lin)| {
                let d = Self::normalize(a) - Self::normalize(b);
                lin.forward(d.clone() * d)
                    .mean_dim(3)
                    .mean_dim(2)
                    .reshape([batch])
            })
            .collect()
    }

    /// LPIPS distances `[B]` of two `[B, 3, H, W]` batches in `[-1, 1]`.
    pub fn forward(&self, x0: Tensor<4>, x1: Tensor<4>) -> Tensor<1> {
        let mut layers = self.layer_distances(x0, x1).into_iter();
        let first = layers.next().expect("five layers");
        layers.fold(first, |acc, l| acc + l)
    }

    /// A `[B, 3, H, W]` batch in `[-1, 1]` from `[0, 1]` images: `2v − 1` (the script's
    /// `u8 / 127.5 − 1` up to f32 rounding; masked backgrounds at 0.5 map to exactly 0).
    pub fn batch_tensor(images: &[Image], device: &Device) -> anyhow::Result<Tensor<4>> {
        let first = images
            .first()
            .ok_or_else(|| anyhow::anyhow!("empty LPIPS batch"))?;
        let (c, h, w) = first.shape();
        anyhow::ensure!(c == 3, "LPIPS needs RGB images, got {c} channels");
        anyhow::ensure!(
            h >= MIN_SIZE && w >= MIN_SIZE,
            "LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {h}x{w}"
        );
        let mut data = Vec::with_capacity(images.len() * c * h * w);
        for img in images {
            anyhow::ensure!(
                img.shape() == (c, h, w),
                "LPIPS batch images differ in size: {:?} vs {:?} (CxHxW)",
                img.shape(),
                (c, h, w)
            );
            data.extend(img.data().iter().map(|&v| 2.0 * v - 1.0));
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), c, h, w]),
            device,
        ))
    }

    fn device(&self) -> Device {
        self.alexnet.convs[0].weight.val().device()
    }
}

impl PerceptualDistance for Lpips {
    fn distances(&mut self, a: &[Image], b: &[Image]) -> anyhow::Result<Vec<f64>> {
        anyhow::ensure!(
            a.len() == b.len(),
            "LPIPS needs as many images on both sides ({} vs {})",
            a.len(),
            b.len()
        );
        if a.is_empty() {
            return Ok(vec![]);
        }
        for (x, y) in a.iter().zip(b) {
            x.check_same_shape(y)?;
        }
        let device = self.device();
        let x0 = Self::batch_tensor(a, &device)?;
        let x1 = Self::batch_tensor(b, &device)?;
        let d: Vec<f32> = self
            .forward(x0, x1)
            .try_into_vec_as()
            .map_err(|e| anyhow::anyhow!("cannot read LPIPS distances: {e:?}"))?;
        Ok(d.into_iter().map(f64::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize, seed: f32) -> Image {
        let data = (0..3 * h * w)
            .map(|i| 0.5 + 0.4 * ((i as f32) * 0.37 + seed).sin())
            .collect();
        Image::new(3, h, w, data).unwrap()
    }

    fn noisy(img: &Image, amplitude: f32) -> Image {
        let (c, h, w) = img.shape();
        let data = img
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| (v + amplitude * (i as f32 * 12.9898).sin()).clamp(0.0, 1.0))
            .collect();
        Image::new(c, h, w, data).unwrap()
    }

    /// Lin weights set to `value` (LPIPS's are non-negative).
    fn set_lins(net: &mut Lpips, value: f32) {
        for lin in &mut net.lins {
            let w = lin.weight.val();
            lin.weight = burn::module::Param::from_tensor(w.zeros_like().add_scalar(value));
        }
    }

    #[test]
    fn alexnet_layout_and_tap_shapes() {
        let device = Device::flex();
        // torchvision's AlexNet features: 2,469,696 parameters; LPIPS lins: 1,152.
        let full = Lpips::new(1, &device);
        assert_eq!(full.alexnet.num_params(), 2_469_696);
        assert_eq!(full.num_params(), 2_469_696 + 1_152);
        assert_eq!(
            AlexNetFeatures::torchvision_key(4, "bias"),
            "features.10.bias"
        );
        let small = AlexNetFeatures::new(16, &device);
        // Market size 128x64: 31x15, pool 15x7, pool 7x3.
        let taps = small.forward(Tensor::zeros([2, 3, 128, 64], &device));
        let dims: Vec<[usize; 4]> = taps.iter().map(|t| t.dims()).collect();
        assert_eq!(
            dims,
            [
                [2, 4, 31, 15],
                [2, 12, 15, 7],
                [2, 24, 7, 3],
                [2, 16, 7, 3],
                [2, 16, 7, 3]
            ]
        );
    }

    #[test]
    fn identical_images_are_at_distance_zero_and_distance_is_symmetric() {
        let device = Device::flex();
        let mut net = Lpips::new(16, &device);
        set_lins(&mut net, 0.5);
        let a = [image(64, 48, 0.0), image(64, 48, 1.0)];
        let b = [image(64, 48, 2.0), noisy(&a[1], 0.2)];
        assert_eq!(net.distances(&a, &a).unwrap(), [0.0, 0.0]);
        let ab = net.distances(&a, &b).unwrap();
        let ba = net.distances(&b, &a).unwrap();
        assert!(ab.iter().all(|&d| d > 0.0), "{ab:?}");
        for (x, y) in ab.iter().zip(&ba) {
            assert!((x - y).abs() <= 1e-6 * x.abs(), "{ab:?} vs {ba:?}");
        }
        // Batched and one-by-one agree.
        let single = net.distance(&a[1], &b[1]).unwrap();
        assert!((single - ab[1]).abs() <= 1e-5 * ab[1], "{single} vs {ab:?}");
    }

    #[test]
    fn one_layer_with_unit_weights_is_the_mean_squared_difference_of_unit_features() {
        let device = Device::flex();
        let mut net = Lpips::new(16, &device);
        set_lins(&mut net, 1.0);
        let (a, b) = (image(64, 40, 0.3), image(64, 40, 1.7));
        let x0 = Lpips::batch_tensor(std::slice::from_ref(&a), &device).unwrap();
        let x1 = Lpips::batch_tensor(std::slice::from_ref(&b), &device).unwrap();
        let layers = net.layer_distances(x0.clone(), x1.clone());
        let feats = |x: Tensor<4>| net.alexnet.forward(Lpips::scale_input(x));
        let (f0, f1) = (feats(x0.clone()), feats(x1.clone()));
        let mut total = 0.0f64;
        for k in 0..5 {
            let [_, c, h, w] = f0[k].dims();
            let v0: Vec<f32> = f0[k].clone().try_into_vec_as().unwrap();
            let v1: Vec<f32> = f1[k].clone().try_into_vec_as().unwrap();
            // By hand in f64: Σ_c (f0/‖f0‖ − f1/‖f1‖)² averaged over the h·w positions.
            let mut sum = 0.0f64;
            for p in 0..h * w {
                let norm = |v: &[f32]| {
                    (0..c)
                        .map(|ch| f64::from(v[ch * h * w + p]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                        + 1e-10
                };
                let (n0, n1) = (norm(&v0), norm(&v1));
                for ch in 0..c {
                    let i = ch * h * w + p;
                    sum += (f64::from(v0[i]) / n0 - f64::from(v1[i]) / n1).powi(2);
                }
            }
            let expected = sum / (h * w) as f64;
            let got: Vec<f32> = layers[k].clone().try_into_vec_as().unwrap();
            let got = f64::from(got[0]);
            assert!(expected > 0.0, "layer {k}");
            assert!(
                (got - expected).abs() <= 1e-5 * expected + 1e-7,
                "layer {k}: {got} vs {expected}"
            );
            total += got;
        }
        let d = net.distance(&a, &b).unwrap();
        assert!((d - total).abs() <= 1e-5 * total, "{d} vs {total}");
    }

    #[test]
    fn distance_grows_with_the_noise_amplitude() {
        let device = Device::flex();
        let mut net = Lpips::new(16, &device);
        set_lins(&mut net, 1.0);
        let clean = image(64, 64, 0.5);
        let d: Vec<f64> = [0.02, 0.05, 0.1, 0.2, 0.4]
            .iter()
            .map(|&amp| net.distance(&clean, &noisy(&clean, amp)).unwrap())
            .collect();
        assert!(d.windows(2).all(|w| w[0] < w[1]), "{d:?}");
    }

    #[test]
    fn too_small_images_are_refused_and_the_smallest_works() {
        let device = Device::flex();
        let mut net = Lpips::new(16, &device);
        let err = net
            .distance(&image(30, 64, 0.0), &image(30, 64, 1.0))
            .unwrap_err();
        assert!(err.to_string().contains("at least 31x31"), "{err}");
        let d = net
            .distance(&image(31, 31, 0.0), &image(31, 31, 1.0))
            .unwrap();
        assert!(d.is_finite());
    }

    #[test]
    fn scaling_layer_maps_the_shift_to_zero() {
        let device = Device::flex();
        let shift = Tensor::<4>::from_data(TensorData::new(SHIFT.to_vec(), [1, 3, 1, 1]), &device);
        let out: Vec<f32> = Lpips::scale_input(shift.add_scalar(0.0))
            .try_into_vec_as()
            .unwrap();
        assert_eq!(out, [0.0; 3]);
        let ones = Tensor::<4>::ones([1, 3, 1, 1], &device);
        let out: Vec<f32> = Lpips::scale_input(ones).try_into_vec_as().unwrap();
        for c in 0..3 {
            assert!((out[c] - (1.0 - SHIFT[c]) / SCALE[c]).abs() < 1e-6);
        }
    }
}
