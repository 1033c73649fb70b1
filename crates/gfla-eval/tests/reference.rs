//! Agreement with scipy / scikit-image on deterministic images.
//!
//! The expected values were computed once with numpy 2.4, scipy 1.17 and scikit-image 0.26 on
//! the same integer images (the generator below is reproduced exactly in Python):
//!
//! * `ssim`: `structural_similarity(gt, gen, data_range=1, win_size=51, channel_axis=-1)` on
//!   the `float32 / 255` images widened to float64 (what `compare_ssim` did internally);
//! * `ssim_256`: the pre-0.18 `compare_ssim` code path re-run with scipy (`gaussian_filter`
//!   with its default `truncate=4.0`, crop 5, population covariance) on `float32 · 255`,
//!   data range = max − min of the generated image;
//! * `ssim_11`: current `structural_similarity(..., gaussian_weights=True, sigma=1.5,
//!   use_sample_covariance=False, data_range=...)`, which uses an 11-tap window;
//! * `psnr`: `peak_signal_noise_ratio(gt, gen, data_range=1)` on the float32 images;
//! * `l1`, `mae`: the script's formulas with float64 accumulation;
//! * the mask: the script's `produce_ma_mask` (`draw.polygon`, `draw.disk`, `dilation` and
//!   `erosion` with a 5×5 square), saved as `data/market_mask.txt`.

use gfla_eval::mask::{JOINTS, Joint, Pose};
use gfla_eval::{Image, SsimProtocol, apply_mask, body_mask, l1, mae, psnr};

/// Ground truth and generated 8-bit images from a 64-bit LCG, as `[0, 1]` `Image`s.
fn images(h: usize, w: usize, seed: u64) -> (Image, Image) {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s
    };
    let plane = h * w;
    let mut gt = vec![0.0f32; 3 * plane];
    let mut generated = vec![0.0f32; 3 * plane];
    for r in 0..h {
        for c in 0..w {
            for ch in 0..3 {
                let n1 = (next() >> 58) as i64;
                let n2 = (next() >> 59) as i64;
                let g = (2 * r as i64 + c as i64 + 60 * ch as i64 + n1) % 256;
                let shift = if c > w / 2 { 20 } else { 0 };
                let p = (g + n2 - 16 + shift).clamp(0, 255);
                gt[ch * plane + r * w + c] = g as f32 / 255.0;
                generated[ch * plane + r * w + c] = p as f32 / 255.0;
            }
        }
    }
    (
        Image::new(3, h, w, gt).unwrap(),
        Image::new(3, h, w, generated).unwrap(),
    )
}

fn assert_close(name: &str, got: f64, expected: f64, tolerance: f64) {
    assert!(
        (got - expected).abs() <= tolerance,
        "{name}: got {got:.17}, expected {expected:.17}"
    );
}

struct Expected {
    size: (usize, usize),
    seed: u64,
    ssim: f64,
    ssim_256: f64,
    ssim_11: f64,
    psnr: f64,
    l1: f64,
    mae: f64,
}

#[test]
fn metrics_match_scikit_image() {
    let cases = [
        Expected {
            size: (128, 64),
            seed: 1,
            ssim: 0.9698004627935893,
            ssim_256: 0.9113175303116101,
            ssim_11: 0.9113020547453784,
            psnr: 24.13140379527832,
            l1: 0.05091002213369696,
            mae: 0.04931172259186209,
        },
        Expected {
            size: (70, 60),
            seed: 2,
            ssim: 0.9660918732442574,
            ssim_256: 0.9117044209871906,
            ssim_11: 0.911689414254017,
            psnr: 24.163352780619274,
            l1: 0.05074105134518403,
            mae: 0.04384244858166085,
        },
    ];
    for e in cases {
        let (gt, generated) = images(e.size.0, e.size.1, e.seed);
        let ssim = |p: SsimProtocol| p.compute(&gt, &generated).unwrap();
        assert_close("ssim", ssim(SsimProtocol::Gfla), e.ssim, 1e-13);
        assert_close("ssim_256", ssim(SsimProtocol::Gfla256), e.ssim_256, 1e-13);
        assert_close("ssim_11", ssim(SsimProtocol::Gaussian11), e.ssim_11, 1e-13);
        assert_close("psnr", psnr(&gt, &generated).unwrap(), e.psnr, 1e-11);
        assert_close("l1", l1(&gt, &generated).unwrap(), e.l1, 1e-15);
        assert_close("mae", mae(&gt, &generated).unwrap(), e.mae, 1e-15);
    }
}

