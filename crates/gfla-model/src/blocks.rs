//! The convolutional blocks GFLA's networks are assembled from (official `base_function.py`).
//!
//! All use InstanceNorm with affine parameters and no running statistics, and LeakyReLU with
//! slope 0.1, as the released configurations do.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Initializer, InstanceNorm, InstanceNormConfig, PaddingConfig2d};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use crate::flops::{conv_transpose2d, conv2d};

/// The negative slope of every LeakyReLU in GFLA.
pub const LEAKY_SLOPE: f64 = 0.1;

pub(crate) fn lrelu(x: Tensor<4>) -> Tensor<4> {
    gfla_ops::leaky_relu(x, LEAKY_SLOPE)
}

/// InstanceNorm then LeakyReLU, in one pass on the CPU without autodiff.
fn pre_activation(norm: &InstanceNorm, x: Tensor<4>) -> Tensor<4> {
    gfla_ops::instance_norm_leaky_relu(norm, x, LEAKY_SLOPE)
}

/// The official initialisation for training from scratch: orthogonal weights with gain 0.02
/// (the weight seen as a `[dim0, rest]` matrix, as PyTorch's `orthogonal_`), zero biases.
///
/// Gaussian draws come from the device (so its seed applies); the orthonormalisation is a
/// modified Gram-Schmidt on the host in f64, which is fast for the at most 256 x 6400 matrices
/// of GFLA.
fn orthogonal_weight(shape: [usize; 4], device: &Device) -> Param<Tensor<4>> {
    let [a, b, kh, kw] = shape;
    let (rows, cols) = (a, b * kh * kw);
    let draws: Vec<f64> = Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 1.0), device)
        .try_into_vec_as::<f64>()
        .expect("float draws");
    // Orthonormalise the shorter side's vectors: rows if rows <= cols, else columns.
    let (n, m, transposed) = if rows <= cols {
        (rows, cols, false)
    } else {
        (cols, rows, true)
    };
    let at = |i: usize, j: usize| {
        if transposed {
            draws[j * cols + i]
        } else {
            draws[i * cols + j]
        }
    };
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut v: Vec<f64> = (0..m).map(|j| at(i, j)).collect();
        for u in &q {
            let dot: f64 = v.iter().zip(u).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(u).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        q.push(v);
    }
    let mut out = vec![0.0f32; rows * cols];
    for (i, v) in q.iter().enumerate() {
        for (j, x) in v.iter().enumerate() {
            let (r, c) = if transposed { (j, i) } else { (i, j) };
            out[r * cols + c] = (0.02 * x) as f32;
        }
    }
    Param::from_tensor(Tensor::from_data(TensorData::new(out, shape), device))
}

pub(crate) fn norm(channels: usize, device: &Device) -> InstanceNorm {
    InstanceNormConfig::new(channels).init(device)
}

/// A `k x k` convolution with bias, stride `s` and symmetric zero padding `p`.
pub(crate) fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
    device: &Device,
) -> Conv2d {
    let mut c = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([s, s])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_initializer(Initializer::Zeros)
        .init(device);
    c.weight = orthogonal_weight([cout, cin, k, k], device);
    c
}

/// ConvTranspose 3x3, stride 2, padding 1, output padding 1: doubles H and W exactly.
fn conv_up(cin: usize, cout: usize, device: &Device) -> ConvTranspose2d {
    let mut c = ConvTranspose2dConfig::new([cin, cout], [3, 3])
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_padding_out([1, 1])
        .with_initializer(Initializer::Zeros)
        .init(device);
    // PyTorch initialises the [in, out, kh, kw] tensor as a [in, out * kh * kw] matrix.
    c.weight = orthogonal_weight([cin, cout, 3, 3], device);
    c
}

/// `EncoderBlock`: IN, LReLU, Conv 4x4 s2, IN, LReLU, Conv 3x3; halves H and W. The first norm
/// sees the raw input (image, heat maps).
#[derive(Module, Debug)]
pub struct EncoderBlock {
    pub norm1: InstanceNorm,
    pub conv1: Conv2d,
    pub norm2: InstanceNorm,
    pub conv2: Conv2d,
}

impl EncoderBlock {
    pub fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            norm1: norm(cin, device),
            conv1: conv(cin, cout, 4, 2, 1, device),
            norm2: norm(cout, device),
            conv2: conv(cout, cout, 3, 1, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.conv1, pre_activation(&self.norm1, x));
        conv2d(&self.conv2, pre_activation(&self.norm2, x))
    }
}

