//! The pose_transfer example's code paths end to end on the official Market checkpoint, and its
//! answers to bad input.

use std::path::{Path, PathBuf};

use clap::Parser;
use gfla::pose_transfer::{Args, run};

fn testdata(relative: &str) -> PathBuf {
    let dir = std::env::var("GFLA_TESTDATA").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"),
        PathBuf::from,
    );
    dir.join(relative)
}

/// A fresh, empty scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gfla-pt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn args(extra: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("pose_transfer").chain(extra.iter().copied())).unwrap()
}

fn market_args(out: &Path, target: &Path, extra: &[&str]) -> Args {
    let mut v = vec![
        "--source".to_string(),
        testdata("model/market_source_128x64.png")
            .display()
            .to_string(),
        "--source-pose".into(),
        testdata("model/market_source_keypoints.json")
            .display()
            .to_string(),
        "--target-pose".into(),
        target.display().to_string(),
        "--weights".into(),
        testdata("model/market_G_stress.pth").display().to_string(),
        "--preset".into(),
        "market".into(),
        "--output".into(),
        out.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    args(&refs)
}

/// Every channel value within 1 of the official PNG and at least 99.9 % identical (the official
/// truncation to 8 bits flips a value where float rounding differs by 1e-6).
fn assert_matches_official(got: &Path, official: &str) {
    let got = image::open(got).unwrap().to_rgb8();
    let want = image::open(testdata(official)).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), want.dimensions());
    let (mut same, mut worst) = (0usize, 0i32);
    for (a, b) in got.as_raw().iter().zip(want.as_raw()) {
        let d = (*a as i32 - *b as i32).abs();
        worst = worst.max(d);
        same += (d == 0) as usize;
    }
    let share = same as f64 / got.as_raw().len() as f64;
    assert!(
        worst <= 1 && share >= 0.999,
        "max difference {worst}, {:.4} % identical",
        100.0 * share
    );
}

