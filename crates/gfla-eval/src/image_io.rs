//! Images as the metrics see them, and reading them from disk.
//!
//! The reference script reads every file with `imageio.imread(...).astype(np.float32) / 255`,
//! so samples are kept as that very `f32` value; each metric widens to `f64` where scikit-image
//! does.
//!
//! Decoding uses the `image` crate, whose JPEG decoder (zune-jpeg) is not bit-exact with the
//! libjpeg(-turbo) behind imageio/Pillow: on 4:2:0 JPEGs written by imageio, about a quarter
//! of the samples differed by 1–4 levels (mean +0.18 levels), which on noisy 128×64 test pairs
//! moved SSIM by ~2e-5, PSNR by ~7e-4 dB and "mae" by ~1e-3 relative. PNG is exact. Published
//! GFLA numbers are on JPEG results, so the last reported digits can differ for that reason.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use image::RgbImage;
use image::imageops::FilterType;

use crate::MetricError;

/// A planar (channel-major, then row-major) image with samples in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Image {
    /// Wraps planar samples; `data.len()` must be `channels · height · width`.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    ) -> Result<Self, MetricError> {
        let expected = channels * height * width;
        if data.len() != expected {
            return Err(MetricError::BadBuffer {
                expected,
                found: data.len(),
            });
        }
        Ok(Self {
            channels,
            height,
            width,
            data,
        })
    }

    /// Converts 8-bit RGB the way the script does: `f32(v) / 255` per sample.
    pub fn from_rgb8(rgb: &RgbImage) -> Self {
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        let mut data = vec![0.0f32; 3 * width * height];
        let plane = width * height;
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                data[c * plane + i] = f32::from(px[c]) / 255.0;
            }
        }
        Self {
            channels: 3,
            height,
            width,
            data,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// `(channels, height, width)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// All samples, plane after plane.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// One channel, row-major.
    pub fn plane(&self, channel: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[channel * n..(channel + 1) * n]
    }

    /// The same image with every sample mapped through `f`.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Self {
        Self {
            data: self.data.iter().map(|&v| f(v)).collect(),
            ..self.clone()
        }
    }

    /// Errors unless both images have the same shape.
    pub fn check_same_shape(&self, other: &Self) -> Result<(), MetricError> {
        if self.shape() == other.shape() {
            Ok(())
        } else {
            Err(MetricError::ShapeMismatch {
                left: self.shape(),
                right: other.shape(),
            })
        }
    }
}

/// Optional resizing applied to both images of a pair before any metric.
///
/// The GFLA protocol never resizes at evaluation time: it compares against ground-truth
/// folders already stored at the generation size (`test_256`, `test_12864`). Resizing here is
/// a convenience whose numbers are therefore not the published protocol; reports say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Keep the decoded size; a size mismatch within a pair is an error.
    #[default]
    None,
    /// Resize to `height × width` with a triangle (bilinear, antialiased when shrinking)
    /// filter, the closest match to Pillow's bilinear resize that the data loaders use.
    To { height: u32, width: u32 },
}

impl Resize {
    /// Applies the resize (a no-op when the size already matches).
    pub fn apply(self, rgb: RgbImage) -> RgbImage {
        match self {
            Self::To { height, width } if (rgb.height(), rgb.width()) != (height, width) => {
                image::imageops::resize(&rgb, width, height, FilterType::Triangle)
            }
            _ => rgb,
        }
    }
}

impl fmt::Display for Resize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::To { height, width } => write!(f, "{height}x{width}"),
        }
    }
}

impl FromStr for Resize {
    type Err = String;

    /// `none` or `HEIGHTxWIDTH` (e.g. `256x176`, `256x256`, `128x64`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        let bad = || format!("expected `none` or HEIGHTxWIDTH such as 256x176, got `{s}`");
        let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        if height == 0 || width == 0 {
            return Err(bad());
        }
        Ok(Self::To { height, width })
    }
}

/// Reads an image file as 8-bit RGB (grey is replicated, alpha dropped), sniffing the format
/// from the content rather than trusting the extension.
pub fn read_rgb8(path: &Path) -> anyhow::Result<RgbImage> {
    let decoded = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(anyhow::Error::from)
        .and_then(|r| r.decode().map_err(anyhow::Error::from))
        .with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(decoded.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_parses_height_by_width() {
        assert_eq!("none".parse::<Resize>(), Ok(Resize::None));
        assert_eq!(
            "256x176".parse::<Resize>(),
            Ok(Resize::To {
                height: 256,
                width: 176
            })
        );
        assert!("256".parse::<Resize>().is_err());
        assert!("0x5".parse::<Resize>().is_err());
        assert_eq!(
            Resize::To {
                height: 128,
                width: 64
            }
            .to_string(),
            "128x64"
        );
    }

    #[test]
    fn rgb8_becomes_planar_unit_range() {
        let rgb = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8 * 255, 51, 0]));
        let img = Image::from_rgb8(&rgb);
        assert_eq!(img.shape(), (3, 1, 2));
        assert_eq!(img.plane(0), &[0.0, 1.0]);
        assert_eq!(img.plane(1), &[0.2, 0.2]);
        assert_eq!(img.plane(2), &[0.0, 0.0]);
    }

    #[test]
    fn resize_to_same_size_is_identity() {
        let rgb = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let same = Resize::To {
            height: 2,
            width: 3,
        }
        .apply(rgb.clone());
        assert_eq!(same, rgb);
    }
}
