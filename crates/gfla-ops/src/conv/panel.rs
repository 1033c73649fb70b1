//! Matrix products against a kernel matrix packed in panels of output channels: the
//! convolutions' products (the weight gradient's excepted, which has no kernel operand) and the
//! attention's sampled convolution (`fused::cpu::sampled_conv_forward`).
//!
//! On Market's maps (4 x 2 to 64 x 32) a layer's kernel is read from memory on every call and
//! used by few rows, so how it is read sets the speed. Stored `[K, O]` row-major, the GEMM
//! (the `gemm` crate) read it a few values at a time at a stride of `O` floats, a handful of
//! lines on each 4 KiB page, which the hardware prefetcher does not follow across pages.
//! Packed, each panel is read front to back once. Measured on one thread, the kernel out of
//! cache, `[16, 256] x [256, 256]` (a Winograd product of Market's 16 x 8 maps): 50 GFLOP/s
//! through the GEMM, 78 packed; in cache 109 and 115. The micro-tiles are plain loops over
//! fixed-size arrays that the AVX2 build of [`multiversion!`] vectorises.

/// Output channels per panel of [`product_tiles`]: the columns of its micro-tile.
pub(super) const PANEL: usize = 6;

/// Product rows per micro-tile of [`product_tiles`] (two AVX2 vectors): the rows of `x` are padded
/// to a multiple of this. Also the output channels per panel of [`product_pixels`].
pub(crate) const LANES: usize = 16;

/// Pixels per micro-tile of [`product_pixels`].
const PIXELS: usize = 6;

/// Floats of `count` `[k, o]` matrices packed by [`pack`] in panels `width` columns wide.
pub(crate) fn packed_len(count: usize, k: usize, o: usize, width: usize) -> usize {
    count * k * o.next_multiple_of(width)
}

/// Packs `count` row-major `[k, o]` matrices into `[count][o / width][k][width]`, the last
/// panel of each zero-padded: a micro-tile then reads its panel front to back.
pub(crate) fn pack(
    matrices: &[f32],
    count: usize,
    k: usize,
    o: usize,
    width: usize,
) -> crate::simd::Aligned<f32> {
    use rayon::prelude::*;
    assert_eq!(matrices.len(), count * k * o, "panel::pack: matrix size");
    let panels = o.div_ceil(width);
    let mut out = crate::simd::Aligned::zeroed(packed_len(count, k, o, width));
    out.par_chunks_mut(k * width)
        .enumerate()
        .for_each(|(i, panel)| {
            let (matrix, first) = (i / panels, (i % panels) * width);
            let valid = width.min(o - first);
            let src = &matrices[matrix * k * o..][..k * o];
            for (row, dst) in panel.chunks_exact_mut(width).enumerate() {
                dst[..valid].copy_from_slice(&src[row * o + first..][..valid]);
            }
        });
    out
}

/// One micro-tile: `sum_j x[j * stride + l] * panel[j * PANEL + r]` at `[r][l]`, over the `k`
/// rows `j` of `x` (from its start) and of `panel`.
#[inline(always)]
fn tile(x: &[f32], stride: usize, panel: &[f32], k: usize) -> [[f32; LANES]; PANEL] {
    let mut acc = [[0.0f32; LANES]; PANEL];
    for (j, w) in panel.chunks_exact(PANEL).take(k).enumerate() {
        let xs: &[f32; LANES] = x[j * stride..][..LANES].try_into().unwrap();
        for r in 0..PANEL {
            for l in 0..LANES {
                acc[r][l] = xs[l].mul_add(w[r], acc[r][l]);
            }
        }
    }
    acc
}

multiversion! {
    /// `dst[c][t] = sum_j x[j][t] * w[j][c]` for `c < o` and the `stride` (a multiple of
    /// [`LANES`]) columns `t` of `x` (`[k][stride]`) and `dst` (`[o][stride]`); `w` is one
    /// `[k, o]` matrix packed by [`pack`]. Single-threaded.
    pub(super) fn product_tiles(dst: &mut [f32], x: &[f32], stride: usize, w: &[f32], k: usize, o: usize) {
        assert!(stride.is_multiple_of(LANES), "panel::product_tiles: stride {stride}");
        assert!(x.len() >= k * stride && dst.len() >= o * stride, "panel::product_tiles: sizes");
        assert_eq!(w.len(), packed_len(1, k, o, PANEL), "panel::product_tiles: packed kernel size");
        // Panel outer: each panel is read once, from memory, and stays in L1 while every
        // block of rows passes under it.
        for (p, panel) in w.chunks_exact(k * PANEL).enumerate() {
            let first = p * PANEL;
            let width = PANEL.min(o - first);
            for t in (0..stride).step_by(LANES) {
                let acc = tile(&x[t..], stride, panel, k);
                for (r, acc) in acc.iter().enumerate().take(width) {
                    dst[(first + r) * stride + t..][..LANES].copy_from_slice(acc);
                }
            }
        }
    }
}

