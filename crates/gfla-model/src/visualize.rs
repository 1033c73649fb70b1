//! Pictures of what G does inside: flow fields, occlusion masks and where the local attention
//! reads the source (the paper's Figures 1 and 6), and side-by-side panels.

use burn::tensor::Tensor;
use gfla_ops::flow_to_color;
use image::imageops::{FilterType, resize};
use image::{Rgb, RgbImage};

use crate::skeleton::stroke;

/// A `[1, C, h, w]` tensor in `[0, 1]` (C = 1 or 3) as a picture of `height x width`, each
/// feature cell a block of pixels (nearest neighbour: the grid stays visible).
fn grid_picture(t: Tensor<4>, height: u32, width: u32) -> RgbImage {
    let [_, c, h, w] = t.dims();
    let v: Vec<f32> = t.try_into_vec_as().expect("float data");
    let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = |ch: usize| {
            let ch = ch.min(c - 1);
            (v[(ch * h + y as usize) * w + x as usize] * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        Rgb([at(0), at(1), at(2)])
    });
    resize(&img, width, height, FilterType::Nearest)
}

/// A flow field (`[1, 2, h, w]`) in the Middlebury colours of the official `flow2color`, scaled
/// to `height x width`.
pub fn flow_picture(flow: Tensor<4>, height: u32, width: u32) -> RgbImage {
    grid_picture(flow_to_color(flow), height, width)
}

/// An occlusion mask (`[1, 1, h, w]`, 1 = copied from the source) in grey levels.
pub fn mask_picture(mask: Tensor<4>, height: u32, width: u32) -> RgbImage {
    grid_picture(mask, height, width)
}

/// The "jet" colour of `t` in `[0, 1]`.
fn jet(t: f64) -> [f64; 3] {
    let t = t.clamp(0.0, 1.0);
    let ramp = |x: f64| (1.5 - (4.0 * t - x).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// Where the attention at one layer reads the source, for a set of target locations.
pub struct AttentionQuery {
    /// Target location in the feature grid, `(row, column)`.
    pub at: (usize, usize),
    /// Colour of its marks.
    pub colour: [u8; 3],
}

/// Per-location attention data on the host: flow `[2, h, w]` and weights `[k*k, h, w]`.
struct AttentionGrid {
    flow: Vec<f32>,
    weights: Vec<f32>,
    h: usize,
    w: usize,
    k: usize,
}

impl AttentionGrid {
    fn new(flow: Tensor<4>, weights: Tensor<4>) -> Self {
        let [_, _, h, w] = flow.dims();
        let kk = weights.dims()[1];
        let k = (kk as f64).sqrt().round() as usize;
        assert_eq!(k * k, kk, "attention weights must have k*k channels");
        Self {
            flow: flow.try_into_vec_as().expect("float data"),
            weights: weights.try_into_vec_as().expect("float data"),
            h,
            w,
            k,
        }
    }

    /// The `k * k` source points `(x, y)` (feature-grid units) read for target `(row, col)`,
    /// with their weights.
    fn samples(&self, row: usize, col: usize) -> Vec<([f64; 2], f64)> {
        let n = self.h * self.w;
        let i = row * self.w + col;
        let (fx, fy) = (self.flow[i] as f64, self.flow[n + i] as f64);
        let half = (self.k / 2) as f64;
        (0..self.k * self.k)
            .map(|j| {
                let (u, v) = ((j / self.k) as f64, (j % self.k) as f64);
                let p = [col as f64 + fx + v - half, row as f64 + fy + u - half];
                (p, self.weights[j * n + i] as f64)
            })
            .collect()
    }
}

/// The source (dimmed) with, for each query, its `k x k` sampled cells filled in the query's
/// colour with opacity proportional to the attention weight, and the target picture with each
/// query location ringed in the same colour; side by side. `flow`: `[1, 2, h, w]`, `weights`:
/// `[1, k*k, h, w]`; the pictures share one size.
pub fn attention_picture(
    source: &RgbImage,
    target: &RgbImage,
    flow: Tensor<4>,
    weights: Tensor<4>,
    queries: &[AttentionQuery],
) -> RgbImage {
    let grid = AttentionGrid::new(flow, weights);
    let (width, height) = source.dimensions();
    let (cell_x, cell_y) = (width as f64 / grid.w as f64, height as f64 / grid.h as f64);
    let mut left = source.clone();
    for p in left.pixels_mut() {
        p.0 = p.0.map(|v| v / 2);
    }
    let mut right = target.clone();
    for q in queries {
        let samples = grid.samples(q.at.0, q.at.1);
        let max = samples.iter().map(|s| s.1).fold(1e-12, f64::max);
        for ([x, y], weight) in samples {
            // Centre of feature cell (x, y) in picture pixels.
            let (cx, cy) = ((x + 0.5) * cell_x - 0.5, (y + 0.5) * cell_y - 0.5);
            let alpha = 0.85 * weight / max;
            for py in (cy - cell_y / 2.0).ceil() as i64..=(cy + cell_y / 2.0).floor() as i64 {
                for px in (cx - cell_x / 2.0).ceil() as i64..=(cx + cell_x / 2.0).floor() as i64 {
                    if px < 0 || py < 0 || px >= width as i64 || py >= height as i64 {
                        continue;
                    }
                    let p = left.get_pixel_mut(px as u32, py as u32);
                    for c in 0..3 {
                        p.0[c] = (p.0[c] as f64 * (1.0 - alpha) + q.colour[c] as f64 * alpha)
                            .round() as u8;
                    }
                }
            }
        }
        let (tx, ty) = (
            (q.at.1 as f64 + 0.5) * cell_x - 0.5,
            (q.at.0 as f64 + 0.5) * cell_y - 0.5,
        );
        let r = cell_x.max(cell_y) * 0.8;
        // A ring: a coloured disc with a dark centre.
        stroke(&mut right, [tx, ty], [tx, ty], 2.0 * r, q.colour);
        stroke(
            &mut right,
            [tx, ty],
            [tx, ty],
            (2.0 * r - 3.0).max(1.0),
            [0, 0, 0],
        );
    }
    panel(&[&left, &right], 2)
}

/// How much attention each source location receives, summed over all target locations and
/// weighted by the occlusion mask, as a jet heat map over the dimmed source. `flow`: `[1, 2, h,
/// w]`, `weights`: `[1, k*k, h, w]`, `mask`: `[1, 1, h, w]`.
pub fn attention_coverage(
    source: &RgbImage,
    flow: Tensor<4>,
    weights: Tensor<4>,
    mask: Tensor<4>,
) -> RgbImage {
    let grid = AttentionGrid::new(flow, weights);
    let mask: Vec<f32> = mask.try_into_vec_as().expect("float data");
    let (h, w) = (grid.h, grid.w);
    let mut mass = vec![0.0f64; h * w];
    for row in 0..h {
        for col in 0..w {
            let m = mask[row * w + col] as f64;
            for ([x, y], weight) in grid.samples(row, col) {
                // Bilinear splat, clamped at the border as the sampler reads it.
                let (x, y) = (x.clamp(0.0, (w - 1) as f64), y.clamp(0.0, (h - 1) as f64));
                let (x0, y0) = (x.floor() as usize, y.floor() as usize);
                let (ax, ay) = (x - x0 as f64, y - y0 as f64);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let v = m * weight;
                mass[y0 * w + x0] += v * (1.0 - ax) * (1.0 - ay);
                mass[y0 * w + x1] += v * ax * (1.0 - ay);
                mass[y1 * w + x0] += v * (1.0 - ax) * ay;
                mass[y1 * w + x1] += v * ax * ay;
            }
        }
    }
    let max = mass.iter().copied().fold(1e-12, f64::max);
    let (width, height) = source.dimensions();
    let heat = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let c = jet(mass[y as usize * w + x as usize] / max);
        Rgb(c.map(|v| (v * 255.0).round() as u8))
    });
    let heat = resize(&heat, width, height, FilterType::Triangle);
    RgbImage::from_fn(width, height, |x, y| {
        let (s, t) = (source.get_pixel(x, y).0, heat.get_pixel(x, y).0);
        Rgb(std::array::from_fn(|c| {
            (0.35 * s[c] as f64 + 0.65 * t[c] as f64).round() as u8
        }))
    })
}

