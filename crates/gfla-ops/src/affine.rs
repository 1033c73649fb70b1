//! The affine regulariser: how far each `k x k` window of sampling coordinates is from an
//! affine function of (row, column), by least squares in closed form.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

/// The residual projector `I - P` of the least-squares fit, `P = A (A^T A)^-1 A^T`, where row
/// `r*k + c` of `A` is `(r, c, 1)`; computed in float64. Row-major `k^2 x k^2`.
///
/// The official code stores `Q = (P - I)^T (P - I)`, which equals `I - P` because `I - P` is a
/// symmetric idempotent projector, so `g^T Q g = |(I - P) g|^2`.
pub fn residual_projector(k: usize) -> Vec<f64> {
    assert!(
        k >= 2,
        "affine regulariser needs windows of at least 2 x 2, got k = {k}"
    );
    let n = k * k;
    let rows: Vec<[f64; 3]> = (0..n)
        .map(|i| [(i / k) as f64, (i % k) as f64, 1.0])
        .collect();
    // A^T A (3 x 3, symmetric positive definite for k >= 2) and its inverse by cofactors.
    let mut m = [[0.0f64; 3]; 3];
    for r in &rows {
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += r[i] * r[j];
            }
        }
    }
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    // inv[i][j] = cofactor(j, i) / det; the cyclic index trick gives the cofactor signs.
    let inv: [[f64; 3]; 3] = std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let (a0, a1) = ((j + 1) % 3, (j + 2) % 3);
            let (b0, b1) = ((i + 1) % 3, (i + 2) % 3);
            (m[a0][b0] * m[a1][b1] - m[a0][b1] * m[a1][b0]) / det
        })
    });
    let mut q = vec![0.0f64; n * n];
    for a in 0..n {
        for b in 0..n {
            let mut p = 0.0;
            for i in 0..3 {
                for j in 0..3 {
                    p += rows[a][i] * inv[i][j] * rows[b][j];
                }
            }
            q[a * n + b] = if a == b { 1.0 - p } else { -p };
        }
    }
    q
}

/// Affine regularisation of one flow (`[B, 2, h, w]`) with `k x k` windows: the mean over batch
/// and fully-inside windows of `|(I - P) g|^2`, where `g` is the window of absolute sampling
/// coordinates (grid + flow), summed over the x and y components.
///
/// The identity grid is affine, so it lies in the null space of `I - P` and is dropped
/// analytically: this matches the official loss computed in float64 (the official float32 route
/// carries a ~1e-4 relative bias from rounding the grid).
pub fn affine_regularization(flow: Tensor<4>, k: usize) -> Tensor<1> {
    let [b, c, h, w] = flow.dims();
    assert_eq!(
        c,
        2,
        "affine_regularization: flow must have 2 channels, got {:?}",
        flow.dims()
    );
    assert!(
        h >= k && w >= k,
        "affine_regularization: flow {:?} is smaller than the {k} x {k} window",
        flow.dims()
    );
    let n = k * k;
    let proj: Vec<f32> = residual_projector(k)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let kernel = Tensor::<4>::from_data(
        TensorData::new(proj, [n, 1, k, k]),
        (&flow.device(), flow.dtype()),
    );
    let residual = conv2d(
        flow.reshape([b * 2, 1, h, w]),
        kernel,
        None,
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    // mean_x + mean_y over (batch, windows) = 2 * mean over (batch, component, windows).
    residual.square().sum_dim(1).mean() * 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn projector_annihilates_affine_windows_and_keeps_the_rest() {
        for k in [2usize, 3, 5] {
            let q = residual_projector(k);
            let n = k * k;
            let apply = |g: &[f64]| -> Vec<f64> {
                (0..n)
                    .map(|a| (0..n).map(|b| q[a * n + b] * g[b]).sum())
                    .collect()
            };
            let affine: Vec<f64> = (0..n)
                .map(|i| 0.3 * (i / k) as f64 - 2.0 * (i % k) as f64 + 7.0)
                .collect();
            assert!(apply(&affine).iter().all(|v| v.abs() < 1e-12));
            // A bump at the centre is not affine: its residual is the bump minus the best plane.
            let mut bump = vec![0.0; n];
            bump[n / 2] = 1.0;
            let r = apply(&bump);
            assert!((r[n / 2] - (1.0 - 1.0 / n as f64 - centre_leverage(k))).abs() < 1e-12);
        }
    }

    /// Leverage of the centre point in the row/column part of the fit (hand-derived).
    fn centre_leverage(k: usize) -> f64 {
        let c = (k as f64 - 1.0) / 2.0;
        let var: f64 = (0..k).map(|i| (i as f64 - c).powi(2)).sum::<f64>() * k as f64;
        let d = ((k / 2) as f64 - c).powi(2);
        2.0 * d / var
    }

    #[test]
    fn affine_flow_costs_nothing_and_a_bump_costs_its_residual() {
        let device = Device::flex();
        let (h, w) = (6, 5);
        let mut v = vec![0.0f32; 2 * h * w];
        for y in 0..h {
            for x in 0..w {
                v[y * w + x] = 0.5 * x as f32 - 0.25 * y as f32 + 1.0;
                v[h * w + y * w + x] = -0.1 * x as f32 + 2.0;
            }
        }
        let affine = Tensor::<4>::from_data(TensorData::new(v, [1, 2, h, w]), &device);
        assert!(affine_regularization(affine, 3).into_scalar::<f32>().abs() < 1e-9);

        // One unit bump in x inside a 3 x 3 map: one window, cost = residual at the centre.
        let mut v = vec![0.0f32; 2 * 9];
        v[4] = 1.0;
        let bump = Tensor::<4>::from_data(TensorData::new(v, [1, 2, 3, 3]), &device);
        // |(I - P) e|^2 = e^T (I - P) e = 1 - 1/9 (the centre has zero row/column leverage).
        let got = affine_regularization(bump, 3).into_scalar::<f32>();
        assert!((got - 8.0 / 9.0).abs() < 1e-6, "got {got}");
    }
}
