//! SSIM exactly as scikit-image computes it (`structural_similarity`, formerly
//! `skimage.measure.compare_ssim`), in `f64`.
//!
//! Per channel, with a smoothing window `f` (uniform or Gaussian, scipy `'reflect'` borders):
//!
//! ```text
//! ux = f(x), uy = f(y), uxx = f(x·x), uyy = f(y·y), uxy = f(x·y)
//! vx = n·(uxx − ux²), vy = n·(uyy − uy²), vxy = n·(uxy − ux·uy)
//!     with n = NP/(NP − 1), NP = win_size², for the sample covariance, else n = 1
//! C1 = (K1·R)², C2 = (K2·R)², R = data range
//! S  = ((2·ux·uy + C1)(2·vxy + C2)) / ((ux² + uy² + C1)(vx + vy + C2))
//! ```
//!
//! The score is the mean of `S` after cropping `(win_size − 1) / 2` pixels from every side
//! (skimage's guard against border effects); a multichannel score is the mean of the
//! per-channel scores.

use crate::MetricError;
use crate::filter::{Kernel, gaussian_kernel};
use crate::image_io::Image;

/// scikit-image's default `K1`.
pub const K1: f64 = 0.01;
/// scikit-image's default `K2`.
pub const K2: f64 = 0.03;

/// The local window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// `scipy.ndimage.uniform_filter` over a `win_size × win_size` square.
    Uniform,
    /// `scipy.ndimage.gaussian_filter(sigma, truncate)`: radius `int(truncate·σ + 0.5)`. Note
    /// that scikit-image crops by `win_size`, which need not match that radius.
    Gaussian { sigma: f64, truncate: f64 },
}

/// Every knob of skimage's SSIM except the data range, which is per image pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsimConfig {
    pub window: Window,
    /// skimage's `win_size`: the uniform window's side, `NP = win_size²` for the sample
    /// covariance, and the crop `(win_size − 1) / 2`.
    pub win_size: usize,
    /// `use_sample_covariance` (skimage's default `True`).
    pub sample_covariance: bool,
    pub k1: f64,
    pub k2: f64,
}

impl SsimConfig {
    /// A uniform `win_size` window with skimage's defaults (sample covariance, K1, K2).
    pub fn uniform(win_size: usize) -> Self {
        Self {
            window: Window::Uniform,
            win_size,
            sample_covariance: true,
            k1: K1,
            k2: K2,
        }
    }

    /// The Wang et al. (2004) setting: Gaussian σ = 1.5, population covariance, crop 5.
    pub fn gaussian(truncate: f64) -> Self {
        Self {
            window: Window::Gaussian {
                sigma: 1.5,
                truncate,
            },
            win_size: 11,
            sample_covariance: false,
            k1: K1,
            k2: K2,
        }
    }

    fn kernel(&self) -> Kernel {
        match self.window {
            Window::Uniform => Kernel::Uniform {
                size: self.win_size,
            },
            Window::Gaussian { sigma, truncate } => Kernel::Gaussian {
                taps: gaussian_kernel(sigma, truncate),
            },
        }
    }

    fn check(&self, height: usize, width: usize) -> Result<(), MetricError> {
        // skimage checks the extent first, then oddness.
        if height < self.win_size || width < self.win_size {
            return Err(MetricError::WindowTooLarge {
                win_size: self.win_size,
                height,
                width,
            });
        }
        if self.win_size.is_multiple_of(2) {
            return Err(MetricError::EvenWindow(self.win_size));
        }
        Ok(())
    }
}

/// The full (uncropped) SSIM map of one channel; planes are row-major `height × width`.
pub fn ssim_map(
    x: &[f64],
    y: &[f64],
    height: usize,
    width: usize,
    config: &SsimConfig,
    data_range: f64,
) -> Result<Vec<f64>, MetricError> {
    for plane in [x, y] {
        if plane.len() != height * width {
            return Err(MetricError::BadBuffer {
                expected: height * width,
                found: plane.len(),
            });
        }
    }
    config.check(height, width)?;
    let kernel = config.kernel();
    let n = x.len();
    // ux, uy, uxx, uyy, uxy side by side, filling one allocation.
    let mut moments = vec![0.0; 5 * n];
    let mut product = vec![0.0; n];
    let (means, seconds) = moments.split_at_mut(2 * n);
    let (ux, uy) = means.split_at_mut(n);
    kernel.apply_into(x, height, width, ux);
    kernel.apply_into(y, height, width, uy);
    for (out, (a, b)) in seconds.chunks_exact_mut(n).zip([(x, x), (y, y), (x, y)]) {
        for ((p, a), b) in product.iter_mut().zip(a).zip(b) {
            *p = a * b;
        }
        kernel.apply_into(&product, height, width, out);
    }
    let (ux, uy) = (&*ux, &*uy);
    let (uxx, rest) = seconds.split_at(n);
    let (uyy, uxy) = rest.split_at(n);

    let np = (config.win_size * config.win_size) as f64;
    let cov_norm = if config.sample_covariance {
        np / (np - 1.0)
    } else {
        1.0
    };
    let c1 = (config.k1 * data_range).powi(2);
    let c2 = (config.k2 * data_range).powi(2);

    Ok((0..x.len())
        .map(|i| {
            let (ux, uy) = (ux[i], uy[i]);
            let vx = cov_norm * (uxx[i] - ux * ux);
            let vy = cov_norm * (uyy[i] - uy * uy);
            let vxy = cov_norm * (uxy[i] - ux * uy);
            // Same association as numpy evaluates skimage's expressions.
            let a1 = 2.0 * ux * uy + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = ux * ux + uy * uy + c1;
            let b2 = vx + vy + c2;
            (a1 * a2) / (b1 * b2)
        })
        .collect())
}

