//! Forward values and gradients against the vectors computed with the official GFLA code
//! (`shared/testdata/ops`, tolerances from its README).

mod common;

use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use common::{Vectors, assert_close, autodiff, on_cpu, values};
use gfla_ops::*;

#[test]
fn block_extractor_matches_official_forward_and_backward() {
    let v = Vectors::open("ops/block_extractor.safetensors");
    let device = autodiff();
    for k in [3usize, 5] {
        let p = format!("k{k}.");
        let source = v
            .tensor::<4>(&(p.clone() + "source"), &device)
            .require_grad();
        let flow = v.tensor::<4>(&(p.clone() + "flow"), &device).require_grad();
        let r = v.tensor::<4>(&(p.clone() + "grad_output"), &device);
        let out = extract_blocks(source.clone(), flow.clone(), k);
        assert_eq!(out.dims(), [2, 4, 9 * k, 7 * k]);
        assert_close(
            &format!("k{k} output"),
            &values(out.clone()),
            &v.values(&(p.clone() + "output")),
            1e-6,
            0.0,
        );
        if on_cpu() {
            // The kernel-order arithmetic reproduces the float32 reference bit for bit.
            assert_eq!(
                values(out.clone()),
                v.values(&(p.clone() + "output")),
                "k{k} not bit-exact"
            );
        }
        let grads = (out * r).sum().backward();
        assert_close(
            &format!("k{k} grad_source"),
            &values(source.grad(&grads).unwrap()),
            &v.values(&(p.clone() + "grad_source.f64")),
            2e-5,
            0.0,
        );
        assert_close(
            &format!("k{k} grad_flow"),
            &values(flow.grad(&grads).unwrap()),
            &v.values(&(p.clone() + "grad_flow.f64")),
            2e-5,
            0.0,
        );
    }
}

#[test]
fn local_attn_reshape_is_the_official_permutation() {
    let v = Vectors::open("ops/local_attn_reshape.safetensors");
    let device = autodiff();
    for k in [3usize, 5] {
        let p = format!("k{k}.");
        let input = v
            .tensor::<4>(&(p.clone() + "input"), &device)
            .require_grad();
        let out = local_attn_reshape(input.clone(), k);
        assert_eq!(values(out.clone()), v.values(&(p.clone() + "output")));
        let grads = (out * v.tensor::<4>(&(p.clone() + "grad_output"), &device))
            .sum()
            .backward();
        assert_eq!(
            values(input.grad(&grads).unwrap()),
            v.values(&(p + "grad_input"))
        );
    }
}

