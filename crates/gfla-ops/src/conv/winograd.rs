//! Winograd's minimal filtering F(2x2, 3x3) for the 3x3 stride-1 convolutions, and F(2x2, 2x2)
//! for the 4x4 stride-2 ones over space-to-depth pixels (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016).
//!
//! Each 2x2 output tile is `A^T [(G g G^T) . (B^T d B)] A` for the 4x4 input patch `d` under
//! it (3x3 for F(2x2, 2x2)): the 36 (16) multiply-adds per channel pair and tile of the direct
//! convolution become 16 (9), one matrix product `[tiles, C] x [C, O]` per position of the
//! transformed tile. The transforms are additions (and halvings for the 3x3 kernel), so the
//! result differs from the direct sum only by rounding. Tiles are processed a block of tile rows at a time, so that a
//! block's transformed input and products stay in cache between the three steps.

use rayon::prelude::*;

use std::sync::OnceLock;

use super::bf16;
use super::cpu::{ConvGeometry, TransposedGeometry};
use super::panel;
use crate::simd::{Aligned, Disjoint};

/// Floats of a block's transformed input and products (`16 * (C + O) * tiles`): 512 KiB, half
/// a core's L2 here, so that both stay there between the three steps. (Sized by the input
/// alone at 1 MiB, the blocks of 64-channel layers spilled their products: Market G took
/// 0.0281-0.0285 s, now 0.0266-0.0273 s; DeepFashion batch 8 1.76 s, now 1.68 s.) At least one
/// micro-tile of products ([`panel::LANES`] tiles) wide.
const BLOCK_FLOATS: usize = 1 << 17;

/// The minimal filtering algorithm for a geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    /// F(2x2, 3x3) for 3x3 kernels at stride 1: 16 products per 2x2 tile instead of 36.
    Conv3x3,
    /// F(2x2, 2x2) for 4x4 kernels at stride 2, which are 2x2 stride-1 kernels over
    /// space-to-depth pixels of `4 C` channels: 9 products per tile instead of 16.
    Conv4x4Stride2,
}

impl Algorithm {
    /// The algorithm for `g`, where there is one and it pays: enough channels that the
    /// products, not the input and output transforms, are the work, and enough tiles (over
    /// the batch) to repay the kernel transform, 16/9 (3x3) or 9/4 (4x4 stride 2, whose
    /// transform is also scalar) times the weight's size. Measured here, transforming the
    /// kernel on every call: 3x3 layers win from about 64 tiles (256 channels at 16 x 16: 2.4
    /// against 2.9 ms) and lose at 16; 4x4 stride-2 ones win from about 256 (64 -> 128 at
    /// 128 x 128: 5.0 against 7.5 ms) and lose at 64. A `reused` kernel is transformed once
    /// for many calls, and both win from 32 tiles (Market's 16 x 8 maps: 256 channels 1.7
    /// against 2.4 ms, 4x4 stride 2 from 128 to 256 channels 1.7 against 2.2 ms, one thread)
    /// and lose at 8 (1.1 against 1.0 ms, 1.2 against 1.0 ms). Unit tests take every size, to
    /// test the algorithms on small maps.
    fn of(g: &ConvGeometry, reused: bool) -> Option<Self> {
        let [n, c, h, w] = g.input;
        let o = g.out_channels;
        let [top, left, bottom, right] = g.padding;
        let [kh, kw] = g.kernel;
        // A kernel larger than the padded input is left to the GEMM path's error.
        if h + top + bottom < kh || w + left + right < kw {
            return None;
        }
        let [oh, ow] = g.output();
        let tiles = n * oh.div_ceil(2) * ow.div_ceil(2);
        let least = |once: usize, kept: usize| {
            if cfg!(test) {
                0
            } else if reused {
                kept
            } else {
                once
            }
        };
        match (g.kernel, g.stride) {
            ([3, 3], [1, 1]) if c >= 8 && o >= 16 && tiles >= least(64, REUSED_3X3) => {
                Some(Self::Conv3x3)
            }
            ([4, 4], [2, 2]) if 4 * c >= 8 && o >= 16 && tiles >= least(256, REUSED_4X4) => {
                Some(Self::Conv4x4Stride2)
            }
            _ => None,
        }
    }

    /// Points of the transformed tile per axis (its side).
    fn points(self) -> usize {
        match self {
            Self::Conv3x3 => 4,
            Self::Conv4x4Stride2 => 3,
        }
    }

    /// Channels of the products: the input's, or its space-to-depth ones.
    fn channels(self, c: usize) -> usize {
        match self {
            Self::Conv3x3 => c,
            Self::Conv4x4Stride2 => 4 * c,
        }
    }
}

/// Tiles from which a reused kernel's algorithm pays, for 3x3 and 4x4 stride-2 layers (see
/// [`Algorithm::of`]).
const REUSED_3X3: usize = 32;
const REUSED_4X4: usize = 32;

/// A kernel transformed for one [`Algorithm`]: the matrices `[K, O]` of every point of the
/// transformed tile, `K` the (space-to-depth) input channels, packed for
/// [`panel::product_tiles`].
pub(super) struct Transformed {
    algorithm: Algorithm,
    u: Aligned<f32>,
    /// `u` in bfloat16 pairs ([`bf16::pack_pairs`]), made at the first product in bfloat16.
    pairs: OnceLock<Aligned<u32>>,
    /// The same from panels [`panel::LANES`] wide, for [`conv2d_channels_last`].
    pixel_pairs: OnceLock<Aligned<u32>>,
}

impl Transformed {
    /// Values held (floats and bfloat16 pairs, four bytes each).
    pub(super) fn len(&self) -> usize {
        let pairs = |p: &OnceLock<Aligned<u32>>| p.get().map_or(0, |p| p.len());
        self.u.len() + pairs(&self.pairs) + pairs(&self.pixel_pairs)
    }
}

