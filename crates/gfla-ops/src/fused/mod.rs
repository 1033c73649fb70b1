//! Fused local attention: the same values as the composed ops ([`crate::local_attention`],
//! [`crate::extract_blocks`]) without building the `k*k`-times larger block tensor, and with
//! a handwritten backward.
//!
//! On the Flex CPU backend and on the CubeCL GPU backends (wgpu, CUDA), in float32, these run
//! hand-written kernels registered as a Burn backend extension, with their own `Backward` under
//! autodiff; on every other backend, dtype or build they run the composed tensor ops, which
//! stay the reference the fused kernels are tested against.

use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{DType, Tensor};

use crate::attention::local_attention;
use crate::block::extract_blocks;
use crate::device::{Kernels, kernels};

#[cfg(any(feature = "flex", feature = "cube"))]
mod backend;
#[cfg(feature = "flex")]
mod cpu;
#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "flex")]
mod flex;

#[cfg(any(feature = "flex", feature = "cube"))]
pub use backend::FusedAttentionBackend;

/// Whether `t`'s backend and dtype have the fused kernels.
fn fused_available(t: &Tensor<4>) -> bool {
    t.dtype() == DType::F32 && kernels(t) != Kernels::None
}

fn check(source: &Tensor<4>, flow: &Tensor<4>, k: usize, op: &str) {
    let [b, _, _, _] = source.dims();
    let [bf, cf, _, _] = flow.dims();
    assert!(k > 0, "{op}: kernel size must be positive, got {k}");
    assert_eq!(
        cf,
        2,
        "{op}: flow must have 2 channels (x, y), got shape {:?}",
        flow.dims()
    );
    assert_eq!(
        b,
        bf,
        "{op}: source {:?} and flow {:?} differ in batch size",
        source.dims(),
        flow.dims()
    );
}

/// The local attention of [`crate::local_attention`], fused: for every cell of `flow`, the
/// `k x k` source neighbourhood at `cell + flow` is sampled bilinearly (border clamping) and
/// mixed with `weights` (`[B, k*k, h, w]`, channel `u*k + v`), divided by `k^2` as the
/// official op. Returns `[B, C, h, w]`.
///
/// Memory on the CPU: the output and a channels-last copy of 32 source channels at a time
/// (under autodiff, the backward adds channels-last copies of the source and of the upstream
/// gradient), never the `[B, C, k*h, k*w]` blocks. Gradients flow to source, flow and weights.
///
/// # Panics
/// On the shape errors of [`crate::local_attention`].
pub fn local_attention_fused(
    source: Tensor<4>,
    flow: Tensor<4>,
    weights: Tensor<4>,
    k: usize,
) -> Tensor<4> {
    let op = "local_attention_fused";
    check(&source, &flow, k, op);
    let [b, _, h, w] = flow.dims();
    assert_eq!(
        weights.dims(),
        [b, k * k, h, w],
        "{op}: weights {:?} must be [B, k*k, h, w] = {:?}",
        weights.dims(),
        [b, k * k, h, w]
    );
    if !(fused_available(&source) && fused_available(&flow) && fused_available(&weights)) {
        return local_attention(source, flow, weights, k);
    }
    #[cfg(any(feature = "flex", feature = "cube"))]
    {
        use burn::backend::Dispatch;
        Tensor::from_dispatch(<Dispatch as FusedAttentionBackend>::fused_local_attention(
            source.into_dispatch(),
            flow.into_dispatch(),
            weights.into_dispatch(),
            k,
        ))
    }
    #[cfg(not(any(feature = "flex", feature = "cube")))]
    unreachable!()
}

/// The sampled `k x k` neighbourhoods of [`crate::extract_blocks`], one row per cell:
/// `[B, h*w, k*k*C]`, column `(u*k + v)*C + c`. The official `k x k`, stride-`k` convolution
/// over the blocks is then one matrix product with its weight permuted to `[O, k, k, C]`.
///
/// # Panics
/// On the shape errors of [`crate::extract_blocks`].
pub fn extract_patches(source: Tensor<4>, flow: Tensor<4>, k: usize) -> Tensor<3> {
    check(&source, &flow, k, "extract_patches");
    if !(fused_available(&source) && fused_available(&flow)) {
        return extract_patches_composed(source, flow, k);
    }
    #[cfg(any(feature = "flex", feature = "cube"))]
    {
        use burn::backend::Dispatch;
        Tensor::from_dispatch(<Dispatch as FusedAttentionBackend>::fused_patches(
            source.into_dispatch(),
            flow.into_dispatch(),
            k,
        ))
    }
    #[cfg(not(any(feature = "flex", feature = "cube")))]
    unreachable!()
}

