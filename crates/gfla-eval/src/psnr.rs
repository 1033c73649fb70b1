//! PSNR, L1 and GFLA's "mae", on `[0, 1]` images.
//!
//! The script computes these on `float32` arrays: differences (and squares) are formed in
//! `f32` as numpy does, then accumulated here in `f64`. numpy accumulates `l1`/`mae` in `f32`
//! (pairwise), so the script's own values can differ from these in the 7th significant digit.

use crate::MetricError;
use crate::image_io::Image;

/// `skimage.measure.compare_psnr(gt, generated, data_range=1)`: `10·log10(1 / MSE)`, with the
/// squared errors formed in `f32` and averaged in `f64`.
///
/// Identical images have `MSE = 0` and score `f64::INFINITY`, as numpy does; JSON reports
/// write that as `null` (see [`crate::report`]).
pub fn psnr(ground_truth: &Image, generated: &Image) -> Result<f64, MetricError> {
    ground_truth.check_same_shape(generated)?;
    let n = ground_truth.data().len();
    let sum: f64 = pairs(ground_truth, generated)
        .map(|(a, b)| {
            let d = a - b;
            f64::from(d * d)
        })
        .sum();
    let mse = sum / n as f64;
    Ok(10.0 * (1.0 / mse).log10())
}

/// GFLA's `l1`: the mean of `|gt − generated|` over all samples.
pub fn l1(ground_truth: &Image, generated: &Image) -> Result<f64, MetricError> {
    ground_truth.check_same_shape(generated)?;
    let n = ground_truth.data().len();
    let sum: f64 = pairs(ground_truth, generated)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum();
    Ok(sum / n as f64)
}

/// GFLA's `mae` (not a mean absolute error despite the name):
/// `Σ|gt − generated| / Σ(gt + generated)`.
pub fn mae(ground_truth: &Image, generated: &Image) -> Result<f64, MetricError> {
    ground_truth.check_same_shape(generated)?;
    let (num, den) = pairs(ground_truth, generated).fold((0.0f64, 0.0f64), |(num, den), (a, b)| {
        (num + f64::from((a - b).abs()), den + f64::from(a + b))
    });
    Ok(num / den)
}

fn pairs<'a>(a: &'a Image, b: &'a Image) -> impl Iterator<Item = (f32, f32)> + 'a {
    a.data().iter().copied().zip(b.data().iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(values: &[f32]) -> Image {
        Image::new(1, 1, values.len(), values.to_vec()).unwrap()
    }

    #[test]
    fn hand_computed_values() {
        let gt = image(&[0.0, 0.5, 1.0, 0.25]);
        let pred = image(&[0.5, 0.5, 0.5, 0.25]);
        // |d| = 0.5, 0, 0.5, 0 → L1 = 1/4; MSE = (0.25 + 0.25)/4 = 1/8 → PSNR = 10·log10(8).
        assert_eq!(l1(&gt, &pred).unwrap(), 0.25);
        let p = psnr(&gt, &pred).unwrap();
        assert!((p - 10.0 * 8f64.log10()).abs() < 1e-12);
        assert!((p - 9.030_899_869_919_435).abs() < 1e-12);
        // mae = Σ|d| / Σ(gt + pred) = 1 / (0.5 + 1 + 1.5 + 0.5) = 1 / 3.5.
        assert!((mae(&gt, &pred).unwrap() - 1.0 / 3.5).abs() < 1e-15);
    }

    #[test]
    fn identical_images() {
        let a = image(&[0.1, 0.2, 0.3]);
        assert_eq!(psnr(&a, &a).unwrap(), f64::INFINITY);
        assert_eq!(l1(&a, &a).unwrap(), 0.0);
        assert_eq!(mae(&a, &a).unwrap(), 0.0);
    }

    #[test]
    fn shapes_must_match() {
        assert!(matches!(
            psnr(&image(&[0.0]), &image(&[0.0, 1.0])),
            Err(MetricError::ShapeMismatch { .. })
        ));
    }
}
