//! Opt-in bfloat16 products for the forward convolutions and the attention's sampled
//! convolution, on CPUs with AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and Sapphire
//! Rapids and later).
//!
//! `VDPBF16PS` multiplies pairs of bfloat16 values and adds both products to a float32 sum, 32
//! multiply-adds per instruction: twice the float32 FMA's rate on these cores (measured here:
//! 234 against 116 GFLOP/s on one core). The inputs of a product (the transformed or padded
//! image, and the kernel) are rounded to bfloat16, 8 significant bits, to nearest even; the
//! sums stay float32. That is what PyTorch's `autocast(dtype=torch.bfloat16)` does for its
//! CPU convolutions. Off by default: the results differ from float32's in the third digit.
//!
//! Pairs: a product's reduction axis `k` is cut into pairs `(2j, 2j + 1)`, both values of a
//! pair held by one 32-bit lane (low half first), the second zero past an odd `k`.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::panel::{LANES, PANEL};
use crate::simd::Aligned;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns bfloat16 products on or off for the CPU's forward convolutions (`conv2d` and
/// `conv_transpose2d` of weights that need no gradient, see [`bf16_products`], and
/// [`crate::sampled_convolution`] of such weights). Process-wide, off unless set. On a CPU
/// without AVX-512 BF16 it changes nothing.
pub fn set_bf16_products(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the forward convolutions round their inputs to bfloat16 for the products: set by
/// [`set_bf16_products`] and supported by this CPU ([`bf16_supported`]). Gradients, and
/// convolutions of weights that need one, stay float32.
pub fn bf16_products() -> bool {
    ENABLED.load(Ordering::Relaxed) && bf16_supported()
}

/// Whether this CPU has the AVX-512 BF16 instructions [`set_bf16_products`] needs (with
/// AVX-512 F, BW and VL, which every CPU with them has).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The bfloat16 bits of `x` as `VCVTNEPS2BF16` makes them: rounded to nearest even,
/// subnormals flushed to zero, NaN kept a (quiet) NaN.
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The float32 value of bfloat16 bits.
#[cfg(test)]
pub(crate) fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Rows of pairs of [`super::panel::pack`]'s panels: `[..][k][width]` becomes `[..][k / 2][width]`
/// (rounded up), each lane the pair of rows `2j` and `2j + 1`.
pub(crate) fn pack_pairs(packed: &[f32], k: usize, width: usize) -> Aligned<u32> {
    let k2 = k.div_ceil(2);
    if k == 0 {
        return Aligned::new();
    }
    assert!(
        packed.len().is_multiple_of(k * width),
        "bf16::pack_pairs: size"
    );
    let mut out = Aligned::zeroed(packed.len() / (k * width) * k2 * width);
    out.par_chunks_mut(k2 * width)
        .zip(packed.par_chunks(k * width))
        .for_each(|(dst, src)| {
            for (j, dst) in dst.chunks_exact_mut(width).enumerate() {
                for (l, d) in dst.iter_mut().enumerate() {
                    let lo = to_bf16(src[2 * j * width + l]) as u32;
                    let hi = if 2 * j + 1 < k {
                        to_bf16(src[(2 * j + 1) * width + l]) as u32
                    } else {
                        0
                    };
                    *d = lo | hi << 16;
                }
            }
        });
    out
}

/// `x` as bfloat16 values, with `spare` zeros after them (so that the pair read at a
/// pixel's last, odd, value stays inside).
pub(crate) fn convert(x: &[f32], spare: usize) -> Vec<u16> {
    let mut out = vec![0u16; x.len() + spare];
    out[..x.len()]
        .par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(dst, src)| convert_into(dst, src));
    out
}

