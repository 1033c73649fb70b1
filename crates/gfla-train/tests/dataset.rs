//! The official layout read back: pictures, heat maps, the Market augmentation, bad layouts.

use std::path::PathBuf;

use burn::data::dataset::Dataset;
use gfla_train::augment::Augmentation;
use gfla_train::dataset::{Layout, PairDataset};
use gfla_train::synth::{Rng, SynthConfig, generate, mix_seed};

fn tiny_set(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("gfla-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let config = SynthConfig {
        identities_train: 1,
        identities_test: 1,
        poses_per_identity: 2,
        seed: 4,
        ..SynthConfig::market()
    };
    generate(&config, &root, |_, _| {}).unwrap();
    root
}

/// `(row, column)` of the largest value of heat map `joint`.
fn peak(maps: &[f32], joint: usize) -> (usize, usize) {
    let n = 128 * 64;
    let channel = &maps[joint * n..(joint + 1) * n];
    let i = (0..n).fold(0, |b, i| if channel[i] > channel[b] { i } else { b });
    (i / 64, i % 64)
}

#[test]
fn pairs_come_back_as_the_official_loader_makes_them() {
    let root = tiny_set("plain");
    let data = PairDataset::open(&root, Layout::Market, "train").unwrap();
    assert_eq!(data.len(), 2);
    let item = data.get(0).unwrap();
    let (from, _) = &item.names;
    let picture = image::open(root.join("train").join(from))
        .unwrap()
        .to_rgb8();
    let want = (picture.get_pixel(10, 20).0[1] as f32 / 255.0 - 0.5) / 0.5;
    assert_eq!(
        item.p1[128 * 64 + 20 * 64 + 10],
        want,
        "green channel of pixel (10, 20)"
    );
    // The neck's heat map peaks at its annotated (integer) position.
    let row = std::fs::read_to_string(root.join("market-annotation-train.csv")).unwrap();
    let line = row.lines().find(|l| l.starts_with(from.as_str())).unwrap();
    let (_, pose) = gfla_model::Pose::from_annotation_row(line).unwrap();
    let [x, y] = pose.joints[1].unwrap();
    assert_eq!(peak(&item.bp1, 1), (y as usize, x as usize));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_augmentation_moves_keypoints_with_the_picture_and_is_repeatable() {
    let root = tiny_set("augment");
    let open = || {
        PairDataset::open(&root, Layout::Market, "train")
            .unwrap()
            .with_augmentation(Augmentation::market(), 77)
    };
    let (a, b) = (open(), open());
    let first = a.get(1).unwrap();
    assert_eq!(first.p1, b.get(1).unwrap().p1, "same seed, same draw");
    assert_ne!(first.p1, a.get(1).unwrap().p1, "the next epoch draws anew");
    // The neck's peak is where the drawn transform sends the annotated neck (truncated).
    let (source, _) = Augmentation::market().draw(&mut Rng::new(mix_seed(&[77, 1, 0])));
    let row = std::fs::read_to_string(root.join("market-annotation-train.csv")).unwrap();
    let line = row
        .lines()
        .find(|l| l.starts_with(first.names.0.as_str()))
        .unwrap();
    let (_, pose) = gfla_model::Pose::from_annotation_row(line).unwrap();
    let [x, y] = source.apply_point(pose.joints[1].unwrap(), 64, 128);
    assert_eq!(
        peak(&first.bp1, 1),
        (y.trunc() as usize, x.trunc() as usize)
    );
    let plain = PairDataset::open(&root, Layout::Market, "train")
        .unwrap()
        .get(1)
        .unwrap();
    assert_ne!(first.p1, plain.p1);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_broken_layout_is_named() {
    let root = tiny_set("broken");
    let err = PairDataset::open(&root, Layout::Fashion, "train").unwrap_err();
    assert!(
        format!("{err:#}").contains("fasion-pairs-train.csv"),
        "{err:#}"
    );
    let pairs = root.join("market-pairs-train.csv");
    std::fs::write(&pairs, "from,to\nnobody.png,synth_id0000_p00.png\n").unwrap();
    let err = PairDataset::open(&root, Layout::Market, "train").unwrap_err();
    assert!(
        format!("{err:#}").contains("nobody.png has no row in"),
        "{err:#}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
