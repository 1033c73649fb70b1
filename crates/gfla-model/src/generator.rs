//! The generator G (official `PoseGenerator`): source encoder, flow estimator F and the
//! target-pose texture renderer with local attention.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Tensor};
use gfla_ops::{Padding, blend, warp_bilinear};

use crate::attention::LocalAttention;
use crate::blocks::{EncoderBlock, ReflectConv, ResBlock, ResBlockDecoder};
use crate::flops;
use crate::flow::FlowEstimator;

/// One attention layer: feature scale `H / 2^layer` and window size.
#[derive(Config, Debug, PartialEq)]
pub struct AttentionLayerConfig {
    /// Scale: 2 = 1/4 resolution, 3 = 1/8 (the official `--attn_layer`).
    pub layer: usize,
    /// Window size `k` (the official `--kernel_size`).
    pub kernel_size: usize,
}

/// How the renderer brings source features to the target pose: GFLA's local attention, or one of
/// the ablations of the paper's Table 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceSampling {
    /// The paper's model: `k x k` local attention around the flow position.
    LocalAttention,
    /// Ablation "Bilinear": the source feature is warped by the flow with bilinear sampling.
    Bilinear,
    /// Ablation "Global-Attn": every target position attends over all source positions
    /// (scaled dot-product of the feature vectors); no flow is used for sampling.
    GlobalAttention,
    /// Ablation "Baseline": an auto-encoder on `cat(P1, BP1, BP2)` with no flow estimator.
    None,
}

/// Configuration of G. The official networks fix `ngf = 64`, three encoder/decoder levels,
/// InstanceNorm and LeakyReLU(0.1); what varies between the releases is the attention layout.
#[derive(Config, Debug)]
pub struct GeneratorConfig {
    /// Attention layers, any order. DeepFashion: `{3: k=3, 2: k=5}`; Market: `{2: k=3}`.
    pub attention: Vec<AttentionLayerConfig>,
    /// Image channels.
    #[config(default = 3)]
    pub image_channels: usize,
    /// Pose heat-map channels (18 COCO joints).
    #[config(default = 18)]
    pub pose_channels: usize,
    /// Source sampling at the attention layers (the ablations of the paper's Table 2).
    #[config(default = "SourceSampling::LocalAttention")]
    pub sampling: SourceSampling,
    /// Base width of the source encoder and renderer, doubled per level up to `8x` (official
    /// ngf 64). Smaller widths make small networks, e.g. the embedded demo model.
    #[config(default = 64)]
    pub channels: usize,
    /// Base width of the flow estimator (official 32).
    #[config(default = 32)]
    pub flow_channels: usize,
    /// Hidden width of the attention's kernel-prediction network (official 128).
    #[config(default = 128)]
    pub attention_hidden: usize,
}

/// Width cap and depth of the source encoder and renderer (official img_f 512 / ngf 64, layers 3).
const MAX_MULT: usize = 8;
pub const RENDER_LAYERS: usize = 3;

impl GeneratorConfig {
    /// The released DeepFashion configuration (256 x 256): attention at 1/8 with 3 x 3 windows
    /// and at 1/4 with 5 x 5 windows.
    pub fn fashion() -> Self {
        Self::new(vec![
            AttentionLayerConfig::new(3, 3),
            AttentionLayerConfig::new(2, 5),
        ])
    }

    /// The released Market-1501 configuration (128 x 64): one attention at 1/4, 3 x 3 windows.
    pub fn market() -> Self {
        Self::new(vec![AttentionLayerConfig::new(2, 3)])
    }

    /// The window size at attention layer `layer`, if there is one.
    pub fn kernel_at(&self, layer: usize) -> Option<usize> {
        self.attention
            .iter()
            .find(|a| a.layer == layer)
            .map(|a| a.kernel_size)
    }

    /// The attention layers in the order of the flows, masks and attention outputs: coarse
    /// (largest `layer`) to fine.
    pub fn coarse_to_fine(&self) -> Vec<&AttentionLayerConfig> {
        let mut layers: Vec<_> = self.attention.iter().collect();
        layers.sort_by_key(|a| std::cmp::Reverse(a.layer));
        layers
    }

