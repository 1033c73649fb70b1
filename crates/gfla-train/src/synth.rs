//! A synthetic pose-transfer dataset: textured stick-figure "people" drawn in random poses over
//! random backgrounds, written in the official Market-1501 / DeepFashion layout (design notes
//! §8.1, §8.2), so the training pipeline can be exercised end to end without the real data.
//!
//! Every image of an identity shares one [`Appearance`] (skin, hair, a textured shirt and
//! trousers, shoes); each image has its own [`random_pose`] and its own background, so a
//! network has to move the figure's texture into the target pose and cannot copy the
//! background. Clothing textures are painted in each body part's own coordinates, so stripes
//! and checks travel and turn with the limb, which is what pose transfer has to learn.
//!
//! Keypoints are exact: the figure is drawn from the 18 joints alone ([`render`]), each limb a
//! capsule between two joint centres, the torso between the neck and the hips, the head placed
//! from the neck. [`generate`] snaps every joint to the centre of the pixel that contains it
//! before drawing, and annotates it with that pixel's integer column and row (the official
//! annotations are integer pixels, and the heat maps truncate toward zero, §8.5).
//!
//! Everything is a pure function of the seed (a private SplitMix64 stream, [`Rng`]): the same
//! [`SynthConfig`] writes byte-identical files.
//!
//! ```no_run
//! use gfla_train::synth::{SynthConfig, generate};
//!
//! let config = SynthConfig { identities_train: 8, ..SynthConfig::market() };
//! let summary = generate(&config, "dataset/synth".as_ref(), |done, total| {
//!     eprintln!("{done}/{total}");
//! })?;
//! println!("{summary}");
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::f64::consts::PI;
use std::fmt;
use std::fs;
use std::ops::{Add, Mul, Neg, Sub};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gfla_model::Pose;
use gfla_model::pose::JOINTS;
use image::{ImageFormat, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Random numbers

/// A small deterministic random number generator (SplitMix64). Not for cryptography; its only
/// job is to make the synthetic data a pure function of the seed on every platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (53 random bits).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below: n must be positive");
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// One well-mixed seed from several numbers (a seed and the indices of what it is for), so
/// that independent streams (an identity's appearance, an image's pose, its background) do not
/// depend on how many numbers the others drew.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut rng = Rng::new(0x005E_ED0F_6F1A);
    for &part in parts {
        rng.state ^= part;
        rng.next_u64();
    }
    rng.next_u64()
}

// ---------------------------------------------------------------------------------------------
// Plane geometry

#[derive(Debug, Clone, Copy, PartialEq)]
struct V {
    x: f64,
    y: f64,
}

impl V {
    const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
    fn dot(self, o: V) -> f64 {
        self.x * o.x + self.y * o.y
    }
    fn len(self) -> f64 {
        self.dot(self).sqrt()
    }
    /// Unit vector, or `fallback` for a (near) zero vector.
    fn unit_or(self, fallback: V) -> V {
        let l = self.len();
        if l > 1e-9 { self * (1.0 / l) } else { fallback }
    }
    /// `(y, -x)`: for a straight-down axis `(0, 1)` the image's +x `(1, 0)`.
    fn perp(self) -> V {
        V::new(self.y, -self.x)
    }
    /// Direction at `angle` radians from straight down, positive toward +x.
    fn down_at(angle: f64) -> V {
        V::new(angle.sin(), angle.cos())
    }
    fn from(p: [f64; 2]) -> V {
        V::new(p[0], p[1])
    }
    fn into_array(self) -> [f64; 2] {
        [self.x, self.y]
    }
}

impl Add for V {
    type Output = V;
    fn add(self, o: V) -> V {
        V::new(self.x + o.x, self.y + o.y)
    }
}

impl Sub for V {
    type Output = V;
    fn sub(self, o: V) -> V {
        V::new(self.x - o.x, self.y - o.y)
    }
}

impl Mul<f64> for V {
    type Output = V;
    fn mul(self, k: f64) -> V {
        V::new(self.x * k, self.y * k)
    }
}

impl Neg for V {
    type Output = V;
    fn neg(self) -> V {
        V::new(-self.x, -self.y)
    }
}

// ---------------------------------------------------------------------------------------------
// Appearance

/// A colour as 8-bit RGB.
pub type Colour = [u8; 3];

/// A clothing pattern, in the body part's own coordinates (`u` along the part from its parent
/// joint, `v` across it), lengths in body units (1 = the figure's nominal height, see
/// [`render`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Texture {
    /// The base colour only.
    Plain,
    /// Bands of the accent colour; `angle` (radians) between the band normal and the part's
    /// axis, `period` the band repeat.
    Stripes { angle: f64, period: f64 },
    /// A checkerboard of squares of side `size`, rotated by `angle`.
    Checker { angle: f64, size: f64 },
    /// Accent dots of `radius` on a square grid of `spacing`.
    Dots { spacing: f64, radius: f64 },
}

impl Texture {
    /// Whether the point `(u, v)` (body units) shows the accent colour.
    pub fn accent_at(&self, u: f64, v: f64) -> bool {
        match *self {
            Texture::Plain => false,
            Texture::Stripes { angle, period } => {
                let w = u * angle.cos() + v * angle.sin();
                (w / period).rem_euclid(1.0) < 0.5
            }
            Texture::Checker { angle, size } => {
                let (s, c) = angle.sin_cos();
                let a = ((u * c + v * s) / size).floor() as i64;
                let b = ((-u * s + v * c) / size).floor() as i64;
                (a + b).rem_euclid(2) == 0
            }
            Texture::Dots { spacing, radius } => {
                let du = (u / spacing).rem_euclid(1.0) - 0.5;
                let dv = (v / spacing).rem_euclid(1.0) - 0.5;
                (du * du + dv * dv).sqrt() * spacing < radius
            }
        }
    }

    fn random(rng: &mut Rng) -> Self {
        match rng.below(5) {
            0 => Texture::Plain,
            1 | 2 => {
                let any = rng.range(0.0, PI);
                Texture::Stripes {
                    angle: rng.pick(&[0.0, 0.0, PI / 2.0, PI / 4.0, -PI / 4.0, any]),
                    period: rng.range(0.035, 0.09),
                }
            }
            3 => {
                let any = rng.range(0.0, PI / 2.0);
                Texture::Checker {
                    angle: rng.pick(&[0.0, PI / 4.0, any]),
                    size: rng.range(0.025, 0.06),
                }
            }
            _ => {
                let spacing = rng.range(0.035, 0.07);
                Texture::Dots {
                    spacing,
                    radius: spacing * rng.range(0.2, 0.35),
                }
            }
        }
    }
}

/// A piece of clothing: a base and an accent colour and the pattern that mixes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Garment {
    pub base: Colour,
    pub accent: Colour,
    pub texture: Texture,
}

