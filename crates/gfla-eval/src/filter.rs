//! The two `scipy.ndimage` smoothing filters SSIM is built on, in `f64`, with scipy's default
//! boundary mode `'reflect'` (half-sample symmetric: `d c b a | a b c d | d c b a`).
//!
//! Both filters are separable and, like scipy, run along axis 0 (down the columns) first and
//! then along axis 1 (along the rows), with scipy's own summation order, so results agree with
//! scipy to the last few bits rather than merely to a tolerance.

/// Index into a line of length `n` that scipy's `'reflect'` mode reads for position `i`, which
/// may lie outside `0..n`. The extension is periodic with period `2n`, so windows longer than
/// the line keep reflecting (`a b | b a a b b a …`).
pub fn reflect_index(i: isize, n: usize) -> usize {
    assert!(n > 0, "cannot extend an empty line");
    let period = 2 * n as isize;
    let j = i.rem_euclid(period) as usize;
    if j < n { j } else { 2 * n - 1 - j }
}

/// A line padded by `before` and `after` samples in `'reflect'` mode.
fn extend_line(line: &[f64], before: usize, after: usize, out: &mut Vec<f64>) {
    out.clear();
    let n = line.len();
    let at = |i: isize| line[reflect_index(i, n)];
    out.extend((-(before as isize)..0).map(at));
    out.extend_from_slice(line);
    out.extend((n as isize..(n + after) as isize).map(at));
}

/// `scipy.ndimage.uniform_filter1d(line, size, mode='reflect')`.
///
/// scipy keeps a running sum (add the sample entering the window, subtract the one leaving)
/// and divides it by `size` for every output; the same is done here.
pub fn uniform_filter_1d(line: &[f64], size: usize, out: &mut [f64]) {
    let mut buffer = Vec::new();
    uniform_line(line, size, out, &mut buffer);
}

fn uniform_line(line: &[f64], size: usize, out: &mut [f64], buffer: &mut Vec<f64>) {
    assert!(size > 0, "filter size must be positive");
    assert_eq!(line.len(), out.len());
    if line.is_empty() {
        return;
    }
    // scipy's split for the origin 0: size / 2 before, the rest after.
    let before = size / 2;
    let after = size - before - 1;
    extend_line(line, before, after, buffer);
    let divisor = size as f64;
    let mut sum: f64 = buffer[..size].iter().sum();
    out[0] = sum / divisor;
    for k in 1..line.len() {
        sum += buffer[k + size - 1] - buffer[k - 1];
        out[k] = sum / divisor;
    }
}