    pub fn init(&self, device: &Device) -> Generator {
        let layers: Vec<usize> = self.attention.iter().map(|a| a.layer).collect();
        assert!(
            !layers.is_empty(),
            "GeneratorConfig: at least one attention layer is needed"
        );
        for a in &self.attention {
            assert!(
                (1..=RENDER_LAYERS).contains(&a.layer) && a.kernel_size > 0,
                "GeneratorConfig: attention layer {} with k = {} is outside 1..={RENDER_LAYERS}",
                a.layer,
                a.kernel_size
            );
        }
        let ngf = self.channels;
        let mult = |i: usize| (1usize << i).min(MAX_MULT);
        let warping = self.sampling != SourceSampling::None;
        let encoder = |cin: usize| Encoder {
            stem: EncoderBlock::new(cin, ngf, device),
            encoders: (0..RENDER_LAYERS - 1)
                .map(|i| EncoderBlock::new(ngf * mult(i), ngf * mult(i + 1), device))
                .collect(),
        };
        let mut decoders = Vec::new();
        let mut attention = Vec::new();
        for i in 0..RENDER_LAYERS {
            let cin = ngf * mult(RENDER_LAYERS - 1 - i);
            let cout = if i + 1 == RENDER_LAYERS {
                ngf
            } else {
                ngf * mult(RENDER_LAYERS - 2 - i)
            };
            if let Some(k) = self.kernel_at(RENDER_LAYERS - i).filter(|_| warping) {
                attention.push(AttentionStage {
                    attention: (self.sampling == SourceSampling::LocalAttention)
                        .then(|| LocalAttention::new(cin, k, self.attention_hidden, device)),
                    stage: i,
                    sampling: self.sampling,
                });
            }
            decoders.push(DecoderStage {
                res: ResBlock::new(cin, device),
                up: ResBlockDecoder::new(cin, cout, cin, device),
            });
        }
        Generator {
            source: encoder(self.image_channels),
            flow: warping.then(|| {
                FlowEstimator::new(
                    self.image_channels + 2 * self.pose_channels,
                    &layers,
                    self.flow_channels,
                    device,
                )
            }),
            renderer: TextureRenderer {
                encoder: encoder(if warping {
                    self.pose_channels
                } else {
                    self.image_channels + 2 * self.pose_channels
                }),
                attention,
                decoders,
                output: ReflectConv::new(ngf, self.image_channels, device),
            },
        }
    }
}

/// The encoder shared by the source branch and the renderer: an `EncoderBlock` stem to 64
/// channels and two more halvings (official `PoseSourceNet` and the first half of
/// `PoseTargetNet`).
#[derive(Module, Debug)]
pub struct Encoder {
    pub stem: EncoderBlock,
    pub encoders: Vec<EncoderBlock>,
}

impl Encoder {
    /// All levels, finest first: `[1/2, 1/4, 1/8]`.
    pub fn pyramid(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut out = vec![self.stem.forward(x)];
        for enc in &self.encoders {
            let next = enc.forward(out.last().expect("stem").clone());
            out.push(next);
        }
        out
    }
}

/// One decoder level of the renderer: a residual block, then up-sampling.
#[derive(Module, Debug)]
pub struct DecoderStage {
    pub res: ResBlock,
    pub up: ResBlockDecoder,
}

/// Source sampling placed before decoder stage `stage`: a local attention, or a parameter-free
/// ablation.
#[derive(Module, Debug)]
pub struct AttentionStage {
    pub attention: Option<LocalAttention>,
    pub stage: usize,
    #[module(skip)]
    pub sampling: SourceSampling,
}