impl Garment {
    fn colour_at(&self, u: f64, v: f64) -> [f64; 3] {
        let c = if self.texture.accent_at(u, v) {
            self.accent
        } else {
            self.base
        };
        c.map(f64::from)
    }

    fn random(rng: &mut Rng, trousers: bool) -> Self {
        let base = if trousers && rng.chance(0.5) {
            // Jeans, black, grey, khaki, navy.
            let classic = rng.pick(&[
                [52, 72, 118],
                [30, 30, 34],
                [110, 110, 115],
                [170, 150, 110],
                [35, 40, 70],
            ]);
            jitter(rng, classic, 10.0)
        } else if rng.chance(0.25) {
            let v = rng.range(0.1, 0.95);
            hsv(rng.range(0.0, 360.0), rng.range(0.0, 0.1), v)
        } else {
            hsv(
                rng.range(0.0, 360.0),
                rng.range(0.3, 0.95),
                rng.range(0.3, 0.95),
            )
        };
        let texture = Texture::random(rng);
        let accent = if rng.chance(0.5) {
            // Another hue.
            hsv(
                rng.range(0.0, 360.0),
                rng.range(0.2, 0.9),
                rng.range(0.3, 1.0),
            )
        } else {
            // Lighter or darker base.
            let lum =
                (base[0] as f64 * 0.3 + base[1] as f64 * 0.59 + base[2] as f64 * 0.11) / 255.0;
            let k = if lum > 0.5 { 0.45 } else { 1.9 };
            base.map(|c| {
                (c as f64 * k + if lum > 0.5 { 0.0 } else { 50.0 }).clamp(0.0, 255.0) as u8
            })
        };
        Self {
            base,
            accent,
            texture,
        }
    }
}

fn hsv(h: f64, s: f64, v: f64) -> Colour {
    let c = v * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (hp.rem_euclid(2.0) - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r, g, b].map(|t| ((t + m) * 255.0).round().clamp(0.0, 255.0) as u8)
}

