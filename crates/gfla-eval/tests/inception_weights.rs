//! Inception-v3 loading from state dicts of the torchvision and pytorch-fid layouts, written at
//! test time by `common::pth` (zip and legacy containers) from a layout table transcribed from
//! torchvision independently of the network code; values follow `common::value`.

mod common;

use burn::store::ModuleSnapshot;
use burn::tensor::{Device, Tensor};
use common::pth::{Container, crc32};
use common::{Layout, Scratch, state_dict_shapes, value, write_inception};
use gfla_eval::FeatureExtractor;
use gfla_eval::inception::{
    BranchPool, FEATURES, InceptionLoadError, InceptionV3, InceptionWeights, torchvision_key,
};
use gfla_eval::weights::read_pth;

/// Every parameter and running statistic of `net` holds the file's values for its key.
fn assert_values_in_place(net: &InceptionV3) {
    let mut checked = 0;
    for t in net.collect(None, None, false) {
        let key = torchvision_key(&t.name);
        let shape = t.shape.as_slice().to_vec();
        let bytes = t.to_bytes().unwrap();
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let expected: Vec<f32> = (0..got.len()).map(|i| value(&key, &shape, i)).collect();
        assert_eq!(got, expected, "{key} ({})", t.name);
        checked += 1;
    }
    // 94 BasicConv2d: a convolution weight and four batch-norm tensors each.
    assert_eq!(checked, 94 * 5);
}

#[test]
fn crc32_of_a_known_string() {
    // The check value of CRC-32/ISO-HDLC, which zip uses.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn torchvision_layout_in_a_zip_file_loads_into_the_right_layers() {
    let s = Scratch::new("inception-tv");
    let path = s.path("tiny_inception_v3.pth");
    write_inception(&path, Layout::Torchvision, 16, Container::Zip);
    let file = read_pth(&path).unwrap();
    assert_eq!(
        InceptionWeights::detect(&file),
        Some(InceptionWeights::Torchvision)
    );
    let net = InceptionV3::load_with_width(&path, None, 16, &Device::flex()).unwrap();
    assert_eq!(net.weights, InceptionWeights::Torchvision);
    assert_eq!(net.mixed_5b.pool, BranchPool::Average);
    assert_eq!(net.mixed_7c.pool, BranchPool::Average);
    assert_values_in_place(&net);
}

#[test]
fn the_layout_table_has_torchvisions_parameter_count() {
    // torchvision documents 27,161,264 parameters for inception_v3 (AuxLogits and fc
    // included); running statistics are buffers, not parameters.
    let params: usize = state_dict_shapes(Layout::Torchvision, 1, false)
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(params, 27_161_264);
}

