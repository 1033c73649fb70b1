//! End-to-end runs of the `gfla-eval` binary on tiny images in a scratch folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use gfla_eval::body_mask;
use gfla_eval::mask::{JOINTS, Joint, MARKET_SIZE, Pose};
use image::{Rgb, RgbImage};
use serde_json::Value;

/// A fresh folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gfla-eval-{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["gen", "gt"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Self(dir)
    }

    fn gen_dir(&self) -> PathBuf {
        self.0.join("gen")
    }

    fn gt_dir(&self) -> PathBuf {
        self.0.join("gt")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A smooth colour pattern with values in 0..=200 (room for a +10 shift).
fn pattern(height: u32, width: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            ((x * 3 + y) % 201) as u8,
            ((x + y * 2) % 201) as u8,
            ((x * y) % 201) as u8,
        ])
    })
}

fn run_dirs(scratch: &Scratch, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gfla-eval"))
        .arg("--generated")
        .arg(scratch.gen_dir())
        .arg("--ground-truth")
        .arg(scratch.gt_dir())
        .args(extra)
        .output()
        .expect("binary runs")
}

fn json_report(scratch: &Scratch, extra: &[&str]) -> Value {
    let out_path = scratch.0.join("report.json");
    let mut args = vec!["--json", out_path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run_dirs(scratch, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out_path).unwrap()).unwrap()
}

