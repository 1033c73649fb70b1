//! The fused ops on the Flex CPU backend: its kernels and a handwritten backward for
//! `Autodiff<Flex>`.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;

use super::backend::FusedAttentionBackend;
use super::cpu::{self, Geometry, Upstream};
use crate::autodiff::{backward_step, record};
use crate::conv::cache::{self, Purpose};
use crate::conv::{bf16, panel};
use crate::simd::{tensor, values};

fn geometry(source: &FlexTensor, flow: &FlexTensor, k: usize) -> (usize, Geometry) {
    let s = source.layout().shape();
    let f = flow.layout().shape();
    (
        s[0],
        Geometry {
            channels: s[1],
            source_hw: [s[2], s[3]],
            cells_hw: [f[2], f[3]],
            k,
        },
    )
}

/// Per batch item: the source channels-last and this item's flow.
fn items<'a>(
    g: &Geometry,
    source: &'a [f32],
    flow: &'a [f32],
    b: usize,
) -> impl Iterator<Item = (Vec<f32>, &'a [f32])> + 'a {
    let (src_len, flow_len) = (g.channels * g.pixels(), 2 * g.cells());
    let channels = g.channels;
    (0..b).map(move |i| {
        (
            cpu::to_channels_last(&source[i * src_len..(i + 1) * src_len], channels),
            &flow[i * flow_len..(i + 1) * flow_len],
        )
    })
}

/// Channels per slab of the forward attention: the channels-last copy it needs is a quarter
/// of a 128-channel map, so the call's peak stays below twice the feature map.
const SLAB: usize = 32;

fn attention_forward(
    source: &FlexTensor,
    flow: &FlexTensor,
    weights: &FlexTensor,
    k: usize,
) -> FlexTensor {
    let (b, g) = geometry(source, flow, k);
    let (src, fl, w) = (values(source), values(flow), values(weights));
    let w_len = g.taps() * g.cells();
    let (src_len, out_len) = (g.channels * g.pixels(), g.channels * g.cells());
    let mut out = vec![0.0f32; b * out_len];
    for i in 0..b {
        let flow_i = &fl[i * 2 * g.cells()..(i + 1) * 2 * g.cells()];
        let weights_i = &w[i * w_len..(i + 1) * w_len];
        let (src_i, out_i) = (
            &src[i * src_len..(i + 1) * src_len],
            &mut out[i * out_len..(i + 1) * out_len],
        );
        // Channels are independent: a slab's planar source and output are contiguous ranges.
        for c0 in (0..g.channels).step_by(SLAB) {
            let slab = Geometry {
                channels: SLAB.min(g.channels - c0),
                ..g
            };
            let planar = &src_i[c0 * g.pixels()..(c0 + slab.channels) * g.pixels()];
            let out_slab = &mut out_i[c0 * g.cells()..(c0 + slab.channels) * g.cells()];
            let src_cl = cpu::to_channels_last(planar, slab.channels);
            cpu::attend_forward(&slab, &src_cl, flow_i, weights_i, out_slab);
        }
    }
    tensor(out, [b, g.channels, g.cells_hw[0], g.cells_hw[1]])
}

fn patches_forward(source: &FlexTensor, flow: &FlexTensor, k: usize) -> FlexTensor {
    let (b, g) = geometry(source, flow, k);
    let (src, fl) = (values(source), values(flow));
    let mut out = Vec::with_capacity(b * g.cells() * g.channels * g.taps());
    for (src_cl, flow_i) in items(&g, &src, &fl, b) {
        out.extend(cpu::patches_forward(&g, &src_cl, flow_i));
    }
    tensor(out, [b, g.cells(), g.channels * g.taps()])
}

/// Gradients of a fused op over a batch: `[source, flow, weights]`, each `None` unless wanted.
fn backward(
    source: &FlexTensor,
    flow: &FlexTensor,
    weights: Option<&FlexTensor>,
    grad: &FlexTensor,
    k: usize,
    want: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let (b, g) = geometry(source, flow, k);
    let (src, fl, gr) = (values(source), values(flow), values(grad));
    let w = weights.map(values);
    let (w_len, g_len) = (
        g.taps() * g.cells(),
        if w.is_some() {
            g.channels * g.cells()
        } else {
            g.channels * g.taps() * g.cells()
        },
    );
    let mut acc: [Vec<f32>; 3] = Default::default();
    for (i, (src_cl, flow_i)) in items(&g, &src, &fl, b).enumerate() {
        let grad_i = &gr[i * g_len..(i + 1) * g_len];
        let grad_cl;
        let up = match &w {
            Some(w) => {
                grad_cl = cpu::to_channels_last(grad_i, g.channels);
                Upstream::Attend {
                    grad: &grad_cl,
                    weights: &w[i * w_len..(i + 1) * w_len],
                }
            }
            None => Upstream::Patches {
                grad: grad_i,
                first: 0,
            },
        };
        let grads = cpu::backward(&g, &src_cl, flow_i, up, want);
        acc[0].extend(grads.source);
        acc[1].extend(grads.flow);
        acc[2].extend(grads.weights);
    }
    let [s, f, w] = acc;
    [
        want[0].then(|| tensor(s, [b, g.channels, g.source_hw[0], g.source_hw[1]])),
        want[1].then(|| tensor(f, [b, 2, g.cells_hw[0], g.cells_hw[1]])),
        (want[2] && weights.is_some())
            .then(|| tensor(w, [b, g.taps(), g.cells_hw[0], g.cells_hw[1]])),
    ]
}

/// The sampled convolution's weight as its products read it: rows `[k*k*C, O]` packed in
/// panels, and in bfloat16 pairs once a product in bfloat16 asks for them.
struct SampledKernel {
    panels: crate::simd::Aligned<f32>,
    pairs: std::sync::OnceLock<crate::simd::Aligned<u32>>,
}

impl SampledKernel {
    fn new(weight: &FlexTensor, o: usize, g: &Geometry) -> Self {
        let rows = cpu::weight_rows(&values(weight), o, g);
        let panels = panel::pack(&rows, 1, g.channels * g.taps(), o, panel::LANES);
        Self {
            panels,
            pairs: Default::default(),
        }
    }
}

/// `constant`: the weight needs no gradient, so its packed kernel is kept between calls, as a
/// convolution's ([`crate::conv::set_kernel_cache_limit`]); `bf16` (only with `constant`): the
/// products in bfloat16 ([`crate::conv::set_bf16_products`]).
fn sampled_conv_forward(
    source: &FlexTensor,
    flow: &FlexTensor,
    weight: &FlexTensor,
    k: usize,
    [constant, bf16]: [bool; 2],
) -> FlexTensor {
    let (b, g) = geometry(source, flow, k);
    let o = weight.layout().shape()[0];
    let (src, fl) = (values(source), values(flow));
    let row = g.channels * g.taps();
    let kernel = if constant {
        let purpose = Purpose::Sampled {
            rows: row,
            out_channels: o,
        };
        let bytes = |k: &SampledKernel| 4 * (k.panels.len() + k.pairs.get().map_or(0, |p| p.len()));
        cache::prepared(weight, purpose, bytes, |_| {
            SampledKernel::new(weight, o, &g)
        })
    } else {
        std::sync::Arc::new(SampledKernel::new(weight, o, &g))
    };
    let pairs = (constant && bf16).then(|| {
        kernel
            .pairs
            .get_or_init(|| bf16::pack_pairs(&kernel.panels, row, panel::LANES)) as &[u32]
    });
    let mut out = Vec::with_capacity(b * g.cells() * o);
    for (src_cl, flow_i) in items(&g, &src, &fl, b) {
        out.extend(cpu::sampled_conv_forward(
            &g,
            &src_cl,
            flow_i,
            &kernel.panels,
            pairs,
            o,
        ));
    }
    tensor(out, [b, g.cells(), o])
}

/// Gradients of the sampled convolution: `[source, flow, weight]`, each `None` unless wanted.
fn sampled_conv_backward(
    source: &FlexTensor,
    flow: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
    k: usize,
    want: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let (b, g) = geometry(source, flow, k);
    let o = weight.layout().shape()[0];
    let (src, fl, gr) = (values(source), values(flow), values(grad));
    let w = cpu::weight_rows(&values(weight), o, &g);
    let g_len = g.cells() * o;
    let (mut gs, mut gf) = (Vec::new(), Vec::new());
    let mut gw = vec![0.0f32; if want[2] { w.len() } else { 0 }];
    for (i, (src_cl, flow_i)) in items(&g, &src, &fl, b).enumerate() {
        let dz = &gr[i * g_len..(i + 1) * g_len];
        let grads = cpu::sampled_conv_backward(&g, &src_cl, flow_i, &w, o, dz, want);
        gs.extend(grads.source);
        gf.extend(grads.flow);
        for (a, x) in gw.iter_mut().zip(&grads.weight) {
            *a += x;
        }
    }
    let weight_shape = weight.layout().shape().clone();
    [
        want[0].then(|| tensor(gs, [b, g.channels, g.source_hw[0], g.source_hw[1]])),
        want[1].then(|| tensor(gf, [b, 2, g.cells_hw[0], g.cells_hw[1]])),
        want[2].then(|| tensor(cpu::weight_from_rows(&gw, o, &g), weight_shape)),
    ]
}

impl FusedAttentionBackend for Flex {
    fn fused_local_attention(
        source: FlexTensor,
        flow: FlexTensor,
        weights: FlexTensor,
        k: usize,
    ) -> FlexTensor {
        attention_forward(&source, &flow, &weights, k)
    }

    fn fused_patches(source: FlexTensor, flow: FlexTensor, k: usize) -> FlexTensor {
        patches_forward(&source, &flow, k)
    }

    fn fused_sampled_conv(
        source: FlexTensor,
        flow: FlexTensor,
        weight: FlexTensor,
        k: usize,
    ) -> FlexTensor {
        let bf16 = crate::conv::bf16_products();
        sampled_conv_forward(&source, &flow, &weight, k, [true, bf16])
    }
}

#[derive(Debug)]
struct SampledConvBackward;

impl Backward<Flex, 3> for SampledConvBackward {
    type State = ([NodeId; 3], usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Flex, _, _>(ops, grads, cp, |[source, flow, weight], grad, k, want| {
            sampled_conv_backward(&source, &flow, &weight, &grad, k, want)
        });
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = ([NodeId; 3], usize);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Flex, _, _>(ops, grads, cp, |[source, flow, weights], grad, k, want| {
            backward(&source, &flow, Some(&weights), &grad, k, want)
        });
    }
}

#[derive(Debug)]
struct PatchesBackward;

impl Backward<Flex, 2> for PatchesBackward {
    type State = ([NodeId; 2], usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        backward_step::<Flex, _, _>(ops, grads, cp, |[source, flow], grad, k, [ws, wf]| {
            let [gs, gf, _] = backward(&source, &flow, None, &grad, k, [ws, wf, false]);
            [gs, gf]
        });
    }
}

impl<C: CheckpointStrategy> FusedAttentionBackend for Autodiff<Flex, C> {
    fn fused_local_attention(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        record::<C, _, _, _, _>(AttentionBackward, [&source, &flow, &weights], k, || {
            attention_forward(source.primitive(), flow.primitive(), weights.primitive(), k)
        })
    }

    fn fused_patches(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        record::<C, _, _, _, _>(PatchesBackward, [&source, &flow], k, || {
            patches_forward(source.primitive(), flow.primitive(), k)
        })
    }

    fn fused_sampled_conv(
        source: FloatTensor<Self>,
        flow: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        // As the convolutions: kept, and bfloat16, only for a weight that needs no gradient.
        let constant = !weight.is_tracked();
        let bf16 = crate::conv::bf16_products();
        record::<C, _, _, _, _>(SampledConvBackward, [&source, &flow, &weight], k, || {
            sampled_conv_forward(
                source.primitive(),
                flow.primitive(),
                weight.primitive(),
                k,
                [constant, bf16],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::bf16::to_bf16;

    use crate::testing::lcg;

    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|&v| f32::from_bits((to_bf16(v) as u32) << 16))
            .collect()
    }

    /// With whole-pixel flows every sample is a source value (or a zero outside), so the
    /// bfloat16 products must equal float32's over the rounded source and weight. 20 outputs:
    /// a pair of panels, the second partial; 45 cells.
    #[test]
    fn bf16_sampled_convolution_is_the_float32_one_of_rounded_values() {
        if !crate::conv::bf16_supported() {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
            return;
        }
        let ([b, c, h, w], k, o) = ([1, 5, 9, 5], 3, 20);
        let source = lcg(b * c * h * w, 1, 2.0);
        let flow: Vec<f32> = lcg(b * 2 * h * w, 2, 6.0)
            .iter()
            .map(|v| v.round())
            .collect();
        let weight = lcg(o * c * k * k, 3, 1.0);
        let run = |source: &[f32], weight: &[f32], bf16: bool| {
            let out = sampled_conv_forward(
                &tensor(source.to_vec(), [b, c, h, w]),
                &tensor(flow.clone(), [b, 2, h, w]),
                &tensor(weight.to_vec(), [o, c, k, k]),
                k,
                [true, bf16],
            );
            values(&out).to_vec()
        };
        let got = run(&source, &weight, true);
        let want = run(&rounded(&source), &rounded(&weight), false);
        let exact = run(&source, &weight, false);
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() < 1e-5, "at {i}: {g} vs {e}");
        }
        assert!(
            got.iter().zip(&exact).any(|(g, e)| (g - e).abs() > 1e-5),
            "no rounding seen"
        );
    }

    /// A weight without a gradient keeps its packed kernel, and the kept kernel gives the
    /// values of the one packed per call.
    #[test]
    fn a_constant_sampled_convolution_keeps_its_kernel() {
        let ([b, c, h, w], k, o) = ([2, 3, 6, 4], 3, 18);
        let source = tensor(lcg(b * c * h * w, 4, 2.0), [b, c, h, w]);
        let flow = tensor(lcg(b * 2 * h * w, 5, 6.0), [b, 2, h, w]);
        let weight = tensor(lcg(o * c * k * k, 6, 1.0), [o, c, k, k]);
        let run = |constant: bool| {
            let out = sampled_conv_forward(&source, &flow, &weight, k, [constant, false]);
            values(&out).to_vec()
        };
        let packed = run(false);
        assert_eq!(run(true), packed);
        let purpose = Purpose::Sampled {
            rows: c * k * k,
            out_channels: o,
        };
        let kept = cache::prepared(
            &weight,
            purpose,
            |k: &SampledKernel| k.panels.len(),
            |_| -> SampledKernel { panic!("the kernel was not kept") },
        );
        assert_eq!(
            kept.panels.len(),
            panel::packed_len(1, c * k * k, o, panel::LANES)
        );
        assert_eq!(run(true), packed);
    }
}