/// Mean SSIM of one channel: the map's mean after cropping `(win_size − 1) / 2` per side.
pub fn ssim_plane(
    x: &[f64],
    y: &[f64],
    height: usize,
    width: usize,
    config: &SsimConfig,
    data_range: f64,
) -> Result<f64, MetricError> {
    let map = ssim_map(x, y, height, width, config, data_range)?;
    let pad = (config.win_size - 1) / 2;
    let (rows, cols) = (pad..height - pad, pad..width - pad);
    let count = rows.len() * cols.len();
    let sum: f64 = rows
        .flat_map(|r| map[r * width + cols.start..r * width + cols.end].iter())
        .sum();
    Ok(sum / count as f64)
}

/// Multichannel SSIM (skimage `multichannel=True`): the mean of the per-channel scores, each
/// computed on the samples widened to `f64`.
pub fn ssim(
    x: &Image,
    y: &Image,
    config: &SsimConfig,
    data_range: f64,
) -> Result<f64, MetricError> {
    x.check_same_shape(y)?;
    let widen = |p: &[f32]| p.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    let mut total = 0.0;
    for c in 0..x.channels() {
        total += ssim_plane(
            &widen(x.plane(c)),
            &widen(y.plane(c)),
            x.height(),
            x.width(),
            config,
            data_range,
        )?;
    }
    Ok(total / x.channels() as f64)
}

/// The SSIM settings found in published pose-transfer numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsimProtocol {
    /// GFLA's primary `ssim`: `compare_ssim(gt, gen, data_range=1, win_size=51,
    /// multichannel=True)` on `[0, 1]` images: uniform 51×51 window, sample covariance.
    Gfla,
    /// GFLA's `ssim_256` as the script ran it (scikit-image < 0.18, where `compare_ssim`
    /// exists): `[0, 255]` images, `gaussian_weights=True, sigma=1.5,
    /// use_sample_covariance=False`, data range = max − min of the generated image. Those
    /// versions call `gaussian_filter` with scipy's default `truncate=4.0`, a 13-tap window,
    /// while still cropping 5 pixels (`win_size` 11).
    Gfla256,
    /// The same setting in scikit-image ≥ 0.19, which truncates at 3.5σ for the 11-tap window
    /// of Wang et al. (2004); what current `structural_similarity` returns for that call.
    Gaussian11,
}

impl SsimProtocol {
    pub const ALL: [Self; 3] = [Self::Gfla, Self::Gfla256, Self::Gaussian11];

    pub fn config(self) -> SsimConfig {
        match self {
            Self::Gfla => SsimConfig::uniform(51),
            Self::Gfla256 => SsimConfig::gaussian(4.0),
            Self::Gaussian11 => SsimConfig::gaussian(3.5),
        }
    }

