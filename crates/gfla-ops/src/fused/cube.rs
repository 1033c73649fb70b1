//! The fused ops on the CubeCL backend (wgpu, CUDA): kernels for `CubeBackend`, run through
//! Burn's fusion like every other op of its tensors, and a handwritten backward for
//! `Autodiff<Cube>`.
//!
//! One thread per output value: it computes its own sample positions (a few flops per tap, far
//! cheaper than storing them) and reads the four corners of each. The source gradient is a
//! scatter (any cell may sample any pixel), so it is accumulated with atomic adds: the float
//! atomic where the device has it, a compare-and-swap loop on the bits where it does not
//! (WGSL). Flow and weight gradients are gathers, one thread per cell and tap, summed over the
//! taps by a reduction, so they are deterministic.
//!
//! The sampled convolution is the patch kernel followed by Burn's matmul: unlike the CPU's
//! tiled version it stores the `k*k`-times larger patches, but once, where the composed ops
//! store the blocks and then their permuted copy.

use burn::backend::Cube;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use cubecl::features::AtomicUsage;
use cubecl::ir::FloatKind;
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};

use super::backend::FusedAttentionBackend;
use crate::autodiff::{backward_step, record};

/// The shape of a fused call. The kernels index contiguous tensors with it.
#[derive(CubeLaunch, CubeType)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    cells_w: usize,
    cells: usize,
    k: usize,
}

/// One bilinear sample: the four clamped corner pixels (top-left, top-right, bottom-left,
/// bottom-right) of a source plane, their weights and the fractions the weights come from.
#[derive(CubeType)]
struct Tap {
    i0: usize,
    i1: usize,
    i2: usize,
    i3: usize,
    w0: f32,
    w1: f32,
    w2: f32,
    w3: f32,
    alpha: f32,
    beta: f32,
}

/// The sample of cell `n` of batch item `b` at neighbourhood offset `j = u*k + v`, with the
/// official float order of the CPU kernels: `x = (flow_x + (v - k/2)) + x_cell`, floor,
/// fractions from the unclamped point, corners clamped after flooring.
#[cube]
fn tap(flow: &Tensor<f32>, g: &Geometry, b: usize, n: usize, j: usize) -> Tap {
    let half = f32::cast_from(g.k / 2);
    let u = f32::cast_from(j / g.k);
    let v = f32::cast_from(j % g.k);
    let at = b * 2 * g.cells + n;
    let x = (flow[at] + (v - half)) + f32::cast_from(n % g.cells_w);
    let y = (flow[at + g.cells] + (u - half)) + f32::cast_from(n / g.cells_w);
    let x0 = x.floor();
    let y0 = y.floor();
    let alpha = x - x0;
    let beta = y - y0;
    let x_max = f32::cast_from(g.width - 1);
    let y_max = f32::cast_from(g.height - 1);
    let cx0 = usize::cast_from(clamp(x0, 0.0, x_max));
    let cx1 = usize::cast_from(clamp(x0 + 1.0, 0.0, x_max));
    let cy0 = usize::cast_from(clamp(y0, 0.0, y_max)) * g.width;
    let cy1 = usize::cast_from(clamp(y0 + 1.0, 0.0, y_max)) * g.width;
    Tap {
        i0: cy0 + cx0,
        i1: cy0 + cx1,
        i2: cy1 + cx0,
        i3: cy1 + cx1,
        w0: (1.0 - alpha) * (1.0 - beta),
        w1: alpha * (1.0 - beta),
        w2: (1.0 - alpha) * beta,
        w3: alpha * beta,
        alpha,
        beta,
    }
}

