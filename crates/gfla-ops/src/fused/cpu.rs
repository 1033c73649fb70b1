//! The fused local-attention kernels on plain `f32` slices, one batch item at a time.
//!
//! Sources are read channels-last (`[H*W, C]`), so every bilinear corner is one contiguous
//! channel vector and the inner loops are `axpy`s and dot products the compiler vectorises.
//! Nothing `k*k` times the size of a feature map is ever allocated: the neighbourhood of a cell
//! is sampled, used and dropped while it is in cache. Work is split over rayon's pool by cells
//! (forward, flow and weight gradients) and by channel slabs (source gradient), so that no two
//! threads write the same memory.

use rayon::prelude::*;

use crate::conv::panel;
use crate::simd::{Disjoint, dot};

/// Cells per parallel task: big enough to amortise the task, small enough to balance two cores
/// against a 32 x 32 map.
const CELLS_PER_TASK: usize = 64;

/// Shape of one batch item of a fused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Source channels.
    pub channels: usize,
    /// Source height and width.
    pub source_hw: [usize; 2],
    /// Flow (cell grid) height and width.
    pub cells_hw: [usize; 2],
    /// Neighbourhood size.
    pub k: usize,
}

impl Geometry {
    pub fn cells(&self) -> usize {
        self.cells_hw[0] * self.cells_hw[1]
    }

    pub fn pixels(&self) -> usize {
        self.source_hw[0] * self.source_hw[1]
    }

    pub fn taps(&self) -> usize {
        self.k * self.k
    }
}

/// One bilinear sample: the four clamped corner pixels (top-left, top-right, bottom-left,
/// bottom-right), their weights and the fractions the weights come from.
#[derive(Debug, Clone, Copy)]
struct Tap {
    index: [usize; 4],
    weight: [f32; 4],
    alpha: f32,
    beta: f32,
}

impl Geometry {
    /// The sample of cell `n` at neighbourhood offset `j = u*k + v`, with the official float
    /// order: `x = (flow_x + (v - k/2)) + x_cell`, floor, fractions from the unclamped point,
    /// corners clamped after flooring.
    #[inline(always)]
    fn tap(&self, flow: &[f32], n: usize, j: usize) -> Tap {
        let [h, w] = self.source_hw;
        let wf = self.cells_hw[1];
        let half = (self.k / 2) as f32;
        let (u, v) = (j / self.k, j % self.k);
        let (yf, xf) = (n / wf, n % wf);
        let x = (flow[n] + (v as f32 - half)) + xf as f32;
        let y = (flow[self.cells() + n] + (u as f32 - half)) + yf as f32;
        let (x0, y0) = (x.floor(), y.floor());
        let (alpha, beta) = (x - x0, y - y0);
        let clamp = |p: f32, len: usize| (p.max(0.0) as usize).min(len - 1);
        let (cx0, cx1) = (clamp(x0, w), clamp(x0 + 1.0, w));
        let (cy0, cy1) = (clamp(y0, h), clamp(y0 + 1.0, h));
        Tap {
            index: [cy0 * w + cx0, cy0 * w + cx1, cy1 * w + cx0, cy1 * w + cx1],
            weight: [
                (1.0 - alpha) * (1.0 - beta),
                alpha * (1.0 - beta),
                (1.0 - alpha) * beta,
                alpha * beta,
            ],
            alpha,
            beta,
        }
    }
}

#[inline(always)]
fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, x) in out.iter_mut().zip(x) {
        *o += a * x;
    }
}

/// `[C, N]` -> `[N, C]`.
pub(crate) fn to_channels_last(planar: &[f32], channels: usize) -> Vec<f32> {
    let n = planar.len() / channels;
    let mut out = vec![0.0f32; planar.len()];
    out.par_chunks_mut(CELLS_PER_TASK * channels)
        .enumerate()
        .for_each(|(t, rows)| {
            let start = t * CELLS_PER_TASK;
            for (i, row) in rows.chunks_exact_mut(channels).enumerate() {
                for (c, r) in row.iter_mut().enumerate() {
                    *r = planar[c * n + start + i];
                }
            }
        });
    out
}

