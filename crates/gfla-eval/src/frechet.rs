//! The Fréchet distance between two Gaussians, the arithmetic half of FID:
//!
//! ```text
//! d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr √(Σ₁Σ₂)
//! ```
//!
//! `Σ₁Σ₂` is not symmetric, but its eigenvalues are real and non-negative: they are those of
//! the symmetric PSD `√Σ₁ Σ₂ √Σ₁`, so `tr √(Σ₁Σ₂) = Σ √λᵢ(√Σ₁ Σ₂ √Σ₁)`. Two routes compute it:
//!
//! * [`trace_sqrt_product_eigen`], the textbook one: [`sqrt_psd`] and the eigenvalues of
//!   `√Σ₁ Σ₂ √Σ₁`, both by cyclic two-sided Jacobi ([`SymmetricEigen`]), negative round-off
//!   clamped to 0. Each rotation rewrites two rows and two columns, and the column writes are
//!   strided, so it slows down sharply with size (release build: 0.85 s at d = 256, 13 s at
//!   d = 512; 2048 would take about an hour). Kept as the reference for small matrices.
//! * [`trace_sqrt_product`], used by [`frechet_distance`]: with any factors `Σ = F·Fᵀ`,
//!   `Σ₁Σ₂ = F₁(F₁ᵀF₂F₂ᵀF₁)F₁⁻¹` on its range, so the eigenvalues are the squared singular
//!   values of `C = F₂ᵀF₁` and `tr √(Σ₁Σ₂) = Σ σᵢ(C)`. The factors come from a pivoted
//!   Cholesky (which also handles singular covariances, stopping at LAPACK's `pstrf`
//!   tolerance) and the singular values from one-sided (Hestenes) Jacobi, whose every access
//!   is contiguous. Singular values near 0 come out near 0 instead of as `√(round-off)`, so
//!   singular covariances keep their accuracy.
//!
//! The GFLA script uses `scipy.linalg.sqrtm` with a 1e-6 diagonal fallback on failure; for
//! covariance matrices all give the same trace up to round-off.
//!
//! The feature network (Inception-v3 for FID, [`crate::inception`]) plugs in through
//! [`crate::networks::FeatureExtractor`]; [`StatisticsAccumulator`] gathers the statistics of
//! a folder batch by batch.

use crate::MetricError;

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    pub mean: Vec<f64>,
    /// Row-major `d × d`.
    pub covariance: Vec<f64>,
}