/// The pose of the mask fixture: Market-like, with diagonal limbs, a joint at the image's
/// bottom-right corner region and a missing left ear.
fn fixture_pose() -> Pose {
    let ys = [
        14, 27, 27, 47, 66, 28, 50, 69, 69, 98, 125, 70, 99, 124, 11, 12, 13, -1,
    ];
    let xs = [
        33, 32, 21, 17, 14, 43, 48, 50, 25, 23, 22, 40, 42, 62, 30, 36, 26, -1,
    ];
    let mut pose: Pose = [None; JOINTS];
    for (slot, (&y, &x)) in pose.iter_mut().zip(ys.iter().zip(&xs)) {
        if y != -1 && x != -1 {
            *slot = Some(Joint {
                x: f64::from(x),
                y: f64::from(y),
            });
        }
    }
    pose
}

#[test]
fn market_mask_matches_the_script() {
    let expected: Vec<&str> = include_str!("data/market_mask.txt").lines().collect();
    let mask = body_mask(&fixture_pose(), 128, 64);
    let got: Vec<String> = (0..128)
        .map(|r| {
            (0..64)
                .map(|c| if mask.get(r, c) { '#' } else { '.' })
                .collect()
        })
        .collect();
    for (r, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "row {r}");
    }
    assert_eq!(expected.len(), 128);
    assert_eq!(mask.count(), 2973);
}

#[test]
fn masked_metrics_match_scikit_image() {
    let (gt, generated) = images(128, 64, 1);
    let mask = body_mask(&fixture_pose(), 128, 64);
    let gt = apply_mask(&gt, &mask).unwrap();
    let generated = apply_mask(&generated, &mask).unwrap();
    let ssim = |p: SsimProtocol| p.compute(&gt, &generated).unwrap();
    assert_close(
        "mask_ssim",
        ssim(SsimProtocol::Gfla),
        0.9711479613439248,
        1e-13,
    );
    assert_close(
        "mask_ssim_256",
        ssim(SsimProtocol::Gfla256),
        0.9538486937681284,
        1e-13,
    );
    assert_close(
        "mask_l1",
        l1(&gt, &generated).unwrap(),
        0.01836128972261501,
        1e-15,
    );
}

/// FID arithmetic against the GFLA script's `calculate_frechet_distance` (numpy `cov`,
/// `scipy.linalg.sqrtm`) on deterministic features, full rank and rank-deficient.
#[test]
fn frechet_distance_matches_scipy() {
    use gfla_eval::{Statistics, frechet_distance};
    let mut s = 7u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let (d, n) = (64, 80);
    let f1: Vec<Vec<f64>> = (0..n).map(|_| (0..d).map(|_| next()).collect()).collect();
    let f2: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            (0..d)
                .map(|j| next() * 1.1 + 0.01 * (j % 3) as f64)
                .collect()
        })
        .collect();
    let fd = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        frechet_distance(
            &Statistics::from_features(a).unwrap(),
            &Statistics::from_features(b).unwrap(),
        )
        .unwrap()
    };
    assert_close("fd", fd(&f1, &f2), 2.7387962913199946, 1e-10);
    // 20 and 30 samples in 64 dimensions: singular covariances. Expected value from numpy's
    // `eigh` factors and `svd` (the same route as here); `sqrtm` gives 6.660161055387001,
    // 1.6e-7 lower, because each of the ~45 zero eigenvalues of Σ₁Σ₂ adds √(round-off) ≈ 3e-9
    // to its trace.
    let low_rank = fd(&f1[..20], &f2[..30]);
    assert_close("fd low rank", low_rank, 6.660161216056326, 1e-10);
    assert!((low_rank - 6.660161055387001).abs() < 2e-7);
}