/// The transformed kernel of `weight` (`[O, C, kh, kw]`) where an algorithm computes `g` and
/// pays ([`Algorithm::of`]); `reused`: it will serve many calls.
pub(super) fn prepare(weight: &[f32], g: &ConvGeometry, reused: bool) -> Option<Transformed> {
    let algorithm = Algorithm::of(g, reused)?;
    let [_, c, _, _] = g.input;
    let o = g.out_channels;
    let u = match algorithm {
        Algorithm::Conv3x3 => transform_kernel(weight, c, o),
        Algorithm::Conv4x4Stride2 => transform_kernel_s2d(weight, c, o),
    };
    let points = algorithm.points();
    let u = panel::pack(&u, points * points, algorithm.channels(c), o, panel::PANEL);
    Some(Transformed {
        algorithm,
        u,
        pairs: OnceLock::new(),
        pixel_pairs: OnceLock::new(),
    })
}

/// Output channels transformed together, one vector lane each.
const LANES: usize = 8;

multiversion! {
    /// `G g G^T` of the kernels `weight[oi][ci]` (`[O, C, 3, 3]`) for input channel `ci` and
    /// every `oi`, into row `ci` of the 16 matrices `[C, O]` of `u`.
    fn transform_kernel_row(weight: &[f32], shape: [usize; 2], ci: usize, u: Disjoint) {
        let [c, o] = shape;
        for o0 in (0..o).step_by(LANES) {
            let lanes = LANES.min(o - o0);
            // The nine taps of LANES output channels, one lane each.
            let mut g = [[0.0f32; LANES]; 9];
            for l in 0..lanes {
                let taps = &weight[((o0 + l) * c + ci) * 9..][..9];
                for (t, &v) in taps.iter().enumerate() {
                    g[t][l] = v;
                }
            }
            // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2, per kernel column.
            // Plain loops over the lanes: a closure here would be compiled without AVX2.
            let mut gg = [[[0.0f32; LANES]; 3]; 4];
            for j in 0..3 {
                for l in 0..LANES {
                    let (a, b, d) = (g[j][l], g[3 + j][l], g[6 + j][l]);
                    gg[0][j][l] = a;
                    gg[1][j][l] = 0.5 * (a + b + d);
                    gg[2][j][l] = 0.5 * (a - b + d);
                    gg[3][j][l] = d;
                }
            }
            // (G g) G^T, row by row.
            for (i, [a, b, d]) in gg.iter().enumerate() {
                let mut row = [[0.0f32; LANES]; 4];
                for l in 0..LANES {
                    row[0][l] = a[l];
                    row[1][l] = 0.5 * (a[l] + b[l] + d[l]);
                    row[2][l] = 0.5 * (a[l] - b[l] + d[l]);
                    row[3][l] = d[l];
                }
                for (j, v) in row.iter().enumerate() {
                    // SAFETY: row `ci` of matrix `i * 4 + j`, columns `o0..o0 + lanes`: inside
                    // `u`, and written by this call only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            u.ptr().add(((i * 4 + j) * c + ci) * o + o0),
                            lanes,
                        )
                    };
                    dst.copy_from_slice(&v[..lanes]);
                }
            }
        }
    }
}

/// `G g G^T` of every 3x3 kernel of `weight` (`[O, C, 3, 3]`), as 16 matrices `[C, O]`. The
/// kernel is transformed on every call; vectorised over output channels, it is a few percent
/// of a deep layer's time (scalar, with scattered writes, it was a quarter).
fn transform_kernel(weight: &[f32], c: usize, o: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * c * o];
    let dst = Disjoint(u.as_mut_ptr());
    (0..c)
        .into_par_iter()
        .for_each(|ci| transform_kernel_row(weight, [c, o], ci, dst));
    u
}

/// `a - b`, `a + b` of equal-length slices into `out`, in a form that vectorises.
#[inline(always)]
fn combine(out: &mut [f32], a: &[f32], b: &[f32], sign: f32) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = a + sign * b;
    }
}

multiversion! {
    /// `B^T d B` of the tiles in tile rows `ty0..ty1` of one item `x` (`[C, H, W]`) into `v`
    /// (`[16][C][tiles]`), with `d`'s pixels outside the image zero. `d B` works on whole input
    /// rows and `B^T` on all the block's tiles at once, slices contiguous in the tile, so that
    /// both vectorise. (Per tile row and patch row, on a 16 x 8 map's 4-tile rows, Market G
    /// took 0.0458 s on one thread, now 0.0425 s.)
    fn transform_input(
        x: &[f32],
        shape: [usize; 3],
        origin: [usize; 2],
        block: [usize; 3],
        v: &mut [f32],
    ) {
        let ([c, h, w], [top, left], [ty0, ty1, tw]) = (shape, origin, block);
        let tiles = stride(ty1 - ty0, tw);
        let n = tw + 1;
        // The block's input rows: tile row `ty` reads rows `2 ty..2 ty + 4`, so each row but
        // the first and last two serves two tile rows, and `d B` (per row) is computed once.
        let (tile_rows, nt) = (ty1 - ty0, (ty1 - ty0) * tw);
        let rows = 2 * tile_rows + 2;
        // One zero-padded input row, then its even and odd columns: the four columns of tile
        // `tx` are even[tx], odd[tx], even[tx + 1], odd[tx + 1].
        let mut padded = vec![0.0f32; 2 * n];
        let mut even = vec![0.0f32; n];
        let mut odd = vec![0.0f32; n];
        // d B: the 4 column combinations of each input row, `[row parity][j][row / 2][tw]`.
        // Patch row i of every tile row of the block is then one contiguous run: parity i % 2,
        // from row / 2 = i / 2 on, so that B^T works on all the block's tiles at once.
        let half = (tile_rows + 1) * tw;
        let mut e = vec![0.0f32; 8 * half];
        let copy = w.min(2 * n - left);
        for ci in 0..c {
            let plane = &x[ci * h * w..][..h * w];
            for r in 0..rows {
                let at = |j: usize| ((r % 2) * 4 + j) * half + (r / 2) * tw;
                let Some(y) = (2 * ty0 + r).checked_sub(top).filter(|&y| y < h) else {
                    for j in 0..4 {
                        e[at(j)..][..tw].fill(0.0);
                    }
                    continue;
                };
                padded[left..left + copy].copy_from_slice(&plane[y * w..][..copy]);
                for ((pair, ev), od) in padded.chunks_exact(2).zip(&mut even).zip(&mut odd) {
                    *ev = pair[0];
                    *od = pair[1];
                }
                let (d0, d2) = (&even[..tw], &even[1..][..tw]);
                let (d1, d3) = (&odd[..tw], &odd[1..][..tw]);
                combine(&mut e[at(0)..][..tw], d0, d2, -1.0);
                combine(&mut e[at(1)..][..tw], d1, d2, 1.0);
                combine(&mut e[at(2)..][..tw], d2, d1, -1.0);
                combine(&mut e[at(3)..][..tw], d1, d3, -1.0);
            }
            // B^T (d B): patch rows combined, for all the block's tiles at once, into v.
            let patch_row = |i: usize, j: usize| &e[((i % 2) * 4 + j) * half + (i / 2) * tw..][..nt];
            for j in 0..4 {
                for (i, (a, b, sign)) in [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)]
                    .into_iter()
                    .enumerate()
                {
                    let dst = &mut v[((i * 4 + j) * c + ci) * tiles..][..nt];
                    combine(dst, patch_row(a, j), patch_row(b, j), sign);
                }
            }
        }
    }
}

