//! Convolutions of `f32` NCHW images as a few large matrix products, without im2col.
//!
//! The input is copied once, padded and channels-last, into `P` (`[rows, width, C]`). A
//! stride-1 correlation with a `kh x kw` kernel then reads, for kernel row `u`, the matrix whose
//! row `q = y * width + x` is the `kw * C` values starting at pixel `q + u * width` of `P`:
//! consecutive rows overlap, so it is a strided view of `P` and never copied. The products
//! ([`super::panel`]) sum over all kernel rows at once, against the kernel packed in panels of
//! output channels, and address each output pixel by its row and column, so the columns of `P`
//! past the output's are not computed. The weight gradient's products (the `gemm` crate) do
//! compute them, with a zero output gradient there, so that one product covers a block of
//! rows.
//!
//! A stride-`s` convolution becomes a stride-1 one over `P` in space-to-depth order (each
//! `s x s` block of pixels is one pixel of `s*s*C` channels), and a transposed convolution of
//! stride `s` splits into `s*s` stride-1 phases, one per output parity, so neither multiplies
//! zeros.

use rayon::prelude::*;

use super::panel::{self, LANES, Segment};
use crate::simd::Disjoint;

/// Output elements per parallel task (rows of the product times output channels): big enough
/// for the GEMM to reach speed, small enough to give two cores several tasks.
const TASK_ELEMENTS: usize = 1 << 17;

/// Output channels per block when reordering kernels: one panel of a [`Phase`]'s kernel.
const CHANNEL_BLOCK: usize = LANES;

/// Kernel taps per tile when reordering kernels.
const TAP_BLOCK: usize = 16;

/// Shape of a convolution over a batch of NCHW images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// `[batch, channels, height, width]` of the input.
    pub input: [usize; 4],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

/// Shape of a transposed convolution over a batch of NCHW images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposedGeometry {
    /// `[batch, channels, height, width]` of the input.
    pub input: [usize; 4],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Rows and columns cropped from the top and left of the full transposed output
    /// (PyTorch's `padding`).
    pub crop: [usize; 2],
    /// Output height and width (PyTorch's `output_padding` only sets this).
    pub output: [usize; 2],
}

impl ConvGeometry {
    /// Output `[height, width]`.
    pub fn output(&self) -> [usize; 2] {
        let [_, _, h, w] = self.input;
        let [t, l, b, r] = self.padding;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        [(h + t + b - kh) / sh + 1, (w + l + r - kw) / sw + 1]
    }
}

/// A padded channels-last image, with one spare zero row so that the dropped columns of the
/// last output row read inside it.
pub(super) struct Padded {
    pub(super) data: Vec<f32>,
    pub(super) width: usize,
    pub(super) channels: usize,
}

/// One stride-1 correlation over [`Padded`] whose output lands strided in the NCHW output.
pub(super) struct Phase {
    /// The kernel as `kh` row blocks of `[kw * C, out_channels]`, each packed in panels of
    /// [`LANES`] output channels (`[kh][O / LANES][kw * C][LANES]`, see [`packed`]).
    rhs: crate::simd::Aligned<f32>,
    /// `rhs` in bfloat16 pairs (`[kh][O / LANES][kw * C / 2][LANES]`), made at the first
    /// product in bfloat16.
    pairs: std::sync::OnceLock<crate::simd::Aligned<u32>>,
    kernel: [usize; 2],
    /// Pixel of `P` under output (0, 0)'s top-left tap.
    origin: [usize; 2],
    /// Output rows and columns of this phase.
    size: [usize; 2],
    /// Output (y, x) lands at row `offset[0] + step[0] * y`, column `offset[1] + step[1] * x`.
    offset: [usize; 2],
    step: [usize; 2],
}

impl Phase {
    /// Values held (floats and bfloat16 pairs, four bytes each).
    fn len(&self) -> usize {
        self.rhs.len() + self.pairs.get().map_or(0, |p| p.len())
    }

    /// Whether the phase has taps: a transposed phase may have none, and its output is the
    /// bias.
    fn tapped(&self) -> bool {
        self.kernel[0] > 0 && self.kernel[1] > 0
    }
}

/// Where a [`Phase`]'s kernel holds kernel row `u`, value `j` of its `k`, output channel `o`
/// of `oc`.
fn packed(u: usize, j: usize, o: usize, k: usize, oc: usize) -> usize {
    ((u * oc.div_ceil(LANES) + o / LANES) * k + j) * LANES + o % LANES
}

