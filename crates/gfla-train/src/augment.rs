//! The official Market-1501 training augmentation (reference §8.4): a random affine transform of
//! each picture, with the keypoints moved by the same transform so the heat maps stay aligned.
//!
//! The picture is transformed as torchvision 0.2.1's `affine` does it: rotation and scale about
//! the centre `(W / 2 + 0.5, H / 2 + 0.5)`, then translation, nearest-neighbour sampling at pixel
//! centres, black outside (that torchvision forwards the grey fill only with Pillow 5, which the
//! requirements do not pin). Keypoints get the forward matrix, the inverse of the one used to
//! sample the picture.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::synth::Rng;

/// One affine transform: rotation in degrees (clockwise on screen, as torchvision 0.2.1),
/// translation in pixels, isotropic scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub angle: f64,
    pub translate: [f64; 2],
    pub scale: f64,
}

impl Affine {
    pub const IDENTITY: Self = Self {
        angle: 0.0,
        translate: [0.0, 0.0],
        scale: 1.0,
    };

    /// torchvision 0.2.1's `_get_inverse_affine_matrix` (shear 0) for a `width x height`
    /// picture: maps output coordinates to input coordinates, `[a, b, c, d, e, f]`.
    pub fn inverse_matrix(&self, width: u32, height: u32) -> [f64; 6] {
        let center = [width as f64 * 0.5 + 0.5, height as f64 * 0.5 + 0.5];
        let angle = self.angle.to_radians();
        let s = 1.0 / self.scale;
        let mut m = [
            s * angle.cos(),
            s * angle.sin(),
            0.0,
            -s * angle.sin(),
            s * angle.cos(),
            0.0,
        ];
        let (tx, ty) = (
            -center[0] - self.translate[0],
            -center[1] - self.translate[1],
        );
        m[2] += m[0] * tx + m[1] * ty + center[0];
        m[5] += m[3] * tx + m[4] * ty + center[1];
        m
    }

    /// The forward matrix (input to output coordinates), for keypoints.
    pub fn forward_matrix(&self, width: u32, height: u32) -> [f64; 6] {
        let [a, b, c, d, e, f] = self.inverse_matrix(width, height);
        let det = a * e - b * d;
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        [ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)]
    }

    /// The transformed picture (same size): PIL's affine transform with nearest sampling at
    /// pixel centres, black where the source has no pixel.
    pub fn apply_image(&self, img: &RgbImage) -> RgbImage {
        if *self == Self::IDENTITY {
            return img.clone();
        }
        let (w, h) = img.dimensions();
        let [a, b, c, d, e, f] = self.inverse_matrix(w, h);
        RgbImage::from_fn(w, h, |x, y| {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let (sx, sy) = (a * px + b * py + c, d * px + e * py + f);
            if sx < 0.0 || sy < 0.0 || sx >= w as f64 || sy >= h as f64 {
                Rgb([0, 0, 0])
            } else {
                *img.get_pixel(sx as u32, sy as u32)
            }
        })
    }

    /// A keypoint `(x, y)` of a `width x height` picture, moved by the transform.
    pub fn apply_point(&self, p: [f64; 2], width: u32, height: u32) -> [f64; 2] {
        let [a, b, c, d, e, f] = self.forward_matrix(width, height);
        [a * p[0] + b * p[1] + c, d * p[0] + e * p[1] + f]
    }
}

/// Ranges of the random transforms. The source picture gets a full draw; the target picture an
/// independent draw damped by the target factors, at scale 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Rotation drawn from `U(-angle, angle)` degrees (official 5).
    pub angle: f64,
    /// Shifts drawn from `U(-shift, shift)` pixels, x and y independently (official 5).
    pub shift: f64,
    /// Scale drawn from `U(1 - scale, 1 + scale)` (official 0.05).
    pub scale: f64,
    /// Damping of the target's rotation (official 0.2) and shift (official 0.5).
    pub target_angle: f64,
    pub target_shift: f64,
}

