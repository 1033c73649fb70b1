//! LPIPS loading from a torchvision-layout `alexnet` state dict and an LPIPS v0.1 `alex.pth`,
//! both in PyTorch's zip format (`tests/data/tiny_alexnet.pth`, `tests/data/tiny_lpips_lin.pth`,
//! written by `tools/make_tiny_lpips_pth.py`: every width / 16, element i of key K =
//! sin(0.01 i + len(K))).

use burn::tensor::Device;
use gfla_eval::lpips::{AlexNetFeatures, lin_key};
use gfla_eval::{Lpips, LpipsLoadError};

const ALEXNET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_alexnet.pth");
const LIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_lpips_lin.pth");

fn expected(key: &str, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.01 * i as f64 + key.len() as f64).sin() as f32)
        .collect()
}

#[test]
fn torchvision_and_lpips_files_load_into_the_right_layers() {
    let device = Device::flex();
    let mut net = Lpips::new(16, &device);
    net.load_weights(ALEXNET, LIN).expect("tiny files load");
    for (j, conv) in net.alexnet.convs.iter().enumerate() {
        let weight: Vec<f32> = conv.weight.val().try_into_vec_as().unwrap();
        let bias: Vec<f32> = conv.bias.as_ref().unwrap().val().try_into_vec_as().unwrap();
        for (param, got) in [("weight", weight), ("bias", bias)] {
            let key = AlexNetFeatures::torchvision_key(j, param);
            assert_eq!(got, expected(&key, got.len()), "{key}");
        }
    }
    for (k, lin) in net.lins.iter().enumerate() {
        assert!(lin.bias.is_none());
        let got: Vec<f32> = lin.weight.val().try_into_vec_as().unwrap();
        assert_eq!(got, expected(&lin_key(k), got.len()), "{}", lin_key(k));
    }
}

#[test]
fn a_full_size_network_refuses_the_tiny_files_naming_shapes() {
    let err = Lpips::load(ALEXNET, LIN, &Device::flex()).unwrap_err();
    assert!(matches!(err, LpipsLoadError::Mismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("tiny_alexnet.pth"), "{msg}");
    assert!(msg.contains("10 with the wrong shape"), "{msg}");
    assert!(
        msg.contains("features.0.weight (network [64, 3, 11, 11], file [4, 3, 11, 11])"),
        "{msg}"
    );
}

#[test]
fn swapped_files_name_the_missing_and_unexpected_keys() {
    let device = Device::flex();
    let mut net = Lpips::new(16, &device);
    let err = net.load_weights(LIN, ALEXNET).unwrap_err();
    let msg = err.to_string();
    // The lin file has no `features.*`: every AlexNet parameter is missing, by its file key.
    assert!(msg.contains("tiny_lpips_lin.pth"), "{msg}");
    assert!(msg.contains("10 missing"), "{msg}");
    assert!(msg.contains("features.0.weight"), "{msg}");
    assert!(msg.contains("features.10.bias"), "{msg}");

    // AlexNet right, lin file = the AlexNet file: all lins missing, its keys unexpected.
    let err = net.load_weights(ALEXNET, ALEXNET).unwrap_err();
    let LpipsLoadError::Mismatch {
        path,
        missing,
        unexpected,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert!(path.ends_with("tiny_alexnet.pth"));
    assert_eq!(missing, (0..5).map(lin_key).collect::<Vec<_>>());
    assert!(unexpected.contains(&"features.0.weight".to_string()));
}

#[test]
fn a_missing_file_is_named() {
    let device = Device::flex();
    let mut net = Lpips::new(16, &device);
    let err = net
        .load_weights("/nonexistent/alexnet.pth", LIN)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read LPIPS weights /nonexistent/alexnet.pth: no such file"
    );
}

#[test]
fn loaded_lpips_scores_folders_with_masks() {
    use gfla_eval::mask::MARKET_SIZE;
    use gfla_eval::{Annotations, EvalOptions, Pair, lpips_scores};
    use image::{Rgb, RgbImage};

    let dir = std::env::temp_dir().join(format!("gfla-eval-lpips-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (h, w) = (MARKET_SIZE.0 as u32, MARKET_SIZE.1 as u32);
    let pattern = |shift: u32| {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                ((x * 3 + y + shift) % 256) as u8,
                ((x + y * 2) % 256) as u8,
                ((x * y + shift * 7) % 256) as u8,
            ])
        })
    };
    let mut pairs = vec![];
    let mut csv = String::from("name:keypoints_y:keypoints_x\n");
    // Pair 0 identical, pair 1 different, pair 2 in the dropped partial batch.
    for (i, shift) in [0u32, 40, 80].into_iter().enumerate() {
        let (g, t) = (dir.join(format!("g{i}.png")), dir.join(format!("t{i}.png")));
        pattern(shift).save(&g).unwrap();
        pattern(0).save(&t).unwrap();
        let ys = "[30, 60, -1, -1, -1, -1, -1, -1, 100, -1, -1, -1, -1, -1, -1, -1, -1, -1]";
        let xs = "[32, 32, -1, -1, -1, -1, -1, -1, 30, -1, -1, -1, -1, -1, -1, -1, -1, -1]";
        csv.push_str(&format!("t{i}.png:{ys}:{xs}\n"));
        pairs.push(Pair {
            generated: g,
            ground_truth: t,
        });
    }
    let options = EvalOptions {
        annotations: Some(Annotations::parse(&csv).unwrap()),
        ..Default::default()
    };
    let mut net = Lpips::new(16, &Device::flex());
    net.load_weights(ALEXNET, LIN).unwrap();
    let s = lpips_scores(&pairs, &options, &mut net, 2, &|| {}).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((s.pairs_used, s.pairs_dropped), (2, 1));
    assert_eq!(s.per_pair[0], 0.0);
    assert!(s.per_pair[1] > 0.0, "{s:?}");
    let masked = s.mask_per_pair.clone().unwrap();
    assert_eq!(masked[0], 0.0);
    assert!(masked[1] > 0.0 && masked[1].is_finite(), "{s:?}");
    assert_eq!(s.lpips, Some(s.per_pair[1] / 2.0));
}