impl Statistics {
    /// `numpy.mean(axis=0)` and `numpy.cov(rowvar=False)` (denominator `N − 1`).
    pub fn from_features(features: &[Vec<f64>]) -> Result<Self, MetricError> {
        let n = features.len();
        if n < 2 {
            return Err(MetricError::TooFewSamples(n));
        }
        let d = features[0].len();
        if let Some(bad) = features.iter().find(|f| f.len() != d) {
            return Err(MetricError::DimensionMismatch {
                expected: d,
                found: bad.len(),
            });
        }
        let mut mean = vec![0.0; d];
        for f in features {
            for (m, v) in mean.iter_mut().zip(f) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let mut covariance = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for f in features {
            for ((c, v), m) in centred.iter_mut().zip(f).zip(&mean) {
                *c = v - m;
            }
            for i in 0..d {
                let ci = centred[i];
                let row = &mut covariance[i * d..(i + 1) * d];
                for (r, cj) in row[i..].iter_mut().zip(&centred[i..]) {
                    *r += ci * cj;
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                let v = covariance[i * d + j] / (n - 1) as f64;
                covariance[i * d + j] = v;
                covariance[j * d + i] = v;
            }
        }
        Ok(Self { mean, covariance })
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    fn check(&self) -> Result<(), MetricError> {
        let d = self.dim();
        if self.covariance.len() != d * d {
            return Err(MetricError::BadBuffer {
                expected: d * d,
                found: self.covariance.len(),
            });
        }
        Ok(())
    }
}

/// [`Statistics`] of feature vectors that arrive in batches, without keeping them: each
/// batch's mean and centred scatter matrix are merged into the running ones (Chan, Golub &
/// LeVeque's pairwise update `M₂ = M₂ᵃ + M₂ᵇ + δδᵀ·nₐn_b/n`), which is as accurate as the
/// two-pass `numpy.cov` and needs `d²` numbers instead of `N·d` (FID's real folder can hold
/// tens of thousands of 2048-d vectors).
#[derive(Debug, Clone)]
pub struct StatisticsAccumulator {
    n: usize,
    mean: Vec<f64>,
    /// Row-major `d × d` sum of centred outer products; only the upper triangle is kept up
    /// to date until [`Self::finish`].
    scatter: Vec<f64>,
}

impl StatisticsAccumulator {
    /// Nothing seen yet, for vectors of length `d`.
    pub fn new(d: usize) -> Self {
        Self {
            n: 0,
            mean: vec![0.0; d],
            scatter: vec![0.0; d * d],
        }
    }

    /// Vectors seen so far.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Adds a batch of vectors (each of length `d`).
    pub fn add(&mut self, batch: &[Vec<f64>]) -> Result<(), MetricError> {
        let d = self.mean.len();
        if let Some(bad) = batch.iter().find(|f| f.len() != d) {
            return Err(MetricError::DimensionMismatch {
                expected: d,
                found: bad.len(),
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        let nb = batch.len();
        let mut mean_b = vec![0.0; d];
        for f in batch {
            for (m, v) in mean_b.iter_mut().zip(f) {
                *m += v;
            }
        }
        for m in &mut mean_b {
            *m /= nb as f64;
        }
        let mut centred = vec![0.0; d];
        let add_outer = |scatter: &mut [f64], v: &[f64], weight: f64| {
            for i in 0..d {
                let vi = v[i] * weight;
                if vi == 0.0 {
                    continue;
                }
                for (s, vj) in scatter[i * d + i..(i + 1) * d].iter_mut().zip(&v[i..]) {
                    *s += vi * vj;
                }
            }
        };
        for f in batch {
            for ((c, v), m) in centred.iter_mut().zip(f).zip(&mean_b) {
                *c = v - m;
            }
            add_outer(&mut self.scatter, &centred, 1.0);
        }
        let na = self.n;
        let n = na + nb;
        let delta: Vec<f64> = mean_b.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        if na > 0 {
            add_outer(&mut self.scatter, &delta, (na * nb) as f64 / n as f64);
        }
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * nb as f64 / n as f64;
        }
        self.n = n;
        Ok(())
    }

    /// Mean and covariance (denominator `N − 1`) of everything added; at least 2 vectors.
    pub fn finish(self) -> Result<Statistics, MetricError> {
        if self.n < 2 {
            return Err(MetricError::TooFewSamples(self.n));
        }
        let d = self.mean.len();
        let mut covariance = self.scatter;
        for i in 0..d {
            for j in i..d {
                let v = covariance[i * d + j] / (self.n - 1) as f64;
                covariance[i * d + j] = v;
                covariance[j * d + i] = v;
            }
        }
        Ok(Statistics {
            mean: self.mean,
            covariance,
        })
    }
}

/// Fréchet distance `‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr √(Σ₁Σ₂)`.
pub fn frechet_distance(a: &Statistics, b: &Statistics) -> Result<f64, MetricError> {
    a.check()?;
    b.check()?;
    let d = a.dim();
    if b.dim() != d {
        return Err(MetricError::DimensionMismatch {
            expected: d,
            found: b.dim(),
        });
    }
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    Ok(mean_term + trace(&a.covariance) + trace(&b.covariance)
        - 2.0 * trace_sqrt_product(&a.covariance, &b.covariance, d))
}

/// `tr √(S₁S₂)` for symmetric PSD `S₁`, `S₂` (row-major `d × d`): the sum of the singular
/// values of `F₂ᵀF₁` with `Sᵢ = FᵢFᵢᵀ` from [`psd_factor`] (see the module docs).
pub fn trace_sqrt_product(s1: &[f64], s2: &[f64], d: usize) -> f64 {
    let f1 = psd_factor(s1, d);
    let f2 = psd_factor(s2, d);
    // Columns of C = F₂ᵀF₁, one per column of F₁, each as a contiguous vector:
    // column b holds (f2_a · f1_b) over the columns a of F₂.
    let columns: Vec<Vec<f64>> = f1
        .iter()
        .map(|f1_b| f2.iter().map(|f2_a| dot(f2_a, f1_b)).collect())
        .collect();
    singular_values(columns).iter().sum()
}

/// `tr √(S₁S₂)` the textbook way: `Σ √max(λᵢ, 0)` over the eigenvalues of `√S₁ S₂ √S₁`, all
/// by two-sided Jacobi. Accurate, but only practical up to a few hundred dimensions.
pub fn trace_sqrt_product_eigen(s1: &[f64], s2: &[f64], d: usize) -> f64 {
    let root = sqrt_psd(s1, d);
    let mut m = matmul(&matmul(&root, s2, d), &root, d);
    symmetrise(&mut m, d);
    let eigen = SymmetricEigen::new(m, d, false);
    eigen.values.iter().map(|&l| l.max(0.0).sqrt()).sum()
}

/// A factor of a symmetric PSD matrix by Cholesky with diagonal pivoting: columns `f_k`
/// (each of length `d`, in the original row order) with `S ≈ Σ_k f_k f_kᵀ`.
///
/// Stops when the largest remaining pivot is at most `d·ε·max(diag S)` (LAPACK `pstrf`'s
/// default); for a PSD matrix every remaining entry is then that small too, so the factor is
/// exact up to that perturbation and its length is the numerical rank.
pub fn psd_factor(s: &[f64], d: usize) -> Vec<Vec<f64>> {
    assert_eq!(s.len(), d * d, "matrix must be d × d");
    let mut work = s.to_vec();
    symmetrise(&mut work, d);
    let max_diag = (0..d).map(|i| work[i * d + i]).fold(0.0, f64::max);
    let tolerance = d as f64 * f64::EPSILON * max_diag;
    let mut remaining: Vec<usize> = (0..d).collect();
    let mut columns = Vec::new();
    while !remaining.is_empty() {
        let (slot, pivot) = remaining
            .iter()
            .enumerate()
            .map(|(slot, &i)| (slot, work[i * d + i]))
            .fold(
                (0, f64::NEG_INFINITY),
                |best, x| if x.1 > best.1 { x } else { best },
            );
        if pivot <= tolerance {
            break;
        }
        let p = remaining.swap_remove(slot);
        let root = pivot.sqrt();
        let mut column = vec![0.0; d];
        column[p] = root;
        for &i in &remaining {
            column[i] = work[i * d + p] / root;
        }
        // Schur complement on the remaining rows; eliminated entries of `column` are 0, so
        // whole rows can be updated contiguously.
        for &i in &remaining {
            let ci = column[i];
            if ci == 0.0 {
                continue;
            }
            for (w, cj) in work[i * d..(i + 1) * d].iter_mut().zip(&column) {
                *w -= ci * cj;
            }
        }
        columns.push(column);
    }
    columns
}

/// Singular values of the matrix whose columns are `columns` (all the same length), by
/// one-sided (Hestenes) Jacobi: rotate pairs of columns until every pair is orthogonal to
/// working precision; the singular values are then the column norms.
pub fn singular_values(mut columns: Vec<Vec<f64>>) -> Vec<f64> {
    const MAX_SWEEPS: usize = 100;
    let n = columns.len();
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        let mut norms: Vec<f64> = columns.iter().map(|c| dot(c, c)).collect();
        for i in 0..n {
            for j in i + 1..n {
                let (alpha, beta) = (norms[i], norms[j]);
                if alpha == 0.0 || beta == 0.0 {
                    continue;
                }
                let (head, tail) = columns.split_at_mut(j);
                let (ci, cj) = (&mut head[i], &mut tail[0]);
                let gamma = dot(ci, cj);
                if gamma.abs() <= f64::EPSILON * (alpha * beta).sqrt() {
                    continue;
                }
                // The rotation that diagonalises [[α γ] [γ β]] (Numerical Recipes' form).
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (zeta * zeta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = c * t;
                for (x, y) in ci.iter_mut().zip(cj.iter_mut()) {
                    let (a, b) = (*x, *y);
                    *x = c * a - s * b;
                    *y = s * a + c * b;
                }
                norms[i] = alpha - t * gamma;
                norms[j] = beta + t * gamma;
                rotated = true;
            }
        }
        if !rotated {
            break;
        }
    }
    columns.iter().map(|c| dot(c, c).sqrt()).collect()
}

/// Dot product with four independent partial sums, so the compiler can vectorise it.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a4.zip(b4) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The PSD square root `V·diag(√max(λ, 0))·Vᵀ` of a symmetric matrix.
pub fn sqrt_psd(s: &[f64], d: usize) -> Vec<f64> {
    let mut m = s.to_vec();
    symmetrise(&mut m, d);
    let eigen = SymmetricEigen::new(m, d, true);
    let roots: Vec<f64> = eigen.values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    // Eigenvectors are the rows of `vectors_t`: out = Σ_k √λ_k · v_k v_kᵀ.
    let vt = &eigen.vectors_t;
    let mut out = vec![0.0; d * d];
    for (k, &root) in roots.iter().enumerate() {
        if root == 0.0 {
            continue;
        }
        let v = &vt[k * d..(k + 1) * d];
        for i in 0..d {
            let scaled = root * v[i];
            for (o, vj) in out[i * d..(i + 1) * d].iter_mut().zip(v) {
                *o += scaled * vj;
            }
        }
    }
    out
}

fn symmetrise(m: &mut [f64], d: usize) {
    for i in 0..d {
        for j in i + 1..d {
            let v = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = v;
            m[j * d + i] = v;
        }
    }
}

fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        let row = &mut out[i * d..(i + 1) * d];
        for k in 0..d {
            let aik = a[i * d + k];
            if aik == 0.0 {
                continue;
            }
            for (o, bkj) in row.iter_mut().zip(&b[k * d..(k + 1) * d]) {
                *o += aik * bkj;
            }
        }
    }
    out
}

/// Eigen-decomposition of a symmetric matrix by the cyclic Jacobi method.
#[derive(Debug, Clone)]
pub struct SymmetricEigen {
    /// Eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// Row `k` (of `d`) is the unit eigenvector of `values[k]`; empty unless requested.
    pub vectors_t: Vec<f64>,
}

impl SymmetricEigen {
    /// Most sweeps before giving up; Jacobi converges quadratically, typically in 6–12.
    const MAX_SWEEPS: usize = 100;

    /// Decomposes the symmetric row-major `d × d` matrix `a` (both triangles are updated in
    /// step, so it must really be symmetric), with the eigenvectors if asked for.
    ///
    /// Sweeps over all pairs `(p, q)` until a sweep finds nothing left to rotate: an element is
    /// left alone (and set to 0) once it is below `ε·√(|a_pp|·|a_qq|)`, which cannot move any
    /// eigenvalue by more than a few ulps of the matrix.
    pub fn new(mut a: Vec<f64>, d: usize, with_vectors: bool) -> Self {
        assert_eq!(a.len(), d * d, "matrix must be d × d");
        let mut vt = if with_vectors {
            let mut v = vec![0.0; d * d];
            for i in 0..d {
                v[i * d + i] = 1.0;
            }
            v
        } else {
            Vec::new()
        };
        let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
        // Absolute floor for pairs whose diagonal is (nearly) zero, far below any effect.
        let floor = f64::EPSILON * f64::EPSILON * norm;
        for _ in 0..Self::MAX_SWEEPS {
            let mut rotated = false;
            for p in 0..d {
                for q in p + 1..d {
                    rotated |= Self::rotate(&mut a, &mut vt, d, p, q, floor);
                }
            }
            if !rotated {
                break;
            }
        }
        let values = (0..d).map(|i| a[i * d + i]).collect();
        Self {
            values,
            vectors_t: vt,
        }
    }

    /// One Jacobi rotation zeroing `a[p][q]` (Numerical Recipes' stable form); `false` when
    /// the element was already negligible.
    fn rotate(a: &mut [f64], vt: &mut [f64], d: usize, p: usize, q: usize, floor: f64) -> bool {
        let apq = a[p * d + q];
        let (app, aqq) = (a[p * d + p], a[q * d + q]);
        if apq.abs() <= floor.max(f64::EPSILON * (app.abs() * aqq.abs()).sqrt()) {
            a[p * d + q] = 0.0;
            a[q * d + p] = 0.0;
            return false;
        }
        let theta = (aqq - app) / (2.0 * apq);
        let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
        let c = 1.0 / (t * t + 1.0).sqrt();
        let s = t * c;
        let tau = s / (1.0 + c);
        a[p * d + p] = app - t * apq;
        a[q * d + q] = aqq + t * apq;
        a[p * d + q] = 0.0;
        a[q * d + p] = 0.0;
        for r in 0..d {
            if r == p || r == q {
                continue;
            }
            let (arp, arq) = (a[r * d + p], a[r * d + q]);
            let new_p = arp - s * (arq + tau * arp);
            let new_q = arq + s * (arp - tau * arq);
            a[r * d + p] = new_p;
            a[p * d + r] = new_p;
            a[r * d + q] = new_q;
            a[q * d + r] = new_q;
        }
        if !vt.is_empty() {
            // Rows p and q of Vᵀ rotate like columns p and q of V.
            for k in 0..d {
                let (vp, vq) = (vt[p * d + k], vt[q * d + k]);
                vt[p * d + k] = vp - s * (vq + tau * vp);
                vt[q * d + k] = vq + s * (vp - tau * vq);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(v: &[f64]) -> Vec<f64> {
        let d = v.len();
        let mut m = vec![0.0; d * d];
        for (i, x) in v.iter().enumerate() {
            m[i * d + i] = *x;
        }
        m
    }

    fn stats(mean: &[f64], covariance: Vec<f64>) -> Statistics {
        Statistics {
            mean: mean.to_vec(),
            covariance,
        }
    }

    /// A fixed well-conditioned SPD matrix: B·Bᵀ + d·I from deterministic entries.
    fn spd(d: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let b: Vec<f64> = (0..d * d)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let mut m = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                m[i * d + j] = (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum::<f64>();
            }
            m[i * d + i] += 0.1;
        }
        m
    }

    #[test]
    fn jacobi_recovers_eigenpairs() {
        // [[2 1 0] [1 2 0] [0 0 3]] has eigenvalues 1, 3, 3.
        let a = vec![2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 3.0];
        let mut values = SymmetricEigen::new(a, 3, false).values;
        values.sort_by(f64::total_cmp);
        for (v, e) in values.iter().zip([1.0, 3.0, 3.0]) {
            assert!((v - e).abs() < 1e-14);
        }
        // A·v = λ·v and orthonormal vectors on a dense 12×12 matrix.
        let d = 12;
        let a = spd(d, 7);
        let eig = SymmetricEigen::new(a.clone(), d, true);
        for k in 0..d {
            let v = &eig.vectors_t[k * d..(k + 1) * d];
            for i in 0..d {
                let av: f64 = (0..d).map(|j| a[i * d + j] * v[j]).sum();
                assert!((av - eig.values[k] * v[i]).abs() < 1e-12);
            }
            for l in 0..d {
                let dot: f64 = (0..d).map(|j| v[j] * eig.vectors_t[l * d + j]).sum();
                assert!((dot - f64::from(u8::from(k == l))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn statistics_match_numpy_cov() {
        // Columns (1 3 5) and (2 4 0): means 3 and 2; deviations (−2 0 2) and (0 2 −2):
        // var = 8/2 = 4 each, cov = (0 + 0 − 4)/2 = −2.
        let s =
            Statistics::from_features(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 0.0]]).unwrap();
        assert_eq!(s.mean, [3.0, 2.0]);
        assert_eq!(s.covariance, [4.0, -2.0, -2.0, 4.0]);
        assert_eq!(
            Statistics::from_features(&[vec![1.0]]),
            Err(MetricError::TooFewSamples(1))
        );
        assert!(Statistics::from_features(&[vec![1.0], vec![1.0, 2.0]]).is_err());
    }

    #[test]
    fn accumulated_statistics_match_the_two_pass_ones() {
        // 23 vectors in 7 dimensions with a large common offset (where a naive Σx·xᵀ − n·μμᵀ
        // would lose digits), added in uneven batches.
        let d = 7;
        let features: Vec<Vec<f64>> = (0..23)
            .map(|k| {
                (0..d)
                    .map(|j| 1e3 + ((k * 7 + j * 3) as f64 * 0.91).sin() + (k as f64) * 0.01)
                    .collect()
            })
            .collect();
        let expected = Statistics::from_features(&features).unwrap();
        for sizes in [vec![23], vec![1, 22], vec![5, 5, 5, 5, 3], vec![2; 12]] {
            let mut acc = StatisticsAccumulator::new(d);
            let mut start = 0;
            for size in sizes {
                let end = (start + size).min(features.len());
                acc.add(&features[start..end]).unwrap();
                start = end;
            }
            assert_eq!(acc.count(), 23);
            let got = acc.finish().unwrap();
            for (g, e) in got.mean.iter().zip(&expected.mean) {
                assert!((g - e).abs() < 1e-12 * e.abs(), "{g} vs {e}");
            }
            for (g, e) in got.covariance.iter().zip(&expected.covariance) {
                assert!((g - e).abs() < 1e-11, "{g} vs {e}");
            }
        }
        let mut one = StatisticsAccumulator::new(d);
        one.add(&features[..1]).unwrap();
        assert_eq!(one.finish(), Err(MetricError::TooFewSamples(1)));
        assert!(StatisticsAccumulator::new(d).add(&[vec![0.0; 3]]).is_err());
    }

    #[test]
    fn diagonal_covariances() {
        // FD = Σ (μ₁ − μ₂)² + Σ (σ₁ − σ₂)² per dimension.
        let a = stats(&[0.0, 1.0, 2.0], diag(&[1.0, 4.0, 9.0]));
        let b = stats(&[1.0, 1.0, 0.0], diag(&[4.0, 1.0, 0.25]));
        let expected = (1.0 + 0.0 + 4.0) + (1.0 + 1.0 + 6.25);
        assert!((frechet_distance(&a, &b).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn commuting_covariances() {
        // S = R·diag·Rᵀ with one rotation R: same eigenvectors, so
        // FD = Σ (√λ₁ − √λ₂)² over the shared eigenbasis.
        let (c, s) = (0.6f64, 0.8f64);
        let rot = |l1: f64, l2: f64| {
            vec![
                c * c * l1 + s * s * l2,
                c * s * (l1 - l2),
                c * s * (l1 - l2),
                s * s * l1 + c * c * l2,
            ]
        };
        let a = stats(&[0.0, 0.0], rot(1.0, 9.0));
        let b = stats(&[0.0, 0.0], rot(16.0, 4.0));
        let expected = (1.0f64 - 4.0).powi(2) + (3.0f64 - 2.0).powi(2);
        assert!((frechet_distance(&a, &b).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn identical_statistics_are_at_distance_zero() {
        let d = 16;
        let a = stats(&vec![0.5; d], spd(d, 11));
        assert!(frechet_distance(&a, &a).unwrap().abs() < 1e-9);
    }

    #[test]
    fn non_commuting_two_by_two_by_hand() {
        // S₁ = diag(1, 4), S₂ = [[2 1] [1 2]]: √S₁ = diag(1, 2) and
        // M = √S₁ S₂ √S₁ = [[2 2] [2 8]], tr M = 10, det M = 12 (= det S₁ · det S₂ = 4·3).
        // For a 2×2 PSD matrix (√λ₁ + √λ₂)² = tr M + 2√det M, so
        // tr √(S₁S₂) = √(10 + 2√12) = √(10 + 4√3) ≈ 4.114 390 and
        // FD = 5 + 4 − 2·√(10 + 4√3) ≈ 0.771 220 with equal means.
        let a = stats(&[0.0, 0.0], diag(&[1.0, 4.0]));
        let b = stats(&[0.0, 0.0], vec![2.0, 1.0, 1.0, 2.0]);
        let expected = 9.0 - 2.0 * (10.0 + 4.0 * 3f64.sqrt()).sqrt();
        let fd = frechet_distance(&a, &b).unwrap();
        assert!((fd - expected).abs() < 1e-12, "{fd} vs {expected}");
        assert!((fd - 0.771_220).abs() < 1e-6);
        // Symmetric in its arguments.
        assert!((frechet_distance(&b, &a).unwrap() - fd).abs() < 1e-12);
    }

    #[test]
    fn singular_covariance_is_fine() {
        // Rank-1 S₁ = v·vᵀ with v = (1, 1): √S₁ = S₁/√2, M = S₁ S₂ S₁ / 2 is rank 1 with
        // eigenvalue vᵀS₂v · |v|² / 2 = vᵀS₂v; for S₂ = I that is 2, so tr√ = √2.
        let a = stats(&[0.0, 0.0], vec![1.0, 1.0, 1.0, 1.0]);
        let b = stats(&[0.0, 0.0], diag(&[1.0, 1.0]));
        let expected = 2.0 + 2.0 - 2.0 * 2f64.sqrt();
        let fd = frechet_distance(&a, &b).unwrap();
        assert!((fd - expected).abs() < 1e-14, "{fd} vs {expected}");
        // The eigenvalue route gets the zero eigenvalue as ±1e-16 and its root as ~1e-8: it
        // loses half the digits on singular covariances (as scipy's sqrtm does).
        let eigen = trace_sqrt_product_eigen(&a.covariance, &b.covariance, 2);
        assert!((eigen - 2f64.sqrt()).abs() < 1e-7);
    }

    #[test]
    fn factor_and_singular_value_routes_agree_with_the_eigen_route() {
        let d = 12;
        // Full rank, and rank 4 (5 samples in 12 dimensions), as with few FID images.
        let features: Vec<Vec<f64>> = (0..5).map(|i| spd(d, 100 + i)[..d].to_vec()).collect();
        let low_rank = Statistics::from_features(&features).unwrap().covariance;
        for (s1, s2) in [
            (spd(d, 1), spd(d, 2)),
            (low_rank.clone(), spd(d, 3)),
            (spd(d, 4), low_rank.clone()),
        ] {
            let fast = trace_sqrt_product(&s1, &s2, d);
            let eigen = trace_sqrt_product_eigen(&s1, &s2, d);
            assert!(
                (fast - eigen).abs() < 1e-6 * eigen.abs().max(1.0),
                "{fast} vs {eigen}"
            );
        }
        // The factor reproduces the matrix and finds the rank.
        let f = psd_factor(&low_rank, d);
        assert_eq!(f.len(), 4);
        for i in 0..d {
            for j in 0..d {
                let v: f64 = f.iter().map(|c| c[i] * c[j]).sum();
                assert!((v - low_rank[i * d + j]).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn singular_values_by_hand() {
        // Columns (3, 0) and (4, 5): C = [[3 4] [0 5]], CᵀC = [[9 12] [12 41]],
        // tr = 50, det = 225 → σ² = 25 ± √(625 − 225) = 25 ± 20 → σ = 3√5 and √5.
        let mut sv = singular_values(vec![vec![3.0, 0.0], vec![4.0, 5.0]]);
        sv.sort_by(f64::total_cmp);
        assert!((sv[0] - 5f64.sqrt()).abs() < 1e-14);
        assert!((sv[1] - 3.0 * 5f64.sqrt()).abs() < 1e-14);
    }
}