/// One micro-tile of [`product_pixels`]: `acc[r][l] += sum_j image[offsets[r] + j] *
/// panel[j * LANES + l]` over the first `k` values `j` of `R` pixels.
#[inline(always)]
fn pixel_tile<const R: usize>(
    acc: &mut [[f32; LANES]; PIXELS],
    image: &[f32],
    offsets: &[usize; PIXELS],
    panel: &[f32],
    k: usize,
) {
    let pixels: [&[f32]; R] = std::array::from_fn(|r| &image[offsets[r]..][..k]);
    let panel = &panel[..k * LANES];
    // A local copy: updated through `acc`, the sums went back to the stack at every step.
    let mut sums = [[0.0f32; LANES]; R];
    for j in 0..k {
        let w: &[f32; LANES] = panel[j * LANES..][..LANES].try_into().unwrap();
        for r in 0..R {
            let v = pixels[r][j];
            for l in 0..LANES {
                sums[r][l] = v.mul_add(w[l], sums[r][l]);
            }
        }
    }
    for r in 0..R {
        for l in 0..LANES {
            acc[r][l] += sums[r][l];
        }
    }
}

/// One kernel row of a [`product_pixels`]: where its pixels start in the image, and its
/// `[k, O]` kernel matrix packed by [`pack`] in panels [`LANES`] wide.
pub(crate) struct Segment<'a> {
    pub(crate) start: usize,
    pub(crate) panels: &'a [f32],
}

multiversion! {
    /// `dst[q][c] = sum_s sum_j image[s.start + at(q) + j] * s.panels[c / 16][j][c % 16]` for
    /// the `m` pixels `q` (`dst`'s rows) and output channels `c` of panels `first_panel..`
    /// (`n` of them, `dst`'s columns), over the segments `s` (a convolution's kernel rows, each
    /// reading `k` values per pixel). The pixels are rows of `cols` in an image `width` pixels
    /// wide: `at(q) = ((q / cols) * width + q % cols) * channels`. Single-threaded.
    pub(crate) fn product_pixels(
        dst: &mut [f32],
        shape: [usize; 3],
        image: &[f32],
        channels: usize,
        grid: [usize; 2],
        segments: &[Segment],
        first_panel: usize,
    ) {
        let ([m, n, k], [cols, width]) = (shape, grid);
        assert!(cols <= width, "panel::product_pixels: {cols} columns of {width}");
        assert!(dst.len() >= m * n, "panel::product_pixels: destination size");
        let at = |q: usize| ((q / cols) * width + q % cols) * channels;
        for s in segments {
            assert!(
                m == 0 || image.len() >= s.start + at(m - 1) + k,
                "panel::product_pixels: image size"
            );
            assert!(
                s.panels.len() >= (first_panel + n.div_ceil(LANES)) * k * LANES,
                "panel::product_pixels: kernel size"
            );
        }
        // Pixel blocks whose image values (every segment's) stay in L2 while the block's
        // panels pass over them, each panel read once per block.
        let block = (BLOCK_FLOATS / (segments.len() * width * channels / cols.max(1)).max(1))
            .max(PIXELS)
            .next_multiple_of(PIXELS);
        for q0 in (0..m).step_by(block) {
            let q1 = (q0 + block).min(m);
            for p in 0..n.div_ceil(LANES) {
                let valid = LANES.min(n - p * LANES);
                for q in (q0..q1).step_by(PIXELS) {
                    let pixels = PIXELS.min(q1 - q);
                    let mut offsets = [0; PIXELS];
                    for (r, o) in offsets.iter_mut().enumerate().take(pixels) {
                        *o = at(q + r);
                    }
                    let mut acc = [[0.0f32; LANES]; PIXELS];
                    for s in segments {
                        let image = &image[s.start..];
                        let panel = &s.panels[(first_panel + p) * k * LANES..][..k * LANES];
                        match pixels {
                            6 => pixel_tile::<6>(&mut acc, image, &offsets, panel, k),
                            5 => pixel_tile::<5>(&mut acc, image, &offsets, panel, k),
                            4 => pixel_tile::<4>(&mut acc, image, &offsets, panel, k),
                            3 => pixel_tile::<3>(&mut acc, image, &offsets, panel, k),
                            2 => pixel_tile::<2>(&mut acc, image, &offsets, panel, k),
                            _ => pixel_tile::<1>(&mut acc, image, &offsets, panel, k),
                        }
                    }
                    for (r, acc) in acc.iter().enumerate().take(pixels) {
                        let out = &mut dst[(q + r) * n + p * LANES..];
                        // A whole panel as a fixed-size copy: one of `valid` values was a call
                        // to `memcpy`.
                        if valid == LANES {
                            out[..LANES].copy_from_slice(acc);
                        } else {
                            out[..valid].copy_from_slice(&acc[..valid]);
                        }
                    }
                }
            }
        }
    }
}