/// `ResBlock` with identity shortcut: `x + Conv(LReLU(IN(Conv(LReLU(IN(x))))))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub norm1: InstanceNorm,
    pub conv1: Conv2d,
    pub norm2: InstanceNorm,
    pub conv2: Conv2d,
}

impl ResBlock {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            norm1: norm(channels, device),
            conv1: conv(channels, channels, 3, 1, 1, device),
            norm2: norm(channels, device),
            conv2: conv(channels, channels, 3, 1, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(&self.conv1, pre_activation(&self.norm1, x.clone()));
        let y = conv2d(&self.conv2, pre_activation(&self.norm2, y));
        y + x
    }
}

/// `ResBlockDecoder`: residual up-sampling, `model(x) + shortcut(x)`, doubling H and W; the
/// shortcut transposed convolution sees the un-normalised input.
#[derive(Module, Debug)]
pub struct ResBlockDecoder {
    pub norm1: InstanceNorm,
    pub conv1: Conv2d,
    pub norm2: InstanceNorm,
    pub up: ConvTranspose2d,
    pub shortcut: ConvTranspose2d,
}

impl ResBlockDecoder {
    pub fn new(cin: usize, cout: usize, hidden: usize, device: &Device) -> Self {
        Self {
            norm1: norm(cin, device),
            conv1: conv(cin, hidden, 3, 1, 1, device),
            norm2: norm(hidden, device),
            up: conv_up(hidden, cout, device),
            shortcut: conv_up(cin, cout, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(&self.conv1, pre_activation(&self.norm1, x.clone()));
        let y = conv_transpose2d(&self.up, pre_activation(&self.norm2, y));
        y + conv_transpose2d(&self.shortcut, x)
    }
}

/// LReLU, reflection padding 1, unpadded 3x3 convolution: the official `Jump` (skip adapter of
/// the flow estimator) and `Output` (final layer, followed by tanh) share this shape.
#[derive(Module, Debug)]
pub struct ReflectConv {
    pub conv: Conv2d,
}

impl ReflectConv {
    pub fn new(cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv: conv(cin, cout, 3, 1, 0, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            &self.conv,
            gfla_ops::leaky_relu_pad(x, LEAKY_SLOPE, 1, PadMode::Reflect),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn block_shapes_and_parameter_counts_match_the_official_blocks() {
        let device = Device::flex();
        let enc = EncoderBlock::new(3, 64, &device);
        // source.block0: 40,198 parameters in the reference doc.
        assert_eq!(enc.num_params(), 40_198);
        assert_eq!(
            enc.forward(Tensor::zeros([1, 3, 16, 8], &device)).dims(),
            [1, 64, 8, 4]
        );
        let dec = ResBlockDecoder::new(256, 128, 128, &device);
        // flow_net.decoder1: 738,432.
        assert_eq!(dec.num_params(), 738_432);
        assert_eq!(
            dec.forward(Tensor::zeros([1, 256, 4, 2], &device)).dims(),
            [1, 128, 8, 4]
        );
        // flow_net.jump2: 36,928.
        assert_eq!(ReflectConv::new(64, 64, &device).num_params(), 36_928);
    }

    #[test]
    fn initial_weights_are_orthogonal_with_gain_002() {
        let device = Device::flex();
        // 8 x (4 * 3 * 3): rows orthonormal (x 0.02); 16 x (2 * 2 * 2): columns orthonormal.
        for (shape, rows_orthonormal) in [([8, 4, 3, 3], true), ([16, 2, 2, 2], false)] {
            let w: Vec<f64> = orthogonal_weight(shape, &device)
                .val()
                .try_into_vec_as()
                .unwrap();
            let (r, c) = (shape[0], shape[1] * shape[2] * shape[3]);
            let (n, m) = if rows_orthonormal { (r, c) } else { (c, r) };
            let get = |i: usize, k: usize| {
                if rows_orthonormal {
                    w[i * c + k]
                } else {
                    w[k * c + i]
                }
            };
            for i in 0..n {
                for j in 0..n {
                    let dot: f64 = (0..m).map(|k| get(i, k) * get(j, k)).sum();
                    let want = if i == j { 0.02 * 0.02 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-7, "{shape:?} ({i}, {j}): {dot}");
                }
            }
        }
    }
}
