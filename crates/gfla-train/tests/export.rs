//! `gfla-train export`: an official checkpoint becomes a native file that computes the same.

use std::path::PathBuf;
use std::process::Command;

use burn::tensor::{Device, Distribution, Tensor};
use gfla_model::{ModelSpec, PoseTransfer};

fn testdata(relative: &str) -> PathBuf {
    let dir = std::env::var("GFLA_TESTDATA").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"),
        PathBuf::from,
    );
    dir.join(relative)
}

#[test]
fn an_official_checkpoint_exports_to_a_native_file_with_the_same_outputs() {
    let official = testdata("model/market_G_stress.pth");
    let out = std::env::temp_dir().join(format!("gfla-export-{}.safetensors", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_gfla-train"))
        .args(["export", "--preset", "market", "--weights"])
        .arg(&official)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("market model, 128x64, 12.93 M parameters"),
        "{said}"
    );

    let device = Device::flex();
    let a = PoseTransfer::open(&official, Some(ModelSpec::market()), &device).unwrap();
    let b = PoseTransfer::open(&out, None, &device).unwrap();
    assert_eq!(b.spec.name, "market");
    let x = Tensor::<4>::random([1, 3, 128, 64], Distribution::Uniform(-1.0, 1.0), &device);
    let p = Tensor::<4>::random([1, 18, 128, 64], Distribution::Uniform(0.0, 1.0), &device);
    let ya: Vec<f32> = a
        .generator
        .forward(x.clone(), p.clone(), p.clone())
        .image
        .try_into_vec_as()
        .unwrap();
    let yb: Vec<f32> = b
        .generator
        .forward(x, p.clone(), p)
        .image
        .try_into_vec_as()
        .unwrap();
    assert_eq!(ya, yb, "full-precision export changes nothing");

    // Without a preset, an official file is refused with the reason.
    let run = Command::new(env!("CARGO_BIN_EXE_gfla-train"))
        .args(["export", "--weights"])
        .arg(&official)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("does not say which preset"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::remove_file(&out).unwrap();
}
