//! The GFLA loss kernels that act on given feature maps (the VGG19 network is in `gfla-model`).

use burn::tensor::{Int, Tensor};

use crate::warp::resample_gaussian;

const EPS: f64 = 1e-8;

/// Normalises every position's channel vector: `x / (|x|_2 + 1e-8)` over dim 1.
fn normalize_channels(x: Tensor<3>) -> Tensor<3> {
    let norm = x.clone().square().sum_dim(1).sqrt() + EPS;
    x / norm
}

/// `m_j`: for every target position `j`, the best cosine similarity any source position reaches,
/// `max_i <s_i / (|s_i| + eps), t_j / (|t_j| + eps)>`. Inputs `[B, C, h, w]`, output `[B, h*w]`.
/// Memory is `B * (h*w)^2`: the official loss forms the same matrix.
pub fn best_similarity(source: Tensor<4>, target: Tensor<4>) -> Tensor<2> {
    assert_eq!(
        source.dims(),
        target.dims(),
        "best_similarity: source {:?} and target {:?} differ",
        source.dims(),
        target.dims()
    );
    let [b, c, h, w] = source.dims();
    let s = normalize_channels(source.reshape([b, c, h * w]));
    let t = normalize_channels(target.reshape([b, c, h * w]));
    // [B, N_source, N_target]; max over the source axis.
    s.swap_dims(1, 2).matmul(t).max_dim(1).reshape([b, h * w])
}

/// Cosine similarity along channels, as PyTorch >= 1.12's `cosine_similarity`:
/// `sum (a / max(|a|, eps)) * (b / max(|b|, eps))`. `[B, C, N]` -> `[B, N]`.
fn cosine_similarity(a: Tensor<3>, b: Tensor<3>) -> Tensor<2> {
    let [bb, _, n] = a.dims();
    let na = a.clone().square().sum_dim(1).sqrt().clamp_min(EPS);
    let nb = b.clone().square().sum_dim(1).sqrt().clamp_min(EPS);
    ((a / na) * (b / nb)).sum_dim(1).reshape([bb, n])
}

/// Nearest resize of a flow to `[h, w]` with PyTorch's rule (`src = floor(dst * in / out)`) and
/// **no** rescaling of the values, as the official correctness loss does; identity when the
/// sizes already agree (always, in the released configurations).
fn resize_flow_nearest(flow: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    let [_, _, hf, wf] = flow.dims();
    if (hf, wf) == (h, w) {
        return flow;
    }
    let device = flow.device();
    let rows: Vec<i64> = (0..h).map(|y| (y * hf / h) as i64).collect();
    let cols: Vec<i64> = (0..w).map(|x| (x * wf / w) as i64).collect();
    flow.select(2, Tensor::<1, Int>::from_ints(rows.as_slice(), &device))
        .select(3, Tensor::<1, Int>::from_ints(cols.as_slice(), &device))
}

/// One layer of the sampling-correctness loss: with `S`, `T` the VGG features of the source and
/// target images (`[B, C, h, w]`) and `flow` the layer's flow,
/// `mean_{b,j} exp(-c_j / (m_j + eps)) - e^-1`, where `c_j` is the cosine similarity between the
/// Gaussian-resampled source and the target at `j` and `m_j` is [`best_similarity`].
/// Gradients reach only `flow` (the features are constants, as the official frozen VGG).
pub fn sampling_correctness(source: Tensor<4>, target: Tensor<4>, flow: Tensor<4>) -> Tensor<1> {
    let [b, c, h, w] = source.dims();
    let source = source.detach();
    let target = target.detach();
    let m = best_similarity(source.clone(), target.clone());
    let flow = resize_flow_nearest(flow, h, w);
    let warped = resample_gaussian(source, flow).reshape([b, c, h * w]);
    let cos = cosine_similarity(warped, target.reshape([b, c, h * w]));
    (cos.neg() / (m + EPS)).exp().mean() - (-1.0f64).exp()
}

/// Mean absolute difference, `mean |x - y|` (PyTorch `L1Loss`).
pub fn l1(x: Tensor<4>, y: Tensor<4>) -> Tensor<1> {
    assert_eq!(
        x.dims(),
        y.dims(),
        "l1: shapes {:?} and {:?} differ",
        x.dims(),
        y.dims()
    );
    (x - y).abs().mean()
}

/// Gram matrix `F F^T / (C h w)` of `[B, C, h, w]` features: `[B, C, C]`.
pub fn gram(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    let f = x.reshape([b, c, h * w]);
    f.clone().matmul(f.swap_dims(1, 2)) / ((c * h * w) as f64)
}

/// One layer of the style loss: `mean |G(x) - G(y)|` over the Gram matrices.
pub fn style_term(x: Tensor<4>, y: Tensor<4>) -> Tensor<1> {
    assert_eq!(
        x.dims(),
        y.dims(),
        "style_term: shapes {:?} and {:?} differ",
        x.dims(),
        y.dims()
    );
    (gram(x) - gram(y)).abs().mean()
}

/// The content (perceptual) loss: the sum of [`l1`] over paired layers (official unit weights
/// on relu1_1, relu2_1, relu3_1, relu4_1, relu5_1).
pub fn content_loss(x: &[Tensor<4>], y: &[Tensor<4>]) -> Tensor<1> {
    sum_layers("content_loss", x, y, l1)
}

/// The style loss: the sum of [`style_term`] over paired layers (official: relu2_2, relu3_4,
/// relu4_4, relu5_2).
pub fn style_loss(x: &[Tensor<4>], y: &[Tensor<4>]) -> Tensor<1> {
    sum_layers("style_loss", x, y, style_term)
}

fn sum_layers(
    name: &str,
    x: &[Tensor<4>],
    y: &[Tensor<4>],
    term: fn(Tensor<4>, Tensor<4>) -> Tensor<1>,
) -> Tensor<1> {
    assert!(
        !x.is_empty() && x.len() == y.len(),
        "{name}: needs the same non-zero number of layers on both sides, got {} and {}",
        x.len(),
        y.len()
    );
    x.iter()
        .zip(y)
        .map(|(a, b)| term(a.clone(), b.clone()))
        .reduce(|a, b| a + b)
        .expect("non-empty")
}