fn stderr_line(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

fn f64_at(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

fn save(img: &RgbImage, path: &Path) {
    img.save(path).unwrap();
}

#[test]
fn identical_folders_with_gfla_pairing() {
    let s = Scratch::new("identical");
    let img = pattern(64, 64);
    // Identical JPEG bytes decode identically, whatever the decoder.
    save(&img, &s.gt_dir().join("b.jpg"));
    std::fs::copy(s.gt_dir().join("b.jpg"), s.gt_dir().join("d.jpg")).unwrap();
    for (generated, gt) in [("a_2_b_vis.jpg", "b.jpg"), ("c_2_d_vis.jpg", "d.jpg")] {
        std::fs::copy(s.gt_dir().join(gt), s.gen_dir().join(generated)).unwrap();
    }
    let out_path = s.0.join("report.json");
    let out = run_dirs(&s, &["--json", out_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("uniform 51x51 window"), "{stdout}");
    // Without weights, LPIPS and FID are named as not computed, with the options they need.
    assert!(
        stdout.contains("(--lpips-alexnet, --lpips-lin)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(--fid-inception, --fid-real) and was not computed"),
        "{stdout}"
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out_path).unwrap()).unwrap();
    assert_eq!(report["counts"]["pairs"], 2);
    assert_eq!(report["counts"]["psnr_infinite"], 2);
    assert_eq!(report["pairing"], "gfla");
    for key in ["ssim", "ssim_256", "ssim_11"] {
        assert!(
            (f64_at(&report, &["means", key]) - 1.0).abs() < 1e-12,
            "{key}"
        );
    }
    assert_eq!(
        report["means"]["psnr"],
        Value::Null,
        "inf is written as null"
    );
    assert_eq!(report["means"]["psnr_finite"], Value::Null);
    assert_eq!(f64_at(&report, &["means", "l1"]), 0.0);
    assert_eq!(f64_at(&report, &["means", "mae"]), 0.0);
    assert_eq!(report["images"][0]["generated"], "a_2_b_vis.jpg");
    assert_eq!(report["images"][0]["ground_truth"], "b.jpg");
    assert_eq!(report["images"][1]["ground_truth"], "d.jpg");
}

#[test]
fn png_ground_truth_pairs_when_there_is_no_jpg() {
    let s = Scratch::new("png-gt");
    let img = pattern(64, 64);
    save(&img, &s.gt_dir().join("b.png"));
    save(&img, &s.gen_dir().join("a_2_b_vis.png"));
    let report = json_report(&s, &[]);
    assert_eq!(report["counts"]["pairs"], 1);
    assert_eq!(report["images"][0]["ground_truth"], "b.png");
    assert_eq!(f64_at(&report, &["means", "l1"]), 0.0);
}

#[test]
fn known_shift_gives_known_l1_and_psnr() {
    let s = Scratch::new("shift");
    let gt = pattern(60, 56);
    let shifted = RgbImage::from_fn(56, 60, |x, y| {
        let p = gt.get_pixel(x, y);
        Rgb([p[0] + 10, p[1] + 10, p[2] + 10])
    });
    save(&gt, &s.gt_dir().join("p.png"));
    save(&shifted, &s.gen_dir().join("p.png"));
    let report = json_report(&s, &["--pairing", "same-name", "--threads", "2"]);

    // Every sample is off by 10/255: L1 = 10/255, MSE = (10/255)², PSNR = 20·log10(25.5).
    let l1 = f64_at(&report, &["means", "l1"]);
    assert!((l1 - 10.0 / 255.0).abs() < 1e-7, "{l1}");
    let psnr = f64_at(&report, &["means", "psnr"]);
    assert!((psnr - 20.0 * 25.5f64.log10()).abs() < 1e-5, "{psnr}");
    assert!((psnr - 28.130_8).abs() < 1e-4);
    // mae = Σ 10 / Σ (2·v + 10) over all samples.
    let (num, den) = gt.pixels().flat_map(|p| p.0).fold((0.0, 0.0), |(n, d), v| {
        (n + 10.0, d + 2.0 * f64::from(v) + 10.0)
    });
    let mae = f64_at(&report, &["means", "mae"]);
    assert!((mae - num / den).abs() < 1e-6, "{mae} vs {}", num / den);
    let ssim = f64_at(&report, &["means", "ssim"]);
    assert!(ssim > 0.9 && ssim < 1.0, "{ssim}");
}

#[test]
fn unmatched_names_are_listed() {
    let s = Scratch::new("unmatched");
    let img = pattern(64, 64);
    save(&img, &s.gen_dir().join("a_2_missing_vis.png"));
    save(&img, &s.gen_dir().join("plain.png"));
    let err = stderr_line(&run_dirs(&s, &[]));
    assert!(
        err.contains("2 of 2 generated images have no ground truth"),
        "{err}"
    );
    assert!(
        err.contains("a_2_missing_vis.png (wants missing.jpg)"),
        "{err}"
    );
    assert!(
        err.contains("plain.png (not <P1>_2_<P2>_vis.<ext>)"),
        "{err}"
    );
}

#[test]
fn size_mismatch_is_an_error_unless_resizing() {
    let s = Scratch::new("size");
    save(&pattern(64, 64), &s.gen_dir().join("p.png"));
    save(&pattern(60, 56), &s.gt_dir().join("p.png"));
    let err = stderr_line(&run_dirs(&s, &["--pairing", "same-name"]));
    assert!(err.contains("size mismatch"), "{err}");
    assert!(
        err.contains("p.png is 64x64") && err.contains("p.png is 60x56"),
        "{err}"
    );

    let report = json_report(&s, &["--pairing", "same-name", "--resize", "64x64"]);
    assert_eq!(report["resize"], "64x64");
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("resized to 64x64"))
    );
}

#[test]
fn unreadable_files_and_bad_arguments() {
    let s = Scratch::new("unreadable");
    std::fs::write(s.gen_dir().join("p.png"), b"not an image").unwrap();
    save(&pattern(64, 64), &s.gt_dir().join("p.png"));
    let err = stderr_line(&run_dirs(&s, &["--pairing", "same-name"]));
    assert!(
        err.contains("cannot read image") && err.contains("p.png"),
        "{err}"
    );

    let empty = Scratch::new("empty");
    let err = stderr_line(&run_dirs(&empty, &[]));
    assert!(err.contains("no .jpg or .png images"), "{err}");

    let out = run_dirs(&empty, &["--resize", "big"]);
    assert!(!out.status.success());
}

