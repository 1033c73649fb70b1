//! The official Market-1501 generator with bfloat16 products
//! (`gfla_ops::conv::set_bf16_products`), against the official float32 outputs. A test binary
//! of its own: the setting is process-wide, and the float32 reference tests must not see it.

#[path = "../../gfla-ops/tests/common/mod.rs"]
mod common;

use burn::tensor::Tensor;
use common::{Vectors, device, testdata_dir, values};
use gfla_model::GeneratorConfig;
use gfla_model::weights::load_generator;

fn max_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
}

#[test]
fn market_checkpoint_in_bf16_stays_close_to_the_official_outputs() {
    if !gfla_ops::conv::bf16_supported() {
        eprintln!("skipped: this CPU lacks AVX-512 BF16");
        return;
    }
    let device = device();
    let config = GeneratorConfig::market();
    let mut g = config.init(&device);
    load_generator(
        &mut g,
        &config,
        testdata_dir().join("model/market_G_stress.pth"),
    )
    .expect("the Market checkpoint loads");
    let inputs = Vectors::open("model/market_inputs.safetensors");
    let [p1, p2, bp1, bp2] = ["P1", "P2", "BP1", "BP2"].map(|k| inputs.tensor::<4>(k, &device));
    let run = || {
        g.forward(
            Tensor::cat(vec![p1.clone(), p2.clone()], 0),
            Tensor::cat(vec![bp1.clone(), bp2.clone()], 0),
            Tensor::cat(vec![bp2.clone(), bp1.clone()], 0),
        )
    };
    let want = Vectors::open("model/market_stress_outputs.safetensors");
    let f32_out = run();
    gfla_ops::conv::set_bf16_products(true);
    assert!(gfla_ops::conv::bf16_products());
    let out = run();
    gfla_ops::conv::set_bf16_products(false);
    // Measured: image 0.062 / 0.0064 (max / mean), flows 0.059 / 0.0100 px, masks 0.011 /
    // 0.0022; float32's errors are below 1e-5. Bounds at about 1.5 times those.
    for (name, got, exact, [max_bound, mean_bound]) in [
        ("img_gen", out.image, f32_out.image, [0.1, 0.01]),
        (
            "flow_l2",
            out.flows[0].clone(),
            f32_out.flows[0].clone(),
            [0.1, 0.015],
        ),
        (
            "mask_l2",
            out.masks[0].clone(),
            f32_out.masks[0].clone(),
            [0.02, 0.004],
        ),
    ] {
        let (got, exact, want) = (values(got), values(exact), want.values(name));
        let (e, e32) = (max_error(&got, &want), max_error(&exact, &want));
        let mean = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / got.len() as f64;
        eprintln!("{name}: bf16 max error {e:.5} mean {mean:.6}; float32 max error {e32:.2e}");
        assert!(
            e <= max_bound && mean <= mean_bound,
            "{name}: max {e}, mean {mean}"
        );
        // Rounded: the products did run in bfloat16.
        assert!(mean > 1e-4, "{name}: no rounding seen (mean error {mean})");
    }
}