/// The official `ExtractorAttn` forward, with its two convolutions written functionally
/// (`fused = false`), or [`extractor_attention`] (`fused = true`).
fn extractor_attn(
    w: &Vectors,
    device: &burn::tensor::Device,
    k: usize,
    fused: bool,
    source: Tensor<4>,
    target: Tensor<4>,
    flow: Tensor<4>,
) -> (Tensor<4>, Tensor<4>, [Tensor<4>; 2], [Tensor<1>; 2]) {
    let w0 = w
        .tensor::<4>("fully_connect_layer.0.weight", device)
        .require_grad();
    let b0 = w
        .tensor::<1>("fully_connect_layer.0.bias", device)
        .require_grad();
    let w2 = w
        .tensor::<4>("fully_connect_layer.2.weight", device)
        .require_grad();
    let b2 = w
        .tensor::<1>("fully_connect_layer.2.bias", device)
        .require_grad();
    if fused {
        let net = KernelPrediction {
            fuse_weight: w0.clone(),
            fuse_bias: Some(b0.clone()),
            logits_weight: w2.clone(),
            logits_bias: Some(b2.clone()),
            slope: 0.1,
        };
        let (out, a) = extractor_attention(source, target, flow, &net, k);
        return (out, a, [w0, w2], [b0, b2]);
    }
    let e_t = extract_blocks_identity(target, k);
    let e_s = extract_blocks(source, flow, k);
    let x = Tensor::cat(vec![e_t, e_s.clone()], 1);
    let z = leaky_relu(
        conv2d(
            x,
            w0.clone(),
            Some(b0.clone()),
            ConvOptions::new([k, k], [0, 0], [1, 1], 1),
        ),
        0.1,
    );
    let a = softmax(
        conv2d(
            z,
            w2.clone(),
            Some(b2.clone()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        ),
        1,
    );
    let out = attend_blocks(e_s, a.clone(), k);
    (out, a, [w0, w2], [b0, b2])
}

#[test]
fn local_attention_matches_official_extractor_attn() {
    let device = autodiff();
    for (k, fused) in [(3usize, false), (5, false), (3, true), (5, true)] {
        let v = Vectors::open(&format!("ops/extractor_attn_k{k}.safetensors"));
        let w = Vectors::open(&format!("ops/extractor_attn_k{k}_weights.safetensors"));
        let source = v.tensor::<4>("source", &device).require_grad();
        let target = v.tensor::<4>("target", &device).require_grad();
        let flow = v.tensor::<4>("flow", &device).require_grad();
        let (out, attn, [w0, w2], [b0, b2]) = extractor_attn(
            &w,
            &device,
            k,
            fused,
            source.clone(),
            target.clone(),
            flow.clone(),
        );
        assert_close(
            &format!("k{k} output"),
            &values(out.clone()),
            &v.values("output.f64"),
            1e-6,
            0.0,
        );
        assert_close(
            &format!("k{k} attn"),
            &values(attn),
            &v.values("attn_param.f64"),
            1e-6,
            0.0,
        );
        let grads = (out * v.tensor::<4>("R", &device)).sum().backward();
        let check = |name: &str, got: Vec<f64>| {
            assert_close(
                &format!("k{k} fused={fused} {name}"),
                &got,
                &v.values(&format!("{name}.f64")),
                1e-5,
                1e-5,
            )
        };
        check("grad_source", values(source.grad(&grads).unwrap()));
        // The true gradient, not the official CUDA kernel's (wrong for batch > 1).
        check("grad_target", values(target.grad(&grads).unwrap()));
        check("grad_flow", values(flow.grad(&grads).unwrap()));
        check(
            "grad.fully_connect_layer.0.weight",
            values(w0.grad(&grads).unwrap()),
        );
        check(
            "grad.fully_connect_layer.0.bias",
            values(b0.grad(&grads).unwrap()),
        );
        check(
            "grad.fully_connect_layer.2.weight",
            values(w2.grad(&grads).unwrap()),
        );
        check(
            "grad.fully_connect_layer.2.bias",
            values(b2.grad(&grads).unwrap()),
        );
        let cuda = v.values("grad_target_cuda_kernel");
        let truth = v.values("grad_target.f64");
        assert!(
            cuda.iter().zip(&truth).any(|(a, b)| (a - b).abs() > 1e-3),
            "the CUDA-kernel gradient should differ from the true one for batch 2"
        );
    }
}

#[test]
fn residual_projector_matches_official_kernel() {
    let v = Vectors::open("ops/affine_regularization.safetensors");
    for k in [3usize, 5] {
        assert_close(
            &format!("Q kz{k}"),
            &residual_projector(k),
            &v.values(&format!("kernel.kz{k}.f64")),
            1e-12,
            0.0,
        );
    }
}

#[test]
fn affine_regularization_matches_official_loss_and_gradient() {
    let v = Vectors::open("ops/affine_regularization.safetensors");
    let device = autodiff();
    let run = |flows: &[(&str, usize)], loss_key: &str, grad_keys: &[&str], loss_rtol: f64| {
        let tensors: Vec<Tensor<4>> = flows
            .iter()
            .map(|(key, _)| v.tensor::<4>(key, &device).require_grad())
            .collect();
        let loss = tensors
            .iter()
            .zip(flows)
            .map(|(t, (_, k))| affine_regularization(t.clone(), *k))
            .reduce(|a, b| a + b)
            .unwrap();
        assert_close(
            loss_key,
            &values(loss.clone()),
            &v.values(&format!("{loss_key}.f64")),
            0.0,
            loss_rtol,
        );
        let grads = loss.backward();
        for (t, key) in tensors.iter().zip(grad_keys) {
            assert_close(
                key,
                &values(t.grad(&grads).unwrap()),
                &v.values(&format!("{key}.f64")),
                0.0,
                2e-5,
            );
        }
    };
    run(
        &[("single.kz3.flow", 3)],
        "single.kz3.loss",
        &["single.kz3.grad_flow"],
        1e-5,
    );
    run(
        &[("single.kz5.flow", 5)],
        "single.kz5.loss",
        &["single.kz5.grad_flow"],
        1e-5,
    );
    // Dropping the identity grid analytically reproduces the float64 value far inside 3e-4.
    run(
        &[("fashion.flow0", 3), ("fashion.flow1", 5)],
        "fashion.loss",
        &["fashion.grad_flow0", "fashion.grad_flow1"],
        1e-5,
    );
    run(
        &[("market.flow0", 3)],
        "market.loss",
        &["market.grad_flow0"],
        1e-5,
    );
}

#[test]
fn sampling_correctness_matches_official_fashion_case() {
    let v = Vectors::open("ops/correctness.safetensors");
    let device = autodiff();
    let layers = [("relu4_1", "flow0"), ("relu3_1", "flow1")];
    let mut flows = vec![];
    let mut total = None;
    for (i, (layer, flow_key)) in layers.iter().enumerate() {
        let s = v.tensor::<4>(&format!("fashion.source.{layer}"), &device);
        let t = v.tensor::<4>(&format!("fashion.target.{layer}"), &device);
        let flow = v
            .tensor::<4>(&format!("fashion.{flow_key}"), &device)
            .require_grad();
        assert_close(
            &format!("resampled{i}"),
            &values(resample_gaussian(s.clone(), flow.clone())),
            &v.values(&format!("fashion.resampled{i}.f64")),
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("correction_max{i}"),
            &values(best_similarity(s.clone(), t.clone())),
            &v.values(&format!("fashion.correction_max{i}.f64")),
            0.0,
            1e-5,
        );
        let term = sampling_correctness(s, t, flow.clone());
        assert_close(
            &format!("term{i}"),
            &values(term.clone()),
            &v.values(&format!("fashion.term{i}.f64")),
            0.0,
            1e-5,
        );
        flows.push(flow);
        total = Some(match total {
            Some(acc) => acc + term,
            None => term,
        });
    }
    let total: Tensor<1> = total.unwrap();
    assert_close(
        "loss",
        &values(total.clone()),
        &v.values("fashion.loss.f64"),
        0.0,
        1e-5,
    );
    let grads = total.backward();
    for (i, flow) in flows.iter().enumerate() {
        assert_close(
            &format!("grad_flow{i}"),
            &values(flow.grad(&grads).unwrap()),
            &v.values(&format!("fashion.grad_flow{i}.f64")),
            0.0,
            1e-5,
        );
    }
}

#[test]
fn sampling_correctness_resizes_a_small_flow_nearest() {
    let v = Vectors::open("ops/correctness.safetensors");
    let device = autodiff();
    let s = v.tensor::<4>("interp.source.relu3_1", &device);
    let t = v.tensor::<4>("interp.target.relu3_1", &device);
    let flow = v.tensor::<4>("interp.flow0", &device).require_grad();
    let loss = sampling_correctness(s, t, flow.clone());
    assert_close(
        "interp loss",
        &values(loss.clone()),
        &v.values("interp.loss.f64"),
        0.0,
        1e-5,
    );
    let grads = loss.backward();
    assert_close(
        "interp grad_flow0",
        &values(flow.grad(&grads).unwrap()),
        &v.values("interp.grad_flow0.f64"),
        0.0,
        1e-5,
    );
}

#[test]
fn vgg_content_and_style_losses_match_official() {
    let v = Vectors::open("ops/vgg_losses.safetensors");
    let device = autodiff();
    let content_layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];
    let style_layers = ["relu2_2", "relu3_4", "relu4_4", "relu5_2"];
    let load = |side: &str, layers: &[&str]| -> Vec<Tensor<4>> {
        layers
            .iter()
            .map(|l| {
                v.tensor::<4>(&format!("{side}.{l}"), &device)
                    .require_grad()
            })
            .collect()
    };
    let (xc, yc) = (load("x", &content_layers), load("y", &content_layers));
    let content = content_loss(&xc, &yc);
    assert_close(
        "content",
        &values(content.clone()),
        &v.values("content_loss.f64"),
        0.0,
        1e-6,
    );
    let grads = content.backward();
    for (x, l) in xc.iter().zip(content_layers) {
        assert_close(
            &format!("grad_content {l}"),
            &values(x.grad(&grads).unwrap()),
            &v.values(&format!("grad_content.x.{l}.f64")),
            0.0,
            1e-6,
        );
    }
    let (xs, ys) = (load("x", &style_layers), load("y", &style_layers));
    let style = style_loss(&xs, &ys);
    assert_close(
        "style",
        &values(style.clone()),
        &v.values("style_loss.f64"),
        0.0,
        1e-6,
    );
    let grads = style.backward();
    for (x, l) in xs.iter().zip(style_layers) {
        assert_close(
            &format!("grad_style {l}"),
            &values(x.grad(&grads).unwrap()),
            &v.values(&format!("grad_style.x.{l}.f64")),
            0.0,
            1e-6,
        );
    }
}
