//! FID through the `gfla-eval` binary with a full-size Inception-v3 state dict written at test
//! time (torchvision layout, legacy container, values of `common::value`: not trained weights,
//! so the numbers are only checked for what holds for any weights).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::pth::Container;
use common::{Layout, Scratch, write_inception};
use image::{Rgb, RgbImage};
use serde_json::Value;

fn pattern(shift: u32) -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| {
        Rgb([
            ((x * 5 + y * 2 + shift * 37) % 256) as u8,
            ((x * y + shift * 11) % 256) as u8,
            ((y * 3 + shift * 53) % 256) as u8,
        ])
    })
}

fn gfla_eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gfla-eval"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs with `extra` and returns stdout and the JSON report.
fn report(s: &Scratch, extra: &[&str]) -> (String, Value) {
    let json = s.path("report.json");
    let (generated, ground_truth) = (s.path("gen"), s.path("gt"));
    let mut args = vec![
        "--generated",
        str(&generated),
        "--ground-truth",
        str(&ground_truth),
        "--pairing",
        "same-name",
        "--json",
        str(&json),
    ];
    args.extend_from_slice(extra);
    let out = gfla_eval(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), report)
}

fn folders(s: &Scratch) {
    for (dir, shifts) in [
        ("gen", [0, 1, 2, 3]),
        ("gt", [0, 1, 2, 3]),
        // The generated images again, one of them as a JPEG under another name (identical bytes
        // decode identically, so its features match those of the copy in "gen").
        ("real_same", [0, 1, 2, 3]),
        ("real_other", [4, 5, 6, 7]),
    ] {
        std::fs::create_dir_all(s.path(dir)).unwrap();
        for (i, shift) in shifts.into_iter().enumerate() {
            pattern(shift)
                .save(s.path(&format!("{dir}/img{i}.png")))
                .unwrap();
        }
    }
    pattern(9).save(s.path("gen/x.jpg")).unwrap();
    std::fs::copy(s.path("gen/x.jpg"), s.path("gt/x.jpg")).unwrap();
    std::fs::copy(s.path("gen/x.jpg"), s.path("real_same/copy.jpg")).unwrap();
}

#[test]
fn fid_of_a_folder_against_its_copy_is_zero_and_against_others_is_not() {
    let s = Scratch::new("fid-cli");
    folders(&s);
    let weights = s.path("inception_v3_google-1a9a5a14.pth");
    write_inception(&weights, Layout::Torchvision, 1, Container::Legacy);

    let (stdout, same) = report(
        &s,
        &[
            "--fid-inception",
            str(&weights),
            "--fid-real",
            str(&s.path("real_same")),
        ],
    );
    let fid = &same["fid"];
    assert_eq!(fid["weights"], "torchvision");
    assert_eq!(fid["real_images"], 5);
    assert_eq!(
        (&fid["real_batch"], &fid["real_used"]),
        (&5.into(), &5.into())
    );
    assert_eq!(fid["generated_used"], 5);
    let zero = fid["fid"].as_f64().unwrap();
    assert!(zero.abs() < 1e-9, "{fid}");
    assert!(stdout.contains("torchvision weights"), "{stdout}");
    assert!(
        stdout.contains("5 real and 5 generated images used"),
        "{stdout}"
    );
    assert!(stdout.contains("LPIPS and mask-LPIPS need"), "{stdout}");
    assert!(!stdout.contains("FID needs"), "{stdout}");
    assert!(!same["not_computed"].as_str().unwrap().contains("FID"));

    // Too few real images is refused before the paired metrics run.
    std::fs::create_dir_all(s.path("real_one")).unwrap();
    pattern(4).save(s.path("real_one/a.png")).unwrap();
    let err = gfla_eval(&[
        "--generated",
        str(&s.path("gen")),
        "--ground-truth",
        str(&s.path("gt")),
        "--pairing",
        "same-name",
        "--fid-inception",
        str(&weights),
        "--fid-real",
        str(&s.path("real_one")),
    ]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(!err.status.success());
    assert!(
        stderr.contains("FID needs at least 2 .jpg/.png images in") && stderr.contains("found 1"),
        "{stderr}"
    );

    let (_, other) = report(
        &s,
        &[
            "--fid-inception",
            str(&weights),
            "--fid-real",
            str(&s.path("real_other")),
        ],
    );
    let distance = other["fid"]["fid"].as_f64().unwrap();
    assert!(
        distance > 1e3 * zero.abs().max(1e-9),
        "{distance} vs {zero}"
    );
    assert_eq!(other["fid"]["real_used"], 4);
    eprintln!("FID against the copy {zero:e}, against other images {distance:e}");

    // Forcing pytorch-fid's blocks and protocol on these weights: stated as not GFLA's.
    let (stdout, forced) = report(
        &s,
        &[
            "--fid-inception",
            str(&weights),
            "--fid-real",
            str(&s.path("real_same")),
            "--fid-weights",
            "pytorch-fid",
        ],
    );
    assert_eq!(forced["fid"]["weights"], "pytorch-fid");
    assert!(forced["fid"]["fid"].as_f64().unwrap().abs() < 1e-9);
    assert!(stdout.contains("NOT the GFLA script's"), "{stdout}");
    assert!(
        stdout.contains("not the published GFLA protocol"),
        "{stdout}"
    );
}

fn error_line(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn fid_arguments_and_weights_that_do_not_fit() {
    let s = Scratch::new("fid-cli-errors");
    folders(&s);
    let base = |extra: &[&str]| {
        let (generated, ground_truth) = (s.path("gen"), s.path("gt"));
        let mut args = vec![
            "--generated".to_string(),
            str(&generated).to_string(),
            "--ground-truth".to_string(),
            str(&ground_truth).to_string(),
            "--pairing".to_string(),
            "same-name".to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gfla_eval(&args)
    };
    let err = error_line(&base(&["--fid-inception", "w.pth"]));
    assert!(err.contains("--fid-real"), "{err}");
    let err = error_line(&base(&["--fid-real", str(&s.path("real_same"))]));
    assert!(err.contains("--fid-inception"), "{err}");
    let err = error_line(&base(&["--fid-weights", "tf"]));
    assert!(
        err.contains("expected `auto`, `torchvision` or `pytorch-fid`"),
        "{err}"
    );

    // A width-reduced file for the full network: one line naming keys and shapes.
    let tiny = s.path("tiny.pth");
    write_inception(&tiny, Layout::PytorchFid, 16, Container::Zip);
    let real = s.path("real_same");
    let err = error_line(&base(&[
        "--fid-inception",
        str(&tiny),
        "--fid-real",
        str(&real),
    ]));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("tiny.pth do not fit the pytorch-fid layout"),
        "{err}"
    );
    assert!(
        err.contains("Conv2d_1a_3x3.conv.weight (network [32, 3, 3, 3], file [2, 3, 3, 3])"),
        "{err}"
    );
    let err = error_line(&base(&[
        "--fid-inception",
        "/nonexistent/w.pth",
        "--fid-real",
        str(&real),
    ]));
    assert!(
        err.contains("cannot read Inception-v3 weights /nonexistent/w.pth"),
        "{err}"
    );
}
