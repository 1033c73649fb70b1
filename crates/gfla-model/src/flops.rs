//! Counting the multiply-accumulates (MACs) of a forward pass, to say how close to the machine's
//! peak the networks run. One FLOP count is 2 x MACs.
//!
//! Counted: every convolution, transposed convolution and the local attention's matrix
//! products and sampling, the work that dominates. Not counted: normalisation, activations,
//! padding and other element-wise ops. Counting is per thread (the generator's branches that
//! run side by side hand their counts back) and only inside [`count_macs`], so it costs
//! nothing otherwise.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use gfla_model::{GeneratorConfig, flops};
//!
//! let device = Device::flex();
//! let g = GeneratorConfig::market().init(&device);
//! let zeros = |c| Tensor::<4>::zeros([1, c, 128, 64], &device);
//! let (_, macs) = flops::count_macs(|| g.forward(zeros(3), zeros(18), zeros(18)));
//! assert!(macs > 1_000_000_000);
//! ```

use std::cell::Cell;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::Tensor;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use gfla_ops as ops;

thread_local! {
    static MACS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `f` and returns its output with the MACs it spent in counted operations.
pub fn count_macs<O>(f: impl FnOnce() -> O) -> (O, u64) {
    let (out, macs) = isolated(f);
    // A nested count also adds to the enclosing one.
    add(macs);
    (out, macs)
}

/// `f`'s output and MACs, counted apart from any count open on this thread.
fn isolated<O>(f: impl FnOnce() -> O) -> (O, u64) {
    let outer = MACS.replace(Some(0));
    let out = f();
    let macs = MACS.replace(outer).unwrap_or(0);
    (out, macs)
}

/// `f()` with no count open on this thread, then the one that was. A pool thread that waits
/// inside a counted pass may run another pass's uncounted work meanwhile; without this, that
/// work was added to the count (a test that counted a pass while other tests ran passes on
/// the same pool failed now and then).
fn uncounted<O>(f: impl FnOnce() -> O) -> O {
    let outer = MACS.replace(None);
    let out = f();
    MACS.set(outer);
    out
}

/// [`gfla_ops::join`], with the MACs of both sides (which may run on other threads) added to
/// the count open on this thread.
pub(crate) fn join<A: Send, B: Send>(
    t: &Tensor<4>,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if MACS.get().is_none() {
        return ops::join(t, || uncounted(a), || uncounted(b));
    }
    let ((a, macs_a), (b, macs_b)) = ops::join(t, || isolated(a), || isolated(b));
    add(macs_a + macs_b);
    (a, b)
}

/// [`gfla_ops::on_pool`], with the MACs of `f` (which may run on another thread) added to the
/// count open on this thread.
pub(crate) fn on_pool<R: Send>(t: &Tensor<4>, f: impl FnOnce() -> R + Send) -> R {
    if MACS.get().is_none() {
        return ops::on_pool(t, || uncounted(f));
    }
    let (out, macs) = ops::on_pool(t, || isolated(f));
    add(macs);
    out
}

/// Adds `macs` to the running count, if one is open on this thread.
pub(crate) fn add(macs: u64) {
    MACS.with(|m| {
        if let Some(n) = m.get() {
            m.set(Some(n + macs));
        }
    });
}

fn product(dims: &[usize]) -> u64 {
    dims.iter().map(|&d| d as u64).product()
}

/// A counted [`Conv2d::forward`]: `weight [O, I/g, kh, kw]` MACs per output pixel and batch item.
/// Runs `gfla_ops::conv`'s GEMM convolution (Burn's own where that does not apply).
pub(crate) fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        // Its padding depends on the input size; Burn computes it.
        PaddingConfig2d::Same => return count_conv(conv, conv.forward(x)),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    let bias = conv.bias.as_ref().map(|b| b.val());
    count_conv(conv, ops::conv::conv2d(x, conv.weight.val(), bias, options))
}

fn count_conv(conv: &Conv2d, y: Tensor<4>) -> Tensor<4> {
    let [b, _, h, w] = y.dims();
    add(product(&conv.weight.dims()) * product(&[b, h, w]));
    y
}

/// A counted [`ConvTranspose2d::forward`]: every input pixel is multiplied into the whole
/// `[I, O/g, kh, kw]` weight.
pub(crate) fn conv_transpose2d(conv: &ConvTranspose2d, x: Tensor<4>) -> Tensor<4> {
    let [b, _, h, w] = x.dims();
    add(product(&conv.weight.dims()) * product(&[b, h, w]));
    let options = ConvTransposeOptions::new(
        conv.stride,
        conv.padding,
        conv.padding_out,
        conv.dilation,
        conv.groups,
    );
    let bias = conv.bias.as_ref().map(|b| b.val());
    ops::conv::conv_transpose2d(x, conv.weight.val(), bias, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};
    use burn::tensor::Device;

    #[test]
    fn convolutions_count_weights_times_output_pixels() {
        let device = Device::flex();
        let conv = Conv2dConfig::new([3, 8], [3, 3])
            .with_stride([2, 2])
            .init(&device);
        let up = ConvTranspose2dConfig::new([8, 4], [3, 3]).init(&device);
        let x = Tensor::<4>::zeros([2, 3, 9, 7], &device);
        // 9 x 7, 3 x 3, stride 2, no padding: 4 x 3 outputs; 8*3*9 = 216 MACs each, batch 2.
        let (y, macs) = count_macs(|| conv2d(&conv, x));
        assert_eq!(y.dims(), [2, 8, 4, 3]);
        assert_eq!(macs, 216 * 4 * 3 * 2);
        // Transposed: 8*4*9 = 288 MACs per input pixel.
        let ((_, inner), outer) = count_macs(|| count_macs(|| conv_transpose2d(&up, y)));
        assert_eq!(inner, 288 * 4 * 3 * 2);
        assert_eq!(outer, inner, "a nested count adds to the enclosing one");
        // Outside a count nothing is recorded and nothing breaks.
        conv2d(&conv, Tensor::zeros([1, 3, 5, 5], &device));
        assert_eq!(count_macs(|| ()).1, 0);
    }

    #[test]
    fn uncounted_work_run_inside_a_count_is_left_out() {
        // What a pool thread does when, inside a count, it runs another pass's uncounted job.
        let ((), macs) = count_macs(|| {
            add(3);
            uncounted(|| add(5));
            add(4);
        });
        assert_eq!(macs, 7);
    }

    /// The generator's branches run side by side on Flex without autodiff (on other threads)
    /// and one after the other under autodiff: the counts agree, so none is lost.
    #[test]
    fn branches_run_side_by_side_are_counted_whole() {
        let count = |device: &Device| {
            let g = crate::GeneratorConfig::market().init(device);
            let zeros = |c| Tensor::<4>::zeros([1, c, 128, 64], device);
            count_macs(|| g.forward(zeros(3), zeros(18), zeros(18))).1
        };
        let side_by_side = count(&Device::flex());
        assert_eq!(side_by_side, count(&Device::flex().autodiff()));
        assert!(side_by_side > 2_000_000_000, "{side_by_side}");
    }
}
