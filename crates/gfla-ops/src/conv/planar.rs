//! Stride-1 convolutions with at most [`DIRECT`] output channels (GFLA's output layer and flow
//! heads) straight over the NCHW input, 16 output pixels of a row to a vector, with AVX-512.
//!
//! [`super::cpu`]'s path for them copies the input padded and channels-last and takes dot
//! products over channels: the copy was a fifth of the 64 -> 3 output layer's time, and each
//! product's eight-lane sums were added up per pixel. Here each kernel value is broadcast and
//! multiplied into a whole row of pixels, read in place (zero padding is masked loads), and each
//! output value is written once.

use rayon::prelude::*;

use super::cpu::{ConvGeometry, DIRECT};
use crate::simd::Disjoint;

/// Output pixels of a row per step: four vectors under each of up to four channels' kernels.
const PIXELS: usize = 64;

/// Whether [`conv2d`] computes `g` on this CPU.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        g.stride == [1, 1]
            && (1..=DIRECT).contains(&g.out_channels)
            && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// The convolution of `x` (`[B, C, H, W]`) by `kernel` (`[kh][DIRECT][kw * C]`, value `j * C +
/// ci` of row `o` of kernel row `i` for channel `o`'s tap `(i, j)` of input channel `ci`) plus
/// `bias`, where [`applies`]: `[B, O, oh, ow]`.
pub(super) fn conv2d(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    assert!(applies(g), "planar::conv2d: {g:?}");
    let [n, c, h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output();
    let oc = g.out_channels;
    assert_eq!(x.len(), n * c * h * w, "planar::conv2d: input size");
    assert_eq!(
        kernel.len(),
        kh * DIRECT * kw * c,
        "planar::conv2d: kernel size"
    );
    let mut b = [0.0f32; DIRECT];
    if let Some(bias) = bias {
        b[..oc].copy_from_slice(&bias[..oc]);
    }
    let len = n * oc * oh * ow;
    let mut out = Vec::<f32>::with_capacity(len);
    let dst = Disjoint(out.as_mut_ptr());
    // Rows of all items as tasks, a few rows each: the flow heads' maps are 32 x 16.
    (0..n * oh).into_par_iter().with_min_len(4).for_each(|r| {
        let (item, y) = (r / oh, r % oh);
        let x = &x[item * c * h * w..][..c * h * w];
        // SAFETY: item `item`'s output lies inside the allocation of `len`.
        let out = Disjoint(unsafe { dst.ptr().add(item * oc * oh * ow) });
        let shape = Shape {
            input: [c, h, w],
            kernel: [kh, kw],
            origin: [g.padding[0], g.padding[1]],
            output: [oh, ow],
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `applies` checked AVX-512F; sizes checked above; row `y` of every channel
        // of this item's output is this task's only.
        unsafe {
            match oc {
                1 => avx512::row::<1>(x, kernel, &b, &shape, y, out),
                2 => avx512::row::<2>(x, kernel, &b, &shape, y, out),
                3 => avx512::row::<3>(x, kernel, &b, &shape, y, out),
                _ => avx512::row::<4>(x, kernel, &b, &shape, y, out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (x, out, shape, y, &b);
    });
    // SAFETY: every row of every channel and item was written above.
    unsafe { out.set_len(len) };
    out
}

/// One item's geometry, as [`avx512::row`] reads it.
struct Shape {
    input: [usize; 3],
    kernel: [usize; 2],
    /// Top and left zero padding.
    origin: [usize; 2],
    output: [usize; 2],
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::avx512::inside;
    use super::{DIRECT, PIXELS, Shape};
    use crate::simd::Disjoint;

    /// Output row `y` of all `O` channels of one item (`out`, `[O, oh, ow]`).
    ///
    /// # Safety
    /// AVX-512F; `x` is `[C, H, W]` and `kernel` `[kh][DIRECT][kw * C]` for `shape`; row `y`
    /// (< oh) of every channel behind `out` is the caller's to write.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row<const O: usize>(
        x: &[f32],
        kernel: &[f32],
        bias: &[f32; DIRECT],
        shape: &Shape,
        y: usize,
        out: Disjoint,
    ) {
        let ([c, h, w], [kh, kw]) = (shape.input, shape.kernel);
        let ([top, left], [oh, ow]) = (shape.origin, shape.output);
        let k = kw * c;
        // SAFETY: loads are masked to the input row's `w` columns, stores to the output row's
        // `ow`; the kernel index is below `kh * DIRECT * k` (its checked length).
        unsafe {
            for x0 in (0..ow).step_by(PIXELS) {
                let mut acc = [[_mm512_setzero_ps(); PIXELS / 16]; O];
                for i in 0..kh {
                    let yy = (y + i) as isize - top as isize;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    for j in 0..kw {
                        // Channels innermost: the masks and the kernel's run are the same for
                        // all of them (recomputed per channel, they were a third of the work).
                        let col = (x0 + j) as isize - left as isize;
                        let mut keep = [0; PIXELS / 16];
                        for (q, keep) in keep.iter_mut().enumerate() {
                            *keep = inside(col + 16 * q as isize, w);
                        }
                        let src = x.as_ptr().add(yy as usize * w).wrapping_offset(col);
                        let taps = kernel.as_ptr().add(i * DIRECT * k + j * c);
                        for ci in 0..c {
                            let src = src.wrapping_add(ci * h * w);
                            let mut v = [_mm512_setzero_ps(); PIXELS / 16];
                            for (q, v) in v.iter_mut().enumerate() {
                                *v = _mm512_maskz_loadu_ps(keep[q], src.wrapping_add(16 * q));
                            }
                            for (o, acc) in acc.iter_mut().enumerate() {
                                let tap = _mm512_set1_ps(*taps.add(o * k + ci));
                                for (acc, &v) in acc.iter_mut().zip(&v) {
                                    *acc = _mm512_fmadd_ps(v, tap, *acc);
                                }
                            }
                        }
                    }
                }
                for (o, acc) in acc.iter().enumerate() {
                    let b = _mm512_set1_ps(bias[o]);
                    let dst = out.ptr().add((o * oh + y) * ow);
                    for (q, &acc) in acc.iter().enumerate() {
                        let at = x0 + 16 * q;
                        let keep = inside(at as isize, ow);
                        if keep != 0 {
                            _mm512_mask_storeu_ps(dst.add(at), keep, _mm512_add_ps(acc, b));
                        }
                    }
                }
            }
        }
    }
}