impl AttentionStage {
    /// The sampled source features and, for the attentions, their weights.
    fn sample(
        &self,
        source: Tensor<4>,
        target: Tensor<4>,
        flow: Tensor<4>,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        match (&self.attention, self.sampling) {
            (Some(attention), _) => {
                let out = attention.forward(source, target, flow);
                (out.features, Some(out.weights))
            }
            (None, SourceSampling::Bilinear) => {
                (warp_bilinear(source, flow, Padding::Border), None)
            }
            (None, _) => {
                let [b, c, h, w] = source.dims();
                let s = source.reshape([b, c, h * w]);
                let t = target.reshape([b, c, h * w]);
                // [B, N_target, N_source], softmax over the source positions.
                let weights = softmax(t.swap_dims(1, 2).matmul(s.clone()) / (c as f64).sqrt(), 2);
                let out = s
                    .matmul(weights.clone().swap_dims(1, 2))
                    .reshape([b, c, h, w]);
                (out, Some(weights.reshape([b, h * w, h, w])))
            }
        }
    }
}

/// The target-pose renderer (official `PoseTargetNet`): encodes the target pose, then at each
/// attention layer replaces occluded-free regions by source features fetched with the local
/// attention, and decodes to the image.
#[derive(Module, Debug)]
pub struct TextureRenderer {
    pub encoder: Encoder,
    /// Ordered coarse to fine, as the flows.
    pub attention: Vec<AttentionStage>,
    pub decoders: Vec<DecoderStage>,
    pub output: ReflectConv,
}

/// G.
#[derive(Module, Debug)]
pub struct Generator {
    /// Source-image encoder (official `source`).
    pub source: Encoder,
    /// Global flow field estimator F (official `flow_net`); absent in the baseline ablation.
    pub flow: Option<FlowEstimator>,
    /// Renderer (official `target`).
    pub renderer: TextureRenderer,
}

/// Everything one forward pass produced.
#[derive(Debug, Clone)]
pub struct GeneratorOutput {
    /// The generated image, `[B, 3, H, W]` in (-1, 1).
    pub image: Tensor<4>,
    /// Flow fields, coarse to fine, in pixels of their own grid.
    pub flows: Vec<Tensor<4>>,
    /// Occlusion masks, coarse to fine (1 = take the source feature).
    pub masks: Vec<Tensor<4>>,
    /// Attention weights `[B, k*k, h, w]` per attention layer, coarse to fine (`[B, h*w, h, w]`
    /// for the global-attention ablation, none for the bilinear one).
    pub attention: Vec<Tensor<4>>,
}

impl GeneratorOutput {
    /// The outputs of single samples as one batch.
    fn cat(outputs: Vec<GeneratorOutput>) -> Self {
        let field = |f: fn(&GeneratorOutput) -> &Vec<Tensor<4>>| -> Vec<Tensor<4>> {
            (0..f(&outputs[0]).len())
                .map(|j| Tensor::cat(outputs.iter().map(|o| f(o)[j].clone()).collect(), 0))
                .collect()
        };
        Self {
            image: Tensor::cat(outputs.iter().map(|o| o.image.clone()).collect(), 0),
            flows: field(|o| &o.flows),
            masks: field(|o| &o.masks),
            attention: field(|o| &o.attention),
        }
    }
}

/// `f(i)` for every `i` of `items`, in order, the two halves of the range side by side where
/// [`flops::join`] allows.
fn side_by_side<T: Send>(
    t: &Tensor<4>,
    items: std::ops::Range<usize>,
    f: &(impl Fn(usize) -> T + Sync),
) -> Vec<T> {
    if items.len() <= 1 {
        return items.map(f).collect();
    }
    let mid = items.start + items.len() / 2;
    let (mut first, second) = flops::join(
        t,
        || side_by_side(t, items.start..mid, f),
        || side_by_side(t, mid..items.end, f),
    );
    first.extend(second);
    first
}

fn check_inputs(source_image: &Tensor<4>, source_pose: &Tensor<4>, target_pose: &Tensor<4>) {
    let [b, _, h, w] = source_image.dims();
    assert!(
        h % 32 == 0 && w % 32 == 0,
        "Generator: image size {h} x {w} must be a multiple of 32 (the flow estimator reaches 1/32)"
    );
    assert!(
        source_pose.dims()[0] == b
            && target_pose.dims() == source_pose.dims()
            && source_pose.dims()[2..] == [h, w],
        "Generator: image {:?}, source pose {:?} and target pose {:?} do not match",
        source_image.dims(),
        source_pose.dims(),
        target_pose.dims()
    );
}