    /// Short key used in reports (`ssim`, `ssim_256`, `ssim_11`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Gfla => "ssim",
            Self::Gfla256 => "ssim_256",
            Self::Gaussian11 => "ssim_11",
        }
    }

    /// One-line description of the protocol for reports.
    pub fn description(self) -> &'static str {
        match self {
            Self::Gfla => {
                "GFLA repo: uniform 51x51 window, sample covariance, data range 1, images in [0,1]"
            }
            Self::Gfla256 => {
                "GFLA repo ssim_256 (skimage<0.18): Gaussian sigma 1.5 truncated at 4 sigma \
                 (13 taps), crop 5, population covariance, images in [0,255], \
                 data range = max-min of generated"
            }
            Self::Gaussian11 => {
                "skimage>=0.19 / Wang et al.: Gaussian sigma 1.5, 11 taps, population covariance, \
                 images in [0,255], data range = max-min of generated"
            }
        }
    }

    /// Scores a pair of `[0, 1]` images the way the protocol does (argument order as in the
    /// script, `compare_ssim(img_gt, img_pred, …)`).
    pub fn compute(self, ground_truth: &Image, generated: &Image) -> Result<f64, MetricError> {
        ground_truth.check_same_shape(generated)?;
        let config = self.config();
        match self {
            Self::Gfla => ssim(ground_truth, generated, &config, 1.0),
            Self::Gfla256 | Self::Gaussian11 => {
                // `img * 255.0` on float32 arrays stays float32, like the script.
                let gt = ground_truth.map(|v| v * 255.0);
                let generated = generated.map(|v| v * 255.0);
                let (lo, hi) = generated
                    .data()
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                // A flat generated image gives R = 0, so C1 = C2 = 0 and, as in skimage, NaN
                // wherever the local variances vanish too.
                ssim(&gt, &generated, &config, f64::from(hi - lo))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [0, 1) (64-bit LCG, top 24 bits).
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f64 / (1u64 << 24) as f64
            })
            .collect()
    }

    #[test]
    fn constant_images() {
        let cfg = SsimConfig::uniform(51);
        let (h, w) = (60, 55);
        let a = vec![0.25; h * w];
        let b = vec![0.75; h * w];
        assert_eq!(ssim_plane(&a, &a, h, w, &cfg, 1.0).unwrap(), 1.0);
        // Dyadic values keep every filtered mean and variance exact (variances are exactly 0),
        // so the whole map is the luminance term (2ab + C1) / (a² + b² + C1), with C2 cancelling:
        // (0.375 + 1e-4) / (0.625 + 1e-4) = 0.3751 / 0.6251.
        let expected: f64 = (2.0 * 0.25 * 0.75 + 1e-4) / (0.25 * 0.25 + 0.75 * 0.75 + 1e-4);
        assert!((expected - 0.600_063_989_761_638).abs() < 1e-15);
        let map = ssim_map(&a, &b, h, w, &cfg, 1.0).unwrap();
        assert!(map.iter().all(|&s| (s - expected).abs() < 1e-15));
        let mean = ssim_plane(&a, &b, h, w, &cfg, 1.0).unwrap();
        assert!((mean - expected).abs() < 1e-15);
    }

    #[test]
    fn identical_random_image_scores_one_and_ssim_is_symmetric() {
        let (h, w) = (64, 53);
        let x = noise(h * w, 1);
        let y = noise(h * w, 2);
        for cfg in SsimProtocol::ALL.map(SsimProtocol::config) {
            let same = ssim_plane(&x, &x, h, w, &cfg, 1.0).unwrap();
            assert!((same - 1.0).abs() < 1e-12, "{cfg:?}: {same}");
            let xy = ssim_plane(&x, &y, h, w, &cfg, 1.0).unwrap();
            let yx = ssim_plane(&y, &x, h, w, &cfg, 1.0).unwrap();
            assert_eq!(xy, yx);
            assert!(xy < 0.5, "independent noise should score low, got {xy}");
        }
    }

    #[test]
    fn three_by_three_by_hand() {
        // x has its top row at 1, y its top two rows; 3×3 uniform window, so the crop keeps
        // the centre pixel only, whose window is the whole image (9 samples):
        //   ux = 3/9 = 1/3, uy = 6/9 = 2/3, uxx = 1/3, uyy = 2/3, uxy = 3/9 = 1/3,
        //   n = 9/8: vx = 9/8·(1/3 − 1/9) = 1/4, vy = 9/8·(2/3 − 4/9) = 1/4,
        //   vxy = 9/8·(1/3 − 2/9) = 1/8,
        //   S = (2·(1/3)(2/3) + C1)(2·(1/8) + C2) / ((1/9 + 4/9 + C1)(1/4 + 1/4 + C2))
        //     = (4/9 + C1)(1/4 + C2) / ((5/9 + C1)(1/2 + C2)) ≈ 0.400 737 (2/5 without C1, C2).
        let x = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let y = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let (c1, c2) = (1e-4, 9e-4);
        let expected = (4.0 / 9.0 + c1) * (0.25 + c2) / ((5.0 / 9.0 + c1) * (0.5 + c2));
        let got = ssim_plane(&x, &y, 3, 3, &SsimConfig::uniform(3), 1.0).unwrap();
        assert!((got - expected).abs() < 1e-14, "{got} vs {expected}");
        assert!((got - 0.400_737).abs() < 1e-6);
    }

    #[test]
    fn bad_windows_are_refused() {
        let x = vec![0.0; 50 * 60];
        assert_eq!(
            ssim_plane(&x, &x, 50, 60, &SsimConfig::uniform(51), 1.0),
            Err(MetricError::WindowTooLarge {
                win_size: 51,
                height: 50,
                width: 60
            })
        );
        assert_eq!(
            ssim_plane(&x, &x, 50, 60, &SsimConfig::uniform(4), 1.0),
            Err(MetricError::EvenWindow(4))
        );
    }

    #[test]
    fn protocols_on_images() {
        let (h, w) = (64, 64);
        let data: Vec<f32> = noise(3 * h * w, 3).iter().map(|&v| v as f32).collect();
        let img = Image::new(3, h, w, data).unwrap();
        let darker = img.map(|v| v * 0.5);
        for p in SsimProtocol::ALL {
            assert!((p.compute(&img, &img).unwrap() - 1.0).abs() < 1e-12);
            let s = p.compute(&img, &darker).unwrap();
            assert!(s > 0.0 && s < 1.0, "{p:?}: {s}");
        }
        // The 13-tap and 11-tap Gaussians give different (close) scores.
        let s13 = SsimProtocol::Gfla256.compute(&img, &darker).unwrap();
        let s11 = SsimProtocol::Gaussian11.compute(&img, &darker).unwrap();
        assert!(s13 != s11 && (s13 - s11).abs() < 0.05);
    }
}