/// `[N, C]` -> `[C, N]`.
pub(crate) fn to_planar(rows: &[f32], channels: usize) -> Vec<f32> {
    let n = rows.len() / channels;
    let mut out = vec![0.0f32; rows.len()];
    out.par_chunks_mut(n).enumerate().for_each(|(c, plane)| {
        for (i, p) in plane.iter_mut().enumerate() {
            *p = rows[i * channels + c];
        }
    });
    out
}

multiversion! {
    /// `out[c, n] = 1/k^2 * sum_j weights[j, n] * sample_j(n)[c]` for cells `cells` of
    /// `out` (`[C, h*w]`, planar).
    fn attend_cells(
        g: &Geometry,
        source: &[f32],
        flow: &[f32],
        weights: &[f32],
        cells: std::ops::Range<usize>,
        out: Disjoint,
    ) {
        let c = g.channels;
        let scale = 1.0 / g.taps() as f32;
        let mut row = vec![0.0f32; c];
        for n in cells {
            row.fill(0.0);
            for j in 0..g.taps() {
                let tap = g.tap(flow, n, j);
                let a = weights[j * g.cells() + n] * scale;
                for corner in 0..4 {
                    let p = tap.index[corner];
                    axpy(&mut row, a * tap.weight[corner], &source[p * c..(p + 1) * c]);
                }
            }
            for (ch, v) in row.iter().enumerate() {
                // SAFETY: `n` belongs to this task only and `ch * cells + n` is in bounds.
                unsafe { *out.ptr().add(ch * g.cells() + n) = *v };
            }
        }
    }
}

/// Fused attention pooling of one batch item: `source` `[H*W, C]` (channels-last), `flow`
/// `[2, h*w]`, `weights` `[k*k, h*w]`; writes `out`, `[C, h*w]` (planar), so that nothing
/// but the output and the channels-last source is allocated.
pub(crate) fn attend_forward(
    g: &Geometry,
    source: &[f32],
    flow: &[f32],
    weights: &[f32],
    out: &mut [f32],
) {
    assert_eq!(out.len(), g.channels * g.cells());
    let dst = Disjoint(out.as_mut_ptr());
    let cells = g.cells();
    (0..cells.div_ceil(CELLS_PER_TASK))
        .into_par_iter()
        .for_each(|t| {
            let range = t * CELLS_PER_TASK..((t + 1) * CELLS_PER_TASK).min(cells);
            attend_cells(g, source, flow, weights, range, dst)
        });
}

multiversion! {
    /// `out[n, j*C + c] = sample_j(n)[c]` for the cells of one task.
    fn patch_cells(g: &Geometry, source: &[f32], flow: &[f32], first: usize, out: &mut [f32]) {
        let c = g.channels;
        for (i, row) in out.chunks_exact_mut(c * g.taps()).enumerate() {
            let n = first + i;
            for (j, sample) in row.chunks_exact_mut(c).enumerate() {
                let tap = g.tap(flow, n, j);
                let p = tap.index[0];
                for (s, x) in sample.iter_mut().zip(&source[p * c..(p + 1) * c]) {
                    *s = tap.weight[0] * x;
                }
                for corner in 1..4 {
                    let p = tap.index[corner];
                    axpy(sample, tap.weight[corner], &source[p * c..(p + 1) * c]);
                }
            }
        }
    }
}

/// Sampled neighbourhoods of one batch item: `[h*w, k*k*C]` with column `(u*k + v)*C + c`.
pub(crate) fn patches_forward(g: &Geometry, source: &[f32], flow: &[f32]) -> Vec<f32> {
    let row = g.channels * g.taps();
    let mut out = vec![0.0f32; g.cells() * row];
    out.par_chunks_mut(CELLS_PER_TASK * row)
        .enumerate()
        .for_each(|(t, rows)| patch_cells(g, source, flow, t * CELLS_PER_TASK, rows));
    out
}