/// The official `k x k`, stride-`k` convolution (no bias) over the sampled blocks of
/// [`crate::extract_blocks`], `weight` `[O, C, k, k]`, returned as rows: `[B, h*w, O]`.
///
/// On the fused path the neighbourhoods are sampled a few dozen cells at a time into a tile
/// that is multiplied and dropped while in cache, forward and backward: the `k*k`-times larger
/// patch tensor never exists. Gradients flow to source, flow and weight.
pub fn sampled_convolution(
    source: Tensor<4>,
    flow: Tensor<4>,
    weight: Tensor<4>,
    k: usize,
) -> Tensor<3> {
    let op = "sampled_convolution";
    check(&source, &flow, k, op);
    let [_, c, _, _] = source.dims();
    let [o, cw, kh, kw] = weight.dims();
    assert!(
        cw == c && kh == k && kw == k,
        "{op}: weight {:?} does not fit {c} channels and k = {k}",
        weight.dims()
    );
    if !(fused_available(&source) && fused_available(&flow) && fused_available(&weight)) {
        let [b, _, h, w] = flow.dims();
        let rows = weight
            .permute([0, 2, 3, 1])
            .reshape([o, k * k * c])
            .transpose();
        return extract_patches_composed(source, flow, k)
            .reshape([b * h * w, k * k * c])
            .matmul(rows)
            .reshape([b, h * w, o]);
    }
    #[cfg(any(feature = "flex", feature = "cube"))]
    {
        use burn::backend::Dispatch;
        Tensor::from_dispatch(<Dispatch as FusedAttentionBackend>::fused_sampled_conv(
            source.into_dispatch(),
            flow.into_dispatch(),
            weight.into_dispatch(),
            k,
        ))
    }
    #[cfg(not(any(feature = "flex", feature = "cube")))]
    unreachable!()
}

/// [`extract_patches`] composed from [`crate::extract_blocks`]: the reference, and the path
/// of backends without fused kernels.
pub fn extract_patches_composed(source: Tensor<4>, flow: Tensor<4>, k: usize) -> Tensor<3> {
    let [b, c, _, _] = source.dims();
    let [_, _, h, w] = flow.dims();
    extract_blocks(source, flow, k)
        .reshape([b, c, h, k, w, k])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, h * w, k * k * c])
}

/// The parameters of the official `ExtractorAttn` kernel-prediction network
/// (`fully_connect_layer.{0,2}`): a `k x k`, stride-`k` convolution over the concatenated
/// (target, source) blocks, `[O, 2C, k, k]`, LeakyReLU, and a `1 x 1` convolution to the `k^2`
/// logits, `[k*k, O, 1, 1]`.
#[derive(Debug, Clone)]
pub struct KernelPrediction {
    pub fuse_weight: Tensor<4>,
    pub fuse_bias: Option<Tensor<1>>,
    pub logits_weight: Tensor<4>,
    pub logits_bias: Option<Tensor<1>>,
    /// LeakyReLU slope between the two convolutions (0.1 in the official networks).
    pub slope: f64,
}