fn jitter(rng: &mut Rng, c: Colour, amount: f64) -> Colour {
    c.map(|v| {
        (v as f64 + rng.range(-amount, amount))
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// One synthetic person: what stays the same in all images of an identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Appearance {
    pub skin: Colour,
    pub hair: Colour,
    /// Hair down to the shoulders (drawn behind the head, or over the back in back views).
    pub long_hair: bool,
    pub shirt: Garment,
    /// Sleeves to the wrist; otherwise to half the upper arm.
    pub long_sleeves: bool,
    pub trousers: Garment,
    /// Shorts to above the knee; otherwise trousers to the ankle.
    pub shorts: bool,
    pub shoes: Colour,
}

impl Appearance {
    /// A random identity.
    pub fn random(rng: &mut Rng) -> Self {
        let skin = rng.pick(&[
            [255, 224, 196],
            [241, 194, 159],
            [224, 172, 125],
            [198, 134, 96],
            [161, 102, 66],
            [110, 70, 45],
            [80, 52, 35],
        ]);
        let skin = jitter(rng, skin, 8.0);
        let hair = rng.pick(&[
            [20, 15, 12],
            [50, 32, 20],
            [95, 60, 30],
            [160, 120, 60],
            [215, 185, 125],
            [125, 125, 125],
            [140, 55, 25],
        ]);
        let hair = jitter(rng, hair, 8.0);
        let long_hair = rng.chance(0.3);
        let shirt = Garment::random(rng, false);
        let long_sleeves = rng.chance(0.5);
        let trousers = Garment::random(rng, true);
        let shorts = rng.chance(0.25);
        let coloured = hsv(rng.range(0.0, 360.0), 0.7, 0.7);
        let shoes = rng.pick(&[
            [25, 25, 25],
            [235, 235, 235],
            [95, 60, 35],
            [120, 120, 125],
            coloured,
        ]);
        Self {
            skin,
            hair,
            long_hair,
            shirt,
            long_sleeves,
            trousers,
            shorts,
            shoes,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backgrounds

/// The background of one image, a pure function of `seed`: a vertical or horizontal gradient,
/// low-contrast stripes or smooth blotchy noise between muted colours, sometimes with a floor,
/// always with a little pixel noise (so no two backgrounds are alike).
pub fn background(seed: u64, height: usize, width: usize) -> RgbImage {
    let mut rng = Rng::new(mix_seed(&[seed, 0xB6]));
    let muted = |rng: &mut Rng| {
        hsv(
            rng.range(0.0, 360.0),
            rng.range(0.0, 0.35),
            rng.range(0.3, 0.9),
        )
        .map(f64::from)
    };
    let (h, w) = (height as f64, width as f64);
    let c1 = muted(&mut rng);
    let c2 = muted(&mut rng);
    let kind = rng.below(4);
    let stripe_angle = rng.range(0.0, PI);
    let stripe_period = h * rng.range(0.05, 0.3);
    let stripe_contrast = rng.range(0.04, 0.12);
    let (gx, gy) = (2 + rng.below(4), 3 + rng.below(6));
    let grid: Vec<[f64; 3]> = (0..(gx + 1) * (gy + 1))
        .map(|_| {
            let d = rng.range(-35.0, 35.0);
            [0, 1, 2].map(|k| c1[k] + d + rng.range(-12.0, 12.0))
        })
        .collect();
    let floor = rng
        .chance(0.5)
        .then(|| (h * rng.range(0.7, 0.95), rng.range(0.55, 0.85)));
    let noise = if kind == 3 {
        rng.range(3.0, 10.0)
    } else {
        rng.range(1.0, 5.0)
    };
    let mut img = RgbImage::new(width as u32, height as u32);
    for r in 0..height {
        for c in 0..width {
            let (x, y) = ((c as f64 + 0.5) / w, (r as f64 + 0.5) / h);
            let mut rgb = match kind {
                0 => lerp3(c1, c2, y),
                1 => lerp3(c1, c2, x),
                2 => {
                    let t =
                        (x * w * stripe_angle.cos() + y * h * stripe_angle.sin()) / stripe_period;
                    let k = if t.rem_euclid(1.0) < 0.5 {
                        1.0 + stripe_contrast
                    } else {
                        1.0 - stripe_contrast
                    };
                    lerp3(c1, c2, 0.3 * y).map(|v| v * k)
                }
                _ => {
                    let (fx, fy) = (x * gx as f64, y * gy as f64);
                    let (ix, iy) = ((fx as usize).min(gx - 1), (fy as usize).min(gy - 1));
                    let (tx, ty) = (fx - ix as f64, fy - iy as f64);
                    let at = |i: usize, j: usize| grid[j * (gx + 1) + i];
                    lerp3(
                        lerp3(at(ix, iy), at(ix + 1, iy), tx),
                        lerp3(at(ix, iy + 1), at(ix + 1, iy + 1), tx),
                        ty,
                    )
                }
            };
            if let Some((floor_y, k)) = floor
                && y * h > floor_y
            {
                rgb = lerp3(rgb, c2, 0.6).map(|v| v * k);
            }
            let n = rng.range(-noise, noise);
            img.put_pixel(
                c as u32,
                r as u32,
                Rgb(rgb.map(|v| (v + n).round().clamp(0.0, 255.0) as u8)),
            );
        }
    }
    img
}

fn lerp3(a: [f64; 3], b: [f64; 3], t: f64) -> [f64; 3] {
    [0, 1, 2].map(|k| a[k] + (b[k] - a[k]) * t)
}

// ---------------------------------------------------------------------------------------------
// The body

/// Body proportions in body units (1 = the nominal figure height). [`render`] recovers the
/// scale of a pose from its torso (neck to hip centre), so only the torso length and the radii
/// are fixed; limb lengths and widths come from the joints.
mod body {
    /// Neck to the midpoint of the hips: the scale reference.
    pub const TORSO: f64 = 0.30;
    /// Head centre above the neck, along the torso axis.
    pub const HEAD_ABOVE_NECK: f64 = 0.10;
    pub const HEAD_R: f64 = 0.065;
    /// Half the shoulder span in a frontal view.
    pub const SHOULDER: f64 = 0.105;
    /// Half the hip span in a frontal view.
    pub const HIP: f64 = 0.06;
    pub const UPPER_ARM: f64 = 0.16;
    pub const FOREARM: f64 = 0.135;
    pub const THIGH: f64 = 0.23;
    pub const SHIN: f64 = 0.21;
    pub const R_UPPER_ARM: f64 = 0.036;
    pub const R_FOREARM: f64 = 0.030;
    pub const R_HAND: f64 = 0.030;
    pub const R_THIGH: f64 = 0.052;
    pub const R_SHIN: f64 = 0.040;
    pub const R_SHOE: f64 = 0.042;
    pub const R_NECK: f64 = 0.034;
    /// Where the shirt gives way to the trousers, as a fraction of the torso.
    pub const WAIST: f64 = 0.80;
}

/// COCO-18 indices.
mod joint {
    pub const NOSE: usize = 0;
    pub const NECK: usize = 1;
    pub const R_SHOULDER: usize = 2;
    pub const R_ELBOW: usize = 3;
    pub const R_WRIST: usize = 4;
    pub const L_SHOULDER: usize = 5;
    pub const L_ELBOW: usize = 6;
    pub const L_WRIST: usize = 7;
    pub const R_HIP: usize = 8;
    pub const R_KNEE: usize = 9;
    pub const R_ANKLE: usize = 10;
    pub const L_HIP: usize = 11;
    pub const L_KNEE: usize = 12;
    pub const L_ANKLE: usize = 13;
    pub const R_EYE: usize = 14;
    pub const L_EYE: usize = 15;
    pub const R_EAR: usize = 16;
    pub const L_EAR: usize = 17;
}

/// A random articulated pose of a figure that fills most of a `height x width` image (like a
/// Market-1501 person crop): a kinematic tree with a leaning torso, a random turn about the
/// vertical axis (front, side and back views; the far shoulder and hip move behind the near
/// ones), arms hanging, swinging or raised and bent at the elbow, legs apart or striding with
/// bent knees, and the face's nose, eyes and ears placed on the head from the turn (hidden
/// ones missing, as in real annotations; besides, one eye or ear in ten goes missing at
/// random). The whole drawn figure, not just its joints, lies inside the image; its height is
/// 80-95% of the image (less for a figure too wide to fit) at a random position.
pub fn random_pose(rng: &mut Rng, height: usize, width: usize) -> Pose {
    let canon = canonical_pose(rng);
    // Fit the figure drawn at 100 px per body unit into the image.
    const S: f64 = 100.0;
    let canon_px = Pose {
        joints: canon.map(|j| j.map(|v| [v.x * S, v.y * S])),
    };
    let mut lo = V::new(f64::INFINITY, f64::INFINITY);
    let mut hi = V::new(f64::NEG_INFINITY, f64::NEG_INFINITY);
    for (_, geom) in figure(&canon_px, 1.0) {
        let [x0, y0, x1, y1] = geom.bbox();
        lo = V::new(lo.x.min(x0), lo.y.min(y0));
        hi = V::new(hi.x.max(x1), hi.y.max(y1));
    }
    let (h, w) = (height as f64, width as f64);
    let (bw, bh) = (hi.x - lo.x, hi.y - lo.y);
    let k = (h * rng.range(0.80, 0.95) / bh)
        .min((w - 1.0) / bw)
        .min((h - 1.0) / bh);
    let free_x = (w - 1.0 - bw * k).max(0.0);
    let free_y = (h - 1.0 - bh * k).max(0.0);
    let origin = V::new(
        0.5 + free_x * rng.range(0.15, 0.85),
        0.5 + free_y * rng.range(0.2, 0.8),
    );
    Pose {
        joints: canon_px
            .joints
            .map(|j| j.map(|[x, y]| (origin + (V::new(x, y) - lo) * k).into_array())),
    }
}

/// The joints in body units, neck at the origin, y down.
fn canonical_pose(rng: &mut Rng) -> [Option<V>; JOINTS] {
    use joint::*;
    let mut j: [Option<V>; JOINTS] = [None; JOINTS];
    // Turn about the vertical axis: 0 faces the camera, pi/2 faces image right (the right side
    // toward the camera). In the image the body's right points along -cos(yaw) and the face
    // along sin(yaw); depths (toward the camera) are sin(yaw) for the right side.
    let yaw = rng.range(-PI, PI);
    let (s, c) = yaw.sin_cos();
    let lean = rng.range(-0.08, 0.08);
    let d = V::down_at(lean);
    let p = d.perp();
    let up = -d;
    let vary = |rng: &mut Rng, x: f64| x * rng.range(0.92, 1.08);

    let neck = V::new(0.0, 0.0);
    let shoulder = vary(rng, body::SHOULDER);
    let hip = vary(rng, body::HIP);
    let hip_mid = neck + d * body::TORSO;
    j[NECK] = Some(neck);
    j[R_SHOULDER] = Some(neck + p * (-c * shoulder));
    j[L_SHOULDER] = Some(neck + p * (c * shoulder));
    j[R_HIP] = Some(hip_mid + p * (-c * hip));
    j[L_HIP] = Some(hip_mid + p * (c * hip));

    // Face: (x across, y up) in head radii; visible when facing the camera enough.
    let head = neck + up * body::HEAD_ABOVE_NECK;
    let face = |x: f64, y: f64| head + p * (x * body::HEAD_R) + up * (y * body::HEAD_R);
    if c > -0.125 {
        j[NOSE] = Some(face(0.8 * s, -0.15));
    }
    let eye = |side: f64| (0.7 * s + side * 0.35 * c, 0.7 * c - side * 0.35 * s);
    for (index, side) in [(R_EYE, -1.0), (L_EYE, 1.0)] {
        let (x, depth) = eye(side);
        if depth > 0.1 {
            j[index] = Some(face(x, 0.15));
        }
    }
    for (index, side) in [(R_EAR, -1.0), (L_EAR, 1.0)] {
        // The right ear sits at the body's right: x = -0.8 cos(yaw), depth 0.8 sin(yaw).
        if -side * 0.8 * s > -0.45 {
            j[index] = Some(face(side * 0.8 * c, 0.0));
        }
    }
    if rng.chance(0.1) {
        let present: Vec<usize> = [R_EYE, L_EYE, R_EAR, L_EAR]
            .into_iter()
            .filter(|&i| j[i].is_some())
            .collect();
        if !present.is_empty() {
            j[rng.pick(&present)] = None;
        }
    }

    // Arms, angles from the torso axis. Abduction shows in proportion to |cos yaw| (sideways
    // in the image), swing and elbow flexion in proportion to sin yaw (toward the face).
    for (side, [sh, el, wr]) in [
        (-1.0, [R_SHOULDER, R_ELBOW, R_WRIST]),
        (1.0, [L_SHOULDER, L_ELBOW, L_WRIST]),
    ] {
        let outward = side * c.signum();
        let abduction = if rng.chance(0.12) {
            rng.range(0.6, 2.2)
        } else {
            rng.range(0.05, 0.45)
        };
        let swing = rng.range(-0.6, 0.9);
        let upper = outward * abduction * c.abs() + s * swing;
        let bend = if rng.chance(0.4) {
            rng.range(0.5, 1.9)
        } else {
            rng.range(0.0, 0.4)
        };
        let fore = upper + bend * s - 0.5 * bend * outward * c.abs();
        // A forearm bent toward the camera is foreshortened in front and back views.
        let fore_len = vary(rng, body::FOREARM) * (1.0 - 0.45 * c.abs() * (bend / 1.9));
        let elbow = j[sh].unwrap() + V::down_at(lean + upper) * vary(rng, body::UPPER_ARM);
        j[el] = Some(elbow);
        j[wr] = Some(elbow + V::down_at(lean + fore) * fore_len);
    }

    // Legs, angles from the vertical: apart in front views, striding in side views.
    let stride = rng.range(-0.45, 0.45);
    for (side, [hp, kn, an], step) in [
        (-1.0, [R_HIP, R_KNEE, R_ANKLE], stride),
        (1.0, [L_HIP, L_KNEE, L_ANKLE], -stride * rng.range(0.6, 1.0)),
    ] {
        let outward = side * c.signum();
        let thigh = outward * rng.range(0.0, 0.18) * c.abs() + s * step;
        let shin = thigh - s * rng.range(0.0, 0.6) + rng.range(-0.06, 0.06);
        let knee = j[hp].unwrap() + V::down_at(thigh) * vary(rng, body::THIGH);
        j[kn] = Some(knee);
        j[an] = Some(knee + V::down_at(shin) * vary(rng, body::SHIN));
    }
    j
}

/// What a drawn shape is, for its paint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    UpperArm,
    Forearm,
    Hand,
    Thigh,
    Shin,
    Shoe,
    Neck,
    Torso,
    HairBack,
    Head,
    Hair,
    Eye,
    Ear,
}

#[derive(Debug, Clone, Copy)]
enum Geom {
    /// Points within `r` of the segment `a`-`b`; `u` runs from `a` along the segment.
    Capsule { a: V, b: V, r: f64 },
    /// A tapered band along `axis` from `top`, `len` long (plus `ext` at both ends), half width
    /// from `w_top` to `w_bottom`.
    Trunk {
        top: V,
        axis: V,
        len: f64,
        ext: f64,
        w_top: f64,
        w_bottom: f64,
    },
    /// A disc; `u` down, `v` right from its centre.
    Disc { c: V, r: f64 },
    /// The part of a disc with `(q - c) . dir >= offset * r`.
    Cap { c: V, r: f64, dir: V, offset: f64 },
}

impl Geom {
    /// `(u, v, shade)` at `q` when `q` is inside: local coordinates and a shading factor that
    /// darkens the edges a little, for some roundness.
    fn sample(&self, q: V) -> Option<(f64, f64, f64)> {
        match *self {
            Geom::Capsule { a, b, r } => {
                let ab = b - a;
                let len = ab.len();
                let e = ab.unit_or(V::new(0.0, 1.0));
                let u = (q - a).dot(e);
                let v = (q - a).dot(e.perp());
                let du = u - u.clamp(0.0, len);
                (du * du + v * v < r * r).then(|| (u, v, 1.0 - 0.25 * (v / r).powi(2)))
            }
            Geom::Trunk {
                top,
                axis,
                len,
                ext,
                w_top,
                w_bottom,
            } => {
                let u = (q - top).dot(axis);
                let v = (q - top).dot(axis.perp());
                let t = (u / len).clamp(0.0, 1.0);
                let half = w_top + (w_bottom - w_top) * t;
                (u >= -ext && u <= len + ext && v.abs() <= half)
                    .then(|| (u, v, 1.0 - 0.18 * (v / half).powi(2)))
            }
            Geom::Disc { c, r } => {
                let d = q - c;
                (d.dot(d) < r * r).then(|| (d.y, d.x, 1.0 - 0.2 * d.dot(d) / (r * r)))
            }
            Geom::Cap { c, r, dir, offset } => {
                let d = q - c;
                (d.dot(d) < r * r && d.dot(dir) >= offset * r)
                    .then(|| (d.y, d.x, 1.0 - 0.15 * d.dot(d) / (r * r)))
            }
        }
    }

    /// `[x0, y0, x1, y1]` enclosing the shape.
    fn bbox(&self) -> [f64; 4] {
        match *self {
            Geom::Capsule { a, b, r } => [
                a.x.min(b.x) - r,
                a.y.min(b.y) - r,
                a.x.max(b.x) + r,
                a.y.max(b.y) + r,
            ],
            Geom::Trunk {
                top,
                axis,
                len,
                ext,
                w_top,
                w_bottom,
            } => {
                let n = axis.perp();
                let a = top - axis * ext;
                let b = top + axis * (len + ext);
                let w = w_top.max(w_bottom);
                let corners = [a + n * w, a - n * w, b + n * w, b - n * w];
                corners.iter().fold(
                    [
                        f64::INFINITY,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        f64::NEG_INFINITY,
                    ],
                    |[x0, y0, x1, y1], q| [x0.min(q.x), y0.min(q.y), x1.max(q.x), y1.max(q.y)],
                )
            }
            Geom::Disc { c, r } | Geom::Cap { c, r, .. } => [c.x - r, c.y - r, c.x + r, c.y + r],
        }
    }

    fn length(&self) -> f64 {
        match *self {
            Geom::Capsule { a, b, .. } => (b - a).len(),
            Geom::Trunk { len, .. } => len,
            Geom::Disc { r, .. } | Geom::Cap { r, .. } => 2.0 * r,
        }
    }
}

/// The figure's shapes in drawing order (back to front), from the joints alone. `min_px` is
/// the smallest radius of the eyes in pixels.
fn figure(pose: &Pose, min_px: f64) -> Vec<(Part, Geom)> {
    use joint::*;
    let at = |i: usize| pose.joints[i].map(V::from);
    let neck = at(NECK);
    let hip_mid = match (at(R_HIP), at(L_HIP)) {
        (Some(a), Some(b)) => Some((a + b) * 0.5),
        (a, b) => a.or(b),
    };
    // Scale (pixels per body unit) and torso axis.
    let (scale, axis) = match (neck, hip_mid) {
        (Some(n), Some(h)) if (h - n).len() > 1e-6 => (
            (h - n).len() / body::TORSO,
            (h - n).unit_or(V::new(0.0, 1.0)),
        ),
        _ => {
            // Not one of ours: guess from the extent of the joints.
            let ys: Vec<f64> = pose.joints.iter().flatten().map(|j| j[1]).collect();
            let span = ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                - ys.iter().cloned().fold(f64::INFINITY, f64::min);
            ((span / 0.9).max(10.0), V::new(0.0, 1.0))
        }
    };
    let p = axis.perp();
    let head = neck.map(|n| n - axis * (body::HEAD_ABOVE_NECK * scale));
    let head_r = body::HEAD_R * scale;

    // Which way the figure is turned, from the shoulders and the face.
    let spread = match (at(R_SHOULDER), at(L_SHOULDER)) {
        (Some(r), Some(l)) => (l - r).dot(p) / (2.0 * body::SHOULDER * scale),
        _ => 1.0,
    };
    let side_view = spread.abs() < 0.45;
    let nose_offset = match (at(NOSE), head) {
        (Some(n), Some(h)) => Some((n - h) * (1.0 / head_r)),
        _ => None,
    };
    let right_near = match (nose_offset, at(R_EAR), at(L_EAR)) {
        (Some(o), _, _) if o.dot(p).abs() > 0.1 => o.dot(p) > 0.0,
        (_, Some(_), None) => true,
        (_, None, Some(_)) => false,
        _ => true,
    };
    let back_view = at(NOSE).is_none() && at(R_EYE).is_none() && at(L_EYE).is_none();

    let mut shapes = Vec::new();
    let capsule = |a: Option<V>, b: Option<V>, r: f64| match (a, b) {
        (Some(a), Some(b)) => Some(Geom::Capsule { a, b, r: r * scale }),
        _ => None,
    };
    let arm = |shapes: &mut Vec<(Part, Geom)>, [sh, el, wr]: [usize; 3]| {
        let parts = [
            (Part::UpperArm, capsule(at(sh), at(el), body::R_UPPER_ARM)),
            (Part::Forearm, capsule(at(el), at(wr), body::R_FOREARM)),
            (
                Part::Hand,
                at(wr).map(|c| Geom::Disc {
                    c,
                    r: body::R_HAND * scale,
                }),
            ),
        ];
        shapes.extend(
            parts
                .into_iter()
                .filter_map(|(part, g)| g.map(|g| (part, g))),
        );
    };
    let leg = |shapes: &mut Vec<(Part, Geom)>, [hp, kn, an]: [usize; 3]| {
        let shin_dir = match (at(kn), at(an)) {
            (Some(k), Some(a)) => (a - k).unit_or(axis),
            _ => axis,
        };
        let parts = [
            (Part::Thigh, capsule(at(hp), at(kn), body::R_THIGH)),
            (Part::Shin, capsule(at(kn), at(an), body::R_SHIN)),
            (
                Part::Shoe,
                at(an).map(|a| Geom::Disc {
                    c: a + shin_dir * (0.012 * scale),
                    r: body::R_SHOE * scale,
                }),
            ),
        ];
        shapes.extend(
            parts
                .into_iter()
                .filter_map(|(part, g)| g.map(|g| (part, g))),
        );
    };
    const RIGHT_ARM: [usize; 3] = [R_SHOULDER, R_ELBOW, R_WRIST];
    const LEFT_ARM: [usize; 3] = [L_SHOULDER, L_ELBOW, L_WRIST];
    const RIGHT_LEG: [usize; 3] = [R_HIP, R_KNEE, R_ANKLE];
    const LEFT_LEG: [usize; 3] = [L_HIP, L_KNEE, L_ANKLE];
    let (far_arm, near_arm, far_leg, near_leg) = if right_near {
        (LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG)
    } else {
        (RIGHT_ARM, LEFT_ARM, RIGHT_LEG, LEFT_LEG)
    };
    let hair_back = head.map(|h| Geom::Capsule {
        a: h,
        b: h + axis * (0.24 * scale),
        r: 0.8 * head_r,
    });

    if side_view {
        arm(&mut shapes, far_arm);
    }
    if !back_view && let Some(g) = hair_back {
        shapes.push((Part::HairBack, g));
    }
    leg(&mut shapes, far_leg);
    leg(&mut shapes, near_leg);
    if let Some(g) = capsule(neck, head, body::R_NECK) {
        shapes.push((Part::Neck, g));
    }
    if let (Some(n), Some(h)) = (neck, hip_mid) {
        let half_span = |a: usize, b: usize| match (at(a), at(b)) {
            (Some(a), Some(b)) => (b - a).dot(p).abs() / 2.0,
            _ => 0.0,
        };
        shapes.push((
            Part::Torso,
            Geom::Trunk {
                top: n,
                axis,
                len: (h - n).len(),
                ext: 0.02 * scale,
                w_top: half_span(R_SHOULDER, L_SHOULDER).max(0.07 * scale) + 0.025 * scale,
                w_bottom: half_span(R_HIP, L_HIP).max(0.05 * scale) + 0.045 * scale,
            },
        ));
    }
    if back_view && let Some(g) = hair_back {
        shapes.push((Part::HairBack, g));
    }
    if let Some(h) = head {
        shapes.push((Part::Head, Geom::Disc { c: h, r: head_r }));
        let (dir, offset) = match nose_offset {
            // Face hidden: hair all over. Otherwise a cap on the top, away from the nose.
            _ if back_view => (-axis, -1.1),
            Some(o) => ((-axis - o * 0.9).unit_or(-axis), 0.25),
            None => (-axis, 0.1),
        };
        shapes.push((
            Part::Hair,
            Geom::Cap {
                c: h,
                r: 1.06 * head_r,
                dir,
                offset,
            },
        ));
    }
    for eye in [R_EYE, L_EYE] {
        if let Some(c) = at(eye) {
            shapes.push((
                Part::Eye,
                Geom::Disc {
                    c,
                    r: (0.011 * scale).max(min_px),
                },
            ));
        }
    }
    for ear in [R_EAR, L_EAR] {
        if let Some(c) = at(ear) {
            shapes.push((Part::Ear, Geom::Disc { c, r: 0.2 * head_r }));
        }
    }
    if !side_view {
        arm(&mut shapes, far_arm);
    }
    arm(&mut shapes, near_arm);
    shapes
}

/// Supersampling factor per axis (anti-aliasing).
const SUPERSAMPLE: usize = 3;

/// Draws the figure of `appearance` in `pose` over [`background`]`(background_seed, ..)`.
///
/// Pixel `(column c, row r)` covers `[c, c + 1) x [r, r + 1)` in the pose's coordinates, so a
/// joint at `(x, y)` lies in pixel `(floor x, floor y)`. The scale comes from the torso (neck to
/// the midpoint of the hips is 0.30 body units); limbs are capsules between joint centres
/// (upper arm, forearm, thigh, shin), with discs for hands and shoes; the torso is a tapered
/// band from the neck to the hips, half as wide as the shoulder / hip span plus a margin; the
/// head is a disc above the neck with hair on the side away from the nose (all of it when the
/// face is hidden), eyes as dots at the eye joints and ears at the ear joints. Far-side limbs are
/// drawn first (the far arm behind the torso in side views). Clothing textures are painted in
/// each part's own coordinates. Missing joints leave their parts out. 3 x 3 supersampling.
pub fn render(
    appearance: &Appearance,
    pose: &Pose,
    background_seed: u64,
    height: usize,
    width: usize,
) -> RgbImage {
    let bg = background(background_seed, height, width);
    let ss = SUPERSAMPLE;
    let (sh, sw) = (height * ss, width * ss);
    let mut buf: Vec<[f64; 3]> = (0..sh * sw)
        .map(|i| {
            bg.get_pixel((i % sw / ss) as u32, (i / sw / ss) as u32)
                .0
                .map(f64::from)
        })
        .collect();
    let shapes = figure(pose, 0.45);
    let scale = match (
        pose.joints[joint::NECK],
        pose.joints[joint::R_HIP],
        pose.joints[joint::L_HIP],
    ) {
        (Some(n), Some(r), Some(l)) => {
            ((V::from(r) + V::from(l)) * 0.5 - V::from(n)).len() / body::TORSO
        }
        _ => height as f64,
    }
    .max(1e-6);
    let skin = appearance.skin.map(f64::from);
    for (part, geom) in &shapes {
        if *part == Part::HairBack && !appearance.long_hair {
            continue;
        }
        let len = geom.length();
        let paint = |u: f64, v: f64| -> [f64; 3] {
            let (bu, bv) = (u / scale, v / scale);
            match part {
                Part::UpperArm if appearance.long_sleeves || u < 0.55 * len => {
                    appearance.shirt.colour_at(bu, bv)
                }
                Part::Forearm if appearance.long_sleeves && u < 0.88 * len => {
                    appearance.shirt.colour_at(bu, bv)
                }
                Part::Thigh if !appearance.shorts || u < 0.75 * len => {
                    appearance.trousers.colour_at(bu, bv)
                }
                Part::Shin if !appearance.shorts => appearance.trousers.colour_at(bu, bv),
                Part::Torso if u < body::WAIST * len => appearance.shirt.colour_at(bu, bv),
                Part::Torso => appearance.trousers.colour_at(bu, bv),
                Part::Shoe => appearance.shoes.map(f64::from),
                Part::Neck => skin.map(|c| c * 0.9),
                Part::HairBack | Part::Hair => appearance.hair.map(f64::from),
                Part::Eye => [35.0, 25.0, 25.0],
                Part::Ear => skin.map(|c| c * 0.88),
                _ => skin,
            }
        };
        let [x0, y0, x1, y1] = geom.bbox();
        let range = |lo: f64, hi: f64, n: usize| {
            let a = ((lo * ss as f64 - 0.5).floor().max(0.0) as usize).min(n);
            let b = ((hi * ss as f64 + 0.5).ceil().max(0.0) as usize).min(n);
            a..b
        };
        for j in range(y0, y1, sh) {
            for i in range(x0, x1, sw) {
                let q = V::new((i as f64 + 0.5) / ss as f64, (j as f64 + 0.5) / ss as f64);
                if let Some((u, v, shade)) = geom.sample(q) {
                    buf[j * sw + i] = paint(u, v).map(|c| c * shade);
                }
            }
        }
    }
    let mut img = RgbImage::new(width as u32, height as u32);
    let n = (ss * ss) as f64;
    for r in 0..height {
        for c in 0..width {
            let mut sum = [0.0; 3];
            for j in r * ss..(r + 1) * ss {
                for i in c * ss..(c + 1) * ss {
                    for k in 0..3 {
                        sum[k] += buf[j * sw + i][k];
                    }
                }
            }
            img.put_pixel(
                c as u32,
                r as u32,
                Rgb(sum.map(|s| (s / n).round().clamp(0.0, 255.0) as u8)),
            );
        }
    }
    img
}

/// The pose with every joint moved to the centre of the pixel that contains it
/// (`floor(x) + 0.5`), so the figure drawn from it agrees exactly with its integer annotation.
pub fn snap_to_pixels(pose: &Pose) -> Pose {
    Pose {
        joints: pose.joints.map(|j| j.map(|p| p.map(|v| v.floor() + 0.5))),
    }
}

/// The integer annotation of a pose: `[rows, columns]`, `floor` of each coordinate (the pixel
/// that contains the joint), -1 for a missing joint.
pub fn integer_keypoints(pose: &Pose) -> [[i64; JOINTS]; 2] {
    let mut out = [[-1; JOINTS]; 2];
    for (i, j) in pose.joints.iter().enumerate() {
        if let Some([x, y]) = j {
            out[0][i] = y.floor() as i64;
            out[1][i] = x.floor() as i64;
        }
    }
    out
}

/// A row of the official annotation CSV: `name: [y0, ..., y17]: [x0, ..., x17]` (§8.2; the
/// spacing of the official files).
pub fn annotation_row(name: &str, pose: &Pose) -> String {
    let [ys, xs] = integer_keypoints(pose);
    let list = |v: [i64; JOINTS]| {
        let items: Vec<String> = v.iter().map(i64::to_string).collect();
        format!("[{}]", items.join(", "))
    };
    format!("{name}: {}: {}", list(ys), list(xs))
}

// ---------------------------------------------------------------------------------------------
// The dataset

pub use crate::dataset::Layout;

/// What [`generate`] writes. Serialised as `synth.json` beside the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Identities in `train/` (default 64).
    pub identities_train: usize,
    /// Identities in `test/`, disjoint from the training ones (default 8).
    pub identities_test: usize,
    /// Images (poses) per identity, at least 2 (default 6). Every ordered pair of different
    /// images of an identity is a pair: `n (n - 1)` per identity.
    pub poses_per_identity: usize,
    /// Image height in pixels (default 128). The annotations are in this frame; the official
    /// loaders expect the layout's [`Layout::annotation_frame`], which the presets use.
    pub height: usize,
    /// Image width in pixels (default 64).
    pub width: usize,
    /// The seed of everything (default 0).
    pub seed: u64,
    /// File names and folders (default [`Layout::Market`]).
    pub layout: Layout,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self::market()
    }
}

impl SynthConfig {
    /// Market-1501 layout, 128 x 64 images; 64 + 8 identities of 6 poses, seed 0.
    pub fn market() -> Self {
        Self {
            identities_train: 64,
            identities_test: 8,
            poses_per_identity: 6,
            height: 128,
            width: 64,
            seed: 0,
            layout: Layout::Market,
        }
    }

    /// DeepFashion layout (`fasion-` files), 256 x 176 images; otherwise as [`Self::market`].
    pub fn fashion() -> Self {
        Self {
            height: 256,
            width: 176,
            layout: Layout::Fashion,
            ..Self::market()
        }
    }

    /// Images in all.
    pub fn total_images(&self) -> usize {
        (self.identities_train + self.identities_test) * self.poses_per_identity
    }

    fn validate(&self) -> Result<()> {
        if self.poses_per_identity < 2 {
            bail!(
                "poses_per_identity must be at least 2 (a pair needs two images of an identity), got {}",
                self.poses_per_identity
            );
        }
        if self.identities_train + self.identities_test == 0 {
            bail!("no identities to generate (identities_train and identities_test are 0)");
        }
        if self.height < 32 || self.width < 16 {
            bail!(
                "images must be at least 32 x 16 pixels to draw a figure, got {} x {}",
                self.height,
                self.width
            );
        }
        Ok(())
    }
}

/// The file name of an identity's `pose`-th image, e.g. `synth_id0003_p02.png`.
pub fn image_name(identity: usize, pose: usize) -> String {
    format!("synth_id{identity:04}_p{pose:02}.png")
}

/// Seeds of identity `identity`'s appearance, and of image `pose`'s pose and background.
fn appearance_seed(seed: u64, identity: usize) -> u64 {
    mix_seed(&[seed, 1, identity as u64])
}
fn pose_seed(seed: u64, identity: usize, pose: usize) -> u64 {
    mix_seed(&[seed, 2, identity as u64, pose as u64])
}
fn background_seed(seed: u64, identity: usize, pose: usize) -> u64 {
    mix_seed(&[seed, 3, identity as u64, pose as u64])
}

/// One image of the dataset as [`generate`] makes it: the appearance of `identity`, the
/// (pixel-snapped) pose and the rendered picture.
pub fn sample(config: &SynthConfig, identity: usize, pose: usize) -> (Appearance, Pose, RgbImage) {
    let appearance = Appearance::random(&mut Rng::new(appearance_seed(config.seed, identity)));
    let p = snap_to_pixels(&random_pose(
        &mut Rng::new(pose_seed(config.seed, identity, pose)),
        config.height,
        config.width,
    ));
    let img = render(
        &appearance,
        &p,
        background_seed(config.seed, identity, pose),
        config.height,
        config.width,
    );
    (appearance, p, img)
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub root: PathBuf,
    pub train_images: usize,
    pub test_images: usize,
    pub train_pairs: usize,
    pub test_pairs: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} images, {} train pairs, {} test pairs to {}",
            self.train_images + self.test_images,
            self.train_pairs,
            self.test_pairs,
            self.root.display()
        )
    }
}

