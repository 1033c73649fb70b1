//! Local attention at the DeepFashion shapes: forward, and forward + backward.
//!
//! `cargo bench --bench attention` (add `-- 'b1'` to run only batch 1; `-- fused` for the
//! fused path only). The measured op is the whole official `ExtractorAttn`, fused
//! (`gfla_ops::extractor_attention`) and composed as the official code does it: target and
//! source block extraction, the kernel-prediction convolutions (k x k stride k, 2C -> 128,
//! LeakyReLU 0.1, 1 x 1 -> k^2, softmax) and the attention pooling. The backward pass computes the gradients of source, target, flow and the
//! four parameters. Set `GFLA_BENCH_DEVICE=wgpu` (with `--features wgpu`) to run on a GPU.

use std::time::Duration;

use burn::tensor::activation::{leaky_relu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gfla_ops::{
    KernelPrediction, attend_blocks, extract_blocks, extract_blocks_identity, extractor_attention,
};

fn device() -> Device {
    match std::env::var("GFLA_BENCH_DEVICE").as_deref() {
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => Device::wgpu(Default::default()),
        Ok("flex") | Err(_) => Device::flex(),
        Ok(other) => panic!("GFLA_BENCH_DEVICE={other}: not enabled in this build"),
    }
}

struct Case {
    channels: usize,
    size: usize,
    k: usize,
    batch: usize,
}

struct Inputs {
    source: Tensor<4>,
    target: Tensor<4>,
    flow: Tensor<4>,
    params: [Tensor<4>; 2],
    biases: [Tensor<1>; 2],
}

impl Inputs {
    fn new(case: &Case, device: &Device) -> Self {
        let Case {
            channels: c,
            size: s,
            k,
            batch: b,
        } = *case;
        let u = |shape: [usize; 4], scale: f64| {
            Tensor::<4>::random(shape, Distribution::Uniform(-scale, scale), device)
        };
        Self {
            source: u([b, c, s, s], 1.0),
            target: u([b, c, s, s], 1.0),
            flow: u([b, 2, s, s], 4.0),
            params: [u([128, 2 * c, k, k], 0.01), u([k * k, 128, 1, 1], 0.1)],
            biases: [Tensor::zeros([128], device), Tensor::zeros([k * k], device)],
        }
    }

    fn require_grad(self) -> Self {
        Self {
            source: self.source.require_grad(),
            target: self.target.require_grad(),
            flow: self.flow.require_grad(),
            params: self.params.map(|p| p.require_grad()),
            biases: self.biases.map(|p| p.require_grad()),
        }
    }
}

/// The official `ExtractorAttn` forward: fused ([`extractor_attention`]) or composed as the
/// official code computes it (blocks, convolution over them, pooling).
fn extractor_attn(x: &Inputs, k: usize, fused: bool) -> Tensor<4> {
    if fused {
        let net = KernelPrediction {
            fuse_weight: x.params[0].clone(),
            fuse_bias: Some(x.biases[0].clone()),
            logits_weight: x.params[1].clone(),
            logits_bias: Some(x.biases[1].clone()),
            slope: 0.1,
        };
        let (source, target, flow) = (x.source.clone(), x.target.clone(), x.flow.clone());
        return extractor_attention(source, target, flow, &net, k).0;
    }
    let e_t = extract_blocks_identity(x.target.clone(), k);
    let e_s = extract_blocks(x.source.clone(), x.flow.clone(), k);
    let z = conv2d(
        Tensor::cat(vec![e_t, e_s.clone()], 1),
        x.params[0].clone(),
        Some(x.biases[0].clone()),
        ConvOptions::new([k, k], [0, 0], [1, 1], 1),
    );
    let a = conv2d(
        leaky_relu(z, 0.1),
        x.params[1].clone(),
        Some(x.biases[1].clone()),
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    attend_blocks(e_s, softmax(a, 1), k)
}

fn bench(c: &mut Criterion) {
    let device = device();
    let cases = [
        Case {
            channels: 128,
            size: 64,
            k: 5,
            batch: 1,
        },
        Case {
            channels: 256,
            size: 32,
            k: 3,
            batch: 1,
        },
        Case {
            channels: 128,
            size: 64,
            k: 5,
            batch: 8,
        },
        Case {
            channels: 256,
            size: 32,
            k: 3,
            batch: 8,
        },
    ];
    let mut group = c.benchmark_group("local_attention");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for case in &cases {
        let id = format!(
            "C{}_{}x{}_k{}_b{}",
            case.channels, case.size, case.size, case.k, case.batch
        );
        let inputs = Inputs::new(case, &device);
        let ad = device.clone().autodiff();
        let tracked = Inputs::new(case, &ad).require_grad();
        for (fused, path) in [(true, "fused"), (false, "composed")] {
            group.bench_function(BenchmarkId::new(format!("forward_{path}"), &id), |bench| {
                bench.iter(|| extractor_attn(&inputs, case.k, fused).into_data())
            });
            group.bench_function(
                BenchmarkId::new(format!("forward_backward_{path}"), &id),
                |bench| {
                    bench.iter(|| {
                        let grads = extractor_attn(&tracked, case.k, fused).sum().backward();
                        tracked
                            .flow
                            .grad(&grads)
                            .expect("flow gradient")
                            .into_data()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