impl Generator {
    /// `source_image`: `[B, 3, H, W]` in [-1, 1]; `source_pose`, `target_pose`: heat maps
    /// `[B, 18, H, W]` in [0, 1]. `H` and `W` must be multiples of 32.
    pub fn forward(
        &self,
        source_image: Tensor<4>,
        source_pose: Tensor<4>,
        target_pose: Tensor<4>,
    ) -> GeneratorOutput {
        check_inputs(&source_image, &source_pose, &target_pose);
        let b = source_image.dims()[0];
        if b > 1 && gfla_ops::cpu_pool(&source_image) {
            // G has no batch statistics, so without autodiff every sample can run on its own,
            // with the same result. On the CPU, in halves side by side, each sample's activations in cache
            // instead of a batch's streaming through memory. Measured on 2 cores, batch 8:
            // DeepFashion (256 x 176) 1.88-1.92 s against 2.09-2.21 s one sample after the
            // other (3.8 s batched in an earlier release); Market (128 x 64) 0.24-0.25 s
            // against 0.30-0.31 s batched.
            let item = |t: &Tensor<4>, i: usize| t.clone().slice_dim(0, i..i + 1);
            let sample = |i: usize| {
                self.forward(
                    item(&source_image, i),
                    item(&source_pose, i),
                    item(&target_pose, i),
                )
            };
            return GeneratorOutput::cat(side_by_side(&source_image, 0..b, &sample));
        }
        // On the CPU without autodiff the whole pass runs on a pool thread (its parallel ops
        // then start at once instead of waking a pool thread each), and the source encoder
        // beside the flow estimator and the target encoder: on small maps one layer alone
        // leaves cores idle.
        let inputs = Tensor::cat(
            vec![source_image.clone(), source_pose, target_pose.clone()],
            1,
        );
        flops::on_pool(&source_image, || {
            let (source_features, (flows, masks, x)) = flops::join(
                &source_image,
                || self.source.pyramid(source_image.clone()),
                || self.flows_and_target(inputs, target_pose),
            );
            self.render(source_features, flows, masks, x)
        })
    }

    /// The source encoder's pyramid, `[1/2, 1/4, 1/8]` (finest first): what
    /// [`Generator::forward_with_source`] needs. Encoding a source once serves any number of
    /// target poses.
    pub fn encode_source(&self, source_image: Tensor<4>) -> Vec<Tensor<4>> {
        self.source.pyramid(source_image)
    }

    /// [`Generator::forward`] with the source pyramid already computed by
    /// [`Generator::encode_source`]; a pyramid of batch 1 is broadcast over the batch.
    pub fn forward_with_source(
        &self,
        source_features: Vec<Tensor<4>>,
        source_image: Tensor<4>,
        source_pose: Tensor<4>,
        target_pose: Tensor<4>,
    ) -> GeneratorOutput {
        check_inputs(&source_image, &source_pose, &target_pose);
        let b = source_image.dims()[0];
        let source_features: Vec<Tensor<4>> = source_features
            .into_iter()
            .map(|f| {
                let [fb, c, h, w] = f.dims();
                assert!(
                    fb == b || fb == 1,
                    "Generator: source features of batch {fb} for a batch of {b}"
                );
                if fb == b { f } else { f.expand([b, c, h, w]) }
            })
            .collect();
        let inputs = Tensor::cat(vec![source_image, source_pose, target_pose.clone()], 1);
        let (flows, masks, x) = self.flows_and_target(inputs, target_pose);
        self.render(source_features, flows, masks, x)
    }

    /// The flow estimator's flows and masks (none without one) and the target encoder's
    /// deepest features, from the concatenated inputs: the two run side by side where
    /// [`gfla_ops::join`] allows.
    fn flows_and_target(
        &self,
        inputs: Tensor<4>,
        target_pose: Tensor<4>,
    ) -> (Vec<Tensor<4>>, Vec<Tensor<4>>, Tensor<4>) {
        let encoder = &self.renderer.encoder;
        let deepest = |x| encoder.pyramid(x).pop().expect("deepest level");
        match &self.flow {
            Some(flow) => {
                let ((flows, masks), x) = flops::join(
                    &inputs,
                    || flow.forward(inputs.clone()),
                    || deepest(target_pose),
                );
                (flows, masks, x)
            }
            None => (vec![], vec![], deepest(inputs)),
        }
    }