/// `G k G^T` (`G = [1 0; 1 1; 0 1]`) of the 2x2 space-to-depth kernels of `weight`
/// (`[O, C, 4, 4]`), as 9 matrices `[4 C, O]`: channel `(a * 2 + b) * C + ci` of tap `(u, v)`
/// is `weight[o][ci][2 u + a][2 v + b]`.
fn transform_kernel_s2d(weight: &[f32], c: usize, o: usize) -> Vec<f32> {
    let k = 4 * c;
    let mut u = vec![0.0f32; 9 * k * o];
    let dst = Disjoint(u.as_mut_ptr());
    (0..k).into_par_iter().for_each(|vc| {
        let (ab, ci) = (vc / c, vc % c);
        let (a, b) = (ab / 2, ab % 2);
        for oi in 0..o {
            let w = &weight[(oi * c + ci) * 16..][..16];
            let tap = |u: usize, v: usize| w[(2 * u + a) * 4 + 2 * v + b];
            // G k: rows k0, k0 + k1, k1; then each row (p, q) becomes (p, p + q, q).
            let rows = [
                [tap(0, 0), tap(0, 1)],
                [tap(0, 0) + tap(1, 0), tap(0, 1) + tap(1, 1)],
                [tap(1, 0), tap(1, 1)],
            ];
            for (i, [p, q]) in rows.into_iter().enumerate() {
                for (j, val) in [p, p + q, q].into_iter().enumerate() {
                    // SAFETY: row `vc` of matrix `i * 3 + j`: inside `u`, this task's only.
                    unsafe { *dst.ptr().add(((i * 3 + j) * k + vc) * o + oi) = val };
                }
            }
        }
    });
    u
}

multiversion! {
    /// `B^T d B` (`B^T = [1 -1 0; 0 1 0; 0 -1 1]`) of the 3x3 space-to-depth patches of the
    /// tiles in tile rows `ty0..ty1` of one item `x` (`[C, H, W]`) into `v` (`[9][4 C][tiles]`).
    /// Space-to-depth pixel `(r, s)`, channel `(a * 2 + b) * C + ci`, is input pixel
    /// `(2 r + a - top, 2 s + b - left)` (zero outside the image); tile `(ty, tx)` covers
    /// pixels `2 ty.., 2 tx..` of that image.
    fn transform_input_s2d(
        x: &[f32],
        shape: [usize; 3],
        origin: [usize; 2],
        block: [usize; 3],
        v: &mut [f32],
    ) {
        let ([c, h, w], [top, left], [ty0, ty1, tw]) = (shape, origin, block);
        let (k, tiles, n) = (4 * c, stride(ty1 - ty0, tw), tw + 1);
        // As in [`transform_input`]: `d B` once per space-to-depth row of the block (tile row
        // `ty` reads rows `2 ty..2 ty + 3`), kept by row parity so that `B^T` works on all the
        // block's tiles at once.
        let (tile_rows, nt) = (ty1 - ty0, (ty1 - ty0) * tw);
        let rows = 2 * tile_rows + 1;
        let half = (tile_rows + 1) * tw;
        // One zero-padded input row, loaded once for both column parities `b`: the patch
        // columns of tile `tx` are padded[4 tx + b], padded[4 tx + 2 + b], padded[4 tx + 4 + b],
        // split into the runs `4 tx + b` (`[b]`) and `4 tx + 2 + b` (`[2 + b]`), contiguous in
        // `tx`.
        let mut padded = vec![0.0f32; 4 * n];
        let mut runs = vec![0.0f32; 4 * n];
        // d B: the 3 column combinations per parity b of each row, `[row parity][b][j][row /
        // 2][tw]`.
        let mut e = vec![0.0f32; 12 * half];
        let copy = w.min(4 * n - left);
        for ci in 0..c {
            let plane = &x[ci * h * w..][..h * w];
            for a in 0..2 {
                for r in 0..rows {
                    let at = |b: usize, j: usize| (((r % 2) * 2 + b) * 3 + j) * half + (r / 2) * tw;
                    let Some(y) = (2 * (2 * ty0 + r) + a).checked_sub(top).filter(|&y| y < h)
                    else {
                        for b in 0..2 {
                            for j in 0..3 {
                                e[at(b, j)..][..tw].fill(0.0);
                            }
                        }
                        continue;
                    };
                    padded[left..left + copy].copy_from_slice(&plane[y * w..][..copy]);
                    let (r01, r23) = runs.split_at_mut(2 * n);
                    let (r0, r1) = r01.split_at_mut(n);
                    let (r2, r3) = r23.split_at_mut(n);
                    for (kk, quad) in padded.chunks_exact(4).enumerate() {
                        r0[kk] = quad[0];
                        r1[kk] = quad[1];
                        r2[kk] = quad[2];
                        r3[kk] = quad[3];
                    }
                    for b in 0..2 {
                        let (d0, d2) = (&runs[b * n..][..tw], &runs[b * n + 1..][..tw]);
                        let d1 = &runs[(2 + b) * n..][..tw];
                        combine(&mut e[at(b, 0)..][..tw], d0, d1, -1.0);
                        e[at(b, 1)..][..tw].copy_from_slice(d1);
                        combine(&mut e[at(b, 2)..][..tw], d2, d1, -1.0);
                    }
                }
                // B^T (d B): patch rows combined, for all the block's tiles at once, into v.
                for b in 0..2 {
                    let vc = (a * 2 + b) * c + ci;
                    let row = |i: usize, j: usize| {
                        &e[(((i % 2) * 2 + b) * 3 + j) * half + (i / 2) * tw..][..nt]
                    };
                    for j in 0..3 {
                        let at = |i: usize| ((i * 3 + j) * k + vc) * tiles;
                        combine(&mut v[at(0)..][..nt], row(0, j), row(1, j), -1.0);
                        v[at(1)..][..nt].copy_from_slice(row(1, j));
                        combine(&mut v[at(2)..][..nt], row(2, j), row(1, j), -1.0);
                    }
                }
            }
        }
    }
}