/// Normalised 1-D Gaussian of `scipy.ndimage.gaussian_filter`: radius `int(truncate·σ + 0.5)`,
/// taps `exp(-x² / (2σ²))` divided by their sum. Returns the full kernel (`2·radius + 1` taps).
pub fn gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f64> {
    assert!(sigma > 0.0 && truncate >= 0.0, "sigma must be positive");
    // Python's `int()` truncates toward zero; the argument is non-negative here.
    let radius = (truncate * sigma + 0.5) as isize;
    let scale = -0.5 / (sigma * sigma);
    let mut taps: Vec<f64> = (-radius..=radius)
        .map(|x| {
            let x = x as f64;
            (x * (x * scale)).exp()
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    for t in &mut taps {
        *t /= sum;
    }
    taps
}

/// `scipy.ndimage.correlate1d(line, weights, mode='reflect')` for an odd, symmetric kernel,
/// with scipy's symmetric-kernel order of operations: centre tap first, then the pairs of
/// mirrored samples from the outermost inwards.
pub fn correlate_symmetric_1d(line: &[f64], weights: &[f64], out: &mut [f64]) {
    let mut buffer = Vec::new();
    correlate_line(line, weights, out, &mut buffer);
}

fn correlate_line(line: &[f64], weights: &[f64], out: &mut [f64], buffer: &mut Vec<f64>) {
    assert!(
        !weights.len().is_multiple_of(2),
        "kernel length must be odd"
    );
    assert_eq!(line.len(), out.len());
    if line.is_empty() {
        return;
    }
    let radius = weights.len() / 2;
    extend_line(line, radius, radius, buffer);
    let (outer, centre_weight) = (&weights[..radius], weights[radius]);
    for (o, window) in out.iter_mut().zip(buffer.windows(weights.len())) {
        let mut acc = window[radius] * centre_weight;
        // Outermost pair first: window[j] mirrors window[2·radius − j].
        for (j, w) in outer.iter().enumerate() {
            acc += (window[j] + window[2 * radius - j]) * w;
        }
        *o = acc;
    }
}

/// A separable smoothing window as used by SSIM.
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    /// `uniform_filter(size=…)`: the plain mean over a `size × size` square.
    Uniform { size: usize },
    /// `gaussian_filter` with these 1-D taps (see [`gaussian_kernel`]) on both axes.
    Gaussian { taps: Vec<f64> },
}

impl Kernel {
    /// Filters a row-major `height × width` plane, axis 0 then axis 1, like scipy.
    pub fn apply(&self, plane: &[f64], height: usize, width: usize) -> Vec<f64> {
        let mut out = vec![0.0; plane.len()];
        self.apply_into(plane, height, width, &mut out);
        out
    }

    /// [`Kernel::apply`] into a caller-provided buffer of the same length as `plane`.
    pub fn apply_into(&self, plane: &[f64], height: usize, width: usize, out: &mut [f64]) {
        assert_eq!(
            plane.len(),
            height * width,
            "plane length must be height × width"
        );
        assert_eq!(out.len(), plane.len(), "output length must match the plane");
        if plane.is_empty() {
            return;
        }
        // Axis 0 runs down the columns, but is computed a whole row at a time (contiguous and
        // vectorisable), with the same per-sample order of operations as scipy's line loop.
        let row_at = |i: isize| {
            let r = reflect_index(i, height);
            &plane[r * width..(r + 1) * width]
        };
        match self {
            Self::Uniform { size } => {
                let before = (size / 2) as isize;
                let after = (size - 1) as isize - before;
                let divisor = *size as f64;
                let mut sum = vec![0.0; width];
                for i in -before..=after {
                    for (s, x) in sum.iter_mut().zip(row_at(i)) {
                        *s += x;
                    }
                }
                for r in 0..height {
                    if r > 0 {
                        let (entering, leaving) =
                            (row_at(r as isize + after), row_at(r as isize - before - 1));
                        for ((s, a), b) in sum.iter_mut().zip(entering).zip(leaving) {
                            *s += a - b;
                        }
                    }
                    for (o, s) in out[r * width..(r + 1) * width].iter_mut().zip(&sum) {
                        *o = s / divisor;
                    }
                }
            }
            Self::Gaussian { taps } => {
                let radius = taps.len() / 2;
                for r in 0..height {
                    let r = r as isize;
                    let out_row = &mut out[r as usize * width..(r as usize + 1) * width];
                    for (o, x) in out_row.iter_mut().zip(row_at(r)) {
                        *o = x * taps[radius];
                    }
                    // Outermost pair of rows first, as in `correlate_line`.
                    for (j, w) in taps[..radius].iter().enumerate() {
                        let k = (radius - j) as isize;
                        for ((o, a), b) in out_row.iter_mut().zip(row_at(r - k)).zip(row_at(r + k))
                        {
                            *o += (a + b) * w;
                        }
                    }
                }
            }
        }
        let mut buffer = Vec::new();
        // Axis 1: each row, in place through a scratch row.
        let mut row = vec![0.0; width];
        for r in 0..height {
            let span = r * width..(r + 1) * width;
            row.copy_from_slice(&out[span.clone()]);
            self.line(&row, &mut out[span], &mut buffer);
        }
    }

    fn line(&self, line: &[f64], out: &mut [f64], buffer: &mut Vec<f64>) {
        match self {
            Self::Uniform { size } => uniform_line(line, *size, out, buffer),
            Self::Gaussian { taps } => correlate_line(line, taps, out, buffer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn reflect_is_half_sample_symmetric_and_periodic() {
        // Line a b c (n = 3): … c b a | a b c | c b a | a b …
        let idx: Vec<usize> = (-4..7).map(|i| reflect_index(i, 3)).collect();
        assert_eq!(idx, [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]);
        // A single sample reflects onto itself everywhere.
        assert!((-5..5).all(|i| reflect_index(i, 1) == 0));
    }

    #[test]
    fn uniform_1d_matches_hand_values() {
        // [1 | 1 2 3 4 | 4], window 3: (1+1+2)/3, (1+2+3)/3, (2+3+4)/3, (3+4+4)/3.
        let mut out = [0.0; 4];
        uniform_filter_1d(&[1.0, 2.0, 3.0, 4.0], 3, &mut out);
        close(&out, &[4.0 / 3.0, 2.0, 3.0, 11.0 / 3.0]);
        // Window 5 on [1 2 3]: extended 2 1 | 1 2 3 | 3 2.
        let mut out = [0.0; 3];
        uniform_filter_1d(&[1.0, 2.0, 3.0], 5, &mut out);
        close(&out, &[9.0 / 5.0, 2.0, 11.0 / 5.0]);
        // Window 7 on [a b] = [1 2] keeps reflecting: b b a | a b | b a a → 2 2 1 | 1 2 | 2 1 1.
        let mut out = [0.0; 2];
        uniform_filter_1d(&[1.0, 2.0], 7, &mut out);
        close(&out, &[11.0 / 7.0, 10.0 / 7.0]);
    }

    #[test]
    fn uniform_2d_matches_hand_values() {
        // [[1 2] [3 4]] reflected to 4×4:
        // 1 1 2 2 / 1 1 2 2 / 3 3 4 4 / 3 3 4 4; each output is the mean of a 3×3 block.
        let out = Kernel::Uniform { size: 3 }.apply(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        close(&out, &[2.0, 7.0 / 3.0, 8.0 / 3.0, 3.0]);
    }

    #[test]
    fn running_sum_agrees_with_direct_mean() {
        let line: Vec<f64> = (0..97).map(|i| ((i * 37 % 101) as f64).sin()).collect();
        let mut out = vec![0.0; line.len()];
        uniform_filter_1d(&line, 51, &mut out);
        for (k, o) in out.iter().enumerate() {
            let direct: f64 = (k as isize - 25..=k as isize + 25)
                .map(|i| line[reflect_index(i, line.len())])
                .sum::<f64>()
                / 51.0;
            assert!((o - direct).abs() < 1e-13);
        }
    }

    #[test]
    fn gaussian_kernel_sizes_and_normalisation() {
        // truncate 3.5 → radius int(5.75) = 5 (11 taps); scipy's default 4.0 → int(6.5) = 6.
        assert_eq!(gaussian_kernel(1.5, 3.5).len(), 11);
        assert_eq!(gaussian_kernel(1.5, 4.0).len(), 13);
        let k = gaussian_kernel(1.5, 3.5);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // Ratio of neighbouring taps: exp(-(1² - 0²) / (2·1.5²)).
        assert!((k[6] / k[5] - (-1.0f64 / 4.5).exp()).abs() < 1e-15);
        // Correlating a centred delta returns the kernel itself.
        let mut delta = vec![0.0; 21];
        delta[10] = 1.0;
        let mut out = vec![0.0; 21];
        correlate_symmetric_1d(&delta, &k, &mut out);
        close(&out[5..16], &k);
        assert!(out[..5].iter().chain(&out[16..]).all(|&v| v == 0.0));
    }

    #[test]
    fn gaussian_reflects_at_the_border() {
        // [1 2 3] with taps (¼ ½ ¼): extended 1 | 1 2 3 | 3.
        let mut out = [0.0; 3];
        correlate_symmetric_1d(&[1.0, 2.0, 3.0], &[0.25, 0.5, 0.25], &mut out);
        close(&out, &[1.25, 2.0, 2.75]);
    }
}