/// Where the upstream gradient of a fused op comes from: for cell `n` and tap `j`, the channel
/// vector that multiplies the sample and a scale.
#[derive(Clone, Copy)]
pub(crate) enum Upstream<'a> {
    /// Attention pooling: `grad[n]` (channels-last `[h*w, C]`) scaled by `weights[j, n] / k^2`.
    Attend { grad: &'a [f32], weights: &'a [f32] },
    /// Patches: columns `j*C..(j+1)*C` of row `n - first` of `grad` (`[cells, k*k*C]`, the
    /// rows of cells `first..`), scale 1.
    Patches { grad: &'a [f32], first: usize },
}

impl Upstream<'_> {
    /// The upstream channel vector of `(n, j)` and its scale.
    #[inline(always)]
    fn vector(&self, g: &Geometry, n: usize, j: usize) -> (&[f32], f32) {
        let c = g.channels;
        match *self {
            Upstream::Attend { grad, weights } => (
                &grad[n * c..(n + 1) * c],
                weights[j * g.cells() + n] / g.taps() as f32,
            ),
            Upstream::Patches { grad, first } => {
                let start = ((n - first) * g.taps() + j) * c;
                (&grad[start..start + c], 1.0)
            }
        }
    }
}

multiversion! {
    /// Flow gradient (`[2, h*w]` slices of the task's cells) and, for attention pooling, the
    /// weight gradient (`[k*k, h*w]`, written through `grad_weights` at absolute positions).
    fn flow_grad_cells(
        g: &Geometry,
        source: &[f32],
        flow: &[f32],
        up: Upstream<'_>,
        first: usize,
        grad_flow: &mut [[f32; 2]],
        grad_weights: &mut [f32],
    ) {
        let c = g.channels;
        let kk = g.taps();
        for (i, gf) in grad_flow.iter_mut().enumerate() {
            let n = first + i;
            let mut sum = [0.0f32; 2];
            for j in 0..kk {
                let tap = g.tap(flow, n, j);
                let (vec, scale) = up.vector(g, n, j);
                // A loop, not `index.map(..)`: the closure would be compiled without this
                // function's AVX2 + FMA, and its `mul_add`s became calls to `fmaf` (9 % of a
                // DeepFashion training step).
                let mut d = [0.0f32; 4];
                for (d, &p) in d.iter_mut().zip(&tap.index) {
                    *d = dot(vec, &source[p * c..(p + 1) * c]);
                }
                let (a, b) = (tap.alpha, tap.beta);
                sum[0] += scale * ((1.0 - b) * (d[1] - d[0]) + b * (d[3] - d[2]));
                sum[1] += scale * ((1.0 - a) * (d[2] - d[0]) + a * (d[3] - d[1]));
                if !grad_weights.is_empty() {
                    let s: f32 = (0..4).map(|q| tap.weight[q] * d[q]).sum();
                    grad_weights[j * CELLS_PER_TASK + i] = s / kk as f32;
                }
            }
            *gf = sum;
        }
    }
}

multiversion! {
    /// Adds the source gradient of `cells`, channels `first..first + slab.len() / pixels`, into
    /// `slab` (`[H*W, width]`).
    fn source_grad_slab(
        g: &Geometry,
        flow: &[f32],
        up: Upstream<'_>,
        cells: std::ops::Range<usize>,
        first: usize,
        slab: &mut [f32],
    ) {
        let width = slab.len() / g.pixels();
        for n in cells {
            for j in 0..g.taps() {
                let tap = g.tap(flow, n, j);
                let (vec, scale) = up.vector(g, n, j);
                let part = &vec[first..first + width];
                for corner in 0..4 {
                    let p = tap.index[corner];
                    axpy(&mut slab[p * width..(p + 1) * width], scale * tap.weight[corner], part);
                }
            }
        }
    }
}

/// Gradients of one batch item of a fused op.
pub(crate) struct Grads {
    /// `[C, H*W]` planar, or empty when not asked for.
    pub source: Vec<f32>,
    /// `[2, h*w]`, or empty when not asked for.
    pub flow: Vec<f32>,
    /// `[k*k, h*w]` for attention pooling when asked for, else empty.
    pub weights: Vec<f32>,
}