/// `out[b, c, n] = 1/k^2 * sum_j weights[b, j, n] * sample_j(n)[c]`, one thread per output.
#[cube(launch)]
fn attend_kernel(
    source: &Tensor<f32>,
    flow: &Tensor<f32>,
    weights: &Tensor<f32>,
    out: &mut Tensor<f32>,
    g: &Geometry,
) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let n = ABSOLUTE_POS % g.cells;
    let c = (ABSOLUTE_POS / g.cells) % g.channels;
    let b = ABSOLUTE_POS / (g.cells * g.channels);
    let kk = g.k * g.k;
    let scale = 1.0 / f32::cast_from(kk);
    let plane = (b * g.channels + c) * g.height * g.width;
    let mut acc = 0.0f32;
    for j in 0..kk {
        let t = tap(flow, g, b, n, j);
        let a = weights[(b * kk + j) * g.cells + n] * scale;
        acc += (a * t.w0) * source[plane + t.i0];
        acc += (a * t.w1) * source[plane + t.i1];
        acc += (a * t.w2) * source[plane + t.i2];
        acc += (a * t.w3) * source[plane + t.i3];
    }
    out[ABSOLUTE_POS] = acc;
}

/// `out[b, n, j*C + c] = sample_j(n)[c]`, one thread per output.
#[cube(launch)]
fn patches_kernel(source: &Tensor<f32>, flow: &Tensor<f32>, out: &mut Tensor<f32>, g: &Geometry) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let kk = g.k * g.k;
    let c = ABSOLUTE_POS % g.channels;
    let j = (ABSOLUTE_POS / g.channels) % kk;
    let n = (ABSOLUTE_POS / (g.channels * kk)) % g.cells;
    let b = ABSOLUTE_POS / (g.channels * kk * g.cells);
    let t = tap(flow, g, b, n, j);
    let plane = (b * g.channels + c) * g.height * g.width;
    out[ABSOLUTE_POS] = t.w0 * source[plane + t.i0]
        + t.w1 * source[plane + t.i1]
        + t.w2 * source[plane + t.i2]
        + t.w3 * source[plane + t.i3];
}

/// Float addition into a buffer many threads write.
#[cube]
trait AtomicAdd: Send + Sync + 'static {
    /// How the buffer is viewed: `f32`, or its bits.
    type Proxy: Numeric;

    fn atomic_add(ptr: &mut Atomic<Self::Proxy>, value: f32);
}

/// The device's float atomic add.
#[derive(CubeType)]
struct NativeAdd;

/// A compare-and-swap loop on the bits, for devices without float atomics.
#[derive(CubeType)]
struct CasAdd;

#[cube]
impl AtomicAdd for NativeAdd {
    type Proxy = f32;

    fn atomic_add(ptr: &mut Atomic<f32>, value: f32) {
        ptr.fetch_add(value);
    }
}

#[cube]
impl AtomicAdd for CasAdd {
    type Proxy = u32;

    fn atomic_add(ptr: &mut Atomic<u32>, value: f32) {
        if value != 0.0 {
            let mut v = ptr.load();
            loop {
                let prev = v;
                let new = (f32::from_bits(v) + value).to_bits();
                v = ptr.compare_exchange_weak(v, new);
                if prev == v {
                    break;
                }
            }
        }
    }
}

/// Source gradient: one thread per `(b, n, j, c)` scatters `scale * w_q * upstream` into the
/// four corners it sampled. `weights` is `Some` for the attention pooling (upstream
/// `grad[b, c, n]`, scale `weights[b, j, n] / k^2`) and `None` for patches (upstream
/// `grad[b, n, j*C + c]`, scale 1).
#[cube(launch)]
fn source_grad_kernel<A: AtomicAdd>(
    flow: &Tensor<f32>,
    weights: ComptimeOption<&Tensor<f32>>,
    grad: &Tensor<f32>,
    grad_source: &mut Tensor<Atomic<A::Proxy>>,
    g: &Geometry,
) {
    let kk = g.k * g.k;
    if ABSOLUTE_POS >= g.batch * g.cells * kk * g.channels {
        terminate!();
    }
    let c = ABSOLUTE_POS % g.channels;
    let j = (ABSOLUTE_POS / g.channels) % kk;
    let n = (ABSOLUTE_POS / (g.channels * kk)) % g.cells;
    let b = ABSOLUTE_POS / (g.channels * kk * g.cells);
    let t = tap(flow, g, b, n, j);
    #[comptime]
    let scale = match &weights {
        ComptimeOption::Some(weights) => weights[(b * kk + j) * g.cells + n] / f32::cast_from(kk),
        ComptimeOption::None => 1.0f32,
    };
    let up = if weights.is_some() {
        grad[(b * g.channels + c) * g.cells + n]
    } else {
        grad[ABSOLUTE_POS]
    };
    let plane = (b * g.channels + c) * g.height * g.width;
    A::atomic_add(&mut grad_source[plane + t.i0], (scale * t.w0) * up);
    A::atomic_add(&mut grad_source[plane + t.i1], (scale * t.w1) * up);
    A::atomic_add(&mut grad_source[plane + t.i2], (scale * t.w2) * up);
    A::atomic_add(&mut grad_source[plane + t.i3], (scale * t.w3) * up);
}

