//! The synthetic dataset on disk: layout, determinism, annotations and pairs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use gfla_train::gfla_model::Pose;
use gfla_train::synth::{
    self, Appearance, Layout, Rng, SynthConfig, background, generate, integer_keypoints,
    random_pose, render, snap_to_pixels,
};

/// A fresh, empty folder under the system temp dir, unique to this process and test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gfla-synth-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny(seed: u64) -> SynthConfig {
    SynthConfig {
        identities_train: 2,
        identities_test: 1,
        poses_per_identity: 3,
        seed,
        ..SynthConfig::market()
    }
}

/// All files under `root` (relative path -> bytes).
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `synth_id0003_p02.png` -> 3.
fn identity_of(name: &str) -> usize {
    name.strip_prefix("synth_id").unwrap()[..4].parse().unwrap()
}

#[test]
fn tiny_market_dataset_has_the_official_layout() {
    let root = scratch("layout");
    let config = tiny(0);
    let mut calls = Vec::new();
    let summary = generate(&config, &root, |done, total| calls.push((done, total))).unwrap();
    assert_eq!(
        (
            summary.train_images,
            summary.test_images,
            summary.train_pairs,
            summary.test_pairs
        ),
        (6, 3, 12, 6)
    );
    assert_eq!(
        summary.to_string(),
        format!(
            "wrote 9 images, 12 train pairs, 6 test pairs to {}",
            root.display()
        )
    );
    assert_eq!(calls, (1..=9).map(|d| (d, 9)).collect::<Vec<_>>());

    let all = files(&root);
    let names: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    let expected: BTreeSet<String> = [
        "market-annotation-train.csv",
        "market-annotation-test.csv",
        "market-pairs-train.csv",
        "market-pairs-test.csv",
        "synth.json",
        "train/synth_id0000_p00.png",
        "train/synth_id0000_p01.png",
        "train/synth_id0000_p02.png",
        "train/synth_id0001_p00.png",
        "train/synth_id0001_p01.png",
        "train/synth_id0001_p02.png",
        "test/synth_id0002_p00.png",
        "test/synth_id0002_p01.png",
        "test/synth_id0002_p02.png",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        names,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "no .tmp files left, nothing else"
    );

    let json: SynthConfig = serde_json::from_slice(&all["synth.json"]).unwrap();
    assert_eq!(json, config);

    let mut identities = BTreeMap::new();
    for phase in ["train", "test"] {
        // Annotations: the header, one row per image, integer keypoints equal to the pose drawn.
        let text =
            String::from_utf8(all[&format!("market-annotation-{phase}.csv")].clone()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("name:keypoints_y:keypoints_x"));
        let mut annotated = BTreeSet::new();
        for line in lines {
            let (name, pose) = Pose::from_annotation_row(line).unwrap();
            let image = image::open(root.join(phase).join(&name)).unwrap().to_rgb8();
            assert_eq!(image.dimensions(), (64, 128));
            let id = identity_of(&name);
            let p: usize = name[14..16].parse().unwrap();
            let (_, drawn, rendered) = synth::sample(&config, id, p);
            assert_eq!(image, rendered, "{name}: the file is the rendered sample");
            let [ys, xs] = integer_keypoints(&drawn);
            for j in 0..18 {
                match pose.joints[j] {
                    Some([x, y]) => {
                        assert_eq!([x as i64, y as i64], [xs[j], ys[j]], "{name} joint {j}");
                        assert!((0.0..64.0).contains(&x) && (0.0..128.0).contains(&y));
                    }
                    None => assert_eq!([xs[j], ys[j]], [-1, -1], "{name} joint {j}"),
                }
            }
            // The body joints are never missing.
            assert!(pose.joints[1..14].iter().all(Option::is_some), "{line}");
            annotated.insert(name);
            identities
                .entry(phase)
                .or_insert_with(BTreeSet::new)
                .insert(id);
        }
        assert_eq!(annotated.len(), if phase == "train" { 6 } else { 3 });

        // Pairs: all ordered pairs of different images of one identity, all annotated.
        let text = String::from_utf8(all[&format!("market-pairs-{phase}.csv")].clone()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("from,to"));
        let pairs: Vec<(String, String)> = lines
            .map(|l| {
                let (a, b) = l.split_once(',').unwrap();
                (a.to_string(), b.to_string())
            })
            .collect();
        assert_eq!(pairs.len(), if phase == "train" { 12 } else { 6 });
        let unique: BTreeSet<_> = pairs.iter().collect();
        assert_eq!(unique.len(), pairs.len(), "no duplicate pairs");
        for (a, b) in &pairs {
            assert_ne!(a, b);
            assert_eq!(identity_of(a), identity_of(b));
            assert!(annotated.contains(a) && annotated.contains(b), "{a},{b}");
            assert!(root.join(phase).join(a).is_file() && root.join(phase).join(b).is_file());
        }
    }
    assert_eq!(identities["train"], BTreeSet::from([0, 1]));
    assert_eq!(identities["test"], BTreeSet::from([2]));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn same_seed_same_bytes_other_seed_other_data() {
    let (a, b, c) = (scratch("seed-a"), scratch("seed-b"), scratch("seed-c"));
    generate(&tiny(5), &a, |_, _| {}).unwrap();
    generate(&tiny(5), &b, |_, _| {}).unwrap();
    generate(&tiny(6), &c, |_, _| {}).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa, fb, "same seed, identical files");
    assert_eq!(fa.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        if name.ends_with(".png") || name.contains("annotation") {
            assert_ne!(bytes, &fc[name], "{name} does not depend on the seed");
        } else if name.contains("pairs") {
            assert_eq!(bytes, &fc[name], "{name}: pairs depend on the counts only");
        }
    }
    for dir in [a, b, c] {
        fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn fashion_layout_uses_the_sic_names_and_its_frame() {
    let root = scratch("fashion");
    let config = SynthConfig {
        identities_train: 1,
        identities_test: 1,
        poses_per_identity: 2,
        ..SynthConfig::fashion()
    };
    assert_eq!(
        Layout::Fashion.annotation_frame(),
        [config.height, config.width]
    );
    let summary = generate(&config, &root, |_, _| {}).unwrap();
    assert_eq!((summary.train_pairs, summary.test_pairs), (2, 2));
    for f in [
        "fasion-annotation-train.csv",
        "fasion-annotation-test.csv",
        "fasion-pairs-train.csv",
        "fasion-pairs-test.csv",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    let img = image::open(root.join("test/synth_id0001_p01.png")).unwrap();
    assert_eq!((img.width(), img.height()), (176, 256));
    let text = fs::read_to_string(root.join("fasion-annotation-test.csv")).unwrap();
    for line in text.lines().skip(1) {
        let (_, pose) = Pose::from_annotation_row(line).unwrap();
        for [x, y] in pose.joints.iter().flatten() {
            assert!(
                (0.0..176.0).contains(x) && (0.0..256.0).contains(y),
                "{line}"
            );
        }
    }
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_configs_are_refused() {
    let root = std::env::temp_dir().join(format!("gfla-synth-{}-never", std::process::id()));
    let err = generate(
        &SynthConfig {
            poses_per_identity: 1,
            ..tiny(0)
        },
        &root,
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("poses_per_identity must be at least 2"),
        "{err}"
    );
    assert!(!root.exists(), "nothing written");
}

#[test]
fn limbs_cover_their_joints_and_move_the_texture() {
    let mut rng = Rng::new(99);
    for k in 0..40u64 {
        let appearance = Appearance::random(&mut rng);
        let pose = snap_to_pixels(&random_pose(&mut rng, 128, 64));
        let img = render(&appearance, &pose, 1000 + k, 128, 64);
        let bg = background(1000 + k, 128, 64);
        // Elbows, wrists, knees, ankles, shoulders, hips, neck and the face.
        for (j, joint) in pose.joints.iter().enumerate() {
            let Some([x, y]) = joint else { continue };
            let (x, y) = (*x as u32, *y as u32);
            assert_ne!(
                img.get_pixel(x, y),
                bg.get_pixel(x, y),
                "image {k} joint {j}"
            );
        }
        // The same figure on another background differs only off the figure.
        let other = render(&appearance, &pose, 5000 + k, 128, 64);
        let [ys, xs] = integer_keypoints(&pose);
        for j in [2, 3, 8, 9] {
            let (x, y) = (xs[j] as u32, ys[j] as u32);
            assert_eq!(
                img.get_pixel(x, y),
                other.get_pixel(x, y),
                "image {k} joint {j}"
            );
        }
        assert_ne!(img, other);
    }
    // Backgrounds differ between images.
    assert_ne!(background(1, 128, 64), background(2, 128, 64));
}
