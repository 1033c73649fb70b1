//! The official Market-1501 generator checkpoint (legacy PyTorch format) against the outputs
//! and intermediates of the official code (`shared/testdata/model`).

#[path = "../../gfla-ops/tests/common/mod.rs"]
mod common;

use burn::tensor::Tensor;
use common::{Vectors, assert_close, device, testdata_dir, values};
use gfla_model::weights::{WeightsError, load_generator};
use gfla_model::{Generator, GeneratorConfig};

fn market_generator() -> Generator {
    let config = GeneratorConfig::market();
    let mut g = config.init(&device());
    load_generator(
        &mut g,
        &config,
        testdata_dir().join("model/market_G_stress.pth"),
    )
    .expect("the Market checkpoint loads");
    g
}

#[test]
fn market_checkpoint_reproduces_the_official_outputs() {
    let device = device();
    let g = market_generator();
    let inputs = Vectors::open("model/market_inputs.safetensors");
    let [p1, p2, bp1, bp2] = ["P1", "P2", "BP1", "BP2"].map(|k| inputs.tensor::<4>(k, &device));
    // Batch element 0 = (P1, BP1, BP2), element 1 = (P2, BP2, BP1).
    let out = g.forward(
        Tensor::cat(vec![p1.clone(), p2], 0),
        Tensor::cat(vec![bp1.clone(), bp2.clone()], 0),
        Tensor::cat(vec![bp2.clone(), bp1], 0),
    );
    let want = Vectors::open("model/market_stress_outputs.safetensors");
    assert_close(
        "img_gen",
        &values(out.image),
        &want.values("img_gen"),
        1e-4,
        0.0,
    );
    assert_eq!(out.flows.len(), 1);
    assert_close(
        "flow_l2",
        &values(out.flows[0].clone()),
        &want.values("flow_l2"),
        1e-4,
        0.0,
    );
    assert_close(
        "mask_l2",
        &values(out.masks[0].clone()),
        &want.values("mask_l2"),
        1e-5,
        0.0,
    );
    // The stress weights make the flows and masks far from trivial.
    let max_flow = want
        .values("flow_l2")
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        max_flow > 1.0,
        "reference flows should be large, got {max_flow}"
    );
}

#[test]
fn market_checkpoint_intermediates_match() {
    let device = device();
    let g = market_generator();
    let inputs = Vectors::open("model/market_inputs.safetensors");
    let [p1, bp1, bp2] = ["P1", "BP1", "BP2"].map(|k| inputs.tensor::<4>(k, &device));
    let want = Vectors::open("model/market_stress_intermediates.safetensors");
    let pyramid = g.source.pyramid(p1.clone());
    assert_close(
        "source_feature0",
        &values(pyramid[2].clone()),
        &want.values("source_feature0"),
        1e-4,
        1e-5,
    );
    assert_close(
        "source_feature1",
        &values(pyramid[1].clone()),
        &want.values("source_feature1"),
        1e-4,
        1e-5,
    );
    let target = g.renderer.encoder.pyramid(bp2.clone()).pop().unwrap();
    assert_close(
        "target_encoder_out",
        &values(target.clone()),
        &want.values("target_encoder_out"),
        1e-4,
        1e-5,
    );
    let stage0 = &g.renderer.decoders[0];
    let decoded = stage0.up.forward(stage0.res.forward(target));
    assert_close(
        "decoder0_out",
        &values(decoded.clone()),
        &want.values("decoder0_out"),
        1e-4,
        1e-5,
    );
    let (flows, _) = g
        .flow
        .as_ref()
        .unwrap()
        .forward(Tensor::cat(vec![p1, bp1, bp2], 1));
    let attn = g.renderer.attention[0].attention.as_ref().unwrap().forward(
        pyramid[1].clone(),
        decoded,
        flows[0].clone(),
    );
    assert_close(
        "attn1_out",
        &values(attn.features),
        &want.values("attn1_out"),
        1e-4,
        1e-5,
    );
}

#[test]
fn a_checkpoint_of_the_other_preset_is_refused_with_the_keys() {
    let config = GeneratorConfig::fashion();
    let mut g = config.init(&device());
    let err = load_generator(
        &mut g,
        &config,
        testdata_dir().join("model/market_G_stress.pth"),
    )
    .expect_err("a Market checkpoint does not fit the DeepFashion network");
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, WeightsError::Mismatch { .. }), "{msg}");
    // Market lacks the 1/8 attention and flow head, and its 1/4 attention has k = 3, not 5.
    assert!(
        msg.contains("renderer.attention.0.attention.fuse.weight"),
        "{msg}"
    );
    assert!(msg.contains("flow.heads.0.flow.weight"), "{msg}");
    assert!(msg.contains("with the wrong shape"), "{msg}");
}