/// Flow (and, for the attention pooling, weight) gradient: one thread per `(b, j, n)` takes the
/// dot products of the upstream channel vector with the four corners and writes tap `j`'s share
/// of the flow gradient, `flow_parts[b, axis, j, n]`, and the weight gradient
/// `grad_weights[b, j, n]`. The taps are summed afterwards.
#[cube(launch)]
fn flow_grad_kernel(
    source: &Tensor<f32>,
    flow: &Tensor<f32>,
    weights: ComptimeOption<&Tensor<f32>>,
    grad: &Tensor<f32>,
    flow_parts: &mut Tensor<f32>,
    grad_weights: ComptimeOption<&mut Tensor<f32>>,
    g: &Geometry,
) {
    let kk = g.k * g.k;
    if ABSOLUTE_POS >= g.batch * kk * g.cells {
        terminate!();
    }
    let n = ABSOLUTE_POS % g.cells;
    let j = (ABSOLUTE_POS / g.cells) % kk;
    let b = ABSOLUTE_POS / (g.cells * kk);
    let t = tap(flow, g, b, n, j);
    #[comptime]
    let scale = match &weights {
        ComptimeOption::Some(weights) => weights[(b * kk + j) * g.cells + n] / f32::cast_from(kk),
        ComptimeOption::None => 1.0f32,
    };
    // The upstream channel vector: a column of `grad[b, :, n]` for the attention pooling, a
    // contiguous run of `grad[b, n, j*C..]` for patches.
    let (first, stride) = if weights.is_some() {
        (b * g.channels * g.cells + n, g.cells)
    } else {
        (((b * g.cells + n) * kk + j) * g.channels, 1)
    };
    let pixels = g.height * g.width;
    let mut plane = b * g.channels * pixels;
    let mut d0 = 0.0f32;
    let mut d1 = 0.0f32;
    let mut d2 = 0.0f32;
    let mut d3 = 0.0f32;
    for c in 0..g.channels {
        let up = grad[first + c * stride];
        d0 += up * source[plane + t.i0];
        d1 += up * source[plane + t.i1];
        d2 += up * source[plane + t.i2];
        d3 += up * source[plane + t.i3];
        plane += pixels;
    }
    let part = (b * 2 * kk + j) * g.cells + n;
    flow_parts[part] = scale * ((1.0 - t.beta) * (d1 - d0) + t.beta * (d3 - d2));
    flow_parts[part + kk * g.cells] = scale * ((1.0 - t.alpha) * (d2 - d0) + t.alpha * (d3 - d1));
    #[comptime]
    if let ComptimeOption::Some(grad_weights) = grad_weights {
        grad_weights[ABSOLUTE_POS] =
            (t.w0 * d0 + t.w1 * d1 + t.w2 * d2 + t.w3 * d3) / f32::cast_from(kk);
    }
}

/// The geometry of `source` sampled at `flow` with `k x k` neighbourhoods.
fn geometry(source: &CubeTensor, flow: &CubeTensor, k: usize) -> GeometryLaunch {
    let [b, c, h, w] = source.meta.shape().dims();
    let [_, _, fh, fw] = flow.meta.shape().dims();
    GeometryLaunch::new(b, c, h, w, fw, fh * fw, k)
}