/// A matrix operand: values, row stride, column stride.
type Operand<'a> = (&'a [f32], usize, usize);

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)`, single-threaded, any strides.
pub(super) fn product(
    (dst, dst_rs, dst_cs): (&mut [f32], usize, usize),
    accumulate: bool,
    [m, n, k]: [usize; 3],
    (lhs, lhs_rs, lhs_cs): Operand,
    (rhs, rhs_rs, rhs_cs): Operand,
) {
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst.len() > last(dst_rs, dst_cs, m, n),
        "product: destination too small"
    );
    assert!(
        lhs.len() > last(lhs_rs, lhs_cs, m, k),
        "product: lhs too small"
    );
    assert!(
        rhs.len() > last(rhs_rs, rhs_cs, k, n),
        "product: rhs too small"
    );
    // SAFETY: the extents the strides reach were checked above; `dst` is a distinct `&mut`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

thread_local! {
    /// Each thread's product buffer, kept between tasks and calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Convolutions with at most this many output channels run as dot products instead of
/// matrix products, whose smallest tile is 16 channels wide (the 64 -> 3 output layer ran at
/// under a tenth of the GEMM's speed).
pub(super) const DIRECT: usize = 4;

/// The eight-lane sums of [`direct_rows`] over `chunks` vectors of `DIRECT_PIXELS` pixels and
/// [`DIRECT`] kernels. A function of its own that returns the sums: as locals of the loop
/// body they went back to the stack at every step.
#[inline(always)]
fn direct_tile(
    rows: &[&[[f32; 8]]; DIRECT_PIXELS],
    taps: &[&[[f32; 8]]; DIRECT],
    chunks: usize,
) -> [[[f32; 8]; DIRECT]; DIRECT_PIXELS] {
    let mut sums = [[[0.0f32; 8]; DIRECT]; DIRECT_PIXELS];
    for c in 0..chunks {
        // Operands loaded first: bounds checks among the multiply-adds kept them from being
        // vectorised.
        let w: [[f32; 8]; DIRECT] = std::array::from_fn(|o| taps[o][c]);
        let a: [[f32; 8]; DIRECT_PIXELS] = std::array::from_fn(|i| rows[i][c]);
        for o in 0..DIRECT {
            for i in 0..DIRECT_PIXELS {
                for l in 0..8 {
                    sums[i][o][l] = a[i][l].mul_add(w[o][l], sums[i][o][l]);
                }
            }
        }
    }
    sums
}

/// Pixels per step of [`direct_rows`]: with [`DIRECT`] channels, 12 eight-lane sums, which
/// with the kernel's vector fill the 16 AVX2 registers.
const DIRECT_PIXELS: usize = 3;

multiversion! {
    /// Output rows `rows` of phase `ph` with at most [`DIRECT`] output channels: for each
    /// pixel, the dot products of its `kw * C` values in each kernel row of `P` with `kernel`
    /// (`[kh][DIRECT][kw * C]`), [`DIRECT_PIXELS`] pixels at a time, in eight-lane sums that are
    /// added up once per pixel and channel. (One dot product per pixel, channel and kernel
    /// row, each read both operands and added its lanes up: the 64 -> 3 output layer ran at
    /// 18 GFLOP/s.)
    fn direct_rows(
        p: &Padded,
        ph: &Phase,
        kernel: &[f32],
        rows: std::ops::Range<usize>,
        bias: &[f32],
        out: Disjoint,
        shape: [usize; 3],
    ) {
        let [oc, oh, ow] = shape;
        let [kh, kw] = ph.kernel;
        // A transposed phase may have no taps at all: its output is the bias.
        let kh = if kw > 0 { kh } else { 0 };
        let k = kw * p.channels;
        let lanes = k / 8 * 8;
        for y in rows {
            let oy = ph.offset[0] + ph.step[0] * y;
            for x0 in (0..ph.size[1]).step_by(DIRECT_PIXELS) {
                let pixels = DIRECT_PIXELS.min(ph.size[1] - x0);
                let mut acc = [[[0.0f32; 8]; DIRECT]; DIRECT_PIXELS];
                for u in 0..kh {
                    let start = ((ph.origin[0] + y + u) * p.width + ph.origin[1] + x0) * p.channels;
                    // Past the row's last pixel, the first one again (computed, not stored).
                    let rows: [&[f32]; DIRECT_PIXELS] = std::array::from_fn(|i| {
                        let i = if i < pixels { i } else { 0 };
                        &p.data[start + i * p.channels..][..k]
                    });
                    let taps: [&[f32]; DIRECT] =
                        std::array::from_fn(|o| &kernel[(u * DIRECT + o) * k..][..k]);
                    // Whole vectors, then the last `k % 8` values; separate sums, so that the
                    // vector ones stay in registers.
                    let rows8: [&[[f32; 8]]; DIRECT_PIXELS] =
                        std::array::from_fn(|i| rows[i].as_chunks::<8>().0);
                    let taps8: [&[[f32; 8]]; DIRECT] =
                        std::array::from_fn(|o| taps[o].as_chunks::<8>().0);
                    let mut sums = direct_tile(&rows8, &taps8, k / 8);
                    for i in 0..DIRECT_PIXELS {
                        for o in 0..DIRECT {
                            let mut tail = 0.0f32;
                            for c in lanes..k {
                                tail = rows[i][c].mul_add(taps[o][c], tail);
                            }
                            sums[i][o][0] += tail;
                            for l in 0..8 {
                                acc[i][o][l] += sums[i][o][l];
                            }
                        }
                    }
                }
                for (i, acc) in acc.iter().enumerate().take(pixels) {
                    for o in 0..oc {
                        let v = acc[o].iter().sum::<f32>() + bias[o];
                        let x = x0 + i;
                        let at = o * oh * ow + oy * ow + ph.offset[1] + ph.step[1] * x;
                        // SAFETY: `at` is inside the output and belongs to this phase and row
                        // only.
                        unsafe { *out.ptr().add(at) = v };
                    }
                }
            }
        }
    }
}

/// How one product's rows (`rows` output rows of `width` columns) and `channels` output
/// channels are cut into parallel tasks: blocks of `rows` and of `channels`.
#[derive(Debug, Clone, Copy)]
struct Split {
    rows: usize,
    channels: usize,
}

impl Split {
    /// At most [`TASK_ELEMENTS`] per task, and at least two tasks per thread when the rows
    /// allow it, then cutting channels (in whole kernel panels of [`LANES`]) for small, deep
    /// maps.
    fn new(rows: usize, width: usize, channels: usize) -> Self {
        let want = 2 * rayon::current_num_threads();
        let by_size = (TASK_ELEMENTS / (width * channels).max(1)).max(1);
        let block = by_size.min(rows.div_ceil(want)).max(1);
        let blocks = rows.div_ceil(block);
        let cuts = want.div_ceil(blocks).min(channels.div_ceil(LANES)).max(1);
        Self {
            rows: block,
            // Whole panels of the kernel.
            channels: channels.div_ceil(cuts).next_multiple_of(LANES),
        }
    }
}

/// A phase's kernel (`[kh][kw * C][oc]`) as [`direct_rows`] reads it: `[kh][DIRECT][kw * C]`.
fn direct_kernel(ph: &Phase, channels: usize, oc: usize) -> Vec<f32> {
    let [kh, kw] = ph.kernel;
    let k = kw * channels;
    let mut out = vec![0.0f32; kh * DIRECT * k];
    for u in 0..kh {
        for j in 0..k {
            for o in 0..oc {
                out[(u * DIRECT + o) * k + j] = ph.rhs[packed(u, j, o, k, oc)];
            }
        }
    }
    out
}

/// Runs `phases` over one batch item: `out` is `[out_channels, oh, ow]`; `bf16`: the products
/// of layers with more than [`DIRECT`] output channels in bfloat16 ([`super::bf16`]).
fn run_phases(
    p: &Padded,
    phases: &[Phase],
    bias: Option<&[f32]>,
    out: &mut [f32],
    [oc, oh, ow]: [usize; 3],
    bf16: bool,
) {
    let wp = p.width;
    let rows = phases.iter().map(|ph| ph.size[0]).max().unwrap_or(0);
    let dst = Disjoint(out.as_mut_ptr());
    if oc <= DIRECT {
        let split = Split::new(rows * phases.len(), wp, oc);
        let tasks: Vec<(usize, usize)> = phases
            .iter()
            .enumerate()
            .flat_map(|(i, ph)| {
                (0..ph.size[0].div_ceil(split.rows)).map(move |r| (i, r * split.rows))
            })
            .collect();
        let zeros = [0.0f32; DIRECT];
        let bias = bias.unwrap_or(&zeros);
        let kernels: Vec<Vec<f32>> = phases
            .iter()
            .map(|ph| direct_kernel(ph, p.channels, oc))
            .collect();
        tasks.into_par_iter().for_each(|(i, y0)| {
            let ph = &phases[i];
            let rows = y0..(y0 + split.rows).min(ph.size[0]);
            direct_rows(p, ph, &kernels[i], rows, bias, dst, [oc, oh, ow]);
        });
        return;
    }
    // Phases that fill the same output rows (one row parity, every column parity) run in one
    // task, which then writes those rows whole and in order (two parities as interleaved
    // pairs): written phase by phase at a stride, the decoders' transposed layers took 15-20 %
    // longer.
    let mut groups: Vec<Vec<&Phase>> = Vec::new();
    for ph in phases {
        match groups.iter_mut().find(|g| g[0].offset[0] == ph.offset[0]) {
            Some(g) => g.push(ph),
            None => groups.push(vec![ph]),
        }
    }
    let widest = groups.iter().map(Vec::len).max().unwrap_or(1);
    let split = Split::new(rows * groups.len(), wp * widest, oc);
    // Row block outer, group inner: the groups of a transposed layer differ in taps (1 and 2
    // kernel rows at stride 2), and rayon hands each thread a contiguous half of the list, so
    // group-outer gave one thread the cheap tasks and the other the dear ones.
    let row_blocks = rows.div_ceil(split.rows);
    let tasks: Vec<(usize, usize, usize)> = (0..row_blocks)
        .flat_map(|r| {
            groups
                .iter()
                .enumerate()
                .filter(move |(_, g)| r * split.rows < g[0].size[0])
                .flat_map(move |(i, _)| {
                    (0..oc.div_ceil(split.channels))
                        .map(move |c| (i, r * split.rows, c * split.channels))
                })
        })
        .collect();
    // The image converted once, each phase's kernel once per prepared kernel. Two spare values:
    // the pair read at a pixel's last value when `k` is odd.
    let image16 = bf16.then(|| {
        // Each phase's pairs made here, before the tasks read them: made inside a task, a
        // thread waiting on the packing's parallel loop could steal a task that waits on the
        // same cell.
        for ph in phases {
            let k = ph.kernel[1] * p.channels;
            ph.pairs
                .get_or_init(|| super::bf16::pack_pairs(&ph.rhs, k, LANES));
        }
        super::bf16::convert(&p.data, 2)
    });
    tasks.into_par_iter().for_each(|(i, y0, c0)| {
        let group = &groups[i];
        let first = group[0];
        let rows = split.rows.min(first.size[0] - y0);
        let channels = c0..(c0 + split.channels).min(oc);
        let n = channels.len();
        let m = rows * wp;
        SCRATCH.with_borrow_mut(|acc| {
            // One `m x n` product per phase over all its kernel rows, which overwrites (the
            // buffer is only grown, never cleared). A transposed phase may have no taps at
            // all: its output is the bias.
            if acc.len() < group.len() * m * n {
                acc.resize(group.len() * m * n, 0.0);
            }
            for (g, ph) in group.iter().enumerate() {
                if !ph.tapped() {
                    continue;
                }
                let [kh, kw] = ph.kernel;
                let k = kw * p.channels;
                let starts =
                    (0..kh).map(|u| ((ph.origin[0] + y0 + u) * wp + ph.origin[1]) * p.channels);
                // Only the phase's own columns of each row: on Market's smallest maps (4 x 2)
                // the dropped ones were half the work.
                let cols = ph.size[1];
                let acc = &mut acc[g * m * n..][..rows * cols * n];
                let (shape, grid) = ([rows * cols, n, k], [cols, wp]);
                if let Some(image) = &image16 {
                    let pairs = ph.pairs.get().expect("pairs made before the tasks");
                    let row = k.div_ceil(2) * oc.next_multiple_of(LANES);
                    let segments: Vec<(usize, &[u32])> = starts
                        .enumerate()
                        .map(|(u, start)| (start, &pairs[u * row..][..row]))
                        .collect();
                    super::bf16::product_pixels(
                        acc,
                        shape,
                        image,
                        p.channels,
                        grid,
                        &segments,
                        c0 / LANES,
                    );
                } else {
                    let row = k * oc.next_multiple_of(LANES);
                    let segments: Vec<Segment> = starts
                        .enumerate()
                        .map(|(u, start)| Segment {
                            start,
                            panels: &ph.rhs[u * row..][..row],
                        })
                        .collect();
                    panel::product_pixels(
                        acc,
                        shape,
                        &p.data,
                        p.channels,
                        grid,
                        &segments,
                        c0 / LANES,
                    );
                }
            }
            let rows = y0..y0 + rows;
            write_out(
                acc,
                &group[..],
                m * n,
                [rows, channels],
                bias,
                dst,
                [oh, ow],
            );
        });
    });
}

/// Output channels and pixels of one block of the phases' write-out.
const WRITE_BLOCK: usize = 8;

/// `WRITE_BLOCK` pixels of `WRITE_BLOCK` channels, `src[x * stride + j]`, as rows of one
/// channel each, transposed in registers where the CPU has AVX (value by value, the compiler
/// gathered each row with scalar inserts through the stack).
#[inline(always)]
fn transposed_block(src: &[f32], stride: usize) -> [[f32; WRITE_BLOCK]; WRITE_BLOCK] {
    assert!(src.len() >= (WRITE_BLOCK - 1) * stride + WRITE_BLOCK);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: AVX was just detected; the rows read were checked above.
        return unsafe { transposed_block_avx(src, stride) };
    }
    std::array::from_fn(|j| std::array::from_fn(|x| src[x * stride + j]))
}

/// [`transposed_block`] with AVX shuffles: pairs interleaved, then quadruples, then the
/// 128-bit halves swapped.
///
/// # Safety
/// The CPU has AVX, and `src` holds `(WRITE_BLOCK - 1) * stride + WRITE_BLOCK` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn transposed_block_avx(src: &[f32], stride: usize) -> [[f32; WRITE_BLOCK]; WRITE_BLOCK] {
    use std::arch::x86_64::*;
    // SAFETY (all loads): rows `x * stride..+8` for x < 8 are inside `src` (the caller's).
    let r: [__m256; 8] =
        std::array::from_fn(|x| unsafe { _mm256_loadu_ps(src.as_ptr().add(x * stride)) });
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    let rows = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    // SAFETY: `__m256` and `[f32; 8]` have the same size, and every bit pattern is valid.
    unsafe { std::mem::transmute(rows) }
}

multiversion! {
    /// Writes one task's products into the NCHW output (`[oc, oh, ow]` behind `dst`): phase `g`
    /// of `group` holds `[row][column][channel]` for the task's output rows and channels at
    /// `g * stride` of `acc`. A row of one channel is strided there, so blocks of
    /// [`WRITE_BLOCK`] pixels and channels are transposed in registers (value by value, the
    /// write-out was a fifth of a transposed layer's time); a single phase writes its rows
    /// whole, GFLA's stride-2 pairs of column parities as interleaved pairs.
    fn write_out(
        acc: &[f32],
        group: &[&Phase],
        stride: usize,
        task: [std::ops::Range<usize>; 2],
        bias: Option<&[f32]>,
        dst: Disjoint,
        shape: [usize; 2],
    ) {
        let [rows, channels] = task;
        let [oh, ow] = shape;
        let n = channels.len();
        let first = group[0];
        let step = first.step;
        let single = group.len() == 1 && step[1] == 1 && first.tapped();
        let pair = match group {
            [p0, p1] => {
                step[1] == 2
                    && [p0.offset[1], p1.offset[1]] == [0, 1]
                    && p0.tapped()
                    && p1.tapped()
                    && p0.size[1] + p1.size[1] == ow
            }
            _ => false,
        };
        let cols = |g: usize| group[g].size[1];
        let widest = group.iter().map(|ph| ph.size[1]).max().unwrap_or(0);
        for j0 in (0..n).step_by(WRITE_BLOCK) {
            let block = WRITE_BLOCK.min(n - j0);
            let b: [f32; WRITE_BLOCK] =
                std::array::from_fn(|j| bias.map_or(0.0, |b| b[channels.start + (j0 + j).min(n - 1)]));
            for (y, r) in rows.clone().enumerate() {
                let oy = first.offset[0] + step[0] * r;
                // Output row `oy` of channel `j0 + j` of the block.
                let row = |j: usize| (channels.start + j0 + j) * oh * ow + oy * ow;
                // Value of column `x` of phase `g` in the block's channel `j`.
                let at = |g: usize, x: usize, j: usize| acc[g * stride + (y * cols(g) + x) * n + j0 + j];
                let mut done = 0;
                if block == WRITE_BLOCK && single {
                    let src = &acc[y * cols(0) * n + j0..];
                    done = cols(0) / WRITE_BLOCK * WRITE_BLOCK;
                    for x0 in (0..done).step_by(WRITE_BLOCK) {
                        let t = transposed_block(&src[x0 * n..], n);
                        for (j, t) in t.iter().enumerate() {
                            let v: [f32; WRITE_BLOCK] = std::array::from_fn(|x| t[x] + b[j]);
                            // SAFETY: columns offset + x0.. + 8 of output row `oy` of this
                            // channel are inside `dst` and belong to this task only.
                            unsafe {
                                dst.ptr()
                                    .add(row(j) + first.offset[1] + x0)
                                    .cast::<[f32; WRITE_BLOCK]>()
                                    .write_unaligned(v)
                            };
                        }
                    }
                } else if block == WRITE_BLOCK && pair {
                    let (src0, src1) = (&acc[y * cols(0) * n + j0..], &acc[stride + y * cols(1) * n + j0..]);
                    done = cols(1) / WRITE_BLOCK * WRITE_BLOCK;
                    for x0 in (0..done).step_by(WRITE_BLOCK) {
                        let (t0, t1) = (
                            transposed_block(&src0[x0 * n..], n),
                            transposed_block(&src1[x0 * n..], n),
                        );
                        for j in 0..WRITE_BLOCK {
                            let v: [f32; 2 * WRITE_BLOCK] = std::array::from_fn(|i| {
                                let t = if i % 2 == 0 { &t0 } else { &t1 };
                                t[j][i / 2] + b[j]
                            });
                            // SAFETY: columns 2 * x0.. + 16 of output row `oy` of this channel
                            // are inside `dst` and belong to this task only.
                            unsafe {
                                dst.ptr()
                                    .add(row(j) + 2 * x0)
                                    .cast::<[f32; 2 * WRITE_BLOCK]>()
                                    .write_unaligned(v)
                            };
                        }
                    }
                }
                // The rest value by value. Column x of phase g is output column offset + step
                // * x: in output order, x outer and phases inner.
                for (j, &b) in b.iter().enumerate().take(block) {
                    for x in done..widest {
                        for (g, ph) in group.iter().enumerate() {
                            if x < ph.size[1] {
                                let v = if ph.tapped() { at(g, x, j) } else { 0.0 } + b;
                                // SAFETY: (channel, oy, offset + step * x) is inside `dst` and
                                // belongs to this task only (its row parity, row block and
                                // channel block).
                                unsafe { *dst.ptr().add(row(j) + ph.offset[1] + ph.step[1] * x) = v };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Channels copied together by [`pad_item`].
const PAD_CHANNELS: usize = 8;

/// Row `ys` of [`pad_item`]'s copy (zeros where it is outside the input).
fn pad_row(
    x: &[f32],
    [c, h, w]: [usize; 3],
    [sh, sw]: [usize; 2],
    [top, left]: [usize; 2],
    ys: usize,
    row: &mut [f32],
) {
    let channels = sh * sw * c;
    let width = row.len() / channels;
    // Eight channels at a time: eight input rows read along, each pixel's eight values written
    // together. (One channel at a time, one value per pixel at a stride of C, the copy took as
    // long as the 64 -> 3 output layer's products.)
    for a in 0..sh {
        let Some(y) = (ys * sh + a).checked_sub(top).filter(|&y| y < h) else {
            continue;
        };
        for c0 in (0..c).step_by(PAD_CHANNELS) {
            let n = PAD_CHANNELS.min(c - c0);
            // Past the last channel, the last again (read, not written).
            let src: [&[f32]; PAD_CHANNELS] =
                std::array::from_fn(|i| &x[((c0 + i.min(n - 1)) * h + y) * w..][..w]);
            for b in 0..sw {
                let dst = &mut row[(a * sw + b) * c + c0..];
                // Columns xs with 0 <= xs * sw + b - left < w.
                let first = left.saturating_sub(b).div_ceil(sw);
                let end = (w + left).saturating_sub(b).div_ceil(sw).min(width);
                let mut xs = first;
                if sw == 1 && n == PAD_CHANNELS {
                    // Blocks of eight pixels of the eight channels, transposed in registers.
                    let plane = h * w;
                    while xs + WRITE_BLOCK <= end {
                        let t = transposed_block(&x[(c0 * h + y) * w + xs - left..], plane);
                        for (j, t) in t.iter().enumerate() {
                            dst[(xs + j) * channels..][..PAD_CHANNELS].copy_from_slice(t);
                        }
                        xs += WRITE_BLOCK;
                    }
                }
                for xs in xs..end {
                    let at = xs * sw + b - left;
                    // Stored value by value: gathered into an array first, each block was
                    // reloaded as a vector from the smaller stores, which stalls.
                    let out = &mut dst[xs * channels..][..n];
                    for (o, src) in out.iter_mut().zip(&src) {
                        *o = src[at];
                    }
                }
            }
        }
    }
}

/// Copies one NCHW item into `P` in space-to-depth order: pixel `(ys, xs)` of `P` holds input
/// pixels `(ys * sh + a - top, xs * sw + b - left)` for `a < sh`, `b < sw`, channel
/// `(a * sw + b) * C + c`; outside the input it is zero.
pub(super) fn pad_item(
    x: &[f32],
    [c, h, w]: [usize; 3],
    [sh, sw]: [usize; 2],
    [top, left]: [usize; 2],
    [rows, width]: [usize; 2],
) -> Padded {
    let channels = sh * sw * c;
    let (row_len, len) = (width * channels, (rows + 1) * width * channels);
    let mut data = Vec::<f32>::with_capacity(len);
    if row_len > 0 {
        data.spare_capacity_mut()[..len]
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(ys, row)| {
                // Each row zeroed where it is written, while in cache (a zeroing pass over the
                // whole copy first was most of the copy's time on wide maps).
                row.fill(std::mem::MaybeUninit::new(0.0));
                // SAFETY: every value was just written.
                let row = unsafe { &mut *(row as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
                if ys < rows {
                    pad_row(x, [c, h, w], [sh, sw], [top, left], ys, row);
                }
            });
    }
    // SAFETY: all `rows + 1` rows were written above.
    unsafe { data.set_len(len) };
    Padded {
        data,
        width,
        channels,
    }
}

/// A convolution's kernel, prepared for one geometry: what [`conv2d_prepared`] multiplies by.
/// Building it reorders (or transforms) the whole weight, which on small maps cost as much as
/// the products, so inference keeps it between calls ([`super::cache`]).
pub(super) enum ConvKernel {
    /// The kernel matrix of the GEMM path.
    Gemm(Phase),
    /// A Winograd-transformed kernel.
    Winograd(super::winograd::Transformed),
}

impl ConvKernel {
    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        4 * match self {
            Self::Gemm(phase) => phase.len(),
            Self::Winograd(t) => t.len(),
        }
    }
}

/// The kernel of `weight` (`[O, C, kh, kw]`) for `g`. `reused`: it will serve many calls, so
/// Winograd's larger kernel transform pays from fewer tiles.
pub(super) fn prepare_conv(weight: &[f32], g: &ConvGeometry, reused: bool) -> ConvKernel {
    let [_, c, _, _] = g.input;
    let oc = g.out_channels;
    let [kh, kw] = g.kernel;
    assert_eq!(weight.len(), oc * c * kh * kw, "conv2d: weight size");
    if let Some(t) = super::winograd::prepare(weight, g, reused) {
        return ConvKernel::Winograd(t);
    }
    let s2d = SpaceToDepth::new(g);
    let k = s2d.kernel[1] * s2d.channels;
    let mut rhs = crate::simd::Aligned::zeroed(s2d.taps_len() * oc.next_multiple_of(LANES));
    let rows = s2d.rows();
    // In parallel blocks of output channels, a tile of taps at a time: each weight cache line
    // is read whole, and each kernel-matrix row is written in contiguous pieces. (Reading one
    // tap of 16 channels at a time, from 16 rows a multiple of 4 KiB apart that evicted each
    // other's lines, took 2.4 ms for a 256 -> 256 4x4 kernel; 1.4 ms now.)
    let dst = Disjoint(rhs.as_mut_ptr());
    let taps = rows.len();
    (0..oc.div_ceil(CHANNEL_BLOCK))
        .into_par_iter()
        .for_each(|b| {
            let block = b * CHANNEL_BLOCK..((b + 1) * CHANNEL_BLOCK).min(oc);
            let mut tile = [[0.0f32; CHANNEL_BLOCK]; TAP_BLOCK];
            for t0 in (0..taps).step_by(TAP_BLOCK) {
                let t1 = (t0 + TAP_BLOCK).min(taps);
                for (i, o) in block.clone().enumerate() {
                    for (t, &v) in weight[o * taps + t0..o * taps + t1].iter().enumerate() {
                        tile[t][i] = v;
                    }
                }
                for (t, &row) in rows[t0..t1].iter().enumerate() {
                    // SAFETY: `row < taps_len`, so the block's panel row is inside `rhs`; the
                    // channels of `block` belong to this task only.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.ptr().add(packed(row / k, row % k, block.start, k, oc)),
                            block.len(),
                        )
                    };
                    out.copy_from_slice(&tile[t][..block.len()]);
                }
            }
        });
    ConvKernel::Gemm(Phase {
        rhs,
        pairs: Default::default(),
        kernel: s2d.kernel,
        origin: [0, 0],
        size: g.output(),
        offset: [0, 0],
        step: [1, 1],
    })
}

/// `y = conv(x, weight) + bias` with `weight` `[O, C, kh, kw]`, zero padding, dilation 1 and
/// one group, as PyTorch's `conv2d`. Returns `[B, O, oh, ow]`.
pub fn conv2d(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    conv2d_prepared(x, &prepare_conv(weight, g, false), bias, g, false)
}

/// [`conv2d`] with the kernel [`prepare_conv`] made for `g`; `bf16`: the products in bfloat16
/// ([`super::bf16`]).
pub(super) fn conv2d_prepared(
    x: &[f32],
    kernel: &ConvKernel,
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    bf16: bool,
) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let oc = g.out_channels;
    assert_eq!(x.len(), n * c * h * w, "conv2d: input size");
    let phase = match kernel {
        ConvKernel::Winograd(t) => return super::winograd::conv2d(x, t, bias, g, bf16),
        ConvKernel::Gemm(phase) => std::slice::from_ref(phase),
    };
    if super::planar::applies(g) {
        return super::planar::conv2d(x, &direct_kernel(&phase[0], c, oc), bias, g);
    }
    let s2d = SpaceToDepth::new(g);
    let [oh, ow] = g.output();
    let mut out = crate::simd::zeros(n * oc * oh * ow);
    for (xi, yi) in x
        .chunks_exact(c * h * w)
        .zip(out.chunks_exact_mut(oc * oh * ow))
    {
        run_phases(&s2d.pad(xi), phase, bias, yi, [oc, oh, ow], bf16);
    }
    out
}

/// The gradient of [`conv2d`] with respect to its weight: `[O, C, kh, kw]` from the input `x`
/// and the output gradient `dy` (`[B, O, oh, ow]`).
pub fn conv2d_weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let oc = g.out_channels;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output();
    assert_eq!(x.len(), n * c * h * w, "conv2d_weight_grad: input size");
    assert_eq!(
        dy.len(),
        n * oc * oh * ow,
        "conv2d_weight_grad: gradient size"
    );
    let s2d = SpaceToDepth::new(g);
    let [kh2, kw2] = s2d.kernel;
    let k = kw2 * s2d.channels;
    let len = s2d.taps_len() * oc;
    let mut grad = vec![0.0f32; len];
    for (xi, gi) in x.chunks_exact(c * h * w).zip(dy.chunks_exact(oc * oh * ow)) {
        let p = s2d.pad(xi);
        let wp = p.width;
        let rows_per_task = Split::new(oh, wp, oc).rows;
        if rows_per_task * wp < SMALL_TASK_PIXELS && oc > LANES {
            weight_grad_by_channels(&p, gi, [oh, ow], [kh2, k], oc, &mut grad);
            continue;
        }
        let partial = (0..oh.div_ceil(rows_per_task))
            .into_par_iter()
            .fold(
                || vec![0.0f32; len],
                |mut acc, t| {
                    let y0 = t * rows_per_task;
                    let rows = rows_per_task.min(oh - y0);
                    let m = rows * wp;
                    let dz = padded_gradient(gi, [oh, ow], wp, y0..y0 + rows, 0..oc);
                    for u in 0..kh2 {
                        let start = ((y0 + u) * wp) * p.channels;
                        product(
                            (&mut acc[u * k * oc..(u + 1) * k * oc], oc, 1),
                            true,
                            [k, oc, m],
                            (&p.data[start..], 1, p.channels),
                            (&dz, 1, m),
                        );
                    }
                    acc
                },
            )
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            });
        if let Some(partial) = partial {
            grad.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
        }
    }
    let mut out = vec![0.0f32; oc * c * kh * kw];
    let rows = s2d.rows();
    out.par_chunks_mut(CHANNEL_BLOCK * rows.len())
        .enumerate()
        .for_each(|(b, chunk)| {
            for (i, weights) in chunk.chunks_exact_mut(rows.len()).enumerate() {
                let o = b * CHANNEL_BLOCK + i;
                for (w, row) in weights.iter_mut().zip(&rows) {
                    *w = grad[row * oc + o];
                }
            }
        });
    out
}

/// Rows `rows` of channels `channels` of one item's output gradient `gi` (`[oc, oh, ow]`) as
/// `[channel][row][wp]`, zero in the columns past `ow` (which the products over the padded
/// image compute, so that they add nothing to the weight gradient).
fn padded_gradient(
    gi: &[f32],
    [oh, ow]: [usize; 2],
    wp: usize,
    rows: std::ops::Range<usize>,
    channels: std::ops::Range<usize>,
) -> Vec<f32> {
    let mut dz = Vec::with_capacity(channels.len() * rows.len() * wp);
    for o in channels {
        for y in rows.clone() {
            dz.extend_from_slice(&gi[(o * oh + y) * ow..][..ow]);
            dz.resize(dz.len() + wp - ow, 0.0);
        }
    }
    dz
}

/// Pixels per task below which [`conv2d_weight_grad`] splits the work by output channels
/// instead of rows.
const SMALL_TASK_PIXELS: usize = 64;

/// One item's part of [`conv2d_weight_grad`] (`grad`, `[kh' * k][oc]`, is added to), with the
/// work split by blocks of output channels over all pixels at once. On small maps the split by
/// rows gave each task a few pixels and a partial sum of the whole gradient to zero and add up;
/// by channels no task needs one (Market's training step, interleaved runs: best 0.255-0.261 ->
/// 0.247-0.249 s).
fn weight_grad_by_channels(
    p: &Padded,
    gi: &[f32],
    [oh, ow]: [usize; 2],
    [kh2, k]: [usize; 2],
    oc: usize,
    grad: &mut [f32],
) {
    let wp = p.width;
    let m = oh * wp;
    let parts: Vec<(usize, Vec<f32>)> = (0..oc.div_ceil(LANES))
        .into_par_iter()
        .map(|b| {
            let channels = b * LANES..((b + 1) * LANES).min(oc);
            let n = channels.len();
            let dz = padded_gradient(gi, [oh, ow], wp, 0..oh, channels.clone());
            let mut part = vec![0.0f32; kh2 * k * n];
            for u in 0..kh2 {
                product(
                    (&mut part[u * k * n..][..k * n], n, 1),
                    false,
                    [k, n, m],
                    (&p.data[u * wp * p.channels..], 1, p.channels),
                    (&dz, 1, m),
                );
            }
            (channels.start, part)
        })
        .collect();
    for (first, part) in parts {
        let n = part.len() / (kh2 * k);
        for (row, part) in part.chunks_exact(n).enumerate() {
            for (g, v) in grad[row * oc + first..][..n].iter_mut().zip(part) {
                *g += v;
            }
        }
    }
}

/// A strided convolution as a stride-1 one over space-to-depth pixels.
struct SpaceToDepth {
    input: [usize; 3],
    stride: [usize; 2],
    padding: [usize; 2],
    /// `P`'s rows and columns.
    size: [usize; 2],
    /// Space-to-depth kernel size.
    kernel: [usize; 2],
    /// Space-to-depth channels, `sh * sw * C`.
    channels: usize,
    original_kernel: [usize; 2],
}

impl SpaceToDepth {
    fn new(g: &ConvGeometry) -> Self {
        let [_, c, h, w] = g.input;
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.stride;
        let [top, left, bottom, right] = g.padding;
        assert!(
            h + top + bottom >= kh && w + left + right >= kw,
            "conv2d: kernel {:?} larger than the padded input {:?}",
            g.kernel,
            [h + top + bottom, w + left + right]
        );
        Self {
            input: [c, h, w],
            stride: [sh, sw],
            padding: [top, left],
            size: [
                (h + top + bottom).div_ceil(sh),
                (w + left + right).div_ceil(sw),
            ],
            kernel: [kh.div_ceil(sh), kw.div_ceil(sw)],
            channels: sh * sw * c,
            original_kernel: [kh, kw],
        }
    }

    /// Rows of the product's kernel matrix: `kh' * kw' * sh * sw * C`.
    fn taps_len(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.channels
    }

    /// For each tap `(ci, i, j)` of the original kernel, at `(ci * kh + i) * kw + j`, the
    /// kernel-matrix row that holds it: `(u * kw' + t) * C' + (a * sw + b) * C + ci` with
    /// `i = u * sh + a`, `j = t * sw + b`. Rows that no tap maps to (past the kernel) stay zero.
    fn rows(&self) -> Vec<usize> {
        let [_, kw2] = self.kernel;
        let [sh, sw] = self.stride;
        let [kh, kw] = self.original_kernel;
        let c = self.input[0];
        let mut rows = Vec::with_capacity(c * kh * kw);
        for ci in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let (u, a, t, b) = (i / sh, i % sh, j / sw, j % sw);
                    rows.push((u * kw2 + t) * self.channels + (a * sw + b) * c + ci);
                }
            }
        }
        rows
    }

    fn pad(&self, x: &[f32]) -> Padded {
        pad_item(x, self.input, self.stride, self.padding, self.size)
    }
}