multiversion! {
    /// `A^T m A + bias` of the products `m` (`[points^2][O][tiles]`) of tile rows `ty0..ty1`
    /// into output rows `2 * ty0..` of one item (`[O, oh, ow]`), dropping the pixels past the
    /// edge. `points` is 4 for F(2x2, 3x3) (`A^T = [1 1 1 0; 0 1 -1 -1]`) and 3 for
    /// F(2x2, 2x2) (`A^T = [1 1 0; 0 1 1]`).
    fn transform_output(
        m: &[f32],
        bias: Option<&[f32]>,
        points: usize,
        shape: [usize; 3],
        block: [usize; 3],
        out: Disjoint,
    ) {
        let ([o, oh, ow], [ty0, ty1, tw]) = (shape, block);
        let tiles = stride(ty1 - ty0, tw);
        let three = points == 3;
        // Both steps over all the block's tiles at once (a row of `m` holds them contiguous),
        // then each output row's two halves interleaved: per tile row, the vectors were a
        // 16 x 8 map's 4 tiles long.
        let nt = (ty1 - ty0) * tw;
        // m A: per row i, columns 0 and 1; then A^T (m A) + bias: per output row parity a and
        // column parity j.
        let mut f = vec![0.0f32; 2 * points * nt];
        let mut parities = vec![0.0f32; 4 * nt];
        for oi in 0..o {
            let b = bias.map_or(0.0, |b| b[oi]);
            let at = |i: usize, j: usize| &m[((i * points + j) * o + oi) * tiles..][..nt];
            for i in 0..points {
                let (f0, f1) = f[i * 2 * nt..][..2 * nt].split_at_mut(nt);
                let (m0, m1, m2) = (at(i, 0), at(i, 1), at(i, 2));
                if three {
                    combine(f0, m0, m1, 1.0);
                    combine(f1, m1, m2, 1.0);
                } else {
                    let m3 = at(i, 3);
                    for k in 0..nt {
                        f0[k] = m0[k] + m1[k] + m2[k];
                        f1[k] = m1[k] - m2[k] - m3[k];
                    }
                }
            }
            let fj = |i: usize, j: usize| &f[(i * 2 + j) * nt..][..nt];
            for a in 0..2 {
                for j in 0..2 {
                    let (p, q, r) = (fj(0, j), fj(1, j), fj(2, j));
                    let out = &mut parities[(a * 2 + j) * nt..][..nt];
                    // Loops, not closures: a closure would lose the AVX2 of this body.
                    match (three, a) {
                        (true, 0) => {
                            for k in 0..nt {
                                out[k] = p[k] + q[k] + b;
                            }
                        }
                        (true, _) => {
                            for k in 0..nt {
                                out[k] = q[k] + r[k] + b;
                            }
                        }
                        (false, 0) => {
                            for k in 0..nt {
                                out[k] = p[k] + q[k] + r[k] + b;
                            }
                        }
                        (false, _) => {
                            let s = fj(3, j);
                            for k in 0..nt {
                                out[k] = q[k] - r[k] - s[k] + b;
                            }
                        }
                    }
                }
            }
            for ty in ty0..ty1 {
                let base = (ty - ty0) * tw;
                for a in 0..2 {
                    let y = 2 * ty + a;
                    if y >= oh {
                        break;
                    }
                    let h0 = &parities[a * 2 * nt + base..][..tw];
                    let h1 = &parities[(a * 2 + 1) * nt + base..][..tw];
                    // SAFETY: row `y` of channel `oi` lies in this task's tile rows only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.ptr().add((oi * oh + y) * ow), ow)
                    };
                    // Interleaved straight into the output row; an odd width drops the last
                    // tile's right column.
                    for ((pair, a), b) in dst.chunks_exact_mut(2).zip(h0).zip(h1) {
                        pair[0] = *a;
                        pair[1] = *b;
                    }
                    if ow % 2 == 1 {
                        dst[ow - 1] = h0[tw - 1];
                    }
                }
            }
        }
    }
}