/// Backward of [`attend_forward`] / [`patches_forward`] for one batch item; each gradient is
/// computed only when `want` says so (`[source, flow, weights]`).
pub(crate) fn backward(
    g: &Geometry,
    source: &[f32],
    flow: &[f32],
    up: Upstream<'_>,
    want: [bool; 3],
) -> Grads {
    let (c, kk, cells) = (g.channels, g.taps(), g.cells());
    let want_weights = want[2] && matches!(up, Upstream::Attend { .. });
    let mut grads = Grads {
        source: Vec::new(),
        flow: Vec::new(),
        weights: Vec::new(),
    };

    if want[1] || want_weights {
        let mut flow_cells = vec![[0.0f32; 2]; cells];
        let tasks = cells.div_ceil(CELLS_PER_TASK);
        // Weight gradients per task laid out `[task][k*k][CELLS_PER_TASK]`, then transposed.
        let mut weight_tasks = vec![
            0.0f32;
            if want_weights {
                tasks * kk * CELLS_PER_TASK
            } else {
                0
            }
        ];
        let stride = if want_weights { kk * CELLS_PER_TASK } else { 0 };
        let mut weight_chunks: Vec<&mut [f32]> = if want_weights {
            weight_tasks.chunks_mut(stride).collect()
        } else {
            (0..tasks).map(|_| &mut [][..]).collect()
        };
        flow_cells
            .par_chunks_mut(CELLS_PER_TASK)
            .zip(weight_chunks.par_iter_mut())
            .enumerate()
            .for_each(|(t, (gf, gw))| {
                flow_grad_cells(g, source, flow, up, t * CELLS_PER_TASK, gf, gw)
            });
        if want[1] {
            grads.flow = vec![0.0f32; 2 * cells];
            for (n, [gx, gy]) in flow_cells.iter().enumerate() {
                grads.flow[n] = *gx;
                grads.flow[cells + n] = *gy;
            }
        }
        if want_weights {
            grads.weights = vec![0.0f32; kk * cells];
            for n in 0..cells {
                let (t, i) = (n / CELLS_PER_TASK, n % CELLS_PER_TASK);
                for j in 0..kk {
                    grads.weights[j * cells + n] =
                        weight_tasks[t * stride + j * CELLS_PER_TASK + i];
                }
            }
        }
    }

    if want[0] {
        // Channel slabs: one per thread, at least 16 channels wide.
        let threads = rayon::current_num_threads().max(1);
        let width = c.div_ceil(threads).next_multiple_of(16).min(c);
        let slabs = c.div_ceil(width);
        let pixels = g.pixels();
        let mut slab_data = vec![0.0f32; pixels * c];
        let mut parts: Vec<&mut [f32]> = Vec::with_capacity(slabs);
        let mut rest = &mut slab_data[..];
        for s in 0..slabs {
            let w = width.min(c - s * width);
            let (head, tail) = rest.split_at_mut(pixels * w);
            parts.push(head);
            rest = tail;
        }
        parts
            .into_par_iter()
            .enumerate()
            .for_each(|(s, slab)| source_grad_slab(g, flow, up, 0..cells, s * width, slab));
        // Slabs ([H*W, width] each) to planar channels.
        let mut out = vec![0.0f32; pixels * c];
        out.par_chunks_mut(pixels)
            .enumerate()
            .for_each(|(ch, plane)| {
                let (s, i) = (ch / width, ch % width);
                let w = width.min(c - s * width);
                let slab = &slab_data[s * width * pixels..s * width * pixels + pixels * w];
                for (p, v) in plane.iter_mut().enumerate() {
                    *v = slab[p * w + i];
                }
            });
        grads.source = out;
    }
    grads
}