/// Pictures side by side, `gap` white pixels apart, all scaled to the height of the first.
pub fn panel(pictures: &[&RgbImage], gap: u32) -> RgbImage {
    let height = pictures.first().map_or(0, |p| p.height());
    let scaled: Vec<RgbImage> = pictures
        .iter()
        .map(|p| {
            if p.height() == height {
                (*p).clone()
            } else {
                let w = (p.width() as f64 * height as f64 / p.height() as f64).round() as u32;
                resize(*p, w.max(1), height, FilterType::Triangle)
            }
        })
        .collect();
    let width = scaled.iter().map(|p| p.width()).sum::<u32>()
        + gap * (scaled.len() as u32).saturating_sub(1);
    let mut out = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut x = 0;
    for p in &scaled {
        image::imageops::replace(&mut out, p, x as i64, 0);
        x += p.width() + gap;
    }
    out
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    fn tensor(v: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(v, shape), &Device::flex())
    }

    #[test]
    fn coverage_follows_the_flow() {
        // 1 x 4 grid, k = 1 (one weight of 1), every target reads source column 3.
        let flow = tensor(vec![3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1, 2, 1, 4]);
        let weights = tensor(vec![1.0; 4], [1, 1, 1, 4]);
        let mask = tensor(vec![1.0; 4], [1, 1, 1, 4]);
        let source = RgbImage::new(4, 1);
        let img = attention_coverage(&source, flow, weights, mask);
        // All the mass on column 3 (jet's dark red 128, 65 % of it over black), none elsewhere
        // (jet's dark blue).
        assert_eq!(img.get_pixel(3, 0).0, [83, 0, 0]);
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 83]);
    }

    #[test]
    fn attention_marks_the_sampled_cells() {
        // 4 x 4 grid, k = 1; target (1, 1) reads source (3, 2) (x = 1 + 2, y = 1 + 1).
        let mut f = vec![0.0f32; 32];
        f[5] = 2.0;
        f[16 + 5] = 1.0;
        let flow = tensor(f, [1, 2, 4, 4]);
        let weights = tensor(vec![1.0; 16], [1, 1, 4, 4]);
        let source = RgbImage::from_pixel(8, 8, Rgb([100, 100, 100]));
        let query = AttentionQuery {
            at: (1, 1),
            colour: [255, 0, 0],
        };
        let img = attention_picture(&source, &source.clone(), flow, weights, &[query]);
        assert_eq!(img.dimensions(), (18, 8));
        // Source cell (x 3, y 2) = pixels 6..8 x 4..6, dimmed grey 50 blended 85 % to red.
        assert_eq!(img.get_pixel(6, 4).0, [224, 8, 8]);
        assert_eq!(img.get_pixel(0, 0).0, [50, 50, 50]);
    }

    #[test]
    fn panels_scale_to_the_first_height() {
        let a = RgbImage::new(4, 8);
        let b = RgbImage::new(2, 4);
        let p = panel(&[&a, &b], 1);
        assert_eq!(p.dimensions(), (4 + 1 + 4, 8));
        assert_eq!(p.get_pixel(4, 0).0, [255, 255, 255]);
    }
}
