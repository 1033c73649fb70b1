//! The Market-1501 body mask of the GFLA metrics script (`produce_ma_mask`), the official
//! keypoint annotation CSV it is built from, and masking an image with it.
//!
//! The mask of the *target* pose: every limb whose two joints are present becomes a
//! quadrilateral 8 px wide (the segment offset by ±4 px perpendicular to it), every present
//! joint a disc of radius 4, and the union is closed (dilation, then erosion) with a 5×5
//! square. Rasterisation follows scikit-image's `draw.polygon` / `draw.circle` pixel rules and
//! `morphology.dilation` / `erosion` (scipy grey morphology, `'reflect'` borders) exactly.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;

use crate::MetricError;
use crate::filter::reflect_index;
use crate::image_io::Image;

/// Joints per pose (COCO-18 order).
pub const JOINTS: usize = 18;

/// Half-width of a limb band and radius of a joint disc, in pixels.
pub const POINT_RADIUS: f64 = 4.0;

/// Side of the closing's square structuring element.
pub const CLOSING_SIZE: usize = 5;

/// Size of Market-1501 images and of the frame its annotations are given in.
pub const MARKET_SIZE: (usize, usize) = (128, 64);

/// The 23 limbs of the mask, 0-based. The script lists them 1-based:
/// (2,3) (2,6) (3,4) (4,5) (6,7) (7,8) (2,9) (9,10) (10,11) (2,12) (12,13) (13,14) (2,1)
/// (1,15) (15,17) (1,16) (16,18) (2,17) (2,18) (9,12) (12,6) (9,3) (17,18) — the drawing
/// skeleton plus hips-to-hips, hips-to-shoulders and ear-to-ear, which fill the torso and head.
pub const MASK_LIMBS: [(usize, usize); 23] = [
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
    (1, 16),
    (1, 17),
    (8, 11),
    (11, 5),
    (8, 2),
    (16, 17),
];

/// A joint position in pixels: `x` is the column, `y` the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Joint {
    pub x: f64,
    pub y: f64,
}

/// A pose: one slot per COCO-18 joint, `None` when missing.
pub type Pose = [Option<Joint>; JOINTS];

/// A binary `height × width` mask, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    height: usize,
    width: usize,
    data: Vec<bool>,
}

impl Mask {
    /// An empty (all-background) mask.
    pub fn new(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            data: vec![false; height * width],
        }
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn get(&self, row: usize, col: usize) -> bool {
        self.data[row * self.width + col]
    }

    pub fn set(&mut self, row: usize, col: usize, value: bool) {
        self.data[row * self.width + col] = value;
    }

    /// Row-major samples.
    pub fn data(&self) -> &[bool] {
        &self.data
    }

    /// Number of foreground pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }

    /// Morphological closing with a `size × size` square (dilation, then erosion), borders
    /// reflected like `scipy.ndimage.grey_dilation` / `grey_erosion` do by default.
    pub fn closed(&self, size: usize) -> Self {
        self.filtered(size, true).filtered(size, false)
    }

    /// Max (dilation) or min (erosion) over a centred square; separable, since the square is.
    fn filtered(&self, size: usize, dilate: bool) -> Self {
        let before = (size / 2) as isize;
        let after = (size - 1) as isize - before;
        let (h, w) = (self.height, self.width);
        // Dilation: any pixel of the window set; erosion: all of them.
        let reduce = |mut value: bool, sample: bool| {
            if dilate {
                value |= sample;
            } else {
                value &= sample;
            }
            value
        };
        let mut rows = Self::new(h, w);
        for r in 0..h {
            for c in 0..w {
                let v = (c as isize - before..=c as isize + after).fold(!dilate, |v, cc| {
                    reduce(v, self.get(r, reflect_index(cc, w)))
                });
                rows.set(r, c, v);
            }
        }
        let mut out = Self::new(h, w);
        for r in 0..h {
            for c in 0..w {
                let v = (r as isize - before..=r as isize + after).fold(!dilate, |v, rr| {
                    reduce(v, rows.get(reflect_index(rr, h), c))
                });
                out.set(r, c, v);
            }
        }
        out
    }
}

