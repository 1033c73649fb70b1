//! The speed table of the README: the local attention and the whole generator against the
//! official networks in PyTorch on the same machine, with FLOP counts, throughput and the
//! peak memory of the attention and of a training step.
//!
//! `cargo bench --bench speed` (flex, all cores; `RAYON_NUM_THREADS=2` to match the PyTorch
//! figures' 2 threads on a bigger machine). Each time is the median of at least 3 runs (up to 61
//! within about 2 s) after a warm-up. Add `-- quick` to skip the batch-8 and training cases.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::tensor::activation::{leaky_relu, softmax};
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Distribution, Tensor};
use gfla_model::{GeneratorConfig, ModelSpec, flops};
use gfla_ops::{
    KernelPrediction, attend_blocks, extract_blocks, extract_blocks_identity, extractor_attention,
    local_attention, local_attention_fused,
};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the high-water mark of `f`, above what was live before it.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    drop(f());
    PEAK.load(Ordering::Relaxed) - before
}

/// Median seconds of `f` over at least 3 runs, and up to 61 within about 2 s, after one
/// warm-up run. (With at most 15, a Market pass was timed over 0.2 s, and a moment of the
/// shared host's slow state moved its median by a third.)
fn median<T>(mut f: impl FnMut() -> T) -> f64 {
    drop(f());
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < 2.0 && times.len() < 61) {
        let t = Instant::now();
        drop(f());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

struct Row {
    what: String,
    seconds: f64,
    pytorch: Option<f64>,
    target: &'static str,
    /// Multiply-accumulates of one run, when counted.
    macs: Option<u64>,
}

fn random(shape: [usize; 4], scale: f64, device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Uniform(-scale, scale), device)
}

/// The attention inputs at the DeepFashion 64 x 64 layer: C = 128, k = 5, batch 1.
struct AttentionCase {
    source: Tensor<4>,
    target: Tensor<4>,
    flow: Tensor<4>,
    weights: Tensor<4>,
    net: KernelPrediction,
}

const K: usize = 5;
const C: usize = 128;
const S: usize = 64;

impl AttentionCase {
    fn new(device: &Device, grad: bool) -> Self {
        let g = |t: Tensor<4>| if grad { t.require_grad() } else { t };
        let g1 = |t: Tensor<1>| if grad { t.require_grad() } else { t };
        Self {
            source: g(random([1, C, S, S], 1.0, device)),
            target: g(random([1, C, S, S], 1.0, device)),
            flow: g(random([1, 2, S, S], 4.0, device)),
            weights: g(softmax(random([1, K * K, S, S], 2.0, device), 1)),
            net: KernelPrediction {
                fuse_weight: g(random([128, 2 * C, K, K], 0.01, device)),
                fuse_bias: Some(g1(Tensor::zeros([128], device))),
                logits_weight: g(random([K * K, 128, 1, 1], 0.1, device)),
                logits_bias: Some(g1(Tensor::zeros([K * K], device))),
                slope: 0.1,
            },
        }
    }

    fn pool(&self, fused: bool) -> Tensor<4> {
        let (s, f, w) = (self.source.clone(), self.flow.clone(), self.weights.clone());
        if fused {
            local_attention_fused(s, f, w, K)
        } else {
            local_attention(s, f, w, K)
        }
    }