#[test]
fn pytorch_fid_layout_in_a_legacy_file_selects_the_fid_blocks() {
    let s = Scratch::new("inception-fid");
    let path = s.path("tiny_pt_inception.pth");
    write_inception(&path, Layout::PytorchFid, 16, Container::Legacy);
    let net = InceptionV3::load_with_width(&path, None, 16, &Device::flex()).unwrap();
    assert_eq!(net.weights, InceptionWeights::PytorchFid);
    for pool in [net.mixed_5b.pool, net.mixed_6e.pool, net.mixed_7b.pool] {
        assert_eq!(pool, BranchPool::AverageExcludingPadding);
    }
    assert_eq!(net.mixed_7c.pool, BranchPool::Max);
    assert_values_in_place(&net);
    // The layout can be forced: the same file as torchvision blocks.
    let net = InceptionV3::load_with_width(
        &path,
        Some(InceptionWeights::Torchvision),
        16,
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(net.mixed_7c.pool, BranchPool::Average);
}

#[test]
fn a_full_size_network_refuses_a_tiny_file_naming_shapes() {
    let s = Scratch::new("inception-shapes");
    let path = s.path("tiny.pth");
    write_inception(&path, Layout::Torchvision, 16, Container::Zip);
    let err = InceptionV3::load(&path, None, &Device::flex()).unwrap_err();
    let InceptionLoadError::Mismatch {
        weights, misfit, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*weights, InceptionWeights::Torchvision);
    assert_eq!(misfit.shapes.len(), 470);
    assert!(misfit.missing.is_empty() && misfit.unexpected.is_empty());
    let msg = err.to_string();
    assert!(
        msg.contains("tiny.pth do not fit the torchvision layout"),
        "{msg}"
    );
    assert!(msg.contains("470 with the wrong shape"), "{msg}");
    assert!(
        msg.contains("Conv2d_1a_3x3.conv.weight (network [32, 3, 3, 3], file [2, 3, 3, 3])"),
        "{msg}"
    );
    assert!(
        msg.contains("Mixed_7c.branch_pool.bn.running_var (network [192], file [12])"),
        "{msg}"
    );
}

#[test]
fn missing_and_unexpected_keys_are_named_and_extras_ignored() {
    let s = Scratch::new("inception-keys");
    let path = s.path("edited.pth");
    // The zip files carry int64 num_batches_tracked entries, AuxLogits and fc: all ignored.
    let mut shapes = state_dict_shapes(Layout::Torchvision, 16, true);
    shapes.retain(|(k, _)| k != "Mixed_6e.branch7x7dbl_3.bn.running_var");
    shapes.push(("Mixed_5b.branch9x9.conv.weight".into(), vec![2, 2, 1, 1]));
    // A 7x1 kernel where torchvision has 1x7.
    for (k, shape) in &mut shapes {
        if k == "Mixed_6b.branch7x7_2.conv.weight" {
            shape.swap(2, 3);
        }
    }
    common::pth::write_pth(&path, &common::entries(&shapes), Container::Zip).unwrap();
    let err = InceptionV3::load_with_width(&path, None, 16, &Device::flex()).unwrap_err();
    let InceptionLoadError::Mismatch { misfit, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(misfit.missing, ["Mixed_6e.branch7x7dbl_3.bn.running_var"]);
    assert_eq!(misfit.unexpected, ["Mixed_5b.branch9x9.conv.weight"]);
    assert_eq!(
        misfit.shapes,
        ["Mixed_6b.branch7x7_2.conv.weight (network [8, 8, 1, 7], file [8, 8, 7, 1])"]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("; 1 missing: Mixed_6e.branch7x7dbl_3.bn.running_var"),
        "{msg}"
    );
    assert!(
        msg.contains("; 1 unexpected: Mixed_5b.branch9x9.conv.weight"),
        "{msg}"
    );
}

#[test]
fn unreadable_and_unrecognisable_files_are_named() {
    let s = Scratch::new("inception-bad");
    let err = InceptionV3::load("/nonexistent/inception.pth", None, &Device::flex()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read Inception-v3 weights /nonexistent/inception.pth: no such file"
    );
    let text = s.path("notes.pth");
    std::fs::write(&text, "not a checkpoint").unwrap();
    let err = InceptionV3::load(&text, None, &Device::flex()).unwrap_err();
    assert!(matches!(err, InceptionLoadError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.pth"), "{err}");

    // Features only (no fc, no AuxLogits): the layout must be named.
    let path = s.path("features_only.pth");
    let mut shapes = state_dict_shapes(Layout::Torchvision, 16, false);
    shapes.retain(|(k, _)| !k.starts_with("fc.") && !k.starts_with("AuxLogits."));
    common::pth::write_pth(&path, &common::entries(&shapes), Container::Legacy).unwrap();
    let err = InceptionV3::load_with_width(&path, None, 16, &Device::flex()).unwrap_err();
    assert!(matches!(err, InceptionLoadError::UnknownLayout { .. }));
    assert!(err.to_string().contains("--fid-weights"), "{err}");
    let net = InceptionV3::load_with_width(
        &path,
        Some(InceptionWeights::PytorchFid),
        16,
        &Device::flex(),
    )
    .unwrap();
    assert_values_in_place(&net);
}

#[test]
fn a_full_size_torchvision_file_loads_and_gives_2048_features() {
    let s = Scratch::new("inception-full");
    let path = s.path("inception_v3_google.pth");
    let start = std::time::Instant::now();
    write_inception(&path, Layout::Torchvision, 1, Container::Legacy);
    let written = start.elapsed();
    // 27.2M parameters and 34k running statistics in f32.
    assert!(std::fs::metadata(&path).unwrap().len() > 108_000_000);
    let mut net = InceptionV3::load(&path, None, &Device::flex()).unwrap();
    let loaded = start.elapsed() - written;
    assert_eq!(net.weights, InceptionWeights::Torchvision);
    assert_values_in_place(&net);
    let img = |seed: f32| {
        let data = (0..3 * 128 * 64)
            .map(|i| 0.5 + 0.45 * ((i as f32) * 0.013 + seed).sin())
            .collect();
        gfla_eval::Image::new(3, 128, 64, data).unwrap()
    };
    let f = net.features(&[img(0.0), img(2.0)]).unwrap();
    assert_eq!(net.dim(), FEATURES);
    assert!(f.iter().all(|v| v.len() == FEATURES));
    assert!(f.iter().flatten().all(|x| x.is_finite() && *x >= 0.0));
    assert!(f[0].iter().filter(|x| **x > 0.0).count() > 100);
    assert_ne!(f[0], f[1]);
    let direct: Vec<f32> = net
        .forward(Tensor::<4>::zeros([1, 3, 299, 299], &Device::flex()))
        .try_into_vec_as()
        .unwrap();
    assert_eq!(direct.len(), FEATURES);
    eprintln!("wrote the file in {written:?}, loaded it in {loaded:?}");
}