/// `produce_ma_mask`: the closed union of limb quadrilaterals and joint discs (see the module
/// docs), rasterised into a `height × width` mask (the script uses 128 × 64).
///
/// A limb whose two joints coincide has no direction and is skipped (the script would divide
/// by zero there); its disc still covers it.
pub fn body_mask(pose: &Pose, height: usize, width: usize) -> Mask {
    let mut mask = Mask::new(height, width);
    if height == 0 || width == 0 {
        return mask;
    }
    for &(from, to) in &MASK_LIMBS {
        let (Some(f), Some(t)) = (pose[from], pose[to]) else {
            continue;
        };
        // In (row, col): perpendicular of f − t, scaled to POINT_RADIUS.
        let (dy, dx) = (f.y - t.y, f.x - t.x);
        let (ny, nx) = (-dx, dy);
        let norm = (ny * ny + nx * nx).sqrt();
        if norm == 0.0 {
            continue;
        }
        let (ny, nx) = (POINT_RADIUS * ny / norm, POINT_RADIUS * nx / norm);
        let rows = [f.y + ny, f.y - ny, t.y - ny, t.y + ny];
        let cols = [f.x + nx, f.x - nx, t.x - nx, t.x + nx];
        fill_polygon(&mut mask, &rows, &cols);
    }
    for joint in pose.iter().flatten() {
        fill_disc(&mut mask, joint.y, joint.x, POINT_RADIUS);
    }
    mask.closed(CLOSING_SIZE)
}

/// `skimage.draw.polygon(rows, cols, shape)`: pixel `(r, c)` is drawn when its centre passes
/// the crossing-number test (half-open in `y`, strict in `x`), scanning the vertices' bounding
/// box clipped to the image.
fn fill_polygon(mask: &mut Mask, rows: &[f64], cols: &[f64]) {
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // `int(max(0, r.min()))` and `min(shape − 1, int(ceil(r.max())))`.
    let min_r = min(rows).max(0.0) as i64;
    let max_r = (max(rows).ceil() as i64).min(mask.height as i64 - 1);
    let min_c = min(cols).max(0.0) as i64;
    let max_c = (max(cols).ceil() as i64).min(mask.width as i64 - 1);
    for r in min_r..=max_r {
        for c in min_c..=max_c {
            if point_in_polygon(cols, rows, c as f64, r as f64) {
                mask.set(r as usize, c as usize, true);
            }
        }
    }
}

/// scikit-image's `point_in_polygon` (even-odd crossing test).
fn point_in_polygon(xp: &[f64], yp: &[f64], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = xp.len() - 1;
    for i in 0..xp.len() {
        if ((yp[i] <= y && y < yp[j]) || (yp[j] <= y && y < yp[i]))
            && x < (xp[j] - xp[i]) * (y - yp[i]) / (yp[j] - yp[i]) + xp[i]
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// `skimage.draw.circle(r, c, radius, shape)`: pixels strictly inside,
/// `((r − r0)/radius)² + ((c − c0)/radius)² < 1`, within `ceil(centre − radius)` ..
/// `floor(centre + radius)` clipped to the image.
fn fill_disc(mask: &mut Mask, r0: f64, c0: f64, radius: f64) {
    let r_lo = ((r0 - radius).ceil() as i64).max(0);
    let r_hi = ((r0 + radius).floor() as i64).min(mask.height as i64 - 1);
    let c_lo = ((c0 - radius).ceil() as i64).max(0);
    let c_hi = ((c0 + radius).floor() as i64).min(mask.width as i64 - 1);
    for r in r_lo..=r_hi {
        for c in c_lo..=c_hi {
            let dr = (r as f64 - r0) / radius;
            let dc = (c as f64 - c0) / radius;
            if dr * dr + dc * dc < 1.0 {
                mask.set(r as usize, c as usize, true);
            }
        }
    }
}

/// Masks an image as the script masks LPIPS inputs: both images, scaled to `[-1, 1]`, are
/// multiplied by the binary mask. On `[0, 1]` samples that keeps the body and turns the
/// background into `0.5` (the zero of `[-1, 1]`), which is what this returns.
pub fn apply_mask(image: &Image, mask: &Mask) -> Result<Image, MetricError> {
    if (image.height(), image.width()) != (mask.height, mask.width) {
        return Err(MetricError::ShapeMismatch {
            left: image.shape(),
            right: (image.channels(), mask.height, mask.width),
        });
    }
    let plane = mask.data.len();
    let data = image
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| if mask.data[i % plane] { v } else { 0.5 })
        .collect();
    Image::new(image.channels(), image.height(), image.width(), data)
}

/// Why an annotation CSV could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationError {
    /// 1-based line number (1 = header).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for AnnotationError {}

/// Poses of the official annotation CSV (`market-annotation-test.csv`), keyed by image file
/// name.
///
/// Format: colon-separated with the header `name:keypoints_y:keypoints_x`; each keypoint
/// column is a JSON list of 18 numbers (rows first, then columns) and a joint is missing when
/// either coordinate is −1.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    poses: HashMap<String, Pose>,
}