/// An uninitialised contiguous float32 tensor on `like`'s device.
fn empty(like: &CubeTensor, shape: impl Into<Shape>) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        DType::F32,
    )
}

/// The launch grid of `n` threads.
fn grid(like: &CubeTensor, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(&like.client, n);
    (calculate_cube_count_elemwise(&like.client, n, dim), dim)
}

fn attention_forward(
    source: CubeTensor,
    flow: CubeTensor,
    weights: CubeTensor,
    k: usize,
) -> CubeTensor {
    let (source, flow, weights) = (
        into_contiguous(source),
        into_contiguous(flow),
        into_contiguous(weights),
    );
    let [b, c, _, _] = source.meta.shape().dims();
    let [_, _, h, w] = flow.meta.shape().dims();
    let out = empty(&source, [b, c, h, w]);
    let (count, dim) = grid(&out, b * c * h * w);
    attend_kernel::launch(
        &out.client,
        count,
        dim,
        source.clone().into_tensor_arg(),
        flow.clone().into_tensor_arg(),
        weights.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        geometry(&source, &flow, k),
    );
    out
}

fn patches_forward(source: CubeTensor, flow: CubeTensor, k: usize) -> CubeTensor {
    let (source, flow) = (into_contiguous(source), into_contiguous(flow));
    let [b, c, _, _] = source.meta.shape().dims();
    let [_, _, h, w] = flow.meta.shape().dims();
    let out = empty(&source, [b, h * w, k * k * c]);
    let (count, dim) = grid(&out, b * h * w * k * k * c);
    patches_kernel::launch(
        &out.client,
        count,
        dim,
        source.clone().into_tensor_arg(),
        flow.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        geometry(&source, &flow, k),
    );
    out
}

/// Gradients of the attention pooling (`weights` given, `grad` `[B, C, h, w]`) or of the
/// patches (`grad` `[B, h*w, k*k*C]`): `(source, flow, weights)`. The source gradient is
/// zeros unless `want_source`, as its scatter is the expensive part.
fn backward(
    source: CubeTensor,
    flow: CubeTensor,
    weights: Option<CubeTensor>,
    grad: CubeTensor,
    k: usize,
    want_source: bool,
) -> (CubeTensor, CubeTensor, Option<CubeTensor>) {
    let (source, flow, grad) = (
        into_contiguous(source),
        into_contiguous(flow),
        into_contiguous(grad),
    );
    let weights = weights.map(into_contiguous);
    let source_shape = source.shape();
    let [b, _, _, _] = source_shape.dims();
    let [_, _, h, w] = flow.meta.shape().dims();
    let (kk, cells) = (k * k, h * w);

    let flow_parts = empty(&source, [b, 2, kk, cells]);
    let grad_weights = weights.as_ref().map(|_| empty(&source, [b, kk, h, w]));
    let (count, dim) = grid(&source, b * kk * cells);
    flow_grad_kernel::launch(
        &source.client,
        count,
        dim,
        source.clone().into_tensor_arg(),
        flow.clone().into_tensor_arg(),
        weights.clone().map(|t| t.into_tensor_arg()).into(),
        grad.clone().into_tensor_arg(),
        flow_parts.clone().into_tensor_arg(),
        grad_weights.clone().map(|t| t.into_tensor_arg()).into(),
        geometry(&source, &flow, k),
    );
    let grad_flow = CubeBackend::float_reshape(
        CubeBackend::float_sum_dim(flow_parts, 2),
        Shape::new([b, 2, h, w]),
    );

    let grad_source = if want_source {
        scatter_source_grad(&source, flow, weights, grad, k, native_float_add(&source))
    } else {
        zeros(&source, source_shape.num_elements())
    };
    (
        CubeBackend::float_reshape(grad_source, source_shape),
        grad_flow,
        grad_weights,
    )
}

