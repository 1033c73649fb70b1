//! Drawing poses: the official limb list and joint colours (reference §8.6), rendered with
//! anti-aliased strokes so skeletons read well over small pictures.

use image::{Rgb, RgbImage};

use crate::pose::{JOINTS, Pose};

/// Joint names in COCO-18 order.
pub const JOINT_NAMES: [&str; JOINTS] = [
    "nose",
    "neck",
    "right shoulder",
    "right elbow",
    "right wrist",
    "left shoulder",
    "left elbow",
    "left wrist",
    "right hip",
    "right knee",
    "right ankle",
    "left hip",
    "left knee",
    "left ankle",
    "right eye",
    "left eye",
    "right ear",
    "left ear",
];

/// The official drawing's 19 limbs (0-based joint pairs).
pub const LIMBS: [(usize, usize); 19] = [
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
    (2, 16),
    (5, 17),
];

/// The official joint colours (RGB), index = joint.
pub const JOINT_COLOURS: [[u8; 3]; JOINTS] = [
    [255, 0, 0],
    [255, 85, 0],
    [255, 170, 0],
    [255, 255, 0],
    [170, 255, 0],
    [85, 255, 0],
    [0, 255, 0],
    [0, 255, 85],
    [0, 255, 170],
    [0, 255, 255],
    [0, 170, 255],
    [0, 85, 255],
    [0, 0, 255],
    [85, 0, 255],
    [170, 0, 255],
    [255, 0, 255],
    [255, 0, 170],
    [255, 0, 85],
];

/// Blends `colour` into the pixel at `(x, y)` with `coverage` in `[0, 1]`.
fn blend(img: &mut RgbImage, x: i64, y: i64, colour: [u8; 3], coverage: f64) {
    if coverage <= 0.0 || x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (v, c) in p.0.iter_mut().zip(colour) {
        let mixed = *v as f64 * (1.0 - coverage) + c as f64 * coverage;
        *v = mixed.round().clamp(0.0, 255.0) as u8;
    }
}

/// Distance from `p` to the segment `a`-`b`.
fn segment_distance(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    };
    let (cx, cy) = (a[0] + t * dx, a[1] + t * dy);
    ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt()
}

/// An anti-aliased stroke of `width` pixels from `a` to `b` (pixel centres at integers); a
/// zero-length stroke is a disc.
pub fn stroke(img: &mut RgbImage, a: [f64; 2], b: [f64; 2], width: f64, colour: [u8; 3]) {
    let r = width / 2.0;
    let x0 = (a[0].min(b[0]) - r - 1.0).floor() as i64;
    let x1 = (a[0].max(b[0]) + r + 1.0).ceil() as i64;
    let y0 = (a[1].min(b[1]) - r - 1.0).floor() as i64;
    let y1 = (a[1].max(b[1]) + r + 1.0).ceil() as i64;
    for y in y0.max(0)..=y1.min(img.height() as i64 - 1) {
        for x in x0.max(0)..=x1.min(img.width() as i64 - 1) {
            let d = segment_distance([x as f64, y as f64], a, b);
            blend(img, x, y, colour, (r + 0.5 - d).clamp(0.0, 1.0));
        }
    }
}

/// Draws `pose` (given in a frame `[height, width]`) over `img`, scaled to the picture: limbs in
/// the colour of their outer joint, joints as discs in the official colours.
pub fn draw_skeleton(img: &mut RgbImage, pose: &Pose, frame: [usize; 2]) {
    let (sx, sy) = (
        img.width() as f64 / frame[1] as f64,
        img.height() as f64 / frame[0] as f64,
    );
    // Stroke widths grow with the picture so 64-pixel and 512-pixel images both read well.
    let unit = (img.width().min(img.height()) as f64 / 64.0).max(1.0);
    let at = |j: usize| pose.joints[j].map(|[x, y]| [x * sx, y * sy]);
    for &(a, b) in &LIMBS {
        if let (Some(pa), Some(pb)) = (at(a), at(b)) {
            stroke(img, pa, pb, 1.5 * unit, JOINT_COLOURS[b]);
        }
    }
    for (j, colour) in JOINT_COLOURS.iter().enumerate() {
        if let Some(p) = at(j) {
            stroke(img, p, p, 3.0 * unit, *colour);
        }
    }
}

/// The skeleton alone on black, `[height, width]` pixels.
pub fn skeleton_image(pose: &Pose, frame: [usize; 2], height: u32, width: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(width, height, Rgb([0, 0, 0]));
    draw_skeleton(&mut img, pose, frame);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limbs_join_the_right_joints_and_colour_them() {
        let mut joints = [None; JOINTS];
        joints[1] = Some([10.0, 10.0]);
        joints[2] = Some([10.0, 30.0]);
        let img = skeleton_image(&Pose { joints }, [40, 20], 40, 20);
        // Midway along the neck -> right shoulder limb: the right shoulder's colour.
        assert_eq!(img.get_pixel(10, 20).0, JOINT_COLOURS[2]);
        // Joint discs in their own colours; far away stays black.
        assert_eq!(img.get_pixel(10, 10).0, JOINT_COLOURS[1]);
        assert_eq!(img.get_pixel(2, 2).0, [0, 0, 0]);
        // A limb with a missing end is not drawn.
        let mut joints = [None; JOINTS];
        joints[3] = Some([5.0, 5.0]);
        let img = skeleton_image(&Pose { joints }, [40, 20], 40, 20);
        assert_eq!(img.get_pixel(10, 20).0, [0, 0, 0]);
    }

    #[test]
    fn poses_are_scaled_from_their_frame() {
        let mut joints = [None; JOINTS];
        joints[0] = Some([8.0, 4.0]);
        // Frame 16 x 16 drawn at 32 x 32: the nose lands at (16, 8).
        let img = skeleton_image(&Pose { joints }, [16, 16], 32, 32);
        assert_eq!(img.get_pixel(16, 8).0, JOINT_COLOURS[0]);
        assert_eq!(img.get_pixel(8, 4).0, [0, 0, 0]);
    }

    #[test]
    fn strokes_are_antialiased() {
        let mut img = RgbImage::new(9, 9);
        stroke(&mut img, [4.0, 0.0], [4.0, 8.0], 1.0, [200, 200, 200]);
        // Full coverage on the centre line, half at distance 0.5 + 0.5, none beyond.
        assert_eq!(img.get_pixel(4, 4).0, [200, 200, 200]);
        assert_eq!(img.get_pixel(3, 4).0, [0, 0, 0]);
        let mut img = RgbImage::new(9, 9);
        stroke(&mut img, [4.0, 0.0], [4.0, 8.0], 2.0, [200, 200, 200]);
        assert_eq!(img.get_pixel(3, 4).0, [100, 100, 100]);
    }
}