impl Annotations {
    /// Parses the CSV text.
    pub fn parse(text: &str) -> Result<Self, AnnotationError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let err = |line: usize, message: String| AnnotationError { line, message };
        let (_, header) = lines.next().ok_or_else(|| {
            err(
                1,
                "empty file (expected header name:keypoints_y:keypoints_x)".into(),
            )
        })?;
        let columns: Vec<&str> = header
            .trim_start_matches('\u{feff}')
            .split(':')
            .map(str::trim)
            .collect();
        let find = |name: &str| {
            columns.iter().position(|&c| c == name).ok_or_else(|| {
                err(
                    1,
                    format!("no `{name}` column in header `{header}` (expected name:keypoints_y:keypoints_x)"),
                )
            })
        };
        let (name_col, y_col, x_col) = (find("name")?, find("keypoints_y")?, find("keypoints_x")?);

        let mut poses = HashMap::new();
        for (line, text) in lines {
            if text.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = text.split(':').map(str::trim).collect();
            if fields.len() != columns.len() {
                return Err(err(
                    line,
                    format!("{} fields, expected {}", fields.len(), columns.len()),
                ));
            }
            let coords = |col: usize| -> Result<Vec<f64>, AnnotationError> {
                let values: Vec<f64> = serde_json::from_str(fields[col])
                    .map_err(|e| err(line, format!("{}: {e}", columns[col])))?;
                if values.len() != JOINTS {
                    return Err(err(
                        line,
                        format!(
                            "{} has {} values, expected {JOINTS}",
                            columns[col],
                            values.len()
                        ),
                    ));
                }
                Ok(values)
            };
            let (ys, xs) = (coords(y_col)?, coords(x_col)?);
            let mut pose: Pose = [None; JOINTS];
            for (slot, (&y, &x)) in pose.iter_mut().zip(ys.iter().zip(&xs)) {
                if y != -1.0 && x != -1.0 {
                    *slot = Some(Joint { x, y });
                }
            }
            let name = fields[name_col].to_string();
            if poses.insert(name.clone(), pose).is_some() {
                return Err(err(line, format!("duplicate entry for {name}")));
            }
        }
        Ok(Self { poses })
    }

    /// Reads and parses a CSV file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read annotation file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad annotation file {}", path.display()))
    }

    /// The pose annotated for an image file name.
    pub fn get(&self, name: &str) -> Option<&Pose> {
        self.poses.get(name)
    }

    pub fn len(&self) -> usize {
        self.poses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.poses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pose(joints: &[(usize, f64, f64)]) -> Pose {
        let mut p: Pose = [None; JOINTS];
        for &(i, x, y) in joints {
            p[i] = Some(Joint { x, y });
        }
        p
    }

    #[test]
    fn limbs_are_the_scripts_list_made_zero_based() {
        let one_based = [
            [2, 3],
            [2, 6],
            [3, 4],
            [4, 5],
            [6, 7],
            [7, 8],
            [2, 9],
            [9, 10],
            [10, 11],
            [2, 12],
            [12, 13],
            [13, 14],
            [2, 1],
            [1, 15],
            [15, 17],
            [1, 16],
            [16, 18],
            [2, 17],
            [2, 18],
            [9, 12],
            [12, 6],
            [9, 3],
            [17, 18],
        ];
        let converted: Vec<(usize, usize)> =
            one_based.iter().map(|&[f, t]| (f - 1, t - 1)).collect();
        assert_eq!(converted, MASK_LIMBS);
    }

    #[test]
    fn disc_is_strictly_inside_radius_four() {
        let mut m = Mask::new(20, 20);
        fill_disc(&mut m, 10.0, 10.0, 4.0);
        // Integer offsets with dr² + dc² < 16: 1 + 2·(7 + 7 + 7 + 5) … counted directly:
        let expected = (-4i32..=4)
            .flat_map(|dr| (-4i32..=4).map(move |dc| dr * dr + dc * dc))
            .filter(|&d| d < 16)
            .count();
        assert_eq!(m.count(), expected);
        assert_eq!(expected, 45);
        assert!(!m.get(14, 10) && m.get(13, 10) && !m.get(13, 13) && m.get(12, 12));
    }

    #[test]
    fn single_limb_gives_a_band_eight_pixels_wide() {
        // A vertical limb (neck 1 → right hip 8) at column 30, rows 20..=80; only these two
        // joints, so one quadrilateral plus two discs. Offsets: perpendicular of (60, 0) is
        // (0, 60) → ±4 columns, so the polygon spans columns 26..34; the crossing test keeps
        // centres with 26 ≤ c < 34 (8 columns) for rows 20 ≤ r < 80.
        let p = pose(&[(1, 30.0, 20.0), (8, 30.0, 80.0)]);
        let raw = {
            let mut m = Mask::new(128, 64);
            fill_polygon(&mut m, &[20.0, 20.0, 80.0, 80.0], &[34.0, 26.0, 26.0, 34.0]);
            m
        };
        for r in 0..128 {
            let cols: Vec<usize> = (0..64).filter(|&c| raw.get(r, c)).collect();
            if (20..80).contains(&r) {
                assert_eq!(cols, (26..34).collect::<Vec<_>>(), "row {r}");
            } else {
                assert!(cols.is_empty(), "row {r}");
            }
        }
        // The full mask: the closing widens nothing (it is idempotent on a convex band) and the
        // discs add their caps: in the middle the band is still 8 pixels wide, 26..=33.
        let mask = body_mask(&p, 128, 64);
        let mid: Vec<usize> = (0..64).filter(|&c| mask.get(50, c)).collect();
        assert_eq!(mid, (26..34).collect::<Vec<_>>());
        // Caps: disc rows reach 20 − 3 = 17 and 80 + 3 = 83.
        assert!(mask.get(17, 30) && !mask.get(16, 30));
        assert!(mask.get(83, 30) && !mask.get(84, 30));
    }

    #[test]
    fn closing_fills_a_one_pixel_gap() {
        // Two 6×6 blocks one column apart: dilation bridges the gap, erosion keeps the bridge.
        let mut m = Mask::new(20, 20);
        for r in 7..13 {
            for c in (3..9).chain(10..16) {
                m.set(r, c, true);
            }
        }
        assert!(!m.get(10, 9));
        let closed = m.closed(CLOSING_SIZE);
        assert!((7..13).all(|r| closed.get(r, 9)));
        // Nothing else changes: the blocks' outer borders are restored exactly.
        let mut expected = m.clone();
        for r in 7..13 {
            expected.set(r, 9, true);
        }
        assert_eq!(closed, expected);
    }

    #[test]
    fn closing_reflects_at_the_border() {
        // A band touching the top edge survives erosion: rows above reflect rows inside.
        let mut m = Mask::new(10, 10);
        for r in 0..3 {
            for c in 0..10 {
                m.set(r, c, true);
            }
        }
        assert_eq!(m.closed(CLOSING_SIZE), m);
    }

    #[test]
    fn missing_joints_draw_nothing() {
        assert_eq!(body_mask(&[None; JOINTS], 128, 64).count(), 0);
        // A lone joint is one disc (45 pixels); the closing keeps a convex disc unchanged.
        let m = body_mask(&pose(&[(0, 30.0, 40.0)]), 128, 64);
        assert_eq!(m.count(), 45);
    }

    #[test]
    fn masking_turns_background_grey() {
        let img = Image::new(2, 1, 2, vec![0.1, 0.2, 0.3, 0.4]).unwrap();
        let mut mask = Mask::new(1, 2);
        mask.set(0, 1, true);
        let masked = apply_mask(&img, &mask).unwrap();
        assert_eq!(masked.data(), &[0.5, 0.2, 0.5, 0.4]);
    }

    #[test]
    fn parses_the_official_csv() {
        let ys: Vec<i32> = (0..18).map(|i| if i == 3 { -1 } else { 10 + i }).collect();
        let xs: Vec<i32> = (0..18).map(|i| if i == 5 { -1 } else { 20 + i }).collect();
        let text =
            format!("name:keypoints_y:keypoints_x\n0002_c1s1_000451_03.jpg: {ys:?}: {xs:?}\n\n");
        let a = Annotations::parse(&text).unwrap();
        assert_eq!(a.len(), 1);
        let p = a.get("0002_c1s1_000451_03.jpg").unwrap();
        assert_eq!(p[0], Some(Joint { x: 20.0, y: 10.0 }));
        assert_eq!(p[3], None);
        assert_eq!(p[5], None);
        assert_eq!(p[17], Some(Joint { x: 37.0, y: 27.0 }));

        let short = "name:keypoints_y:keypoints_x\na.jpg:[1,2]:[3,4]\n";
        let e = Annotations::parse(short).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected 18"), "{e}");
        assert!(Annotations::parse("name:x\n").is_err());
    }
}
