//! The whole generator G at the released configurations: inference (forward, official weights'
//! shapes, random inputs) at batch 1 and 8, and a training step (forward, L1, backward).
//!
//! `cargo bench --bench generator` (add `-- market` to run only the Market cases). These are
//! the baselines of the speed issue (#6); the PyTorch figures in the README were measured on the
//! same machine with the official networks.

use std::time::Duration;

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gfla_model::{GeneratorConfig, ModelSpec};

fn inputs(spec: &ModelSpec, batch: usize, device: &Device) -> [Tensor<4>; 3] {
    let [h, w] = spec.image_size;
    let u = |c: usize, lo: f64| {
        Tensor::<4>::random([batch, c, h, w], Distribution::Uniform(lo, 1.0), device)
    };
    [u(3, -1.0), u(18, 0.0), u(18, 0.0)]
}

fn forward(c: &mut Criterion) {
    // As the workspace's binaries do (see the function).
    gfla_ops::reuse_freed_memory();
    let device = Device::flex();
    let mut group = c.benchmark_group("generator_forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (spec, batch) in [
        (ModelSpec::market(), 1),
        (ModelSpec::market(), 8),
        (ModelSpec::fashion(), 1),
    ] {
        let g = spec.config.init(&device);
        let [x, p1, p2] = inputs(&spec, batch, &device);
        group.bench_function(
            BenchmarkId::new(spec.name.clone(), format!("b{batch}")),
            |b| {
                b.iter(|| {
                    let out = g.forward(x.clone(), p1.clone(), p2.clone());
                    out.image.into_data()
                })
            },
        );
    }
    group.finish();
}

fn training_step(c: &mut Criterion) {
    gfla_ops::reuse_freed_memory();
    let device = Device::flex().autodiff();
    let mut group = c.benchmark_group("generator_train_step");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    for (spec, batch) in [(ModelSpec::market(), 2), (ModelSpec::fashion(), 2)] {
        let g = GeneratorConfig::clone(&spec.config).init(&device);
        let [x, p1, p2] = inputs(&spec, batch, &device);
        let target = x.clone().flip([3]);
        group.bench_function(
            BenchmarkId::new(spec.name.clone(), format!("b{batch}")),
            |b| {
                b.iter(|| {
                    let out = g.forward(x.clone(), p1.clone(), p2.clone());
                    let loss = (out.image - target.clone()).abs().mean();
                    loss.backward()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, forward, training_step);
criterion_main!(benches);