    /// The decoders, with the attention stages warping `source_features` by `flows`, from the
    /// target encoding `x`.
    fn render(
        &self,
        source_features: Vec<Tensor<4>>,
        flows: Vec<Tensor<4>>,
        masks: Vec<Tensor<4>>,
        mut x: Tensor<4>,
    ) -> GeneratorOutput {
        let r = &self.renderer;
        let mut attention = Vec::new();
        let mut stages = r.attention.iter().enumerate().peekable();
        for (i, decoder) in r.decoders.iter().enumerate() {
            if let Some((c, stage)) = stages.next_if(|(_, s)| s.stage == i) {
                let source = source_features[source_features.len() - 1 - i].clone();
                let (sampled, weights) = stage.sample(source, x.clone(), flows[c].clone());
                x = blend(x, sampled, masks[c].clone());
                attention.extend(weights);
            }
            x = decoder.up.forward(decoder.res.forward(x));
        }
        let image = tanh(r.output.forward(x));
        GeneratorOutput {
            image,
            flows,
            masks,
            attention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_official_generators() {
        let device = Device::flex();
        let fashion = GeneratorConfig::fashion().init(&device);
        assert_eq!(fashion.num_params(), 14_047_395);
        assert_eq!(fashion.source.num_params(), 1_434_758);
        assert_eq!(fashion.renderer.num_params(), 6_004_425);
        let market = GeneratorConfig::market().init(&device);
        assert_eq!(market.num_params(), 12_926_471);
        assert_eq!(market.flow.as_ref().unwrap().num_params(), 6_604_753);
        assert_eq!(fashion.flow.as_ref().unwrap().num_params(), 6_608_212);
    }

    #[test]
    fn macs_of_the_market_source_encoder_by_hand() {
        let device = Device::flex();
        let g = GeneratorConfig::market().init(&device);
        // EncoderBlock(cin -> cout) halving to h x w: a 4x4 convolution cin -> cout and a 3x3
        // cout -> cout at h x w. Market: 128 x 64 -> 64 x 32 (3 -> 64), 32 x 16 (64 -> 128),
        // 16 x 8 (128 -> 256).
        let block = |cin: usize, cout: usize, h: usize, w: usize| {
            (cout * cin * 16 + cout * cout * 9) * h * w
        };
        let expected = block(3, 64, 64, 32) + block(64, 128, 32, 16) + block(128, 256, 16, 8);
        assert_eq!(expected, 367_001_600);
        for batch in [1, 2] {
            let x = Tensor::<4>::zeros([batch, 3, 128, 64], &device);
            let (_, macs) = crate::flops::count_macs(|| g.source.pyramid(x));
            assert_eq!(macs, (batch * expected) as u64, "batch {batch}");
        }
    }

    /// A Market-layout G four channels wide: fast, with every part of the real one.
    fn narrow_market_generator(device: &Device) -> Generator {
        GeneratorConfig::market()
            .with_channels(4)
            .with_flow_channels(4)
            .with_attention_hidden(4)
            .init(device)
    }

    /// `sin(frequency * i + phase)` over the elements of a `shape` tensor: smooth, varied
    /// inputs without a random generator.
    fn wave(shape: [usize; 4], frequency: f64, phase: f64, device: &Device) -> Tensor<4> {
        let len: usize = shape.iter().product();
        Tensor::<1, burn::tensor::Int>::arange(0..len as i64, device)
            .float()
            .reshape(shape)
            .mul_scalar(frequency)
            .add_scalar(phase)
            .sin()
    }

    #[test]
    fn a_source_encoded_once_serves_every_target() {
        let device = Device::flex();
        let g = narrow_market_generator(&device);
        let wave = |c: usize, b: usize, phase: f64| wave([b, c, 64, 32], 0.37, phase, &device);
        let image = wave(3, 1, 0.0);
        let (bp1, bp2) = (wave(18, 1, 1.0).abs(), wave(18, 3, 2.0).abs());
        let once = g.forward_with_source(
            g.encode_source(image.clone()),
            image.clone().repeat_dim(0, 3),
            bp1.clone().repeat_dim(0, 3),
            bp2.clone(),
        );
        let each = g.forward(image.repeat_dim(0, 3), bp1.repeat_dim(0, 3), bp2);
        once.image.into_data().assert_approx_eq::<f32>(
            &each.image.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn a_batch_runs_sample_by_sample_without_autodiff_with_the_batched_result() {
        let device = Device::flex();
        let g = narrow_market_generator(&device);
        // `forward` runs the samples in halves side by side (5 samples: uneven halves, in
        // order), at two sizes.
        for [b, h, w] in [[3, 256, 128], [5, 128, 64]] {
            let wave = |c: usize, phase: f64| wave([b, c, h, w], 0.21, phase, &device);
            let (image, p1, p2) = (wave(3, 0.0), wave(18, 1.0).abs(), wave(18, 2.0).abs());
            check_split_forward(&g, image, p1, p2);
        }
    }

    fn check_split_forward(g: &Generator, image: Tensor<4>, p1: Tensor<4>, p2: Tensor<4>) {
        // `forward_with_source` always runs the whole batch at once.
        let batched = g.forward_with_source(
            g.encode_source(image.clone()),
            image.clone(),
            p1.clone(),
            p2.clone(),
        );
        let split = g.forward(image, p1, p2);
        let tol = burn::tensor::Tolerance::absolute(1e-5);
        split
            .image
            .into_data()
            .assert_approx_eq::<f32>(&batched.image.into_data(), tol);
        for (a, b) in [
            (split.flows, batched.flows),
            (split.masks, batched.masks),
            (split.attention, batched.attention),
        ] {
            assert_eq!(a.len(), b.len());
            for (a, b) in a.into_iter().zip(b) {
                assert_eq!(a.dims(), b.dims());
                a.into_data().assert_approx_eq::<f32>(&b.into_data(), tol);
            }
        }
    }

    #[test]
    fn ablations_build_and_run() {
        let device = Device::flex();
        let zeros = |c: usize| Tensor::<4>::zeros([1, c, 64, 32], &device);
        for sampling in [
            SourceSampling::Bilinear,
            SourceSampling::GlobalAttention,
            SourceSampling::None,
        ] {
            let config = GeneratorConfig::market().with_sampling(sampling);
            let g = config.init(&device);
            let out = g.forward(zeros(3), zeros(18), zeros(18));
            assert_eq!(out.image.dims(), [1, 3, 64, 32], "{sampling:?}");
            // Only the local attention has parameters beyond the shared networks.
            let market = GeneratorConfig::market().init(&device).num_params();
            let attention = 296_201;
            match sampling {
                SourceSampling::None => {
                    assert!(out.flows.is_empty());
                    // No flow net; the renderer's first norm and conv see 39 channels, not 18.
                    assert_eq!(
                        g.num_params(),
                        market - attention - 6_604_753 + 21 * 2 + 21 * 64 * 16
                    );
                }
                SourceSampling::GlobalAttention => {
                    assert_eq!(out.attention[0].dims(), [1, 128, 16, 8]);
                    assert_eq!(g.num_params(), market - attention);
                }
                _ => assert_eq!(g.num_params(), market - attention),
            }
        }
    }

    #[test]
    fn market_shapes() {
        let device = Device::flex();
        let g = GeneratorConfig::market().init(&device);
        let out = g.forward(
            Tensor::zeros([2, 3, 128, 64], &device),
            Tensor::zeros([2, 18, 128, 64], &device),
            Tensor::zeros([2, 18, 128, 64], &device),
        );
        assert_eq!(out.image.dims(), [2, 3, 128, 64]);
        assert_eq!(
            out.flows.iter().map(|f| f.dims()).collect::<Vec<_>>(),
            vec![[2, 2, 32, 16]]
        );
        assert_eq!(out.masks[0].dims(), [2, 1, 32, 16]);
        assert_eq!(out.attention[0].dims(), [2, 9, 32, 16]);
    }
}