/// A Market-size pair that differs only outside the target pose's body mask.
#[test]
fn masked_metrics_ignore_the_background() {
    let s = Scratch::new("masked");
    let (h, w) = MARKET_SIZE;
    let ys = [
        14, 27, 27, 47, 66, 28, 50, 69, 69, 98, 125, 70, 99, 124, 11, 12, 13, -1,
    ];
    let xs = [
        33, 32, 21, 17, 14, 43, 48, 50, 25, 23, 22, 40, 42, 62, 30, 36, 26, -1,
    ];
    let csv =
        format!("name:keypoints_y:keypoints_x\nt.jpg: {ys:?}: {xs:?}\nother.jpg: {ys:?}: {xs:?}\n");
    let csv_path = s.0.join("market-annotation-test.csv");
    std::fs::write(&csv_path, csv).unwrap();

    let mut pose: Pose = [None; JOINTS];
    for (slot, (&y, &x)) in pose.iter_mut().zip(ys.iter().zip(&xs)) {
        if y != -1 {
            *slot = Some(Joint {
                x: f64::from(x),
                y: f64::from(y),
            });
        }
    }
    let mask = body_mask(&pose, h, w);
    // GFLA pairing wants the ground truth as `<P2>.jpg`; build the (lossless) generated image
    // from the decoded JPEG so that the two agree exactly inside the mask.
    save(&pattern(h as u32, w as u32), &s.gt_dir().join("t.jpg"));
    let gt = image::open(s.gt_dir().join("t.jpg")).unwrap().into_rgb8();
    let generated = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = *gt.get_pixel(x, y);
        if mask.get(y as usize, x as usize) {
            p
        } else {
            Rgb([255 - p[0], 255 - p[1], 255 - p[2]])
        }
    });
    save(&generated, &s.gen_dir().join("s_2_t_vis.png"));

    let report = json_report(&s, &["--market-annotation", csv_path.to_str().unwrap()]);
    assert!(f64_at(&report, &["means", "l1"]) > 0.05);
    assert_eq!(f64_at(&report, &["means", "mask_l1"]), 0.0);
    assert!((f64_at(&report, &["means", "mask_ssim"]) - 1.0).abs() < 1e-12);
    assert!((f64_at(&report, &["means", "mask_ssim_256"]) - 1.0).abs() < 1e-12);
    assert_eq!(report["images"][0]["mask_l1"], 0.0);

    // A ground truth without keypoints is an error.
    std::fs::write(&csv_path, "name:keypoints_y:keypoints_x\n").unwrap();
    let err = stderr_line(&run_dirs(
        &s,
        &["--market-annotation", csv_path.to_str().unwrap()],
    ));
    assert!(err.contains("no keypoints for t.jpg"), "{err}");
}

#[test]
fn lpips_needs_both_weight_files() {
    let s = Scratch::new("lpips-one");
    save(&pattern(64, 64), &s.gt_dir().join("b.jpg"));
    save(&pattern(64, 64), &s.gen_dir().join("a_2_b_vis.jpg"));
    let out = run_dirs(&s, &["--lpips-alexnet", "alexnet.pth"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--lpips-lin"), "{stderr}");
}

#[test]
fn lpips_weights_that_do_not_fit_are_named() {
    let s = Scratch::new("lpips-tiny");
    save(&pattern(64, 64), &s.gt_dir().join("b.jpg"));
    save(&pattern(64, 64), &s.gen_dir().join("a_2_b_vis.jpg"));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    // The tiny test files have 1/16 of AlexNet's widths: the full network refuses them.
    let alexnet = data.join("tiny_alexnet.pth");
    let lin = data.join("tiny_lpips_lin.pth");
    let out = run_dirs(
        &s,
        &[
            "--lpips-alexnet",
            alexnet.to_str().unwrap(),
            "--lpips-lin",
            lin.to_str().unwrap(),
        ],
    );
    let stderr = stderr_line(&out);
    assert!(stderr.contains("tiny_alexnet.pth"), "{stderr}");
    assert!(stderr.contains("features.0.weight"), "{stderr}");
}