/// `src` as bfloat16 values into `dst` (their common length), on the calling thread.
pub(crate) fn convert_into(dst: &mut [u16], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if bf16_supported() {
        // SAFETY: the features were just detected.
        return unsafe { avx512::convert(dst, src) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = to_bf16(s);
    }
}

/// [`super::panel::product_tiles`] in bfloat16: `dst[c][t] = sum_j x[j][t] * w[j][c]`, `w`
/// packed by [`pack_pairs`] from panels [`PANEL`] wide. `pairs` is scratch for `x`'s pairs.
pub(crate) fn product_tiles(
    dst: &mut [f32],
    x: &[f32],
    [stride, k, o]: [usize; 3],
    w: &[u32],
    pairs: &mut Aligned<u32>,
) {
    // The rest is checked by `product_tile_pairs`.
    let k2 = k.div_ceil(2);
    assert!(
        stride.is_multiple_of(LANES) && x.len() >= k * stride,
        "bf16::product_tiles: {k} rows of {stride} in {} values",
        x.len()
    );
    assert!(
        bf16_supported(),
        "bf16::product_tiles: the CPU lacks AVX-512 BF16"
    );
    pairs.grow(k2 * stride);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features were checked above, and the sizes.
    unsafe {
        avx512::pair_rows(&mut pairs[..k2 * stride], x, stride, k);
    }
    product_tile_pairs(dst, &pairs[..k2 * stride], [stride, k, o], w);
}

/// [`product_tiles`] of `x` already in pairs (`[k / 2][stride]`, as
/// [`winograd_input_pairs`] writes them).
pub(crate) fn product_tile_pairs(
    dst: &mut [f32],
    x: &[u32],
    [stride, k, o]: [usize; 3],
    w: &[u32],
) {
    let k2 = k.div_ceil(2);
    assert!(
        stride.is_multiple_of(LANES),
        "bf16::product_tile_pairs: stride {stride}"
    );
    assert!(
        x.len() >= k2 * stride && dst.len() >= o * stride,
        "bf16::product_tile_pairs: sizes"
    );
    assert_eq!(
        w.len(),
        k2 * o.next_multiple_of(PANEL),
        "bf16::product_tile_pairs: kernel size"
    );
    assert!(
        bf16_supported(),
        "bf16::product_tile_pairs: the CPU lacks AVX-512 BF16"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features were checked above, and the sizes.
    unsafe {
        avx512::product_tiles(dst, &x[..k2 * stride], stride, w, k2, o);
    }
}

/// A Winograd input transform over tiles, as [`super::winograd`]'s float32 ones, written as
/// bfloat16 pairs of channels into `v`, which [`product_tile_pairs`] multiplies. `scratch`
/// holds two channels' `d B`.
///
/// * F(2x2, 3x3) (`space_to_depth` false): the 4 x 4 patches of the tiles of tile rows
///   `ty0..ty1` (`tw` a row) of one item `x` (`[C, H, W]`, zero outside, the patch of tile
///   `(ty, tx)` at input pixel `(2 ty - top, 2 tx - left)`); `v` is `[16][C / 2][stride]`,
///   point `i * 4 + j` for `B^T` row `i` and `B` column `j`.
/// * F(2x2, 2x2) over the space-to-depth pixels of a 4 x 4 stride-2 layer (`space_to_depth`):
///   space-to-depth channel `(a * 2 + b) * C + ci` of pixel `(r, s)` is input pixel
///   `(2 r + a - top, 2 s + b - left)`, zero outside, and tile `(ty, tx)` covers pixels
///   `2 ty.., 2 tx..` of that image; `v` is `[9][2 C][stride]`. `C` must be even, so that a
///   pair is two input channels of one `(a, b)`.
///
/// Each input row's `d B` is computed in registers from unaligned loads of the row, its
/// columns picked by permutes (every second one, or every fourth for space-to-depth, whose
/// loads serve both column parities `b`), not from a padded copy split by column parity: those
/// copies, read back at an offset of one value right after they were written, stalled on store
/// forwarding, and were most of the float32 transforms' time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn winograd_input_pairs(
    v: &mut [u32],
    x: &[f32],
    shape: [usize; 3],
    origin: [usize; 2],
    block: [usize; 3],
    stride: usize,
    scratch: &mut Aligned<f32>,
    space_to_depth: bool,
) {
    let ([c, h, w], [ty0, ty1, tw]) = (shape, block);
    let tile_rows = ty1 - ty0;
    // Points of the transformed tile, channel pairs, and `d B` runs of a channel pair.
    let (points, k2, runs) = if space_to_depth {
        (9, 2 * c, 24)
    } else {
        (16, c.div_ceil(2), 16)
    };
    assert!(
        stride >= tile_rows * tw && v.len() >= points * k2 * stride,
        "bf16::winograd_input_pairs: output size"
    );
    assert_eq!(x.len(), c * h * w, "bf16::winograd_input_pairs: input size");
    assert!(
        !space_to_depth || c.is_multiple_of(2),
        "bf16::winograd_input_pairs: space-to-depth pairs of an odd channel count ({c})"
    );
    assert!(
        bf16_supported(),
        "bf16::winograd_input_pairs: the CPU lacks AVX-512 BF16"
    );
    let half = (tile_rows + 1) * tw;
    scratch.grow(runs * half);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features were checked above, and the sizes.
    unsafe {
        if space_to_depth {
            avx512::winograd_input_s2d_pairs(v, x, shape, origin, block, stride, scratch)
        } else {
            avx512::winograd_input_pairs(v, x, shape, origin, block, stride, scratch)
        }
    };
}

/// [`super::panel::product_pixels`] in bfloat16: the image as [`convert`] made it (one spare
/// value at least), each segment's kernel packed by [`pack_pairs`] from panels [`LANES`] wide.
pub(crate) fn product_pixels(
    dst: &mut [f32],
    [m, n, k]: [usize; 3],
    image: &[u16],
    channels: usize,
    [cols, width]: [usize; 2],
    segments: &[(usize, &[u32])],
    first_panel: usize,
) {
    let k2 = k.div_ceil(2);
    assert!(
        cols <= width,
        "bf16::product_pixels: {cols} columns of {width}"
    );
    assert!(dst.len() >= m * n, "bf16::product_pixels: destination size");
    let at = |q: usize| ((q / cols) * width + q % cols) * channels;
    for &(start, panels) in segments {
        assert!(
            m == 0 || image.len() >= start + at(m - 1) + 2 * k2,
            "bf16::product_pixels: image size"
        );
        assert!(
            panels.len() >= (first_panel + n.div_ceil(LANES)) * k2 * LANES,
            "bf16::product_pixels: kernel size"
        );
    }
    assert!(
        bf16_supported(),
        "bf16::product_pixels: the CPU lacks AVX-512 BF16"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features were checked above, and the sizes.
    unsafe {
        avx512::product_pixels(dst, [m, n, k2], image, at, segments, first_panel)
    };
}

/// Winograd F(2x2, 3x3)'s input transform `B^T d B`, vectorised over channels: the 4 x 4
/// patches of the tiles of tile rows `ty0..ty1` (`tw` per row; tile `(ty, tx)` at pixel
/// `(2 ty, 2 tx)`) of a zero-padded channels-last image (`width` pixels of `c` channels per
/// row), as bfloat16 into `v` (`[16][tiles][c]`, point `i * 4 + j` for `B^T` row `i` and `B`
/// column `j`, as [`super::winograd`]'s).
pub(crate) fn winograd_input(
    v: &mut [u16],
    image: &[f32],
    [width, c]: [usize; 2],
    [ty0, ty1, tw]: [usize; 3],
) {
    let tiles = (ty1 - ty0) * tw;
    assert!(
        v.len() >= 16 * tiles * c,
        "bf16::winograd_input: output size"
    );
    assert!(
        tiles == 0 || image.len() >= ((2 * ty1 + 1) * width + 2 * tw + 2) * c,
        "bf16::winograd_input: image size"
    );
    assert!(
        2 * tw + 2 <= width,
        "bf16::winograd_input: {tw} tiles in {width} pixels"
    );
    assert!(
        bf16_supported(),
        "bf16::winograd_input: the CPU lacks AVX-512 BF16"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features and sizes were checked above.
    unsafe {
        avx512::winograd_input(v, image, [width, c], [ty0, ty1, tw])
    };
}

/// Winograd F(2x2, 3x3)'s output transform `A^T m A + bias`, vectorised over channels: the
/// products `m` (`[16][tiles][o]`) of tile rows `ty0..ty1` into output rows `2 ty0..` of one
/// item (`[o, oh, ow]`, through `out`), dropping the pixels past the edge.
///
/// # Safety
/// `out` points to `o * oh * ow` values, whose pixels of these tile rows no one else writes.
pub(crate) unsafe fn winograd_output(
    m: &[f32],
    bias: Option<&[f32]>,
    [o, oh, ow]: [usize; 3],
    [ty0, ty1, tw]: [usize; 3],
    out: crate::simd::Disjoint,
) {
    let tiles = (ty1 - ty0) * tw;
    assert!(
        m.len() >= 16 * tiles * o,
        "bf16::winograd_output: products size"
    );
    assert!(
        bias.is_none_or(|b| b.len() >= o),
        "bf16::winograd_output: bias size"
    );
    assert!(
        2 * ty0 < oh.max(1) && 2 * tw >= ow && 2 * tw < ow + 2,
        "bf16::winograd_output: tiles"
    );
    assert!(
        bf16_supported(),
        "bf16::winograd_output: the CPU lacks AVX-512 BF16"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features and sizes were checked above, the output is the caller's.
    unsafe {
        avx512::winograd_output(m, bias, [o, oh, ow], [ty0, ty1, tw], out)
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::avx512::{every_fourth, fourth, inside, row_run};
    use super::{LANES, PANEL};

    /// Pixels per micro-tile of [`product_pixels`]: twelve sums in flight cover the
    /// instruction's latency (6 cycles at one per cycle).
    const PIXELS: usize = 12;

    /// # Safety
    /// The CPU has AVX-512F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert(dst: &mut [u16], src: &[f32]) {
        let n = dst.len().min(src.len());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n` values of both.
            unsafe {
                let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
                _mm256_storeu_si256(
                    dst.as_mut_ptr().add(i) as *mut __m256i,
                    std::mem::transmute::<__m256bh, __m256i>(v),
                );
            }
            i += 16;
        }
        for (d, &s) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = super::to_bf16(s);
        }
    }

    /// 16 values of `row` from `t` as the low or high halves of 32-bit lanes.
    #[inline(always)]
    unsafe fn widened(row: &[f32], t: usize) -> __m512i {
        // SAFETY: the caller's row holds `t + 16` values.
        unsafe {
            let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(row.as_ptr().add(t)));
            _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(v))
        }
    }

    /// `x` (`[k][stride]`) as rows of pairs (`[k / 2][stride]`).
    ///
    /// # Safety
    /// AVX-512F and BF16; `stride` a multiple of 16; `x` holds `k * stride` values, `dst`
    /// `k.div_ceil(2) * stride`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pair_rows(dst: &mut [u32], x: &[f32], stride: usize, k: usize) {
        for (j, out) in dst.chunks_exact_mut(stride).enumerate() {
            let lo = &x[2 * j * stride..][..stride];
            let hi = (2 * j + 1 < k).then(|| &x[(2 * j + 1) * stride..][..stride]);
            for t in (0..stride).step_by(16) {
                // SAFETY: rows of `stride` values, `t + 16 <= stride`.
                unsafe {
                    let mut v = widened(lo, t);
                    if let Some(hi) = hi {
                        v = _mm512_or_si512(v, _mm512_slli_epi32::<16>(widened(hi, t)));
                    }
                    _mm512_storeu_si512(out.as_mut_ptr().add(t) as *mut __m512i, v);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn pairs(p: *const u32) -> __m512bh {
        // SAFETY: the caller's pointer has 16 values.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const __m512i)) }
    }

    #[inline(always)]
    fn broadcast(v: u32) -> __m512bh {
        // SAFETY: a register-only operation of AVX-512F, which the callers enable.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(v as i32)) }
    }

    /// One micro-tile of [`product_tiles`]: `T` vectors of 16 tiles from `xp` under `Q`
    /// panels.
    #[inline(always)]
    unsafe fn tile<const T: usize, const Q: usize>(
        xp: *const u32,
        stride: usize,
        panels: [&[u32]; Q],
        k2: usize,
    ) -> [[[__m512; T]; PANEL]; Q] {
        // SAFETY: the caller's CPU has AVX-512F and BF16, its rows hold `T * 16` values from
        // `xp` for each `j < k2`, and its panels `k2` rows of `PANEL`.
        unsafe {
            let mut acc = [[[_mm512_setzero_ps(); T]; PANEL]; Q];
            for j in 0..k2 {
                let a: [__m512bh; T] = std::array::from_fn(|i| pairs(xp.add(j * stride + 16 * i)));
                for (acc, panel) in acc.iter_mut().zip(&panels) {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let b = broadcast(*panel.get_unchecked(j * PANEL + r));
                        for (acc, &a) in acc.iter_mut().zip(&a) {
                            *acc = _mm512_dpbf16_ps(*acc, a, b);
                        }
                    }
                }
            }
            acc
        }
    }

    /// `acc`'s sums into `dst` (`[o][stride]`) from row `first` and column `t`, `width` rows.
    #[inline(always)]
    fn store<const T: usize>(
        dst: &mut [f32],
        acc: &[[__m512; T]; PANEL],
        [first, width, t, stride]: [usize; 4],
    ) {
        for (r, acc) in acc.iter().enumerate().take(width) {
            let out = &mut dst[(first + r) * stride + t..][..16 * T];
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: 16 values of `out` from `16 * i`.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * i), *acc) };
            }
        }
    }

    /// # Safety
    /// AVX-512F and BF16; `xp` `[k2][stride]`, `w` `k2 * O` rounded up to panels, `dst`
    /// `o * stride` values; `stride` a multiple of 16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn product_tiles(
        dst: &mut [f32],
        xp: &[u32],
        stride: usize,
        w: &[u32],
        k2: usize,
        o: usize,
    ) {
        // Twelve sums in flight: 32 tiles under one panel, or the last 16 (all of them on
        // Market's smallest blocks) under two.
        let panels: Vec<&[u32]> = w.chunks_exact(k2 * PANEL).collect();
        let mut p = 0;
        while p < panels.len() {
            let two = p + 1 < panels.len();
            let width = |p: usize| PANEL.min(o - p * PANEL);
            let mut t = 0;
            while t + 32 <= stride {
                for (q, &panel) in panels.iter().enumerate().skip(p).take(1 + two as usize) {
                    // SAFETY: `t + 32 <= stride`, so every row read is inside `xp`.
                    let [acc] = unsafe { tile::<2, 1>(xp[t..].as_ptr(), stride, [panel], k2) };
                    store(dst, &acc, [q * PANEL, width(q), t, stride]);
                }
                t += 32;
            }
            if t < stride {
                let xp = xp[t..].as_ptr();
                // SAFETY: (both) `t + 16 <= stride`, so every row read is inside `xp`.
                if two {
                    let acc = unsafe { tile::<1, 2>(xp, stride, [panels[p], panels[p + 1]], k2) };
                    store(dst, &acc[0], [p * PANEL, width(p), t, stride]);
                    store(dst, &acc[1], [(p + 1) * PANEL, width(p + 1), t, stride]);
                } else {
                    let [acc] = unsafe { tile::<1, 1>(xp, stride, [panels[p]], k2) };
                    store(dst, &acc, [p * PANEL, width(p), t, stride]);
                }
            }
            p += 1 + two as usize;
        }
    }

    /// One micro-tile of [`product_pixels`]: `R` pixels (pairs from `image` at each segment's
    /// start plus `offsets`) under `P` panels of 16 output channels from `panel` of each
    /// segment's kernel, summed over all segments in registers and stored into `dst` (rows of
    /// `n`, channels from `first`). (Summed segment by segment into an array, the array went
    /// through memory and was zeroed by a `memset` per micro-tile.)
    #[inline(always)]
    unsafe fn pixel_tile<const R: usize, const P: usize>(
        dst: &mut [f32],
        [n, first]: [usize; 2],
        image: &[u16],
        offsets: &[usize; PIXELS],
        segments: &[(usize, &[u32])],
        [panel, k2]: [usize; 2],
    ) {
        // SAFETY: the caller's CPU has AVX-512F and BF16, its panels `k2` rows of 16 from
        // `panel` and its image `2 * k2` values from every segment's start plus offset.
        unsafe {
            let mut sums = [[_mm512_setzero_ps(); P]; R];
            for &(start, kernel) in segments {
                let image = image[start..].as_ptr();
                let panels: [*const u32; P] =
                    std::array::from_fn(|i| kernel.as_ptr().add((panel + i) * k2 * LANES));
                for j in 0..k2 {
                    let w: [__m512bh; P] = std::array::from_fn(|i| pairs(panels[i].add(j * LANES)));
                    for r in 0..R {
                        let v = broadcast(
                            (image.add(offsets[r] + 2 * j) as *const u32).read_unaligned(),
                        );
                        for i in 0..P {
                            sums[r][i] = _mm512_dpbf16_ps(sums[r][i], v, w[i]);
                        }
                    }
                }
            }
            for (r, sums) in sums.iter().enumerate() {
                for (i, &sum) in sums.iter().enumerate() {
                    let first = first + i * LANES;
                    let valid = LANES.min(n - first);
                    let out = &mut dst[r * n + first..][..valid];
                    if valid == LANES {
                        _mm512_storeu_ps(out.as_mut_ptr(), sum);
                    } else {
                        _mm512_mask_storeu_ps(
                            out.as_mut_ptr(),
                            ((1u32 << valid) - 1) as __mmask16,
                            sum,
                        );
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX-512F and BF16, and the sizes [`super::product_pixels`] checks.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn product_pixels(
        dst: &mut [f32],
        [m, n, k2]: [usize; 3],
        image: &[u16],
        at: impl Fn(usize) -> usize,
        segments: &[(usize, &[u32])],
        first_panel: usize,
    ) {
        let count = n.div_ceil(LANES);
        let mut p = 0;
        while p < count {
            // Two panels at a time under six pixels (two loads and six broadcasts per twelve
            // products), a last single one under twelve.
            let two = p + 1 < count;
            let step = if two { PIXELS / 2 } else { PIXELS };
            for q in (0..m).step_by(step) {
                let pixels = step.min(m - q);
                let mut offsets = [0; PIXELS];
                for (r, o) in offsets.iter_mut().enumerate().take(pixels) {
                    *o = at(q + r);
                }
                let dst = &mut dst[q * n..];
                let place = [n, p * LANES];
                let panel = [first_panel + p, k2];
                macro_rules! tile {
                    ([$($two:literal)*], [$($one:literal)*]) => {
                        match (two, pixels) {
                            $((true, $two) => pixel_tile::<$two, 2>(dst, place, image, &offsets, segments, panel),)*
                            $((false, $one) => pixel_tile::<$one, 1>(dst, place, image, &offsets, segments, panel),)*
                            _ => unreachable!("{pixels} pixels"),
                        }
                    };
                }
                // SAFETY: checked by the caller for every pixel of the product.
                unsafe { tile!([1 2 3 4 5 6], [1 2 3 4 5 6 7 8 9 10 11 12]) };
            }
            p += if two { 2 } else { 1 };
        }
    }

    /// The 16 lanes of `keep` of `low` and `high` (two channels' values), rounded to bfloat16
    /// and stored as pairs at `dst`, the low half of each 32-bit lane `low`'s.
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and BF16 (its callers enable them); `dst` holds the kept lanes.
    #[inline(always)]
    unsafe fn store_pairs(dst: *mut u32, keep: __mmask16, low: __m512, high: __m512) {
        // SAFETY: the caller's CPU and destination.
        unsafe {
            // `cvtne2ps` puts its second operand in lanes 0-15 of its result, its first in
            // 16-31: word 2 l of a pair from lane l, word 2 l + 1 from lane 16 + l.
            let interleave = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
            let pairs = _mm512_permutexvar_epi16(interleave, both);
            _mm512_mask_storeu_epi32(dst as *mut i32, keep, pairs);
        }
    }

    /// # Safety
    /// AVX-512F, BW, VL and BF16, and the sizes [`super::winograd_input_pairs`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn winograd_input_pairs(
        v: &mut [u32],
        x: &[f32],
        [c, h, w]: [usize; 3],
        [top, left]: [usize; 2],
        [ty0, ty1, tw]: [usize; 3],
        stride: usize,
        scratch: &mut [f32],
    ) {
        // SAFETY: the caller's CPU has the features; every access is inside the sizes it
        // checked (input rows and runs masked to their lengths).
        unsafe {
            let (tile_rows, k2) = (ty1 - ty0, c.div_ceil(2));
            let nt = tile_rows * tw;
            // `d B` of each channel of a pair, `[parity][j][row / 2][tw]`, so that patch row i of
            // all the block's tiles is one run (parity i % 2, from row i / 2), as the float32 one.
            let half = (tile_rows + 1) * tw;
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
            let (src, e) = (x.as_ptr(), scratch.as_mut_ptr());
            for cp in 0..k2 {
                for q in 0..2 {
                    let ci = 2 * cp + q;
                    let e = e.add(q * 8 * half);
                    for r in 0..2 * tile_rows + 2 {
                        let at = |j: usize| e.add(((r % 2) * 4 + j) * half + (r / 2) * tw);
                        let y = (2 * ty0 + r) as isize - top as isize;
                        // Past an odd channel count, and rows outside the image: zeros.
                        let row = (ci < c && y >= 0 && y < h as isize)
                            .then(|| src.add(ci * h * w + y as usize * w));
                        for tx0 in (0..tw).step_by(16) {
                            let keep = inside(tx0 as isize, tw);
                            let [e0, e1, e2, e3] = match row {
                                Some(row) => {
                                    let base = 2 * tx0 as isize - left as isize;
                                    // SAFETY: only the lanes inside the row are read.
                                    let load = |off: isize| {
                                        _mm512_maskz_loadu_ps(
                                            inside(base + off, w),
                                            row.wrapping_offset(base + off),
                                        )
                                    };
                                    let (a, b) = (load(0), load(16));
                                    let (a2, b2) = (load(2), load(18));
                                    // Tile tx's patch columns 2 tx.. 2 tx + 3.
                                    let d0 = _mm512_permutex2var_ps(a, even, b);
                                    let d1 = _mm512_permutex2var_ps(a, odd, b);
                                    let d2 = _mm512_permutex2var_ps(a2, even, b2);
                                    let d3 = _mm512_permutex2var_ps(a2, odd, b2);
                                    [
                                        _mm512_sub_ps(d0, d2),
                                        _mm512_add_ps(d1, d2),
                                        _mm512_sub_ps(d2, d1),
                                        _mm512_sub_ps(d1, d3),
                                    ]
                                }
                                None => [_mm512_setzero_ps(); 4],
                            };
                            for (j, ej) in [e0, e1, e2, e3].into_iter().enumerate() {
                                // SAFETY: tiles tx0.. (masked to `tw`) of this row's run.
                                _mm512_mask_storeu_ps(at(j).add(tx0), keep, ej);
                            }
                        }
                    }
                }
                // B^T (d B), for all the block's tiles at once, both channels paired.
                for j in 0..4 {
                    for t in (0..nt).step_by(16) {
                        let keep = inside(t as isize, nt);
                        let rows: [[__m512; 4]; 2] = std::array::from_fn(|q| {
                            std::array::from_fn(|i| {
                                // SAFETY: tiles t.. (masked to `nt`) of patch row i's run.
                                _mm512_maskz_loadu_ps(
                                    keep,
                                    e.add(
                                        q * 8 * half + ((i % 2) * 4 + j) * half + (i / 2) * tw + t,
                                    ),
                                )
                            })
                        });
                        let [low, high] = rows.map(|[r0, r1, r2, r3]| {
                            [
                                _mm512_sub_ps(r0, r2),
                                _mm512_add_ps(r1, r2),
                                _mm512_sub_ps(r2, r1),
                                _mm512_sub_ps(r1, r3),
                            ]
                        });
                        for (i, (low, high)) in low.into_iter().zip(high).enumerate() {
                            let at = ((i * 4 + j) * k2 + cp) * stride + t;
                            // SAFETY: point i * 4 + j, pair cp, tiles t.. (masked to `nt`) of `v`.
                            store_pairs(v.as_mut_ptr().add(at), keep, low, high);
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX-512F, BW, VL and BF16, and the sizes [`super::winograd_input_pairs`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn winograd_input_s2d_pairs(
        v: &mut [u32],
        x: &[f32],
        [c, h, w]: [usize; 3],
        [top, left]: [usize; 2],
        [ty0, ty1, tw]: [usize; 3],
        stride: usize,
        scratch: &mut [f32],
    ) {
        // SAFETY: the caller's CPU has the features; every access is inside the sizes it
        // checked (input rows and runs masked to their lengths).
        unsafe {
            let (tile_rows, k2) = (ty1 - ty0, 2 * c);
            let nt = tile_rows * tw;
            // `d B`, `[channel q][b][parity][j][row / 2][tw]` (j < 3), of the four
            // space-to-depth channels of input channels 2 cq, 2 cq + 1 and row parity `a`: both
            // column parities `b` from the same loads.
            let half = (tile_rows + 1) * tw;
            let plane = |q: usize, b: usize| (q * 2 + b) * 6 * half;
            let pick: [__m512i; 4] = std::array::from_fn(|o| fourth(o as i32));
            let (src, e) = (x.as_ptr(), scratch.as_mut_ptr());
            for cq in 0..c / 2 {
                for a in 0..2 {
                    for q in 0..2 {
                        let ci = 2 * cq + q;
                        for r in 0..2 * tile_rows + 1 {
                            let y = (2 * (2 * ty0 + r) + a) as isize - top as isize;
                            let row = (y >= 0 && y < h as isize)
                                .then(|| src.add(ci * h * w + y as usize * w));
                            for tx0 in (0..tw).step_by(16) {
                                let keep = inside(tx0 as isize, tw);
                                // Tile tx's patch columns: input columns 4 tx + b - left, + 2
                                // and + 4.
                                let base = (4 * tx0) as isize - left as isize;
                                let runs = row
                                    .map(|row| (row_run(row, base, w), row_run(row, base + 4, w)));
                                for b in 0..2 {
                                    let [e0, e1, e2] = match &runs {
                                        Some((run, next)) => {
                                            let d0 = every_fourth(run, pick[b]);
                                            let d1 = every_fourth(run, pick[2 + b]);
                                            let d2 = every_fourth(next, pick[b]);
                                            [_mm512_sub_ps(d0, d1), d1, _mm512_sub_ps(d2, d1)]
                                        }
                                        None => [_mm512_setzero_ps(); 3],
                                    };
                                    for (j, ej) in [e0, e1, e2].into_iter().enumerate() {
                                        let at =
                                            plane(q, b) + ((r % 2) * 3 + j) * half + (r / 2) * tw;
                                        _mm512_mask_storeu_ps(e.add(at + tx0), keep, ej);
                                    }
                                }
                            }
                        }
                    }
                    // B^T (d B) = (r0 - r1, r1, r2 - r1), the two input channels paired:
                    // space-to-depth channels (a * 2 + b) * C + 2 cq and the next.
                    for b in 0..2 {
                        let cp = (a * 2 + b) * c / 2 + cq;
                        for j in 0..3 {
                            for t in (0..nt).step_by(16) {
                                let keep = inside(t as isize, nt);
                                let rows: [[__m512; 3]; 2] = std::array::from_fn(|q| {
                                    std::array::from_fn(|i| {
                                        let at =
                                            plane(q, b) + ((i % 2) * 3 + j) * half + (i / 2) * tw;
                                        _mm512_maskz_loadu_ps(keep, e.add(at + t))
                                    })
                                });
                                let [low, high] = rows.map(|[r0, r1, r2]| {
                                    [_mm512_sub_ps(r0, r1), r1, _mm512_sub_ps(r2, r1)]
                                });
                                for (i, (low, high)) in low.into_iter().zip(high).enumerate() {
                                    let at = ((i * 3 + j) * k2 + cp) * stride + t;
                                    store_pairs(v.as_mut_ptr().add(at), keep, low, high);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Lanes of channels below `n`, of the 16 from `c0`.
    #[inline(always)]
    fn mask(c0: usize, n: usize) -> __mmask16 {
        let valid = (n - c0).min(16);
        if valid == 16 {
            0xffff
        } else {
            (1u16 << valid) - 1
        }
    }

    /// # Safety
    /// AVX-512F, BW, VL and BF16, and the sizes [`super::winograd_input`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn winograd_input(
        v: &mut [u16],
        image: &[f32],
        [width, c]: [usize; 2],
        [ty0, ty1, tw]: [usize; 3],
    ) {
        let tiles = (ty1 - ty0) * tw;
        let (src, dst) = (image.as_ptr(), v.as_mut_ptr());
        for t in 0..tiles {
            let (ty, tx) = (ty0 + t / tw, t % tw);
            let corner = (2 * ty * width + 2 * tx) * c;
            for c0 in (0..c).step_by(16) {
                let k = mask(c0, c);
                // SAFETY (loads): pixel (2 ty + r, 2 tx + s) for r, s < 4 lies inside the
                // image (checked by the caller); the mask keeps to its channels.
                let d: [[__m512; 4]; 4] = std::array::from_fn(|r| {
                    std::array::from_fn(|s| unsafe {
                        _mm512_maskz_loadu_ps(k, src.add(corner + (r * width + s) * c + c0))
                    })
                });
                // d B, per row: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
                let e: [[__m512; 4]; 4] = std::array::from_fn(|r| {
                    let [d0, d1, d2, d3] = d[r];
                    [
                        _mm512_sub_ps(d0, d2),
                        _mm512_add_ps(d1, d2),
                        _mm512_sub_ps(d2, d1),
                        _mm512_sub_ps(d1, d3),
                    ]
                });
                // B^T, per column j of d B: rows e0 - e2, e1 + e2, e2 - e1, e1 - e3.
                let columns: [[__m512; 4]; 4] =
                    std::array::from_fn(|j| std::array::from_fn(|r| e[r][j]));
                for (j, [e0, e1, e2, e3]) in columns.into_iter().enumerate() {
                    let rows = [
                        _mm512_sub_ps(e0, e2),
                        _mm512_add_ps(e1, e2),
                        _mm512_sub_ps(e2, e1),
                        _mm512_sub_ps(e1, e3),
                    ];
                    for (i, row) in rows.into_iter().enumerate() {
                        // SAFETY: point i * 4 + j, tile t, channels c0.. (masked) lie inside
                        // `v` (checked by the caller).
                        unsafe {
                            let b = _mm512_cvtneps_pbh(row);
                            let b = std::mem::transmute::<__m256bh, __m256i>(b);
                            let at = dst.add(((i * 4 + j) * tiles + t) * c + c0);
                            _mm256_mask_storeu_epi16(at as *mut i16, k, b);
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX-512F, and what [`super::winograd_output`] requires and checks.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn winograd_output(
        m: &[f32],
        bias: Option<&[f32]>,
        [o, oh, ow]: [usize; 3],
        [ty0, ty1, tw]: [usize; 3],
        out: crate::simd::Disjoint,
    ) {
        let tiles = (ty1 - ty0) * tw;
        let src = m.as_ptr();
        for t in 0..tiles {
            let (ty, tx) = (ty0 + t / tw, t % tw);
            for o0 in (0..o).step_by(16) {
                let k = mask(o0, o);
                // SAFETY (loads): point p, tile t, channels o0.. (masked) of `m`.
                let mv: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| unsafe {
                        _mm512_maskz_loadu_ps(k, src.add(((i * 4 + j) * tiles + t) * o + o0))
                    })
                });
                // m A, per row: m0 + m1 + m2, m1 - m2 - m3; then A^T the same over rows.
                let f: [[__m512; 2]; 4] = std::array::from_fn(|i| {
                    let [m0, m1, m2, m3] = mv[i];
                    [
                        _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
                        _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
                    ]
                });
                let b = match bias {
                    // SAFETY: the caller checked `o` bias values.
                    Some(b) => unsafe { _mm512_maskz_loadu_ps(k, b.as_ptr().add(o0)) },
                    None => _mm512_setzero_ps(),
                };
                let mut y = [[[0.0f32; 16]; 2]; 2];
                for j in 0..2 {
                    let y0 =
                        _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(f[0][j], f[1][j]), f[2][j]), b);
                    let y1 =
                        _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(f[1][j], f[2][j]), f[3][j]), b);
                    // SAFETY: local arrays of 16.
                    unsafe {
                        _mm512_storeu_ps(y[0][j].as_mut_ptr(), y0);
                        _mm512_storeu_ps(y[1][j].as_mut_ptr(), y1);
                    }
                }
                let valid = (o - o0).min(16);
                for (a, y) in y.iter().enumerate() {
                    let row = 2 * ty + a;
                    if row >= oh {
                        break;
                    }
                    for (j, y) in y.iter().enumerate() {
                        let col = 2 * tx + j;
                        if col >= ow {
                            break;
                        }
                        for (l, &value) in y.iter().enumerate().take(valid) {
                            // SAFETY: channel o0 + l, pixel (row, col) of the caller's output,
                            // in this call's tile rows.
                            unsafe { *out.ptr().add(((o0 + l) * oh + row) * ow + col) = value };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::lcg(n, seed, 1.0)
    }

    fn rounded(x: f32) -> f64 {
        from_bf16(to_bf16(x)) as f64
    }

    /// Whether the kernels can run here; the tests that need them say so when they cannot.
    fn supported() -> bool {
        let yes = bf16_supported();
        if !yes {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
        }
        yes
    }

    #[test]
    fn rounds_to_nearest_even_and_flushes_subnormals() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even one, 1. 1 + 3 * 2^-8 is
        // halfway between 1 + 2^-7 and 1 + 2^-6: to the even one, 1 + 2^-6.
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(1e-40), 0);
        assert_eq!(to_bf16(-1e-40), 0x8000);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // The largest float rounds up to infinity, as the instruction does.
        assert_eq!(to_bf16(f32::MAX), 0x7f80);
    }

    #[test]
    fn conversion_matches_the_scalar_rounding() {
        let mut x = lcg(1000, 11);
        x.extend([
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            1e-40,
            -1e-40,
            f32::MAX,
        ]);
        x.extend([f32::INFINITY, -0.0, 65504.0, 3.0e38]);
        let got = convert(&x, 3);
        assert_eq!(got.len(), x.len() + 3);
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            assert_eq!(g, to_bf16(v), "value {i}: {v}");
        }
        assert_eq!(&got[x.len()..], &[0, 0, 0]);
    }

    #[test]
    fn pairs_hold_two_rows_low_half_first() {
        // One panel 2 wide, k = 3: rows (1, 2), (3, 4), (5, 6).
        let packed = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let p = pack_pairs(&packed, 3, 2);
        let pair = |lo: f32, hi: f32| to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16;
        // A vector's start: on a 64-byte boundary.
        assert_eq!(p.as_ptr() as usize % 64, 0);
        assert_eq!(
            p.to_vec(),
            vec![
                pair(1.0, 3.0),
                pair(2.0, 4.0),
                pair(5.0, 0.0),
                pair(6.0, 0.0)
            ]
        );
    }

    /// Both tile widths (32 and a remaining 16), an odd `k`, a partial panel.
    #[test]
    fn product_tiles_matches_a_naive_sum_of_rounded_values() {
        if !supported() {
            return;
        }
        let (k, o, stride) = (13, 14, 48);
        let x = lcg(k * stride, 1);
        let w = lcg(k * o, 2);
        let packed = pack_pairs(&super::super::panel::pack(&w, 1, k, o, PANEL), k, PANEL);
        let mut dst = vec![f32::NAN; o * stride];
        product_tiles(&mut dst, &x, [stride, k, o], &packed, &mut Aligned::new());
        for c in 0..o {
            for t in 0..stride {
                let want: f64 = (0..k)
                    .map(|j| rounded(x[j * stride + t]) * rounded(w[j * o + c]))
                    .sum();
                let got = dst[c * stride + t] as f64;
                assert!((got - want).abs() < 1e-5, "[{c}][{t}]: {got} vs {want}");
            }
        }
    }

    /// Two segments, pixels in rows of a wider image, 29 pixels (two full micro-tiles and 5),
    /// 40 output channels from the second panel on (a partial last one), an odd `k`.
    #[test]
    fn product_pixels_matches_a_naive_sum_of_rounded_values() {
        if !supported() {
            return;
        }
        let (channels, cols, width, k, oc) = (7, 5, 6, 7, 56);
        let (m, n, first_panel) = (29usize, 40, 1);
        let rows = m.div_ceil(cols) + 1;
        let image = lcg(rows * width * channels, 3);
        let kernels: Vec<Vec<f32>> = (0..2).map(|s| lcg(k * oc, 4 + s)).collect();
        let packed: Vec<Aligned<u32>> = kernels
            .iter()
            .map(|w| pack_pairs(&super::super::panel::pack(w, 1, k, oc, LANES), k, LANES))
            .collect();
        let starts = [0, width * channels];
        let segments: Vec<(usize, &[u32])> = starts
            .iter()
            .zip(&packed)
            .map(|(&s, p)| (s, &p[..]))
            .collect();
        let image16 = convert(&image, 1);
        let mut dst = vec![f32::NAN; m * n];
        product_pixels(
            &mut dst,
            [m, n, k],
            &image16,
            channels,
            [cols, width],
            &segments,
            first_panel,
        );
        for q in 0..m {
            let at = ((q / cols) * width + q % cols) * channels;
            for c in 0..n {
                let oc_index = first_panel * LANES + c;
                let want: f64 = (0..2)
                    .map(|s| {
                        (0..k)
                            .map(|j| {
                                rounded(image[starts[s] + at + j])
                                    * rounded(kernels[s][j * oc + oc_index])
                            })
                            .sum::<f64>()
                    })
                    .sum();
                let got = dst[q * n + c] as f64;
                assert!((got - want).abs() < 1e-5, "[{q}][{c}]: {got} vs {want}");
            }
        }
    }
}