/// Writes `path` through `write(path.tmp)` and a rename.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write(&tmp)?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |tmp| {
        fs::write(tmp, text).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Writes the dataset under `root` in the official layout (§8.1, §8.2):
///
/// * `train/` and `test/`: PNG images `synth_id<identity>_p<pose>.png`; identities
///   `0..identities_train` train, the next `identities_test` test;
/// * `<prefix>-annotation-{train,test}.csv`: `name:keypoints_y:keypoints_x` with integer pixel
///   rows / columns, -1 = missing (`prefix` = `market` or `fasion`);
/// * `<prefix>-pairs-{train,test}.csv`: `from,to`, every ordered pair of different images of one
///   identity;
/// * `synth.json`: the config.
///
/// Folders are created; each file is written to `<name>.tmp` and renamed. Files of an earlier,
/// larger run are not removed (the CSVs define the dataset). `progress(done, total)` is called
/// after each image.
pub fn generate(
    config: &SynthConfig,
    root: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Summary> {
    config.validate()?;
    let total = config.total_images();
    let mut done = 0;
    let mut summary = Summary {
        root: root.to_path_buf(),
        train_images: 0,
        test_images: 0,
        train_pairs: 0,
        test_pairs: 0,
    };
    let n_train = config.identities_train;
    let splits = [
        ("train", 0..n_train),
        ("test", n_train..n_train + config.identities_test),
    ];
    for (phase, identities) in splits {
        let dir = root.join(phase);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut annotations = String::from("name:keypoints_y:keypoints_x\n");
        let mut pairs = String::from("from,to\n");
        let (mut images, mut pair_count) = (0, 0);
        for identity in identities {
            let names: Vec<String> = (0..config.poses_per_identity)
                .map(|p| image_name(identity, p))
                .collect();
            for (p, name) in names.iter().enumerate() {
                let (_, pose, img) = sample(config, identity, p);
                let path = dir.join(name);
                write_atomic(&path, |tmp| {
                    img.save_with_format(tmp, ImageFormat::Png)
                        .with_context(|| format!("cannot write {}", tmp.display()))
                })?;
                annotations.push_str(&annotation_row(name, &pose));
                annotations.push('\n');
                images += 1;
                done += 1;
                progress(done, total);
            }
            for a in &names {
                for b in &names {
                    if a != b {
                        pairs.push_str(&format!("{a},{b}\n"));
                        pair_count += 1;
                    }
                }
            }
        }
        write_text(
            &root.join(config.layout.annotation_file(phase)),
            &annotations,
        )?;
        write_text(&root.join(config.layout.pairs_file(phase)), &pairs)?;
        if phase == "train" {
            (summary.train_images, summary.train_pairs) = (images, pair_count);
        } else {
            (summary.test_images, summary.test_pairs) = (images, pair_count);
        }
    }
    write_text(
        &root.join("synth.json"),
        &(serde_json::to_string_pretty(config)? + "\n"),
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(1);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            let x = r.range(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&x));
            counts[r.below(3)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(mix_seed(&[0, 1, 2]), mix_seed(&[0, 2, 1]));
    }

    #[test]
    fn textures_mix_both_colours() {
        let textures = [
            Texture::Stripes {
                angle: 0.0,
                period: 0.05,
            },
            Texture::Checker {
                angle: 0.3,
                size: 0.04,
            },
            Texture::Dots {
                spacing: 0.05,
                radius: 0.015,
            },
        ];
        for t in textures {
            let hits = (0..400)
                .filter(|i| t.accent_at((i % 20) as f64 * 0.013, (i / 20) as f64 * 0.011))
                .count();
            assert!((20..380).contains(&hits), "{t:?}: {hits}");
        }
        assert!(!Texture::Plain.accent_at(0.1, 0.2));
        // Stripes across the axis: constant along v, alternating along u.
        let s = Texture::Stripes {
            angle: 0.0,
            period: 0.1,
        };
        assert!(s.accent_at(0.01, 0.0) && s.accent_at(0.01, 0.37));
        assert!(!s.accent_at(0.06, 0.0));
    }

    fn check_pose(pose: &Pose, height: usize, width: usize) {
        use joint::*;
        for (i, j) in pose.joints.iter().enumerate() {
            if let Some([x, y]) = j {
                assert!(
                    *x >= 0.0 && *y >= 0.0 && *x < width as f64 && *y < height as f64,
                    "joint {i} at ({x}, {y}) outside {height} x {width}"
                );
            }
        }
        // Body and limb joints are always there; the torso is upright-ish and long.
        for i in 0..14 {
            if i != NOSE {
                assert!(pose.joints[i].is_some(), "joint {i} missing");
            }
        }
        let neck = V::from(pose.joints[NECK].unwrap());
        let hips =
            (V::from(pose.joints[R_HIP].unwrap()) + V::from(pose.joints[L_HIP].unwrap())) * 0.5;
        assert!(
            hips.y - neck.y > 0.15 * height as f64,
            "torso {neck:?} {hips:?}"
        );
        // The figure is large: head to feet spans most of the image.
        let ys: Vec<f64> = pose.joints.iter().flatten().map(|j| j[1]).collect();
        let span = ys.iter().cloned().fold(0.0, f64::max) - ys.iter().cloned().fold(1e9, f64::min);
        assert!(span > 0.35 * height as f64, "span {span}");
    }

    #[test]
    fn poses_stay_inside_and_fill_the_image() {
        let mut rng = Rng::new(3);
        let mut missing_face = 0;
        for (h, w) in [(128, 64), (256, 176), (64, 32)] {
            for _ in 0..300 {
                let pose = random_pose(&mut rng, h, w);
                check_pose(&pose, h, w);
                check_pose(&snap_to_pixels(&pose), h, w);
                missing_face += pose.joints[14..].iter().filter(|j| j.is_none()).count();
            }
        }
        // Side and back views hide eyes / ears, but most stay.
        assert!((100..1800).contains(&missing_face), "{missing_face}");
    }

    #[test]
    fn the_whole_figure_fits_the_image() {
        let mut rng = Rng::new(11);
        for _ in 0..200 {
            let (h, w) = (128, 64);
            let pose = random_pose(&mut rng, h, w);
            for (_, g) in figure(&pose, 0.45) {
                let [x0, y0, x1, y1] = g.bbox();
                assert!(x0 >= -1e-6 && y0 >= -1e-6 && x1 <= w as f64 && y1 <= h as f64);
            }
        }
    }

    #[test]
    fn joints_are_drawn_on_the_figure() {
        let config = SynthConfig::market();
        for identity in 0..6 {
            for p in 0..8 {
                let (_, pose, img) = sample(&config, identity, p);
                let bg = background(background_seed(config.seed, identity, p), 128, 64);
                let [ys, xs] = integer_keypoints(&pose);
                for j in 0..JOINTS {
                    if xs[j] < 0 {
                        continue;
                    }
                    let (x, y) = (xs[j] as u32, ys[j] as u32);
                    assert_ne!(
                        img.get_pixel(x, y),
                        bg.get_pixel(x, y),
                        "identity {identity} pose {p}: joint {j} at ({x}, {y}) shows the background"
                    );
                }
                // Corners usually stay background (the figure is inside, with margins).
                let changed = img
                    .pixels()
                    .zip(bg.pixels())
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    (400..5000).contains(&changed),
                    "identity {identity} pose {p}: {changed} figure pixels"
                );
            }
        }
    }

    #[test]
    fn textures_move_with_the_limb() {
        // A forearm turned by 90 degrees shows the same pattern along its own axis.
        let g = Garment {
            base: [0, 0, 0],
            accent: [255, 255, 255],
            texture: Texture::Stripes {
                angle: 0.0,
                period: 0.05,
            },
        };
        let c = Geom::Capsule {
            a: V::new(10.0, 10.0),
            b: V::new(10.0, 60.0),
            r: 4.0,
        };
        let d = Geom::Capsule {
            a: V::new(10.0, 10.0),
            b: V::new(60.0, 10.0),
            r: 4.0,
        };
        for t in 0..50 {
            let (u1, v1, _) = c.sample(V::new(10.5, 10.0 + t as f64)).unwrap();
            let (u2, v2, _) = d.sample(V::new(10.0 + t as f64, 9.5)).unwrap();
            assert!((u1 - u2).abs() < 1e-9 && (v1.abs() - v2.abs()).abs() < 1e-9);
            assert_eq!(
                g.colour_at(u1 / 100.0, v1 / 100.0),
                g.colour_at(u2 / 100.0, v2.abs() / 100.0)
            );
        }
    }

    #[test]
    fn annotation_rows_round_trip() {
        let mut joints = [None; JOINTS];
        joints[0] = Some([3.5, 10.5]);
        joints[17] = Some([63.9, 127.2]);
        let row = annotation_row("a.png", &Pose { joints });
        assert!(row.starts_with("a.png: [10, -1, "), "{row}");
        assert!(row.ends_with(", 63]"), "{row}");
        let (name, back) = Pose::from_annotation_row(&row).unwrap();
        assert_eq!(name, "a.png");
        assert_eq!(back.joints[0], Some([3.0, 10.0]));
        assert_eq!(back.joints[17], Some([63.0, 127.0]));
        assert_eq!(back.joints.iter().flatten().count(), 2);
    }

    #[test]
    fn config_json_round_trips_with_defaults() {
        let c = SynthConfig::fashion();
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains("\"layout\":\"fashion\""), "{text}");
        assert_eq!(serde_json::from_str::<SynthConfig>(&text).unwrap(), c);
        let partial: SynthConfig = serde_json::from_str(r#"{"seed": 5}"#).unwrap();
        assert_eq!(
            partial,
            SynthConfig {
                seed: 5,
                ..SynthConfig::market()
            }
        );
        assert_eq!(
            Layout::Fashion.annotation_file("train"),
            "fasion-annotation-train.csv"
        );
        assert_eq!(Layout::Market.pairs_file("test"), "market-pairs-test.csv");
    }
}