/// The whole official `ExtractorAttn`: attention weights predicted from the target and
/// source neighbourhoods, then the local attention. Returns `(features [B, C, h, w], weights
/// [B, k*k, h, w])`; `source`, `target`: `[B, C, h, w]`, `flow`: `[B, 2, h, w]`.
///
/// The same sums as the official stride-`k` convolution over the concatenated
/// `[B, 2C, k*h, k*w]` blocks, without building them: the target half is an ordinary `k x k`
/// convolution over the edge-padded target, the source half a matrix product over
/// [`extract_patches`], and the pooling is [`local_attention_fused`].
pub fn extractor_attention(
    source: Tensor<4>,
    target: Tensor<4>,
    flow: Tensor<4>,
    net: &KernelPrediction,
    k: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, c, h, w] = target.dims();
    let [o, c2, kh, kw] = net.fuse_weight.dims();
    assert!(
        c2 == 2 * c && kh == k && kw == k,
        "extractor_attention: fuse weight {:?} does not fit {c} channels and k = {k}",
        net.fuse_weight.dims()
    );
    // The target half reads plain neighbourhoods with replicated borders: an ordinary
    // convolution over the edge-padded target (even k: the window reaches k/2 up-left).
    let (before, after) = (k / 2, k - 1 - k / 2);
    let padded = if before == after {
        crate::pad(target, before, PadMode::Edge)
    } else {
        target.pad((before, after, before, after), PadMode::Edge)
    };
    let z_target = crate::conv::conv2d(
        padded,
        net.fuse_weight.clone().slice_dim(1, 0..c),
        None,
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    )
    .permute([0, 2, 3, 1])
    .reshape([b * h * w, o]);
    let z_source = sampled_convolution(
        source.clone(),
        flow.clone(),
        net.fuse_weight.clone().slice_dim(1, c..2 * c),
        k,
    );
    let mut z = z_target + z_source.reshape([b * h * w, o]);
    if let Some(bias) = &net.fuse_bias {
        z = z + bias.clone().unsqueeze_dim(0);
    }
    let z = crate::leaky_relu(z, net.slope);
    let [kk, _, _, _] = net.logits_weight.dims();
    let mut logits = z.matmul(net.logits_weight.clone().reshape([kk, o]).transpose());
    if let Some(bias) = &net.logits_bias {
        logits = logits + bias.clone().unsqueeze_dim(0);
    }
    let logits = logits.reshape([b, h, w, kk]).permute([0, 3, 1, 2]);
    let weights = burn::tensor::activation::softmax(logits, 1);
    (
        local_attention_fused(source, flow, weights.clone(), k),
        weights,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};

    fn random(shape: [usize; 4], scale: f64, device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Uniform(-scale, scale), device)
    }

    /// Shapes with a flow map smaller than the source, odd and even k, batch 2, flows that
    /// reach far outside the map (border clamping), and channels over several slabs.
    const CASES: [([usize; 4], [usize; 2], usize); 5] = [
        ([2, 3, 6, 5], [6, 5], 3),
        ([1, 20, 7, 9], [4, 3], 5),
        ([2, 17, 5, 5], [5, 5], 2),
        ([1, 4, 3, 8], [3, 8], 1),
        ([2, 70, 4, 5], [4, 5], 3),
    ];

    fn check_attention(device: &Device, tolerance: f32) {
        for (shape, [h, w], k) in CASES {
            let b = shape[0];
            let source = random(shape, 1.0, device).require_grad();
            let flow = random([b, 2, h, w], 4.0, device).require_grad();
            let weights =
                burn::tensor::activation::softmax(random([b, k * k, h, w], 2.0, device), 1)
                    .detach()
                    .require_grad();
            let probe = random([b, shape[1], h, w], 1.0, device);
            let run = |fused: bool| {
                let out = if fused {
                    local_attention_fused(source.clone(), flow.clone(), weights.clone(), k)
                } else {
                    local_attention(source.clone(), flow.clone(), weights.clone(), k)
                };
                let grads = (out.clone() * probe.clone()).sum().backward();
                [
                    out.inner(),
                    source.grad(&grads).unwrap(),
                    flow.grad(&grads).unwrap(),
                    weights.grad(&grads).unwrap(),
                ]
            };
            let (fast, slow) = (run(true), run(false));
            for (name, (f, s)) in ["out", "source", "flow", "weights"]
                .iter()
                .zip(fast.into_iter().zip(slow))
            {
                assert_eq!(f.dims(), s.dims(), "{name} {shape:?} k={k}");
                f.into_data()
                    .assert_approx_eq::<f32>(&s.into_data(), Tolerance::absolute(tolerance));
            }
        }
    }

    #[test]
    fn fused_attention_equals_composed_values_and_gradients() {
        check_attention(&Device::flex().autodiff(), 2e-5);
    }

    fn check_patches(device: &Device) {
        for (shape, [h, w], k) in CASES {
            let b = shape[0];
            let source = random(shape, 1.0, device).require_grad();
            let flow = random([b, 2, h, w], 4.0, device).require_grad();
            let probe = Tensor::<3>::random(
                [b, h * w, k * k * shape[1]],
                Distribution::Uniform(-1.0, 1.0),
                device,
            );
            let run = |fused: bool| {
                let out = if fused {
                    extract_patches(source.clone(), flow.clone(), k)
                } else {
                    extract_patches_composed(source.clone(), flow.clone(), k)
                };
                let grads = (out.clone() * probe.clone()).sum().backward();
                (
                    out.inner(),
                    source.grad(&grads).unwrap(),
                    flow.grad(&grads).unwrap(),
                )
            };
            let (fast, slow) = (run(true), run(false));
            fast.0
                .into_data()
                .assert_approx_eq::<f32>(&slow.0.into_data(), Tolerance::absolute(1e-6));
            fast.1
                .into_data()
                .assert_approx_eq::<f32>(&slow.1.into_data(), Tolerance::absolute(2e-5));
            fast.2
                .into_data()
                .assert_approx_eq::<f32>(&slow.2.into_data(), Tolerance::absolute(2e-5));
        }
    }

    #[test]
    fn fused_patches_equal_composed_values_and_gradients() {
        check_patches(&Device::flex().autodiff());
    }

    fn check_sampled_convolution(device: &Device) {
        // 45 and 70 cells: several tiles of 32 and a partial one.
        for (shape, [h, w], k, o) in [
            ([2usize, 5, 9, 5], [9, 5], 3, 7),
            ([1, 3, 7, 10], [7, 10], 4, 5),
            ([1, 17, 6, 6], [3, 4], 5, 2),
        ] {
            let b = shape[0];
            let source = random(shape, 1.0, device).require_grad();
            let flow = random([b, 2, h, w], 4.0, device).require_grad();
            let weight = random([o, shape[1], k, k], 0.5, device).require_grad();
            let probe =
                Tensor::<3>::random([b, h * w, o], Distribution::Uniform(-1.0, 1.0), device);
            let run = |fused: bool| {
                let out = if fused {
                    sampled_convolution(source.clone(), flow.clone(), weight.clone(), k)
                } else {
                    let rows = weight
                        .clone()
                        .permute([0, 2, 3, 1])
                        .reshape([o, k * k * shape[1]])
                        .transpose();
                    extract_patches_composed(source.clone(), flow.clone(), k)
                        .reshape([b * h * w, k * k * shape[1]])
                        .matmul(rows)
                        .reshape([b, h * w, o])
                };
                let grads = (out.clone() * probe.clone()).sum().backward();
                [
                    out.inner().reshape([b * h * w * o]),
                    source.grad(&grads).unwrap().reshape([-1]),
                    flow.grad(&grads).unwrap().reshape([-1]),
                    weight.grad(&grads).unwrap().reshape([-1]),
                ]
            };
            let (fast, slow) = (run(true), run(false));
            for (f, s) in fast.into_iter().zip(slow) {
                f.into_data()
                    .assert_approx_eq::<f32>(&s.into_data(), Tolerance::absolute(1e-4));
            }
        }
    }

    #[test]
    fn fused_sampled_convolution_equals_composed_values_and_gradients() {
        check_sampled_convolution(&Device::flex().autodiff());
    }

    fn check_extractor_attention_for_even_k(device: &Device) {
        use crate::{attend_blocks, extract_blocks_identity};
        use burn::tensor::activation::{leaky_relu, softmax};
        use burn::tensor::module::conv2d;
        for k in [2usize, 4] {
            let (b, c, h, w, o) = (2, 3, 5, 6, 7);
            let source = random([b, c, h, w], 1.0, device).require_grad();
            let target = random([b, c, h, w], 1.0, device).require_grad();
            let flow = random([b, 2, h, w], 3.0, device).require_grad();
            let net = KernelPrediction {
                fuse_weight: random([o, 2 * c, k, k], 0.5, device).require_grad(),
                fuse_bias: Some(Tensor::<1>::ones([o], device) * 0.1),
                logits_weight: random([k * k, o, 1, 1], 0.5, device),
                logits_bias: None,
                slope: 0.1,
            };
            let (fast, _) =
                extractor_attention(source.clone(), target.clone(), flow.clone(), &net, k);
            let e_s = extract_blocks(source.clone(), flow.clone(), k);
            let x = Tensor::cat(
                vec![extract_blocks_identity(target.clone(), k), e_s.clone()],
                1,
            );
            let z = conv2d(
                x,
                net.fuse_weight.clone(),
                net.fuse_bias.clone(),
                ConvOptions::new([k, k], [0, 0], [1, 1], 1),
            );
            let a = conv2d(
                leaky_relu(z, 0.1),
                net.logits_weight.clone(),
                None,
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            );
            let slow = attend_blocks(e_s, softmax(a, 1), k);
            let probe = random([b, c, h, w], 1.0, device);
            let gf = (fast.clone() * probe.clone()).sum().backward();
            let gs = (slow.clone() * probe).sum().backward();
            fast.inner()
                .into_data()
                .assert_approx_eq::<f32>(&slow.inner().into_data(), Tolerance::absolute(1e-5));
            for t in [&source, &target, &flow, &net.fuse_weight] {
                t.grad(&gf).unwrap().into_data().assert_approx_eq::<f32>(
                    &t.grad(&gs).unwrap().into_data(),
                    Tolerance::absolute(1e-4),
                );
            }
        }
    }

    #[test]
    fn extractor_attention_equals_the_official_composition_for_even_k() {
        check_extractor_attention_for_even_k(&Device::flex().autodiff());
    }

    /// On a device without autodiff, with flows reaching 12 pixels outside the map.
    fn check_plain_device(device: &Device) {
        let source = random([2, 5, 6, 7], 1.0, device);
        assert!(fused_available(&source));
        let flow = random([2, 2, 6, 7], 12.0, device);
        let weights = Tensor::ones([2, 9, 6, 7], device) / 9.0;
        local_attention_fused(source.clone(), flow.clone(), weights.clone(), 3)
            .into_data()
            .assert_approx_eq::<f32>(
                &local_attention(source.clone(), flow.clone(), weights, 3).into_data(),
                Tolerance::absolute(1e-6),
            );
        extract_patches(source.clone(), flow.clone(), 4)
            .into_data()
            .assert_approx_eq::<f32>(
                &extract_patches_composed(source, flow, 4).into_data(),
                Tolerance::absolute(1e-6),
            );
    }

    #[test]
    fn untracked_inputs_and_plain_devices_take_the_fused_path() {
        check_plain_device(&Device::flex());
    }

    /// The same checks on the GPU kernels (lavapipe where there is no GPU).
    #[cfg(feature = "wgpu")]
    mod wgpu {
        use super::*;

        fn device() -> Device {
            Device::wgpu(Default::default())
        }

        #[test]
        fn fused_attention_equals_composed_values_and_gradients() {
            check_attention(&device().autodiff(), 2e-5);
        }

        #[test]
        fn fused_patches_equal_composed_values_and_gradients() {
            check_patches(&device().autodiff());
        }

        #[test]
        fn fused_sampled_convolution_equals_composed_values_and_gradients() {
            check_sampled_convolution(&device().autodiff());
        }

        #[test]
        fn extractor_attention_equals_the_official_composition_for_even_k() {
            check_extractor_attention_for_even_k(&device().autodiff());
        }

        #[test]
        fn untracked_inputs_and_plain_devices_take_the_fused_path() {
            check_plain_device(&device());
        }

        /// At the model's sizes (here 64 x 64 cells, k = 5: 102400 samples per channel) the
        /// composed ops are no reference on wgpu: Burn's `select` backward there drops the
        /// rows past index 65535. The CPU is, with the same inputs.
        #[test]
        fn fused_gradients_equal_the_cpu_ones_at_model_sizes() {
            let (c, h, k) = (3, 64, 5);
            let cpu = Device::flex();
            let inputs = [
                random([1, c, h, h], 1.0, &cpu),
                random([1, 2, h, h], 3.0, &cpu),
                burn::tensor::activation::softmax(random([1, k * k, h, h], 2.0, &cpu), 1),
                random([1, c, h, h], 1.0, &cpu),
            ];
            let run = |device: &Device| {
                let [source, flow, weights, probe] = inputs
                    .clone()
                    .map(|t| Tensor::<4>::from_data(t.into_data(), device));
                let [source, flow, weights] = [source, flow, weights].map(Tensor::require_grad);
                let out = local_attention_fused(source.clone(), flow.clone(), weights.clone(), k);
                let grads = (out * probe).sum().backward();
                [source, flow, weights].map(|t| t.grad(&grads).unwrap().into_data())
            };
            for (gpu, cpu) in run(&device().autodiff())
                .into_iter()
                .zip(run(&cpu.autodiff()))
            {
                gpu.assert_approx_eq::<f32>(&cpu, Tolerance::absolute(1e-6));
            }
        }
    }
}