/// Floats of image values a pixel block of [`product_pixels`] spans (256 KiB).
const BLOCK_FLOATS: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_lays_out_panels_zero_padded() {
        // Two [2, 8] matrices with value 100 * m + 10 * row + col.
        let (k, o) = (2, 8);
        let m: Vec<f32> = (0..2 * k * o)
            .map(|i| (100 * (i / (k * o)) + 10 * (i % (k * o) / o) + i % o) as f32)
            .collect();
        let p = pack(&m, 2, k, o, PANEL);
        assert_eq!(p.len(), 2 * 2 * k * PANEL);
        // Matrix 1, panel 1 (columns 6, 7, then zeros), row 1.
        let at = ((2 + 1) * k + 1) * PANEL;
        assert_eq!(&p[at..at + PANEL], &[116.0, 117.0, 0.0, 0.0, 0.0, 0.0]);
        // Matrix 0, panel 0, row 0.
        assert_eq!(&p[..PANEL], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn product_pixels_matches_a_naive_sum() {
        // Two segments (kernel rows) at different image offsets, 7 to 13 pixels (every
        // remainder of a micro-tile) in rows of 3 of an image 4 wide, a last panel with 4 of
        // 16 channels, and a block of channels starting at the second panel.
        let (channels, k, oc, [cols, width]) = (5, 4, 36, [3, 4]);
        let at = |q: usize| ((q / cols) * width + q % cols) * channels;
        let kernels: Vec<Vec<f32>> = (0..2)
            .map(|s| {
                (0..k * oc)
                    .map(|i| ((i + s) % 7) as f32 * 0.25 - 0.5)
                    .collect()
            })
            .collect();
        let packed: Vec<crate::simd::Aligned<f32>> =
            kernels.iter().map(|w| pack(w, 1, k, oc, LANES)).collect();
        let starts = [1, 2 * channels + 1];
        let segments: Vec<Segment> = (0..2)
            .map(|s| Segment {
                start: starts[s],
                panels: &packed[s],
            })
            .collect();
        let n = oc - LANES;
        for m in 7..=13 {
            let len = starts[1] + at(m - 1) + k;
            let image: Vec<f32> = (0..len).map(|i| (i % 9) as f32 - 4.0).collect();
            let mut dst = vec![f32::NAN; m * n];
            let grid = [cols, width];
            product_pixels(&mut dst, [m, n, k], &image, channels, grid, &segments, 1);
            for q in 0..m {
                for c in 0..n {
                    let want: f32 = (0..2)
                        .flat_map(|s| (0..k).map(move |j| (s, j)))
                        .map(|(s, j)| image[starts[s] + at(q) + j] * kernels[s][j * oc + LANES + c])
                        .sum();
                    assert_eq!(dst[q * n + c], want, "{m} pixels: pixel {q}, channel {c}");
                }
            }
        }
    }

    #[test]
    fn product_tiles_matches_a_naive_sum() {
        for (k, o, stride) in [(1, 1, 16), (5, 6, 16), (7, 13, 32), (64, 20, 48)] {
            let x: Vec<f32> = (0..k * stride).map(|i| (i % 7) as f32 - 3.0).collect();
            let w: Vec<f32> = (0..k * o).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
            let mut dst = vec![f32::NAN; o * stride];
            product_tiles(&mut dst, &x, stride, &pack(&w, 1, k, o, PANEL), k, o);
            for c in 0..o {
                for t in 0..stride {
                    let want: f32 = (0..k).map(|j| x[j * stride + t] * w[j * o + c]).sum();
                    assert_eq!(dst[c * stride + t], want, "k {k} o {o} at ({c}, {t})");
                }
            }
        }
    }
}