/// A transposed convolution's kernel, prepared for one geometry (see [`ConvKernel`]).
pub(super) enum TransposedKernel {
    /// One stride-1 phase per output parity, over the input zero-padded by `margin` (top,
    /// left) to `size` (rows, columns).
    Phases {
        phases: Vec<Phase>,
        margin: [usize; 2],
        size: [usize; 2],
    },
    /// A stride-1 3x3 layer as a Winograd convolution
    /// ([`super::winograd::transposed_as_conv`]).
    Winograd(super::winograd::Transformed),
}

impl TransposedKernel {
    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        4 * match self {
            Self::Phases { phases, .. } => phases.iter().map(Phase::len).sum(),
            Self::Winograd(t) => t.len(),
        }
    }
}

/// The kernel of `weight` (`[C, O, kh, kw]`) for `g`; `reused` as in [`prepare_conv`].
pub(super) fn prepare_transposed(
    weight: &[f32],
    g: &TransposedGeometry,
    reused: bool,
) -> TransposedKernel {
    let [_, c, h, w] = g.input;
    let oc = g.out_channels;
    let [kh, kw] = g.kernel;
    let [sh, sw] = g.stride;
    let [ph, pw] = g.crop;
    assert_eq!(
        weight.len(),
        c * oc * kh * kw,
        "conv_transpose2d: weight size"
    );
    if let Some(t) = super::winograd::prepare_transposed(weight, g, reused) {
        return TransposedKernel::Winograd(t);
    }
    let [oh, ow] = g.output;
    // Output index Y = s * Y' + a takes taps i = i0 + s * t, t < taps, from input row
    // Y' + d - t, where i0 = (a + p) mod s and d = (a + p) div s.
    struct Axis {
        i0: usize,
        taps: usize,
        d: usize,
        len: usize,
    }
    let axis = |a: usize, s: usize, p: usize, k: usize, out: usize| {
        let i0 = (a + p) % s;
        Axis {
            i0,
            taps: if i0 < k { (k - i0).div_ceil(s) } else { 0 },
            d: (a + p) / s,
            len: if a < out { (out - a).div_ceil(s) } else { 0 },
        }
    };
    let rows: Vec<Axis> = (0..sh).map(|a| axis(a, sh, ph, kh, oh)).collect();
    let cols: Vec<Axis> = (0..sw).map(|b| axis(b, sw, pw, kw, ow)).collect();
    // Zero margins so that every phase reads inside `P`.
    let before = |ax: &[Axis]| {
        ax.iter()
            .filter(|a| a.taps > 0 && a.len > 0)
            .map(|a| (a.taps - 1).saturating_sub(a.d))
            .max()
            .unwrap_or(0)
    };
    let after = |ax: &[Axis], size: usize| {
        ax.iter()
            .filter(|a| a.taps > 0 && a.len > 0)
            .map(|a| (a.len + a.d).saturating_sub(size))
            .max()
            .unwrap_or(0)
    };
    let (top, left) = (before(&rows), before(&cols));
    let (hp, wp) = (h + top + after(&rows, h), w + left + after(&cols, w));
    let mut phases = Vec::new();
    for (a, ra) in rows.iter().enumerate() {
        for (b, cb) in cols.iter().enumerate() {
            if ra.len == 0 || cb.len == 0 {
                continue;
            }
            let (ta, tb) = (ra.taps, cb.taps);
            let k = tb * c;
            let mut rhs = crate::simd::Aligned::zeroed(ta * k * oc.next_multiple_of(LANES));
            let dst = Disjoint(rhs.as_mut_ptr());
            // In parallel over input channels: channel `ci`'s `O * kh * kw` weights are one
            // contiguous block, read for every tap while in cache.
            (0..c).into_par_iter().for_each(|ci| {
                let src = &weight[ci * oc * kh * kw..][..oc * kh * kw];
                for u in 0..ta {
                    for v in 0..tb {
                        let i = ra.i0 + sh * (ta - 1 - u);
                        let j = cb.i0 + sw * (tb - 1 - v);
                        for o0 in (0..oc).step_by(LANES) {
                            let lanes = LANES.min(oc - o0);
                            // SAFETY: value `v * c + ci` of kernel row `u` in the panel of
                            // `o0`: inside `rhs`, and channel `ci`'s task's only.
                            let row = unsafe {
                                std::slice::from_raw_parts_mut(
                                    dst.ptr().add(packed(u, v * c + ci, o0, k, oc)),
                                    lanes,
                                )
                            };
                            for (l, r) in row.iter_mut().enumerate() {
                                *r = src[((o0 + l) * kh + i) * kw + j];
                            }
                        }
                    }
                }
            });
            let origin = |ax: &Axis, margin: usize| (ax.d + margin + 1).saturating_sub(ax.taps);
            phases.push(Phase {
                rhs,
                pairs: Default::default(),
                kernel: [ta, tb],
                origin: [origin(ra, top), origin(cb, left)],
                size: [ra.len, cb.len],
                offset: [a, b],
                step: [sh, sw],
            });
        }
    }
    TransposedKernel::Phases {
        phases,
        margin: [top, left],
        size: [hp, wp],
    }
}

