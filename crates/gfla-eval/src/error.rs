//! Why a metric could not be computed.

use std::fmt;

/// Bad input to a metric function (the file-level pipeline wraps these with the file names).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricError {
    /// The two images (or planes) differ in `(channels, height, width)`.
    ShapeMismatch {
        left: (usize, usize, usize),
        right: (usize, usize, usize),
    },
    /// A buffer whose length is not `channels · height · width`.
    BadBuffer { expected: usize, found: usize },
    /// The SSIM window does not fit in the image (scikit-image refuses this too).
    WindowTooLarge {
        win_size: usize,
        height: usize,
        width: usize,
    },
    /// SSIM windows must have an odd side.
    EvenWindow(usize),
    /// Feature vectors or statistics of different dimensionality.
    DimensionMismatch { expected: usize, found: usize },
    /// A covariance needs at least two samples.
    TooFewSamples(usize),
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShapeMismatch { left, right } => write!(
                f,
                "shape mismatch: {}x{}x{} vs {}x{}x{} (channels x height x width)",
                left.0, left.1, left.2, right.0, right.1, right.2
            ),
            Self::BadBuffer { expected, found } => {
                write!(f, "buffer holds {found} samples, expected {expected}")
            }
            Self::WindowTooLarge {
                win_size,
                height,
                width,
            } => write!(
                f,
                "SSIM window {win_size}x{win_size} does not fit in a {height}x{width} image"
            ),
            Self::EvenWindow(size) => write!(f, "SSIM window side {size} is not odd"),
            Self::DimensionMismatch { expected, found } => {
                write!(f, "dimension {found} where {expected} was expected")
            }
            Self::TooFewSamples(n) => {
                write!(f, "{n} sample(s): a covariance needs at least 2")
            }
        }
    }
}

impl std::error::Error for MetricError {}