#[test]
fn market_pose_transfer_matches_the_official_picture_and_draws_the_insides() {
    let dir = scratch("market");
    let out = dir.join("out.png");
    let vis = dir.join("vis");
    let report = run(&market_args(
        &out,
        &testdata("model/market_target_keypoints.json"),
        &["--visualize", vis.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(report.frames, 1);
    assert_eq!(report.results, vec![out.clone()]);
    assert_eq!(report.visualize, Some((vis.clone(), 6)));
    assert_matches_official(&out, "model/market_stress_img_gen_b0.png");
    // Flow, mask, attention and coverage at layer 2, the skeleton and the panels.
    for name in [
        "flow_L2_market_target_keypoints.png",
        "mask_L2_market_target_keypoints.png",
        "attention_L2_market_target_keypoints.png",
        "coverage_L2_market_target_keypoints.png",
        "skeleton_market_target_keypoints.png",
        "panel_market_target_keypoints.png",
    ] {
        assert!(vis.join(name).is_file(), "{name} not written");
    }
    // The panel: source | target skeleton | result, each enlarged twice, 4 pixels apart.
    let panel = image::open(vis.join("panel_market_target_keypoints.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(panel.dimensions(), (3 * 128 + 2 * 4, 256));
    let result = image::open(&out).unwrap().to_rgb8();
    assert_eq!(
        panel.get_pixel(2 * 128 + 8 + 2 * 10, 2 * 40).0,
        result.get_pixel(10, 40).0,
        "the panel's third picture is the result"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn annotation_rows_give_one_frame_each_and_a_gif() {
    let dir = scratch("gif");
    let out = dir.join("seq.png");
    let report = run(&market_args(
        &out,
        &testdata("model/market_annotation.csv"),
        &["--keep-size"],
    ))
    .unwrap();
    assert_eq!(report.frames, 2);
    assert_eq!(report.animation, Some(dir.join("seq.gif")));
    assert_eq!(report.results.len(), 2);
    // The target row reproduces the official picture (the CSV frame is Market's 128 x 64).
    assert_matches_official(
        &dir.join("seq_market_synthetic_target.png"),
        "model/market_stress_img_gen_b0.png",
    );
    let gif = std::fs::File::open(dir.join("seq.gif")).unwrap();
    let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(gif)).unwrap();
    use image::AnimationDecoder;
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].buffer().dimensions(), (3 * 128 + 2 * 4, 256));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs with one bad input and returns the one-line error; nothing may have been written.
fn refused(name: &str, target_text: Option<&str>, extra: &[&str]) -> String {
    let dir = scratch(name);
    let target = match target_text {
        Some(text) => {
            let p = dir.join("target.json");
            std::fs::write(&p, text).unwrap();
            p
        }
        None => testdata("model/market_target_keypoints.json"),
    };
    let out = dir.join("out").join("result.png");
    let mut a = market_args(&out, &target, &[]);
    for pair in extra.chunks(2) {
        match pair[0] {
            "--source" => a.source = Some(PathBuf::from(pair[1])),
            "--preset" => a.preset = Some(gfla::pose_transfer::Preset::Fashion),
            "--target-frame" => a.target_frame = Some([64, 32]),
            other => panic!("unexpected {other}"),
        }
    }
    let err = format!("{:#}", run(&a).unwrap_err());
    assert!(!dir.join("out").exists(), "{name}: something was written");
    assert!(!err.contains('\n'), "{name}: not one line: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn bad_input_is_refused_with_the_file_and_the_problem() {
    let coco = |x: &str| {
        let v: Vec<String> = (0..18).map(|_| format!("{x}, 20, 0.9")).collect();
        format!(
            r#"{{"people": [{{"pose_keypoints_2d": [{}]}}]}}"#,
            v.join(", ")
        )
    };
    let err = refused("missing", None, &["--source", "/nonexistent/person.jpg"]);
    assert!(err.contains("/nonexistent/person.jpg"), "{err}");
    let err = refused("nobody", Some(r#"{"people": []}"#), &[]);
    assert!(
        err.ends_with("target.json: person 0 requested but the file has 0 people"),
        "{err}"
    );
    let err = refused(
        "count",
        Some(r#"{"people": [{"pose_keypoints_2d": [1, 2, 0.5]}]}"#),
        &[],
    );
    assert!(
        err.ends_with("target.json: 3 keypoint values, expected 54 (COCO-18) or 75 (BODY_25)"),
        "{err}"
    );
    let err = refused("nan", Some(&coco(r#""nan""#)), &[]);
    assert!(
        err.ends_with("target.json: joint 0 has a non-finite coordinate"),
        "{err}"
    );
    let err = refused("outside", Some(&coco("90")), &[]);
    assert!(
        err.contains(
            "target.json: joint 0 (nose) of pose target at (90, 20) lies outside the 128x64 frame"
        ),
        "{err}"
    );
    // The same pose is fine in a frame it fits, but --target-frame 64x32 puts it outside.
    let err = refused("frame", Some(&coco("40")), &["--target-frame", "64x32"]);
    assert!(err.contains("outside the 64x32 frame"), "{err}");
    let err = refused("preset", None, &["--preset", "fashion"]);
    assert!(
        err.contains("market_G_stress.pth do not fit this network configuration"),
        "{err}"
    );
}

#[test]
fn the_command_line_is_checked() {
    let no = |v: &[&str]| {
        Args::try_parse_from(std::iter::once("pose_transfer").chain(v.iter().copied()))
            .unwrap_err()
            .to_string()
    };
    assert!(no(&["--source", "a.png"]).contains("--source-pose"));
    assert!(no(&["--target-frame", "12"]).contains("expected HEIGHTxWIDTH"));
    assert!(no(&["--device", "tpu"]).contains("possible values: cpu, ndarray, wgpu, cuda"));
    let a = args(&["--target-frame", "256x176", "--keep-size"]);
    assert_eq!(a.target_frame, Some([256, 176]));
    // bfloat16 products are the CPU convolutions': refused for other devices before any work.
    let err = format!(
        "{:#}",
        run(&args(&["--bf16", "--device", "wgpu"])).unwrap_err()
    );
    assert_eq!(
        err,
        "--bf16 is for --device cpu (the flex backend's convolutions)"
    );
}