/// `dst (m x n) = [dst +] a (m x k) * b (k x n)`, single-threaded (callers run it inside their
/// own parallel tasks); each operand is `(values, row stride, column stride)`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    accumulate: bool,
    [m, n, k]: [usize; 3],
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst.len() > last(n, 1, m, n),
        "matmul: destination too small"
    );
    if k > 0 {
        assert!(a.len() > last(a_rs, a_cs, m, k), "matmul: lhs too small");
        assert!(b.len() > last(b_rs, b_cs, k, n), "matmul: rhs too small");
    }
    // SAFETY: every element the strides reach was bounds-checked above; `dst` does not alias
    // the operands (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Cells per task of the sampled convolution: their `k*k*C` patch rows stay in L2.
const CONV_CELLS: usize = 32;
/// Cells per task of its backward: more, so the weight gradient's rank-n updates are fewer.
const CONV_CELLS_BACKWARD: usize = 128;

/// The convolution weight in patch-column order: `[O, C, k, k]` -> `[k*k*C, O]`.
pub(crate) fn weight_rows(weight: &[f32], o: usize, g: &Geometry) -> Vec<f32> {
    let (c, kk) = (g.channels, g.taps());
    let mut out = vec![0.0f32; kk * c * o];
    for oi in 0..o {
        for ci in 0..c {
            for j in 0..kk {
                out[(j * c + ci) * o + oi] = weight[(oi * c + ci) * kk + j];
            }
        }
    }
    out
}

/// The inverse of [`weight_rows`]: `[k*k*C, O]` -> `[O, C, k, k]`.
pub(crate) fn weight_from_rows(rows: &[f32], o: usize, g: &Geometry) -> Vec<f32> {
    let (c, kk) = (g.channels, g.taps());
    let mut out = vec![0.0f32; kk * c * o];
    for oi in 0..o {
        for ci in 0..c {
            for j in 0..kk {
                out[(oi * c + ci) * kk + j] = rows[(j * c + ci) * o + oi];
            }
        }
    }
    out
}

/// The `k x k` convolution over sampled neighbourhoods of one batch item, without
/// materialising them: `z[n, o] = sum_{j, c} sample_j(n)[c] * w[j*C + c, o]`, with `w` from
/// [`weight_rows`] packed by [`panel::pack`] in panels of [`panel::LANES`], or in bfloat16
/// pairs of those (`pairs`, [`crate::conv::bf16::pack_pairs`]), which then serve the products.
/// Returns `[h*w, O]`.
pub(crate) fn sampled_conv_forward(
    g: &Geometry,
    source: &[f32],
    flow: &[f32],
    w: &[f32],
    pairs: Option<&[u32]>,
    o: usize,
) -> Vec<f32> {
    let row = g.channels * g.taps();
    assert_eq!(
        w.len(),
        panel::packed_len(1, row, o, panel::LANES),
        "sampled_conv_forward: packed weight size"
    );
    let mut z = vec![0.0f32; g.cells() * o];
    z.par_chunks_mut(CONV_CELLS * o).enumerate().for_each_init(
        // Each task's patches, and in bfloat16 their conversion (one spare value: the pair
        // read at an odd row's last value).
        || {
            let half = pairs.map_or(0, |_| CONV_CELLS * row + 1);
            (vec![0.0f32; CONV_CELLS * row], vec![0u16; half])
        },
        |(patches, half), (t, z_rows)| {
            let cells = z_rows.len() / o;
            let patches = &mut patches[..cells * row];
            patch_cells(g, source, flow, t * CONV_CELLS, patches);
            // The patches as one row of `cells` pixels of `row` channels.
            let shape = [cells, o, row];
            match pairs {
                Some(pairs) => {
                    crate::conv::bf16::convert_into(half, patches);
                    half[cells * row] = 0;
                    crate::conv::bf16::product_pixels(
                        z_rows,
                        shape,
                        &half[..cells * row + 1],
                        row,
                        [cells, cells],
                        &[(0, pairs)],
                        0,
                    );
                }
                None => {
                    let segment = [panel::Segment {
                        start: 0,
                        panels: w,
                    }];
                    panel::product_pixels(z_rows, shape, patches, row, [cells, cells], &segment, 0)
                }
            }
        },
    );
    z
}