/// A dense one-dimensional buffer of zeros: one dimension, so that no device layout pads it.
fn zeros(like: &CubeTensor, len: usize) -> CubeTensor {
    zeros_client(
        like.client.clone(),
        like.device.clone(),
        Shape::new([len]),
        DType::F32,
    )
}

/// Whether the device adds floats atomically (WGSL cannot; SPIR-V and CUDA can).
fn native_float_add(like: &CubeTensor) -> bool {
    like.client
        .properties()
        .atomic_type_usage(Type::atomic(FloatKind::F32))
        .contains(AtomicUsage::Add)
}

/// The source gradient (flattened) of [`backward`], scattered with the float atomic add or, if
/// not `native`, the compare-and-swap loop.
fn scatter_source_grad(
    source: &CubeTensor,
    flow: CubeTensor,
    weights: Option<CubeTensor>,
    grad: CubeTensor,
    k: usize,
    native: bool,
) -> CubeTensor {
    let grad_source = zeros(source, source.meta.num_elements());
    let launch = if native {
        source_grad_kernel::launch::<NativeAdd>
    } else {
        source_grad_kernel::launch::<CasAdd>
    };
    let [b, c, _, _] = source.meta.shape().dims();
    let [_, _, h, w] = flow.meta.shape().dims();
    let (count, dim) = grid(source, b * h * w * k * k * c);
    launch(
        &source.client,
        count,
        dim,
        flow.clone().into_tensor_arg(),
        weights.map(|t| t.into_tensor_arg()).into(),
        grad.into_tensor_arg(),
        grad_source.clone().into_tensor_arg(),
        geometry(source, &flow, k),
    );
    grad_source
}

/// The sampled convolution as the sampled patches times the weight in patch-column order
/// (`[O, C, k, k]` -> `[k*k*C, O]`). Under autodiff its gradient comes from those of the
/// patches and the product, so it needs no backward of its own.
fn sampled_conv_by_patches<B: FusedAttentionBackend>(
    source: FloatTensor<B>,
    flow: FloatTensor<B>,
    weight: FloatTensor<B>,
    k: usize,
) -> FloatTensor<B> {
    let [b, _, _, _] = source.shape().dims();
    let [_, _, h, w] = flow.shape().dims();
    let [o, c, _, _] = weight.shape().dims();
    let patches = B::float_reshape(
        B::fused_patches(source, flow, k),
        [b * h * w, k * k * c].into(),
    );
    let rows = B::float_reshape(
        B::float_permute(weight, &[2, 3, 1, 0]),
        [k * k * c, o].into(),
    );
    B::float_reshape(B::float_matmul(patches, rows), [b, h * w, o].into())
}

impl FusedAttentionBackend for CubeBackend {
    fn fused_local_attention(
        source: CubeTensor,
        flow: CubeTensor,
        weights: CubeTensor,
        k: usize,
    ) -> CubeTensor {
        attention_forward(source, flow, weights, k)
    }

    fn fused_patches(source: CubeTensor, flow: CubeTensor, k: usize) -> CubeTensor {
        patches_forward(source, flow, k)
    }

    fn fused_sampled_conv(
        source: CubeTensor,
        flow: CubeTensor,
        weight: CubeTensor,
        k: usize,
    ) -> CubeTensor {
        sampled_conv_by_patches::<Self>(source, flow, weight, k)
    }
}