/// The input transform of `algorithm` ([`transform_input`], [`transform_input_s2d`]), in
/// AVX-512 where the CPU has it.
fn input_transform(
    algorithm: Algorithm,
    x: &[f32],
    shape: [usize; 3],
    origin: [usize; 2],
    block: [usize; 3],
    v: &mut [f32],
) {
    let ([c, h, w], [ty0, ty1, tw]) = (shape, block);
    let points = algorithm.points();
    assert_eq!(x.len(), c * h * w, "winograd: input size");
    assert!(
        v.len() >= points * points * algorithm.channels(c) * stride(ty1 - ty0, tw),
        "winograd: transformed input size"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was just detected; the sizes were checked above.
        unsafe {
            match algorithm {
                Algorithm::Conv3x3 => avx512::transform_input(x, shape, origin, block, v),
                Algorithm::Conv4x4Stride2 => {
                    avx512::transform_input_s2d(x, shape, origin, block, v)
                }
            }
        }
        return;
    }
    match algorithm {
        Algorithm::Conv3x3 => transform_input(x, shape, origin, block, v),
        Algorithm::Conv4x4Stride2 => transform_input_s2d(x, shape, origin, block, v),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::avx512::{every_fourth, fourth, inside, row_run};
    use super::stride;

    /// [`super::transform_input`] with each row's `d B` computed in registers from unaligned
    /// loads of the input row, deinterleaved by permutes, as the bfloat16 transform does (see
    /// `bf16::winograd_input_pairs`): the portable version's padded copy, split into even and
    /// odd columns and read back at an offset of one value, stalled on store forwarding.
    ///
    /// # Safety
    /// AVX-512F; `x` is `[C, H, W]` and `v` holds `[16][C][stride]` for the block.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_input(
        x: &[f32],
        [c, h, w]: [usize; 3],
        [top, left]: [usize; 2],
        [ty0, ty1, tw]: [usize; 3],
        v: &mut [f32],
    ) {
        let tile_rows = ty1 - ty0;
        let (tiles, nt) = (stride(tile_rows, tw), tile_rows * tw);
        // `d B` of one channel, `[parity][j][row / 2][tw]`: patch row i of all the block's
        // tiles is one run (parity i % 2, from row i / 2).
        let half = (tile_rows + 1) * tw;
        let mut e = vec![0.0f32; 8 * half];
        // SAFETY: input loads are masked to their row's `w` columns, the runs of `e` to `tw`
        // tiles and `nt`, the stores to `v` to the block's `nt` tiles of its rows.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
            let e = e.as_mut_ptr();
            for ci in 0..c {
                for r in 0..2 * tile_rows + 2 {
                    let y = (2 * ty0 + r) as isize - top as isize;
                    let run = ((r % 2) * 4) * half + (r / 2) * tw;
                    for tx0 in (0..tw).step_by(16) {
                        let keep = inside(tx0 as isize, tw);
                        let mut d = [_mm512_setzero_ps(); 4];
                        if y >= 0 && y < h as isize {
                            let row = x.as_ptr().add((ci * h + y as usize) * w);
                            let base = 2 * tx0 as isize - left as isize;
                            let mut load = [_mm512_setzero_ps(); 4];
                            for (q, load) in load.iter_mut().enumerate() {
                                // Columns base.., base + 16.., base + 2.., base + 18...
                                let at = base + [0, 16, 2, 18][q];
                                *load =
                                    _mm512_maskz_loadu_ps(inside(at, w), row.wrapping_offset(at));
                            }
                            // Tile tx's patch columns 2 tx.. 2 tx + 3.
                            d = [
                                _mm512_permutex2var_ps(load[0], even, load[1]),
                                _mm512_permutex2var_ps(load[0], odd, load[1]),
                                _mm512_permutex2var_ps(load[2], even, load[3]),
                                _mm512_permutex2var_ps(load[2], odd, load[3]),
                            ];
                        }
                        let rows = [
                            _mm512_sub_ps(d[0], d[2]),
                            _mm512_add_ps(d[1], d[2]),
                            _mm512_sub_ps(d[2], d[1]),
                            _mm512_sub_ps(d[1], d[3]),
                        ];
                        for (j, row) in rows.into_iter().enumerate() {
                            _mm512_mask_storeu_ps(e.add(run + j * half + tx0), keep, row);
                        }
                    }
                }
                // B^T (d B), for all the block's tiles at once.
                for j in 0..4 {
                    for t in (0..nt).step_by(16) {
                        let keep = inside(t as isize, nt);
                        let mut p = [_mm512_setzero_ps(); 4];
                        for (i, p) in p.iter_mut().enumerate() {
                            let at = ((i % 2) * 4 + j) * half + (i / 2) * tw + t;
                            *p = _mm512_maskz_loadu_ps(keep, e.add(at));
                        }
                        let points = [
                            _mm512_sub_ps(p[0], p[2]),
                            _mm512_add_ps(p[1], p[2]),
                            _mm512_sub_ps(p[2], p[1]),
                            _mm512_sub_ps(p[1], p[3]),
                        ];
                        for (i, point) in points.into_iter().enumerate() {
                            let at = ((i * 4 + j) * c + ci) * tiles + t;
                            _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, point);
                        }
                    }
                }
            }
        }
    }

    /// [`super::transform_input_s2d`] with each space-to-depth row's `d B` from unaligned loads
    /// of the input row, every fourth column permuted out of them (as the bfloat16 transform
    /// does, see `bf16::winograd_input_pairs`), both column parities `b` from the same
    /// loads: the portable version copies each row padded and splits it four ways first.
    ///
    /// # Safety
    /// AVX-512F; `x` is `[C, H, W]` and `v` holds `[9][4 C][stride]` for the block.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_input_s2d(
        x: &[f32],
        [c, h, w]: [usize; 3],
        [top, left]: [usize; 2],
        [ty0, ty1, tw]: [usize; 3],
        v: &mut [f32],
    ) {
        let tile_rows = ty1 - ty0;
        let (k, tiles, nt) = (4 * c, stride(tile_rows, tw), tile_rows * tw);
        // `d B` of one input channel and row parity `a`, `[b][parity][j][row / 2][tw]` (j < 3).
        let half = (tile_rows + 1) * tw;
        let mut e = vec![0.0f32; 12 * half];
        // SAFETY: input loads are masked to their row's `w` columns, the runs of `e` to `tw`
        // tiles and `nt`, the stores to `v` to the block's `nt` tiles of its rows.
        unsafe {
            let pick: [__m512i; 4] = std::array::from_fn(|o| fourth(o as i32));
            let e = e.as_mut_ptr();
            for ci in 0..c {
                for a in 0..2 {
                    for r in 0..2 * tile_rows + 1 {
                        let y = (2 * (2 * ty0 + r) + a) as isize - top as isize;
                        let row = (y >= 0 && y < h as isize)
                            .then(|| x.as_ptr().add((ci * h + y as usize) * w));
                        for tx0 in (0..tw).step_by(16) {
                            let keep = inside(tx0 as isize, tw);
                            // Tile tx's patch columns: input columns 4 tx + b - left, + 2, + 4.
                            let base = (4 * tx0) as isize - left as isize;
                            let runs =
                                row.map(|row| (row_run(row, base, w), row_run(row, base + 4, w)));
                            for b in 0..2 {
                                let mut d = [_mm512_setzero_ps(); 3];
                                if let Some((run, next)) = &runs {
                                    d = [
                                        every_fourth(run, pick[b]),
                                        every_fourth(run, pick[2 + b]),
                                        every_fourth(next, pick[b]),
                                    ];
                                }
                                let rows =
                                    [_mm512_sub_ps(d[0], d[1]), d[1], _mm512_sub_ps(d[2], d[1])];
                                for (j, row) in rows.into_iter().enumerate() {
                                    let at = ((b * 2 + r % 2) * 3 + j) * half + (r / 2) * tw + tx0;
                                    _mm512_mask_storeu_ps(e.add(at), keep, row);
                                }
                            }
                        }
                    }
                    // B^T (d B) = (r0 - r1, r1, r2 - r1), for all the block's tiles at once.
                    for b in 0..2 {
                        let vc = (a * 2 + b) * c + ci;
                        for j in 0..3 {
                            for t in (0..nt).step_by(16) {
                                let keep = inside(t as isize, nt);
                                let mut p = [_mm512_setzero_ps(); 3];
                                for (i, p) in p.iter_mut().enumerate() {
                                    let at = ((b * 2 + i % 2) * 3 + j) * half + (i / 2) * tw + t;
                                    *p = _mm512_maskz_loadu_ps(keep, e.add(at));
                                }
                                let points =
                                    [_mm512_sub_ps(p[0], p[1]), p[1], _mm512_sub_ps(p[2], p[1])];
                                for (i, point) in points.into_iter().enumerate() {
                                    let at = ((i * 3 + j) * k + vc) * tiles + t;
                                    _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, point);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's transformed input and products of a block, kept between tasks and calls.
    /// (In bfloat16, also the transformed input's pairs.)
    static SCRATCH: std::cell::RefCell<(Aligned<f32>, Aligned<f32>, Aligned<u32>)> =
        const { std::cell::RefCell::new((Aligned::new(), Aligned::new(), Aligned::new())) };
}

/// The row length of a block's transformed input and products (`[.][tiles]`): its tiles,
/// padded to whole micro-tiles of [`panel::product_tiles`]. The padding's values are never read
/// back.
fn stride(tile_rows: usize, tw: usize) -> usize {
    (tile_rows * tw).next_multiple_of(panel::LANES)
}

fn grow(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

/// `y = conv(x, weight) + bias` with the kernel [`prepare`] transformed for `g`, as
/// [`super::cpu::conv2d`]; `in_bf16`: the products in bfloat16 ([`bf16`]). Returns
/// `[B, O, oh, ow]`.
pub(super) fn conv2d(
    x: &[f32],
    kernel: &Transformed,
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    in_bf16: bool,
) -> Vec<f32> {
    let Transformed {
        algorithm, ref u, ..
    } = *kernel;
    let [n, c, h, w] = g.input;
    // The output is written through raw pointers for `n` items: the input must hold them.
    assert_eq!(x.len(), n * c * h * w, "winograd::conv2d: input size");
    let o = g.out_channels;
    let [top, left, _, _] = g.padding;
    let [oh, ow] = g.output();
    let (points, k) = (algorithm.points(), algorithm.channels(c));
    let products = points * points;
    assert_eq!(
        u.len(),
        panel::packed_len(products, k, o, panel::PANEL),
        "winograd::conv2d: kernel size"
    );
    if in_bf16 && algorithm == Algorithm::Conv3x3 && ow.div_ceil(2) <= CHANNELS_LAST_TILES {
        return conv2d_channels_last(x, kernel, bias, g);
    }
    let panels = panel::packed_len(1, k, o, panel::PANEL);
    let pairs = in_bf16.then(|| {
        kernel
            .pairs
            .get_or_init(|| bf16::pack_pairs(u, k, panel::PANEL))
    });
    let pair_panels = k.div_ceil(2) * o.next_multiple_of(panel::PANEL);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    // Tile rows per task: a block's transformed input and products near BLOCK_FLOATS, and one
    // task per thread where the image has the rows. Tasks of a layer cost the same, so more of
    // them only made the products shorter: on Market's maps two per thread took 4 % longer in
    // all, four 20 %.
    let by_size = (BLOCK_FLOATS / (products * (k + o) * tw)).max(panel::LANES.div_ceil(tw));
    let rows = by_size.min(th.div_ceil(rayon::current_num_threads()));
    // Every output pixel is written below (the tile rows cover all `oh` rows, each row all
    // `ow` columns), so the output is not zeroed first.
    let len = n * o * oh * ow;
    let mut out = Vec::<f32>::with_capacity(len);
    for (item, xi) in x.chunks_exact(c * h * w).enumerate() {
        // SAFETY: item `item`'s `o * oh * ow` values lie inside the allocation of `len`.
        let dst = Disjoint(unsafe { out.as_mut_ptr().add(item * o * oh * ow) });
        (0..th.div_ceil(rows)).into_par_iter().for_each(|r| {
            let (ty0, ty1) = (r * rows, ((r + 1) * rows).min(th));
            let tiles = stride(ty1 - ty0, tw);
            SCRATCH.with_borrow_mut(|(v, m, scratch)| {
                let block = [ty0, ty1, tw];
                // Overwritten whole: only grown, never cleared.
                m.grow(products * o * tiles);
                let m = &mut m[..products * o * tiles];
                // (The space-to-depth transform pairs two input channels: an even count.)
                let paired = algorithm == Algorithm::Conv3x3 || c.is_multiple_of(2);
                if let (Some(kernel), true) = (pairs, paired) {
                    // The transform writes the pairs the products read.
                    let k2 = k.div_ceil(2);
                    scratch.grow(products * k2 * tiles);
                    let s2d = algorithm == Algorithm::Conv4x4Stride2;
                    let (shape, origin) = ([c, h, w], [top, left]);
                    bf16::winograd_input_pairs(scratch, xi, shape, origin, block, tiles, v, s2d);
                    for (p, (m, x)) in m
                        .chunks_exact_mut(o * tiles)
                        .zip(scratch.chunks_exact(k2 * tiles))
                        .enumerate()
                    {
                        let kernel = &kernel[p * pair_panels..][..pair_panels];
                        bf16::product_tile_pairs(m, x, [tiles, k, o], kernel);
                    }
                    transform_output(m, bias, points, [o, oh, ow], block, dst);
                    return;
                }
                v.grow(products * k * tiles);
                let v = &mut v[..products * k * tiles];
                input_transform(algorithm, xi, [c, h, w], [top, left], block, v);
                for (p, (m, v)) in m
                    .chunks_exact_mut(o * tiles)
                    .zip(v.chunks_exact(k * tiles))
                    .enumerate()
                {
                    // m[p] ([O][tiles]) = u[p]^T v[p] (`[K][tiles]`).
                    if let Some(w) = pairs {
                        let w = &w[p * pair_panels..][..pair_panels];
                        bf16::product_tiles(m, v, [tiles, k, o], w, scratch);
                    } else {
                        panel::product_tiles(m, v, tiles, &u[p * panels..][..panels], k, o);
                    }
                }
                transform_output(m, bias, points, [o, oh, ow], block, dst);
            });
        });
    }
    // SAFETY: all `len` values were written above.
    unsafe { out.set_len(len) };
    out
}

/// Row-major `[count][k][o]` matrices of [`panel::pack`]'s panels `width` wide.
fn unpack(packed: &[f32], count: usize, k: usize, o: usize, width: usize) -> Vec<f32> {
    let panels = o.div_ceil(width);
    let mut out = vec![0.0f32; count * k * o];
    for (i, panel) in packed.chunks_exact(k * width).enumerate() {
        let (matrix, first) = (i / panels, (i % panels) * width);
        let valid = width.min(o - first);
        for (row, src) in panel.chunks_exact(width).enumerate() {
            out[(matrix * k + row) * o + first..][..valid].copy_from_slice(&src[..valid]);
        }
    }
    out
}

/// The widest tile rows [`conv2d_channels_last`] takes. Measured with bfloat16 products on 2
/// threads: 256 -> 256 at 16 x 8 (4 tiles a row) 0.241 -> 0.225 ms, but 128 -> 128 at 32 x 16 (8)
/// 0.278 -> 0.299 ms and 64 -> 64 at 64 x 32 (16) 0.30 -> 0.50 ms, where its output, written
/// value by value, costs more than the transforms over tiles save.
const CHANNELS_LAST_TILES: usize = 4;

thread_local! {
    /// Each thread's bfloat16 transformed input and products of a block for
    /// [`conv2d_channels_last`].
    static SCRATCH_CL: std::cell::RefCell<(Vec<u16>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// F(2x2, 3x3) with bfloat16 products, the transforms vectorised over channels instead of
/// tiles: on Market's small maps a tile row is 1-4 tiles, and the transforms over tiles were a
/// third of a layer's time once the products ran in bfloat16. The input is copied padded and
/// channels-last once per item; each block's transformed input (`[16][tiles][C]`, bfloat16)
/// is then multiplied as pixels ([`bf16::product_pixels`]).
fn conv2d_channels_last(
    x: &[f32],
    kernel: &Transformed,
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let [n, c, h, w] = g.input;
    let o = g.out_channels;
    let [top, left, _, _] = g.padding;
    let [oh, ow] = g.output();
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let row = c.div_ceil(2) * o.next_multiple_of(panel::LANES);
    let pairs = kernel.pixel_pairs.get_or_init(|| {
        let u = unpack(&kernel.u, 16, c, o, panel::PANEL);
        bf16::pack_pairs(&panel::pack(&u, 16, c, o, panel::LANES), c, panel::LANES)
    });
    // As `conv2d`'s blocks: transformed input and products near BLOCK_FLOATS, one task per
    // thread where the image has the rows.
    let by_size = (BLOCK_FLOATS / (16 * (c + o) * tw)).max(1);
    let rows = by_size.min(th.div_ceil(rayon::current_num_threads()));
    let len = n * o * oh * ow;
    let mut out = Vec::<f32>::with_capacity(len);
    for (item, xi) in x.chunks_exact(c * h * w).enumerate() {
        // Tile (ty, tx) reads padded pixels 2 ty.. 2 ty + 3, 2 tx.. 2 tx + 3.
        let image =
            super::cpu::pad_item(xi, [c, h, w], [1, 1], [top, left], [2 * th + 2, 2 * tw + 2]);
        // SAFETY: item `item`'s `o * oh * ow` values lie inside the allocation of `len`.
        let dst = Disjoint(unsafe { out.as_mut_ptr().add(item * o * oh * ow) });
        (0..th.div_ceil(rows)).into_par_iter().for_each(|r| {
            let (ty0, ty1) = (r * rows, ((r + 1) * rows).min(th));
            let tiles = (ty1 - ty0) * tw;
            SCRATCH_CL.with_borrow_mut(|(v, m)| {
                // Both are overwritten whole: only grown, never cleared. One spare value: the
                // pair read at an odd channel count's last channel.
                if v.len() < 16 * tiles * c + 1 {
                    v.resize(16 * tiles * c + 1, 0);
                }
                grow(m, 16 * tiles * o);
                let block = [ty0, ty1, tw];
                bf16::winograd_input(v, &image.data, [image.width, c], block);
                for p in 0..16 {
                    let segment = [(p * tiles * c, &pairs[p * row..][..row])];
                    let m = &mut m[p * tiles * o..][..tiles * o];
                    bf16::product_pixels(m, [tiles, o, c], v, c, [tiles, tiles], &segment, 0);
                }
                // SAFETY: these tile rows' output pixels are this task's only.
                unsafe { bf16::winograd_output(m, bias, [o, oh, ow], block, dst) };
            });
        });
    }
    // SAFETY: every output pixel was written above (the tile rows cover all `oh` rows, each
    // row all `ow` columns).
    unsafe { out.set_len(len) };
    out
}

/// A stride-1 3x3 transposed convolution (the input gradient of a 3x3 layer) as the
/// convolution with the kernel flipped and its channel axes swapped, padded by `2 - crop`
/// before and what makes the output size after: that convolution's geometry (for the call's
/// batch), or `None` where there is no such convolution.
pub(super) fn transposed_as_conv(g: &TransposedGeometry) -> Option<ConvGeometry> {
    let [_, _, h, w] = g.input;
    let [oh, ow] = g.output;
    if g.kernel != [3, 3] || g.stride != [1, 1] || g.crop.iter().any(|&p| p > 2) {
        return None;
    }
    let (top, left) = (2 - g.crop[0], 2 - g.crop[1]);
    Some(ConvGeometry {
        input: g.input,
        out_channels: g.out_channels,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [
            top,
            left,
            (oh + 2).checked_sub(h + top)?,
            (ow + 2).checked_sub(w + left)?,
        ],
    })
}

/// The transformed kernel of the convolution [`transposed_as_conv`] makes of `g`, for
/// `weight` (`[C, O, 3, 3]`), where an algorithm computes it and pays; `reused` as in
/// [`prepare`].
pub(super) fn prepare_transposed(
    weight: &[f32],
    g: &TransposedGeometry,
    reused: bool,
) -> Option<Transformed> {
    let conv = transposed_as_conv(g)?;
    Algorithm::of(&conv, reused)?;
    let [_, c, _, _] = g.input;
    let o = g.out_channels;
    // [C, O, 3, 3] to [O, C, 3, 3], each kernel rotated by half a turn.
    let mut flipped = vec![0.0f32; o * c * 9];
    flipped
        .par_chunks_mut(c * 9)
        .enumerate()
        .for_each(|(oi, dst)| {
            for ci in 0..c {
                for t in 0..9 {
                    dst[ci * 9 + t] = weight[(ci * o + oi) * 9 + 8 - t];
                }
            }
        });
    prepare(&flipped, &conv, reused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_to_wide_3x3_stride_1_and_4x4_stride_2_only() {
        let applies = |g: &ConvGeometry| Algorithm::of(g, false).is_some();
        let g = |input, out_channels, kernel, stride| ConvGeometry {
            input,
            out_channels,
            kernel,
            stride,
            padding: [1; 4],
        };
        assert!(applies(&g([1, 64, 8, 8], 64, [3, 3], [1, 1])));
        assert!(applies(&g([1, 3, 8, 8], 64, [4, 4], [2, 2])));
        assert!(!applies(&g([1, 64, 8, 8], 64, [3, 3], [2, 2])));
        assert!(!applies(&g([1, 64, 8, 8], 64, [4, 4], [1, 1])));
        assert!(!applies(&g([1, 1, 8, 8], 64, [4, 4], [2, 2])));
        assert!(!applies(&g([1, 64, 8, 8], 3, [3, 3], [1, 1])));
        assert!(!applies(&g([1, 3, 8, 8], 64, [3, 3], [1, 1])));
    }

    /// The AVX-512 input transforms write exactly the portable ones' values: tile rows of over
    /// 16 tiles and of a few, blocks at the top, inside and at the bottom, uneven padding, odd
    /// sizes and channel counts.
    #[test]
    fn input_transforms_agree() {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            let cases = [
                (
                    [3usize, 9usize, 37usize],
                    [1usize, 1usize],
                    [0usize, 3usize, 19usize],
                ),
                ([2, 9, 37], [1, 1], [3, 5, 19]),
                ([5, 6, 7], [0, 2], [1, 3, 4]),
                ([3, 18, 75], [1, 1], [0, 3, 19]),
                ([2, 18, 75], [1, 1], [2, 5, 19]),
                ([5, 9, 11], [0, 2], [1, 3, 3]),
            ];
            for (i, (shape, origin, block)) in cases.into_iter().enumerate() {
                // The first three as 3x3 layers, the rest as 4x4 stride-2 ones.
                let algorithm = [Algorithm::Conv3x3, Algorithm::Conv4x4Stride2][i / 3];
                let ([c, h, w], [ty0, ty1, tw]) = (shape, block);
                let x = crate::testing::lcg(c * h * w, 11, 1.0);
                let points = algorithm.points();
                let len = points * points * algorithm.channels(c) * stride(ty1 - ty0, tw);
                let run = |fast: bool| {
                    let mut v = vec![f32::NAN; len];
                    match (fast, algorithm) {
                        // SAFETY (both): AVX-512F was detected; the sizes fit.
                        (true, Algorithm::Conv3x3) => unsafe {
                            avx512::transform_input(&x, shape, origin, block, &mut v)
                        },
                        (true, Algorithm::Conv4x4Stride2) => unsafe {
                            avx512::transform_input_s2d(&x, shape, origin, block, &mut v)
                        },
                        (false, Algorithm::Conv3x3) => {
                            transform_input(&x, shape, origin, block, &mut v)
                        }
                        (false, Algorithm::Conv4x4Stride2) => {
                            transform_input_s2d(&x, shape, origin, block, &mut v)
                        }
                    }
                    v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
                };
                assert_eq!(
                    run(true),
                    run(false),
                    "{algorithm:?} {shape:?}, block {block:?}"
                );
            }
        }
    }

    #[test]
    fn kernel_transform_of_a_single_tap() {
        // g = e_(1,1) (the centre tap): G g G^T = G[:,1] G[:,1]^T with G[:,1] = (0, .5, -.5, 0).
        let mut g = [0.0f32; 9];
        g[4] = 1.0;
        let u = transform_kernel(&g, 1, 1);
        let col = [0.0, 0.5, -0.5, 0.0];
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(u[i * 4 + j], col[i] * col[j], "at ({i}, {j})");
            }
        }
    }
}
