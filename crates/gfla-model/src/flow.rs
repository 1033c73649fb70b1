//! The global flow field estimator F (official `PoseFlowNet`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

use crate::blocks::{EncoderBlock, ReflectConv, ResBlockDecoder, conv};
use crate::flops::conv2d;

/// Flow and occlusion-mask heads on one decoder stage.
#[derive(Module, Debug)]
pub struct FlowHead {
    /// Conv 3x3 to the 2-channel flow (no activation: flows are unbounded).
    pub flow: Conv2d,
    /// Conv 3x3 to the 1-channel mask, followed by a sigmoid.
    pub mask: Conv2d,
    /// The decoder stage this head reads.
    pub stage: usize,
}

/// F: a U-Net on `cat(P1, BP1, BP2)` predicting, at every attention layer, a flow field (pixels
/// of that layer's grid, backward warping) and an occlusion mask in (0, 1).
#[derive(Module, Debug)]
pub struct FlowEstimator {
    pub stem: EncoderBlock,
    pub encoders: Vec<EncoderBlock>,
    pub decoders: Vec<ResBlockDecoder>,
    pub jumps: Vec<ReflectConv>,
    /// Ordered coarse to fine, as the flows it returns.
    pub heads: Vec<FlowHead>,
}

/// Width cap of the flow estimator, as a multiple of its base width (official img_f 256 / ngf 32).
const MAX_MULT: usize = 8;
/// Encoder depth (official `encoder_layer = 5`): the input is reduced to 1/32.
pub const FLOW_ENCODER_LAYERS: usize = 5;

impl FlowEstimator {
    /// `input_channels`: 3 + 2 * pose channels (39 for 18 joints); `attention_layers`: the
    /// scales `L` (feature size `H / 2^L`) that need a flow, any order; `base`: width of the
    /// first level (official ngf 32), doubled per level up to `8 * base`.
    pub fn new(
        input_channels: usize,
        attention_layers: &[usize],
        base: usize,
        device: &Device,
    ) -> Self {
        let min_layer = *attention_layers
            .iter()
            .min()
            .expect("at least one attention layer");
        assert!(
            (1..FLOW_ENCODER_LAYERS).contains(&min_layer),
            "attention layers must lie in 1..{FLOW_ENCODER_LAYERS}, got {attention_layers:?}"
        );
        let mult = |i: usize| (1usize << i).min(MAX_MULT);
        let stem = EncoderBlock::new(input_channels, base, device);
        let encoders = (0..FLOW_ENCODER_LAYERS - 1)
            .map(|i| EncoderBlock::new(base * mult(i), base * mult(i + 1), device))
            .collect();
        let n_dec = FLOW_ENCODER_LAYERS - min_layer;
        let mut decoders = Vec::new();
        let mut jumps = Vec::new();
        let mut heads = Vec::new();
        let mut cin = base * mult(FLOW_ENCODER_LAYERS - 1);
        for i in 0..n_dec {
            let cout = base * mult(FLOW_ENCODER_LAYERS - 2 - i);
            decoders.push(ResBlockDecoder::new(cin, cout, cout, device));
            jumps.push(ReflectConv::new(cout, cout, device));
            if attention_layers.contains(&(FLOW_ENCODER_LAYERS - 1 - i)) {
                heads.push(FlowHead {
                    flow: conv(cout, 2, 3, 1, 1, device),
                    mask: conv(cout, 1, 3, 1, 1, device),
                    stage: i,
                });
            }
            cin = cout;
        }
        Self {
            stem,
            encoders,
            decoders,
            jumps,
            heads,
        }
    }

    /// `input`: `cat(P1, BP1, BP2)`. Returns the flows and masks, coarse to fine.
    pub fn forward(&self, input: Tensor<4>) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
        let mut skips = vec![self.stem.forward(input)];
        for enc in &self.encoders {
            let next = enc.forward(skips.last().expect("stem output").clone());
            skips.push(next);
        }
        let mut x = skips.pop().expect("deepest features");
        let (mut flows, mut masks) = (vec![], vec![]);
        let mut heads = self.heads.iter().peekable();
        for (i, (dec, jump)) in self.decoders.iter().zip(&self.jumps).enumerate() {
            x = dec.forward(x) + jump.forward(skips[skips.len() - 1 - i].clone());
            if let Some(head) = heads.next_if(|h| h.stage == i) {
                flows.push(conv2d(&head.flow, x.clone()));
                masks.push(sigmoid(conv2d(&head.mask, x.clone())));
            }
        }
        (flows, masks)
    }
}