/// The backward kernels, as an extension of their own so that fusion runs them in order with
/// the ops around them.
#[backend_extension(Cube, Fusion)]
pub trait FusedAttentionGrads: Backend {
    /// Gradients of [`FusedAttentionBackend::fused_local_attention`] given its output's:
    /// `(source, flow, weights)`; the source one is zeros unless `want_source`.
    #[fusion(meta = |source, flow, weights, _grad, _k, _want_source| {
        (source.clone(), flow.clone(), weights.clone())
    })]
    fn fused_local_attention_backward(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        k: usize,
        want_source: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients of [`FusedAttentionBackend::fused_patches`] given its output's:
    /// `(source, flow)`; the source one is zeros unless `want_source`.
    #[fusion(meta = |source, flow, _grad, _k, _want_source| (source.clone(), flow.clone()))]
    fn fused_patches_backward(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        k: usize,
        want_source: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedAttentionGrads for CubeBackend {
    fn fused_local_attention_backward(
        source: CubeTensor,
        flow: CubeTensor,
        weights: CubeTensor,
        grad: CubeTensor,
        k: usize,
        want_source: bool,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (gs, gf, gw) = backward(source, flow, Some(weights), grad, k, want_source);
        (
            gs,
            gf,
            gw.expect("the weights gradient of the attention pooling"),
        )
    }

    fn fused_patches_backward(
        source: CubeTensor,
        flow: CubeTensor,
        grad: CubeTensor,
        k: usize,
        want_source: bool,
    ) -> (CubeTensor, CubeTensor) {
        let (gs, gf, _) = backward(source, flow, None, grad, k, want_source);
        (gs, gf)
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Cube, 3> for AttentionBackward {
    type State = ([NodeId; 3], usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Cube, _, _>(ops, grads, cp, |[source, flow, weights], grad, k, want| {
            let (gs, gf, gw) =
                Cube::fused_local_attention_backward(source, flow, weights, grad, k, want[0]);
            [
                want[0].then_some(gs),
                want[1].then_some(gf),
                want[2].then_some(gw),
            ]
        });
    }
}

#[derive(Debug)]
struct PatchesBackward;

impl Backward<Cube, 2> for PatchesBackward {
    type State = ([NodeId; 2], usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Cube, _, _>(ops, grads, cp, |[source, flow], grad, k, want| {
            let (gs, gf) = Cube::fused_patches_backward(source, flow, grad, k, want[0]);
            [want[0].then_some(gs), want[1].then_some(gf)]
        });
    }
}

impl<C: CheckpointStrategy> FusedAttentionBackend for Autodiff<Cube, C> {
    fn fused_local_attention(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        let forward = || {
            Cube::fused_local_attention(
                source.primitive().clone(),
                flow.primitive().clone(),
                weights.primitive().clone(),
                k,
            )
        };
        record::<C, _, _, _, _>(AttentionBackward, [&source, &flow, &weights], k, forward)
    }

    fn fused_patches(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        let forward =
            || Cube::fused_patches(source.primitive().clone(), flow.primitive().clone(), k);
        record::<C, _, _, _, _>(PatchesBackward, [&source, &flow], k, forward)
    }

    fn fused_sampled_conv(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        sampled_conv_by_patches::<Self>(source, flow, weight, k)
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::backend::DispatchDevice;
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    /// The fallback for devices without float atomics scatters the same sums (lavapipe has
    /// both, so both run here).
    #[test]
    fn compare_and_swap_scatter_equals_the_float_atomic() {
        let device = Device::wgpu(Default::default());
        let DispatchDevice::Cube(cube) = device.clone().inner().as_dispatch().clone() else {
            unreachable!("a wgpu device is a cube device")
        };
        let random = |shape: [usize; 4], scale: f64| {
            let t = Tensor::<4>::random(shape, Distribution::Uniform(-scale, scale), &device);
            CubeBackend::float_from_data(t.into_data(), &cube)
        };
        let (b, c, k) = (2, 6, 3);
        let (source, flow) = (random([b, c, 7, 5], 1.0), random([b, 2, 4, 6], 6.0));
        let (weights, grad) = (random([b, k * k, 4, 6], 1.0), random([b, c, 4, 6], 1.0));
        let scatter = |native| {
            let out = scatter_source_grad(
                &source,
                flow.clone(),
                Some(weights.clone()),
                grad.clone(),
                k,
                native,
            );
            burn::tensor::read_sync(CubeBackend::float_into_data(out)).unwrap()
        };
        scatter(false).assert_approx_eq::<f32>(&scatter(true), Tolerance::absolute(1e-5));
    }
}