/// Gradients of [`sampled_conv_forward`] for one batch item.
pub(crate) struct ConvGrads {
    /// `[C, H*W]` planar, empty unless asked for.
    pub source: Vec<f32>,
    /// `[2, h*w]`, empty unless asked for.
    pub flow: Vec<f32>,
    /// `[k*k*C, O]` (the layout of [`weight_rows`]), empty unless asked for.
    pub weight: Vec<f32>,
}

/// Backward of [`sampled_conv_forward`] given `dz` (`[h*w, O]`); `want` = `[source, flow,
/// weight]`. The patches are sampled again task by task, never all at once.
pub(crate) fn sampled_conv_backward(
    g: &Geometry,
    source: &[f32],
    flow: &[f32],
    w: &[f32],
    o: usize,
    dz: &[f32],
    want: [bool; 3],
) -> ConvGrads {
    let (c, row, cells) = (g.channels, g.channels * g.taps(), g.cells());
    let tasks = cells.div_ceil(CONV_CELLS_BACKWARD);
    let threads = rayon::current_num_threads().max(1);
    let mut flow_cells = vec![[0.0f32; 2]; if want[1] { cells } else { 0 }];
    let flow_out = Disjoint(flow_cells.as_mut_ptr().cast());
    // One accumulator per thread's run of tasks: the source gradient (channels-last) and the
    // weight gradient, summed at the end.
    let new_acc = || {
        (
            vec![0.0f32; if want[0] { g.pixels() * c } else { 0 }],
            vec![0.0f32; if want[2] { row * o } else { 0 }],
            vec![0.0f32; CONV_CELLS_BACKWARD * row],
            vec![0.0f32; CONV_CELLS_BACKWARD * row],
        )
    };
    let (grad_source, grad_weight, _, _) = (0..tasks)
        .into_par_iter()
        .with_min_len(tasks.div_ceil(threads))
        .fold(new_acc, |(mut gs, mut gw, mut patches, mut dpatches), t| {
            let first = t * CONV_CELLS_BACKWARD;
            let n = CONV_CELLS_BACKWARD.min(cells - first);
            let dz_rows = &dz[first * o..(first + n) * o];
            if want[2] {
                let p = &mut patches[..n * row];
                patch_cells(g, source, flow, first, p);
                // dW += P^T dZ
                matmul(&mut gw, true, [row, o, n], (p, 1, row), (dz_rows, o, 1));
            }
            if want[0] || want[1] {
                let dp = &mut dpatches[..n * row];
                // dP = dZ W^T
                matmul(dp, false, [n, row, o], (dz_rows, o, 1), (w, 1, o));
                let up = Upstream::Patches { grad: dp, first };
                if want[1] {
                    // SAFETY: cells first..first + n belong to this task only.
                    let gf = unsafe {
                        std::slice::from_raw_parts_mut(
                            (flow_out.ptr() as *mut [f32; 2]).add(first),
                            n,
                        )
                    };
                    flow_grad_cells(g, source, flow, up, first, gf, &mut []);
                }
                if want[0] {
                    source_grad_slab(g, flow, up, first..first + n, 0, &mut gs);
                }
            }
            (gs, gw, patches, dpatches)
        })
        .reduce(new_acc, |mut a, b| {
            for (x, y) in a.0.iter_mut().zip(&b.0) {
                *x += y;
            }
            for (x, y) in a.1.iter_mut().zip(&b.1) {
                *x += y;
            }
            a
        });
    let mut flow_grad = Vec::new();
    if want[1] {
        flow_grad = vec![0.0f32; 2 * cells];
        for (n, [gx, gy]) in flow_cells.iter().enumerate() {
            flow_grad[n] = *gx;
            flow_grad[cells + n] = *gy;
        }
    }
    ConvGrads {
        source: if want[0] {
            to_planar(&grad_source, c)
        } else {
            Vec::new()
        },
        flow: flow_grad,
        weight: grad_weight,
    }
}