/// `y = conv_transpose(x, weight) + bias` with `weight` `[C, O, kh, kw]`, dilation 1 and one
/// group, as PyTorch's `conv_transpose2d` (the output may also be cut shorter or extended).
/// Returns `[B, O, oh, ow]`.
pub fn conv_transpose2d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &TransposedGeometry,
) -> Vec<f32> {
    conv_transpose2d_prepared(x, &prepare_transposed(weight, g, false), bias, g, false)
}

/// [`conv_transpose2d`] with the kernel [`prepare_transposed`] made for `g`; `bf16` as in
/// [`conv2d_prepared`].
pub(super) fn conv_transpose2d_prepared(
    x: &[f32],
    kernel: &TransposedKernel,
    bias: Option<&[f32]>,
    g: &TransposedGeometry,
    bf16: bool,
) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let oc = g.out_channels;
    assert_eq!(x.len(), n * c * h * w, "conv_transpose2d: input size");
    let (phases, margin, size) = match kernel {
        TransposedKernel::Winograd(t) => {
            let conv = super::winograd::transposed_as_conv(g)
                .expect("conv_transpose2d: a Winograd kernel made for another geometry");
            return super::winograd::conv2d(x, t, bias, &conv, bf16);
        }
        TransposedKernel::Phases {
            phases,
            margin,
            size,
        } => (phases, *margin, *size),
    };
    let [oh, ow] = g.output;
    let mut out = crate::simd::zeros(n * oc * oh * ow);
    for (xi, yi) in x
        .chunks_exact(c * h * w)
        .zip(out.chunks_exact_mut(oc * oh * ow))
    {
        let p = pad_item(xi, [c, h, w], [1, 1], margin, size);
        run_phases(&p, phases, bias, yi, [oc, oh, ow], bf16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        crate::testing::lcg(n, seed, 1.0)
    }

    /// Row `j` of the block is channel `j`: value `x` is pixel `x`'s, `stride` values apart.
    #[test]
    fn transposed_block_turns_pixels_into_channel_rows() {
        let stride = 11;
        let src: Vec<f32> = (0..7 * stride + 8).map(|i| i as f32).collect();
        let t = transposed_block(&src, stride);
        for (j, row) in t.iter().enumerate() {
            let want: Vec<f32> = (0..8).map(|x| (x * stride + j) as f32).collect();
            assert_eq!(row.as_slice(), want.as_slice(), "channel {j}");
        }
    }

    fn naive_conv(x: &[f32], wt: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let [n, c, h, w] = g.input;
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.stride;
        let [t, l, _, _] = g.padding;
        let [oh, ow] = g.output();
        let oc = g.out_channels;
        let mut out = vec![0.0f32; n * oc * oh * ow];
        for b in 0..n {
            for o in 0..oc {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = bias[o] as f64;
                        for ci in 0..c {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let iy = (y * sh + i) as isize - t as isize;
                                    let ix = (xx * sw + j) as isize - l as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    s += (x[((b * c + ci) * h + iy as usize) * w + ix as usize]
                                        * wt[((o * c + ci) * kh + i) * kw + j])
                                        as f64;
                                }
                            }
                        }
                        out[((b * oc + o) * oh + y) * ow + xx] = s as f32;
                    }
                }
            }
        }
        out
    }

    fn naive_transposed(x: &[f32], wt: &[f32], bias: &[f32], g: &TransposedGeometry) -> Vec<f32> {
        let [n, c, h, w] = g.input;
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.stride;
        let [ph, pw] = g.crop;
        let [oh, ow] = g.output;
        let oc = g.out_channels;
        let mut out = vec![0.0f64; n * oc * oh * ow];
        for b in 0..n {
            for o in 0..oc {
                for v in &mut out[(b * oc + o) * oh * ow..][..oh * ow] {
                    *v = bias[o] as f64;
                }
                for ci in 0..c {
                    for y in 0..h {
                        for xx in 0..w {
                            for i in 0..kh {
                                for j in 0..kw {
                                    let oy = (y * sh + i) as isize - ph as isize;
                                    let ox = (xx * sw + j) as isize - pw as isize;
                                    if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                        continue;
                                    }
                                    out[((b * oc + o) * oh + oy as usize) * ow + ox as usize] += (x
                                        [((b * c + ci) * h + y) * w + xx]
                                        * wt[((ci * oc + o) * kh + i) * kw + j])
                                        as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-4, "at {i}: {x} vs {y}");
        }
    }

    /// Odd and even kernels, strides 1-3, asymmetric padding, batch 2, one output row whose
    /// tasks split 40 channels (too few input channels for Winograd), and Winograd's cases.
    fn conv_cases() -> Vec<ConvGeometry> {
        [
            ([2, 3, 9, 7], 4, [3, 3], [1, 1], [1, 1, 1, 1]),
            ([1, 5, 8, 8], 6, [4, 4], [2, 2], [1, 1, 1, 1]),
            ([1, 5, 9, 11], 3, [4, 4], [2, 2], [1, 1, 1, 1]),
            ([2, 4, 10, 9], 2, [3, 3], [2, 2], [1, 1, 1, 1]),
            ([1, 3, 12, 10], 5, [7, 5], [1, 1], [0, 2, 1, 0]),
            ([1, 6, 6, 6], 7, [1, 1], [1, 1], [0, 0, 0, 0]),
            ([1, 2, 11, 13], 3, [5, 3], [3, 2], [2, 1, 2, 1]),
            ([1, 4, 3, 5], 40, [3, 3], [1, 1], [0, 0, 0, 0]),
            // Winograd's: odd and even outputs, asymmetric padding, batch 2, 3x3 stride 1
            // and 4x4 stride 2.
            ([2, 8, 7, 9], 16, [3, 3], [1, 1], [1, 1, 1, 1]),
            ([1, 9, 6, 5], 17, [3, 3], [1, 1], [0, 2, 1, 0]),
            ([2, 3, 10, 9], 16, [4, 4], [2, 2], [1, 1, 1, 1]),
            ([1, 4, 9, 11], 20, [4, 4], [2, 2], [0, 2, 1, 0]),
            // Tile rows of over 16 tiles (two vectors, the second partial), an odd channel
            // count, left padding 0 and 2.
            ([1, 9, 5, 40], 16, [3, 3], [1, 1], [1, 1, 1, 1]),
            ([1, 8, 6, 37], 17, [3, 3], [1, 1], [0, 2, 1, 0]),
            // 4x4 stride 2 with tile rows of over 16 tiles.
            ([1, 6, 5, 70], 16, [4, 4], [2, 2], [1, 1, 0, 1]),
            // Few output channels over rows of more than one step of 64 pixels, and a 3 x 5
            // kernel with uneven padding.
            ([1, 7, 5, 77], 3, [3, 3], [1, 1], [1, 1, 1, 1]),
            ([1, 5, 6, 70], 1, [3, 5], [1, 1], [0, 2, 1, 0]),
            // A padded copy of whole blocks of eight channels and pixels, and a rest of both.
            ([1, 10, 6, 21], 12, [5, 3], [1, 1], [2, 1, 2, 1]),
        ]
        .map(
            |(input, out_channels, kernel, stride, padding)| ConvGeometry {
                input,
                out_channels,
                kernel,
                stride,
                padding,
            },
        )
        .to_vec()
    }

    #[test]
    fn conv_matches_naive() {
        for g in conv_cases() {
            let ([n, c, h, w], oc, [kh, kw]) = (g.input, g.out_channels, g.kernel);
            let x = lcg(n * c * h * w, 1);
            let wt = lcg(oc * c * kh * kw, 2);
            let b = lcg(oc, 3);
            close(&conv2d(&x, &wt, Some(&b), &g), &naive_conv(&x, &wt, &b, &g));
        }
    }

    #[test]
    fn weight_grad_matches_naive() {
        for g in conv_cases() {
            let ([n, c, h, w], oc, [kh, kw]) = (g.input, g.out_channels, g.kernel);
            let [oh, ow] = g.output();
            let x = lcg(n * c * h * w, 7);
            let dy = lcg(n * oc * oh * ow, 8);
            // d/dW of sum(dy * conv(x, W)) is linear in W's entries: probe each one.
            let len = oc * c * kh * kw;
            let zero = vec![0.0f32; oc];
            let expected: Vec<f32> = (0..len)
                .map(|e| {
                    let mut wt = vec![0.0f32; len];
                    wt[e] = 1.0;
                    let y = naive_conv(&x, &wt, &zero, &g);
                    y.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32
                })
                .collect();
            close(&conv2d_weight_grad(&x, &dy, &g), &expected);
        }
    }

    /// `x` with every value rounded to bfloat16.
    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter()
            .map(|&v| f32::from_bits((super::super::bf16::to_bf16(v) as u32) << 16))
            .collect()
    }

    /// bfloat16 products against the naive sums: of the rounded input and weight where the
    /// product reads them as they are (the GEMM paths), within bfloat16's rounding of the
    /// transformed values (Winograd's, 2^-8 of the sum of the absolute terms times the 16 or
    /// 9 terms of a transform).
    fn check_bf16(got: &[f32], exact: &[f32], of_rounded: &[f32], scale: &[f32], winograd: bool) {
        for (i, (&g, ((&e, &r), &s))) in got
            .iter()
            .zip(exact.iter().zip(of_rounded).zip(scale))
            .enumerate()
        {
            if winograd {
                assert!(
                    (g - e).abs() <= 16.0 * s / 256.0 + 1e-5,
                    "at {i}: {g} vs {e} (scale {s})"
                );
            } else {
                assert!((g - r).abs() < 1e-4, "at {i}: {g} vs {r}");
            }
        }
        // Rounded, not float32's: the products did run in bfloat16.
        assert!(
            got.iter().zip(exact).any(|(g, e)| (g - e).abs() > 1e-5),
            "no rounding seen"
        );
    }

    #[test]
    fn bf16_products_match_naive_sums() {
        if !super::super::bf16::bf16_supported() {
            eprintln!("skipped: this CPU lacks AVX-512 BF16");
            return;
        }
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        // Only layers of more than DIRECT output channels take bfloat16 products.
        for g in conv_cases().into_iter().filter(|g| g.out_channels > DIRECT) {
            let ([n, c, h, w], oc, [kh, kw]) = (g.input, g.out_channels, g.kernel);
            let x = lcg(n * c * h * w, 1);
            let wt = lcg(oc * c * kh * kw, 2);
            let b = lcg(oc, 3);
            let kernel = prepare_conv(&wt, &g, false);
            let winograd = matches!(kernel, ConvKernel::Winograd(_));
            check_bf16(
                &conv2d_prepared(&x, &kernel, Some(&b), &g, true),
                &naive_conv(&x, &wt, &b, &g),
                &naive_conv(&rounded(&x), &rounded(&wt), &b, &g),
                &naive_conv(&abs(&x), &abs(&wt), &vec![0.0; oc], &g),
                winograd,
            );
        }
        for g in transposed_cases()
            .into_iter()
            .filter(|g| g.out_channels > DIRECT)
        {
            let (oc, [x, wt, b]) = (g.out_channels, transposed_data(&g));
            let prepared = prepare_transposed(&wt, &g, false);
            let winograd = matches!(prepared, TransposedKernel::Winograd(_));
            check_bf16(
                &conv_transpose2d_prepared(&x, &prepared, Some(&b), &g, true),
                &naive_transposed(&x, &wt, &b, &g),
                &naive_transposed(&rounded(&x), &rounded(&wt), &b, &g),
                &naive_transposed(&abs(&x), &abs(&wt), &vec![0.0; oc], &g),
                winograd,
            );
        }
    }

    /// PyTorch's output size, (in - 1) * stride + kernel + output_padding - 2 * padding, then
    /// outputs cut shorter and extended (the gradient of an asymmetric padding).
    fn transposed_cases() -> Vec<TransposedGeometry> {
        [
            ([2, 3, 5, 4], 4, [3, 3], [2, 2], [1, 1], [10, 8]),
            ([1, 5, 4, 6], 3, [4, 4], [2, 2], [1, 1], [8, 12]),
            ([1, 2, 3, 3], 2, [3, 3], [1, 1], [1, 1], [3, 3]),
            ([1, 3, 4, 5], 2, [5, 3], [3, 2], [2, 0], [11, 12]),
            ([1, 2, 3, 4], 3, [1, 1], [2, 2], [0, 0], [6, 8]),
            ([1, 2, 4, 4], 3, [3, 3], [2, 2], [1, 0], [6, 10]),
            ([1, 8, 1, 3], 40, [3, 3], [2, 2], [1, 1], [2, 6]),
            ([1, 7, 4, 4], 33, [4, 4], [2, 2], [1, 1], [8, 8]),
            ([1, 9, 4, 19], 18, [3, 3], [2, 2], [1, 1], [8, 38]),
            // Matrix products whose row parity has two column phases (an odd width, rows at
            // stride 3) or three (the general interleaving).
            ([1, 8, 3, 3], 20, [3, 3], [2, 2], [1, 1], [5, 5]),
            ([1, 8, 2, 3], 18, [5, 3], [3, 2], [2, 0], [5, 7]),
            ([1, 8, 2, 3], 18, [3, 5], [2, 3], [0, 2], [5, 7]),
            // Winograd's: stride 1, 3 x 3, symmetric and uneven crops.
            ([2, 8, 5, 6], 16, [3, 3], [1, 1], [1, 1], [5, 6]),
            ([1, 9, 5, 6], 17, [3, 3], [1, 1], [0, 2], [7, 4]),
        ]
        .map(
            |(input, out_channels, kernel, stride, crop, output)| TransposedGeometry {
                input,
                out_channels,
                kernel,
                stride,
                crop,
                output,
            },
        )
        .to_vec()
    }

    /// Input, weight and bias of a transposed case.
    fn transposed_data(g: &TransposedGeometry) -> [Vec<f32>; 3] {
        let ([n, c, h, w], oc, [kh, kw]) = (g.input, g.out_channels, g.kernel);
        [lcg(n * c * h * w, 4), lcg(c * oc * kh * kw, 5), lcg(oc, 6)]
    }

    #[test]
    fn transposed_matches_naive() {
        for g in transposed_cases() {
            let [x, wt, b] = transposed_data(&g);
            close(
                &conv_transpose2d(&x, &wt, Some(&b), &g),
                &naive_transposed(&x, &wt, &b, &g),
            );
        }
    }
}