#[test]
fn a_missing_file_is_named() {
    let config = GeneratorConfig::market();
    let mut g = config.init(&device());
    let err = load_generator(&mut g, &config, "no/such/latest_net_G.pth").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read weights no/such/latest_net_G.pth: no such file"
    );
}

#[test]
fn native_safetensors_round_trip() {
    let g = market_generator();
    let dir = std::env::temp_dir().join(format!("gfla-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("market_G.safetensors");
    gfla_model::weights::save_safetensors(&g, &path).unwrap();
    let mut fresh = GeneratorConfig::market().init(&device());
    gfla_model::weights::load_safetensors(&mut fresh, &path).unwrap();
    let probe = |g: &Generator| {
        values(
            g.renderer.attention[0]
                .attention
                .as_ref()
                .unwrap()
                .fuse
                .weight
                .val(),
        )
    };
    assert_eq!(probe(&fresh), probe(&g));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn market_discriminator_reproduces_the_official_scores() {
    let device = device();
    let mut d = gfla_model::DiscriminatorConfig::market().init(&device);
    gfla_model::weights::load_discriminator(&mut d, testdata_dir().join("model/market_D.pth"))
        .expect("the Market discriminator loads");
    let io = Vectors::open("model/market_D_io.safetensors");
    let out = d.forward(io.tensor::<4>("input", &device));
    assert_eq!(out.dims(), [2, 1, 16, 8]);
    assert_close("D output", &values(out), &io.values("output"), 1e-5, 1e-5);
}

/// Every key of the official DeepFashion generator (Appendix A of the reference document, 204
/// keys with their shapes) maps onto exactly one parameter of `GeneratorConfig::fashion()` with
/// the same shape, and every parameter is covered: the DeepFashion checkpoint loads as exactly
/// as the Market one, which is tested on real values above.
#[test]
fn fashion_key_list_covers_the_fashion_generator_exactly() {
    use burn::store::ModuleSnapshot;
    use std::collections::BTreeMap;

    let doc = std::fs::read_to_string(testdata_dir().join("../design/gfla-reference.md"))
        .expect("the reference document beside the test data");
    let start = doc.find("## Appendix A").expect("Appendix A");
    let end = doc[start..].find("## Appendix B").expect("Appendix B") + start;
    let parse = |s: &str| -> Vec<usize> {
        s.trim()
            .split('×')
            .map(|d| d.trim().parse().unwrap())
            .collect()
    };
    let mut official: Vec<(String, Vec<usize>)> = vec![];
    for line in doc[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() == 6 && cells[1].starts_with('`') {
            let prefix = cells[1].trim_matches('`');
            official.push((format!("{prefix}.weight"), parse(cells[3])));
            official.push((format!("{prefix}.bias"), parse(cells[4])));
        }
    }
    assert_eq!(official.len(), 204, "Appendix A lists 204 keys");

    let config = GeneratorConfig::fashion();
    let g = config.init(&device());
    let params: BTreeMap<String, Vec<usize>> = g
        .collect(None, None, false)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let mut covered = BTreeMap::new();
    let mut aliases = 0;
    for (key, shape) in &official {
        let path = match gfla_model::weights::generator_path(key, &config) {
            Some(path) => path,
            None if key.contains(".model.2.")
                && (key.contains("jump") || key.contains("outconv")) =>
            {
                aliases += 1;
                continue;
            }
            None => panic!("official key {key} has no place in the DeepFashion generator"),
        };
        let want = params
            .get(&path)
            .unwrap_or_else(|| panic!("{key} -> {path}: no such parameter"));
        assert_eq!(want, shape, "{key} -> {path}");
        assert!(
            covered.insert(path.clone(), key.clone()).is_none(),
            "{path} mapped twice"
        );
    }
    assert_eq!(
        aliases, 8,
        "the 8 alias keys of the jumps and the output layer"
    );
    let uncovered: Vec<&String> = params
        .keys()
        .filter(|p| !covered.contains_key(*p))
        .collect();
    assert!(
        uncovered.is_empty(),
        "parameters no official key fills: {uncovered:?}"
    );
    assert_eq!(covered.len(), 196);
}

/// The official heat maps BP1 / BP2 from the raw keypoints, both as annotation CSV rows and (for
/// the source) as OpenPose JSON.
#[test]
fn pose_heatmaps_match_the_official_loader() {
    use gfla_model::Pose;
    let inputs = Vectors::open("model/market_inputs.safetensors");
    let csv = std::fs::read_to_string(testdata_dir().join("model/market_annotation.csv")).unwrap();
    let rows: Vec<(String, Pose)> = csv
        .lines()
        .skip(1)
        .map(|l| Pose::from_annotation_row(l).unwrap())
        .collect();
    assert_eq!(rows[0].0, "market_synthetic_source.png");
    for ((_, pose), key) in rows.iter().zip(["BP1", "BP2"]) {
        let maps: Vec<f64> = pose
            .heatmaps([128, 64], 128, 64)
            .into_iter()
            .map(f64::from)
            .collect();
        assert_close(key, &maps, &inputs.values(key), 1e-6, 0.0);
    }
    let json =
        std::fs::read_to_string(testdata_dir().join("model/market_source_keypoints.json")).unwrap();
    assert_eq!(Pose::from_openpose_json(&json, 0).unwrap(), rows[0].1);
}

/// The source picture becomes the official P1 tensor, and the generated image saved the official
/// way matches the official PNG (truncation to 8 bits may flip a value by one where the image
/// differs by < 1e-4).
#[test]
fn pictures_round_trip_like_the_official_loader_and_tensor2im() {
    use gfla_model::picture::{image_to_tensor, tensor_to_images};
    let device = device();
    let inputs = Vectors::open("model/market_inputs.safetensors");
    let source = image::open(testdata_dir().join("model/market_source_128x64.png"))
        .unwrap()
        .to_rgb8();
    let p1 = image_to_tensor(&source, 128, 64, &device);
    assert_close("P1", &values(p1.clone()), &inputs.values("P1"), 1e-6, 0.0);

    let g = market_generator();
    let [bp1, bp2] = ["BP1", "BP2"].map(|k| inputs.tensor::<4>(k, &device));
    let out = tensor_to_images(g.forward(p1, bp1, bp2).image).remove(0);
    let want = image::open(testdata_dir().join("model/market_stress_img_gen_b0.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(out.dimensions(), want.dimensions());
    let diffs: Vec<i32> = out
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .collect();
    let exact = diffs.iter().filter(|d| **d == 0).count();
    assert!(
        diffs.iter().all(|d| *d <= 1),
        "max difference {}",
        diffs.iter().max().unwrap()
    );
    assert!(
        exact * 1000 >= diffs.len() * 999,
        "{exact} of {} values exact",
        diffs.len()
    );
}

/// Partial loading (how stage 2 starts from a stage-1 file, and how an ablation reuses a
/// checkpoint): keys without a place are skipped, everything that fits is loaded, so the flow
/// estimator of a bilinear-sampling generator reproduces the official flows.
#[test]
fn partial_load_fills_what_fits() {
    use gfla_model::SourceSampling;
    use gfla_model::weights::load_generator_checkpoint;
    let device = device();
    let config = GeneratorConfig::market().with_sampling(SourceSampling::Bilinear);
    let mut g = config.init(&device);
    let path = testdata_dir().join("model/market_G_stress.pth");
    // Strictly, the local-attention keys are unexpected in this network.
    let strict = load_generator_checkpoint(&mut g, &config, &path, false)
        .unwrap_err()
        .to_string();
    assert!(
        strict.contains("4 unexpected: target.attn1.fully_connect_layer"),
        "{strict}"
    );
    let result = load_generator_checkpoint(&mut g, &config, &path, true).unwrap();
    assert_eq!(result.applied.len(), 188 - 4);
    let inputs = Vectors::open("model/market_inputs.safetensors");
    let [p1, bp1, bp2] = ["P1", "BP1", "BP2"].map(|k| inputs.tensor::<4>(k, &device));
    let (flows, _) = g
        .flow
        .as_ref()
        .unwrap()
        .forward(Tensor::cat(vec![p1, bp1, bp2], 1));
    let want: Vec<f64> = Vectors::open("model/market_stress_outputs.safetensors").values("flow_l2");
    assert_close(
        "flow of batch element 0",
        &values(flows[0].clone()),
        &want[..2 * 32 * 16],
        1e-4,
        0.0,
    );
}