    /// The official `ExtractorAttn`, fused or composed as the official code does it.
    fn whole(&self, fused: bool) -> Tensor<4> {
        let (s, t, f) = (self.source.clone(), self.target.clone(), self.flow.clone());
        if fused {
            return extractor_attention(s, t, f, &self.net, K).0;
        }
        let e_s = extract_blocks(s, f, K);
        let x = Tensor::cat(vec![extract_blocks_identity(t, K), e_s.clone()], 1);
        let z = conv2d(
            x,
            self.net.fuse_weight.clone(),
            self.net.fuse_bias.clone(),
            ConvOptions::new([K, K], [0, 0], [1, 1], 1),
        );
        let a = conv2d(
            leaky_relu(z, 0.1),
            self.net.logits_weight.clone(),
            self.net.logits_bias.clone(),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        attend_blocks(e_s, softmax(a, 1), K)
    }
}

fn attention_rows(rows: &mut Vec<Row>, memory: &mut Vec<String>) {
    let plain = AttentionCase::new(&Device::flex(), false);
    let ad = AttentionCase::new(&Device::flex().autodiff(), true);
    let cells = (S * S) as u64;
    let whole_macs = cells * (2 * C * K * K * 128 + 128 * K * K) as u64;
    for fused in [true, false] {
        let name = if fused { "fused" } else { "composed" };
        rows.push(Row {
            what: format!("local attention k=5, 64x64, C=128, b1, forward ({name})"),
            seconds: median(|| plain.pool(fused).into_data()),
            pytorch: None,
            target: "<= 0.05 s",
            macs: None,
        });
        rows.push(Row {
            what: format!("local attention, forward + backward ({name})"),
            seconds: median(|| {
                let grads = ad.pool(fused).sum().backward();
                ad.flow.grad(&grads).unwrap().into_data()
            }),
            pytorch: None,
            target: "<= 0.2 s",
            macs: None,
        });
    }
    for fused in [true, false] {
        let name = if fused { "fused" } else { "composed" };
        rows.push(Row {
            what: format!("ExtractorAttn (kernel prediction + attention), forward ({name})"),
            seconds: median(|| plain.whole(fused).into_data()),
            pytorch: Some(0.414),
            target: "",
            macs: Some(whole_macs),
        });
        rows.push(Row {
            what: format!("ExtractorAttn, forward + backward ({name})"),
            seconds: median(|| {
                let grads = ad.whole(fused).sum().backward();
                ad.flow.grad(&grads).unwrap().into_data()
            }),
            pytorch: Some(1.28),
            target: "",
            macs: Some(3 * whole_macs),
        });
    }
    let map = C * S * S * 4;
    let mb = |b: usize| b as f64 / (1 << 20) as f64;
    for (fused, whole) in [(true, false), (false, false), (true, true), (false, true)] {
        let name = match (whole, fused) {
            (false, true) => "local attention (fused)",
            (false, false) => "local attention (composed)",
            (true, true) => "ExtractorAttn (fused)",
            (true, false) => "ExtractorAttn (composed)",
        };
        let run = |c: &AttentionCase| if whole { c.whole(fused) } else { c.pool(fused) };
        let fwd = peak_bytes(|| run(&plain));
        let both = peak_bytes(|| {
            let grads = run(&ad).sum().backward();
            ad.source.grad(&grads)
        });
        memory.push(format!(
            "| {name} | {:.1} MB ({:.1}x) | {:.1} MB ({:.1}x) |",
            mb(fwd),
            fwd as f64 / map as f64,
            mb(both),
            both as f64 / map as f64
        ));
    }
    memory.insert(
        0,
        format!(
            "Peak memory allocated during the call, against one 128 x 64 x 64 feature map ({:.1} MB):\n\n\
             | op | forward | forward + backward |\n|---|---|---|",
            mb(map)
        ),
    );
}

fn inputs(spec: &ModelSpec, batch: usize, device: &Device) -> [Tensor<4>; 3] {
    let [h, w] = spec.image_size;
    let u = |c: usize, lo: f64| {
        Tensor::<4>::random([batch, c, h, w], Distribution::Uniform(lo, 1.0), device)
    };
    [u(3, -1.0), u(18, 0.0), u(18, 0.0)]
}

fn generator_rows(rows: &mut Vec<Row>, memory: &mut Vec<String>, quick: bool) {
    let device = Device::flex();
    let cases: &[(ModelSpec, usize, Option<f64>, &'static str)] = &[
        (ModelSpec::market(), 1, Some(0.0276), "<= 0.014 s"),
        (ModelSpec::market(), 8, Some(0.189), "linear in batch"),
        (ModelSpec::fashion(), 1, Some(0.694), "<= 0.35 s"),
        (ModelSpec::fashion(), 8, Some(6.96), "linear in batch"),
    ];
    for (spec, batch, pytorch, target) in cases {
        if quick && *batch > 1 {
            continue;
        }
        let g = spec.config.init(&device);
        let [x, p1, p2] = inputs(spec, *batch, &device);
        let run = || {
            g.forward(x.clone(), p1.clone(), p2.clone())
                .image
                .into_data()
        };
        let (_, macs) = flops::count_macs(run);
        rows.push(Row {
            what: format!("{} G forward, batch {batch}", spec.name),
            seconds: median(run),
            pytorch: *pytorch,
            target,
            macs: Some(macs),
        });
        // The same with the opt-in bfloat16 products, where the CPU has them.
        if *batch == 1 && gfla_ops::conv::bf16_supported() {
            gfla_ops::conv::set_bf16_products(true);
            rows.push(Row {
                what: format!("{} G forward, batch {batch}, bf16 products", spec.name),
                seconds: median(run),
                pytorch: *pytorch,
                target,
                macs: Some(macs),
            });
            gfla_ops::conv::set_bf16_products(false);
        }
    }
    if quick {
        return;
    }
    let device = device.autodiff();
    for (spec, pytorch) in [
        (ModelSpec::market(), None),
        (ModelSpec::fashion(), Some(3.50)),
    ] {
        let g = GeneratorConfig::clone(&spec.config).init(&device);
        let [x, p1, p2] = inputs(&spec, 2, &device);
        let target = x.clone().flip([3]);
        let step = || {
            let out = g.forward(x.clone(), p1.clone(), p2.clone());
            (out.image - target.clone()).abs().mean().backward()
        };
        let (_, macs) = flops::count_macs(step);
        memory.push(format!(
            "\nPeak memory allocated during a {} G training step (batch 2): {:.0} MB",
            spec.name,
            peak_bytes(step) as f64 / (1 << 20) as f64
        ));
        rows.push(Row {
            what: format!(
                "{} G training step (forward, L1, backward), batch 2",
                spec.name
            ),
            seconds: median(step),
            pytorch,
            target: "faster than PyTorch",
            // The backward of a convolution costs about twice its forward.
            macs: Some(3 * macs),
        });
    }
}

fn main() {
    // Tensors freed on every step are reused, not mapped afresh (see the function).
    gfla_ops::reuse_freed_memory();
    let quick = std::env::args().any(|a| a == "quick");
    let device = Device::flex();
    let m = Tensor::<2>::random([1024, 1024], Distribution::Uniform(-1.0, 1.0), &device);
    let matmul = median(|| m.clone().matmul(m.clone()).into_data());
    let peak = gemm_peak();
    println!(
        "flex on {} threads; GEMM peak (1024^3, the gemm crate on all threads): {peak:.0} GFLOP/s; \
         Burn's matmul: {:.0} GFLOP/s\n",
        rayon_threads(),
        2.0 * 1024f64.powi(3) / matmul / 1e9
    );

    let mut rows = Vec::new();
    let mut memory = Vec::new();
    attention_rows(&mut rows, &mut memory);
    generator_rows(&mut rows, &mut memory, quick);

    println!("| case | gfla-rs | PyTorch | target | GFLOP | GFLOP/s (% of GEMM peak) |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let pytorch = r
            .pytorch
            .map(|p| format!("{p:.4} s ({:.1}x)", p / r.seconds))
            .unwrap_or_else(|| "—".into());
        let (gflop, rate) = match r.macs {
            Some(m) => {
                let g = 2.0 * m as f64 / 1e9;
                (
                    format!("{g:.2}"),
                    format!(
                        "{:.0} ({:.0} %)",
                        g / r.seconds,
                        100.0 * g / r.seconds / peak
                    ),
                )
            }
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {:.4} s | {pytorch} | {} | {gflop} | {rate} |",
            r.what, r.seconds, r.target
        );
    }
    println!("\n{}", memory.join("\n"));
    println!(
        "\nConvolutions of the DeepFashion generator:\n\n{}",
        conv_table(quick)
    );
    // The shared host's speed drifts over minutes: its state at both ends of the run.
    println!("\nGEMM peak again, at the end: {:.0} GFLOP/s", gemm_peak());
}

/// DeepFashion generator layers: Burn's convolution against `gfla_ops::conv`, forward and
/// forward + backward (gradients of input, weight and bias).
fn conv_table(quick: bool) -> String {
    struct Layer {
        name: &'static str,
        input: [usize; 4],
        weight: [usize; 4],
        stride: usize,
        padding: usize,
        transposed: bool,
    }
    let layer = |name, input, weight, stride, padding, transposed| Layer {
        name,
        input,
        weight,
        stride,
        padding,
        transposed,
    };
    let layers = [
        layer(
            "3x3, 64 -> 64, 128x128",
            [1, 64, 128, 128],
            [64, 64, 3, 3],
            1,
            1,
            false,
        ),
        layer(
            "3x3, 128 -> 128, 64x64",
            [1, 128, 64, 64],
            [128, 128, 3, 3],
            1,
            1,
            false,
        ),
        layer(
            "3x3, 256 -> 256, 32x32",
            [1, 256, 32, 32],
            [256, 256, 3, 3],
            1,
            1,
            false,
        ),
        layer(
            "4x4 stride 2, 64 -> 128, 128x128",
            [1, 64, 128, 128],
            [128, 64, 4, 4],
            2,
            1,
            false,
        ),
        layer(
            "3x3, 64 -> 3, 258x258 (output)",
            [1, 64, 258, 258],
            [3, 64, 3, 3],
            1,
            0,
            false,
        ),
        layer(
            "transposed 3x3 stride 2, 64 -> 64, 128x128",
            [1, 64, 128, 128],
            [64, 64, 3, 3],
            2,
            1,
            true,
        ),
    ];
    let mut out = vec![
        "| layer | pass | Burn | gfla-ops | speed-up | GFLOP/s (gfla-ops) |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for l in &layers {
        for backward in [false, true] {
            if backward && quick {
                continue;
            }
            let device = if backward {
                Device::flex().autodiff()
            } else {
                Device::flex()
            };
            let g = |t: Tensor<4>| if backward { t.require_grad() } else { t };
            let x = g(random(l.input, 1.0, &device));
            let w = g(random(l.weight, 0.1, &device));
            let o = if l.transposed {
                l.weight[1]
            } else {
                l.weight[0]
            };
            let b = Tensor::<1>::zeros([o], &device);
            let b = if backward { b.require_grad() } else { b };
            let run = |ours: bool| {
                let (xc, wc, bc) = (x.clone(), w.clone(), Some(b.clone()));
                let (s, p) = ([l.stride; 2], [l.padding; 2]);
                let y = if l.transposed {
                    let options = ConvTransposeOptions::new(s, p, [l.stride - 1; 2], [1, 1], 1);
                    if ours {
                        gfla_ops::conv::conv_transpose2d(xc, wc, bc, options)
                    } else {
                        conv_transpose2d(xc, wc, bc, options)
                    }
                } else {
                    let options = ConvOptions::new(s, p, [1, 1], 1);
                    if ours {
                        gfla_ops::conv::conv2d(xc, wc, bc, options)
                    } else {
                        conv2d(xc, wc, bc, options)
                    }
                };
                if backward {
                    let grads = y.sum().backward();
                    x.grad(&grads).unwrap().into_data()
                } else {
                    y.into_data()
                }
            };
            let (burn, ours) = (median(|| run(false)), median(|| run(true)));
            let [_, c, h, wd] = l.input;
            let [kh, kw] = [l.weight[2], l.weight[3]];
            let pixels = if l.transposed {
                h * wd
            } else {
                ((h + 2 * l.padding - kh) / l.stride + 1)
                    * ((wd + 2 * l.padding - kw) / l.stride + 1)
            };
            let passes = if backward { 3.0 } else { 1.0 };
            let gflop = passes * 2.0 * (c * o * kh * kw * pixels) as f64 / 1e9;
            out.push(format!(
                "| {} | {} | {burn:.4} s | {ours:.4} s | {:.1}x | {:.0} |",
                l.name,
                if backward {
                    "forward + backward"
                } else {
                    "forward"
                },
                burn / ours,
                gflop / ours
            ));
        }
    }
    out.join("\n")
}

/// GFLOP/s of a 1024^3 float32 product by the GEMM Burn's CPU backend and `gfla_ops::conv`
/// use, on rayon's threads: the throughput the table's percentages are of.
fn gemm_peak() -> f64 {
    let n = 1024;
    let (a, b) = (vec![0.5f32; n * n], vec![0.25f32; n * n]);
    let mut c = vec![0.0f32; n * n];
    let seconds = median(|| {
        // SAFETY: three distinct n x n row-major buffers.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        }
    });
    2.0 * (n * n * n) as f64 / seconds / 1e9
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