impl Augmentation {
    /// The official Market-1501 training ranges.
    pub fn market() -> Self {
        Self {
            angle: 5.0,
            shift: 5.0,
            scale: 0.05,
            target_angle: 0.2,
            target_shift: 0.5,
        }
    }

    /// The source and target transforms of one draw.
    pub fn draw(&self, rng: &mut Rng) -> (Affine, Affine) {
        let mut one = |angle_factor: f64, shift_factor: f64, scaled: bool| {
            let angle = rng.range(-self.angle, self.angle) * angle_factor;
            let tx = rng.range(-self.shift, self.shift) * shift_factor;
            let ty = rng.range(-self.shift, self.shift) * shift_factor;
            let scale = rng.range(1.0 - self.scale, 1.0 + self.scale);
            Affine {
                angle,
                translate: [tx, ty],
                scale: if scaled { scale } else { 1.0 },
            }
        };
        let source = one(1.0, 1.0, true);
        let target = one(self.target_angle, self.target_shift, false);
        (source, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_translation_moves_pixels_and_keypoints_together() {
        let mut img = RgbImage::new(16, 8);
        img.put_pixel(5, 3, Rgb([255, 255, 255]));
        let t = Affine {
            angle: 0.0,
            translate: [3.0, -2.0],
            scale: 1.0,
        };
        let out = t.apply_image(&img);
        assert_eq!(out.get_pixel(8, 1).0, [255, 255, 255]);
        assert_eq!(out.pixels().filter(|p| p.0[0] > 0).count(), 1);
        assert_eq!(t.apply_point([5.0, 3.0], 16, 8), [8.0, 1.0]);
    }

    #[test]
    fn forward_and_inverse_matrices_are_inverse() {
        let t = Affine {
            angle: 4.0,
            translate: [1.5, -3.0],
            scale: 1.04,
        };
        let [a, b, c, d, e, f] = t.inverse_matrix(64, 128);
        for p in [[0.0, 0.0], [20.0, 100.0], [63.0, 5.0]] {
            let q = t.apply_point(p, 64, 128);
            let back = [a * q[0] + b * q[1] + c, d * q[0] + e * q[1] + f];
            assert!((back[0] - p[0]).abs() < 1e-9 && (back[1] - p[1]).abs() < 1e-9);
        }
        // Rotation and scale keep the centre (W / 2 + 0.5, H / 2 + 0.5) fixed.
        let r = Affine {
            angle: 30.0,
            translate: [0.0, 0.0],
            scale: 0.9,
        };
        let c = r.apply_point([32.5, 64.5], 64, 128);
        assert!((c[0] - 32.5).abs() < 1e-9 && (c[1] - 64.5).abs() < 1e-9);
        // torchvision 0.2.1's positive angle turns clockwise on screen: a point right of the
        // centre moves down (larger y).
        let p = Affine {
            angle: 90.0,
            ..Affine::IDENTITY
        }
        .apply_point([42.5, 64.5], 64, 128);
        assert!(
            (p[0] - 32.5).abs() < 1e-9 && (p[1] - 74.5).abs() < 1e-9,
            "{p:?}"
        );
    }

    #[test]
    fn the_target_draw_is_damped_and_unscaled() {
        let aug = Augmentation::market();
        let mut rng = Rng::new(9);
        for _ in 0..200 {
            let (s, t) = aug.draw(&mut rng);
            assert!(s.angle.abs() <= 5.0 && s.translate.iter().all(|v| v.abs() <= 5.0));
            assert!((0.95..=1.05).contains(&s.scale));
            assert!(t.angle.abs() <= 1.0 && t.translate.iter().all(|v| v.abs() <= 2.5));
            assert_eq!(t.scale, 1.0);
        }
    }

    #[test]
    fn outside_the_source_is_black() {
        let img = RgbImage::from_pixel(8, 8, Rgb([200, 100, 50]));
        let out = Affine {
            translate: [4.0, 0.0],
            ..Affine::IDENTITY
        }
        .apply_image(&img);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(4, 0).0, [200, 100, 50]);
    }
}
