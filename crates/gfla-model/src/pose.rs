//! Poses: the 18 COCO keypoints GFLA is trained on, read from OpenPose JSON, the official
//! annotation CSV or a plain list, and turned into the network's Gaussian heat maps exactly as
//! the official data loaders do.
//!
//! COCO-18 order: 0 nose, 1 neck, 2 right shoulder, 3 right elbow, 4 right wrist, 5 left
//! shoulder, 6 left elbow, 7 left wrist, 8 right hip, 9 right knee, 10 right ankle, 11 left hip,
//! 12 left knee, 13 left ankle, 14 right eye, 15 left eye, 16 right ear, 17 left ear.

use std::fmt;

use burn::tensor::{Device, Tensor, TensorData};

/// Number of joints (COCO-18).
pub const JOINTS: usize = 18;

/// Heat-map width of the official loaders (sigma in pixels of the network input).
pub const SIGMA: f64 = 6.0;

/// BODY_25 index of each COCO-18 joint (BODY_25 inserts the mid hip at 8 and adds feet).
const BODY25_FOR_COCO: [usize; JOINTS] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
];

/// Why a pose could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum PoseError {
    /// Not valid JSON / CSV, with the parser's words.
    Syntax(String),
    /// An OpenPose file with no person, or fewer people than the one asked for.
    NoPerson { requested: usize, found: usize },
    /// A keypoint list of the wrong length.
    KeypointCount {
        found: usize,
        expected: &'static str,
    },
    /// A coordinate that is NaN or infinite.
    NotFinite { joint: usize },
}

impl fmt::Display for PoseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(e) => write!(f, "not a pose file: {e}"),
            Self::NoPerson { requested, found } => {
                write!(
                    f,
                    "person {requested} requested but the file has {found} people"
                )
            }
            Self::KeypointCount { found, expected } => {
                write!(f, "{found} keypoint values, expected {expected}")
            }
            Self::NotFinite { joint } => write!(f, "joint {joint} has a non-finite coordinate"),
        }
    }
}

impl std::error::Error for PoseError {}

/// The 18 joints as `(x, y)` pixel positions in the frame they were annotated in; `None` =
/// missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Pose {
    pub joints: [Option<[f64; 2]>; JOINTS],
}

fn check_finite(joints: &[Option<[f64; 2]>; JOINTS]) -> Result<(), PoseError> {
    match joints
        .iter()
        .position(|j| j.is_some_and(|[x, y]| !x.is_finite() || !y.is_finite()))
    {
        Some(joint) => Err(PoseError::NotFinite { joint }),
        None => Ok(()),
    }
}

impl Pose {
    /// `people[person].pose_keypoints_2d` of an OpenPose JSON file: `x, y, confidence` triples
    /// in COCO-18 (54 values) or BODY_25 (75 values) layout; confidence 0 marks a missing joint.
    pub fn from_openpose_json(text: &str, person: usize) -> Result<Self, PoseError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PoseError::Syntax(e.to_string()))?;
        let people = value
            .get("people")
            .and_then(|p| p.as_array())
            .ok_or_else(|| PoseError::Syntax("no \"people\" list".into()))?;
        let entry = people.get(person).ok_or(PoseError::NoPerson {
            requested: person,
            found: people.len(),
        })?;
        let values: Vec<f64> = entry
            .get("pose_keypoints_2d")
            .and_then(|k| k.as_array())
            .ok_or_else(|| PoseError::Syntax("no \"pose_keypoints_2d\" list".into()))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        let index: Vec<usize> = match values.len() {
            54 => (0..JOINTS).collect(),
            75 => BODY25_FOR_COCO.to_vec(),
            found => {
                return Err(PoseError::KeypointCount {
                    found,
                    expected: "54 (COCO-18) or 75 (BODY_25)",
                });
            }
        };
        let joints = std::array::from_fn(|j| {
            let t = &values[3 * index[j]..3 * index[j] + 3];
            (t[2] != 0.0).then_some([t[0], t[1]])
        });
        check_finite(&joints)?;
        Ok(Self { joints })
    }

    /// A row of the official annotation CSV, `name: [y0, ..., y17]: [x0, ..., x17]` (rows first,
    /// -1 = missing). Returns the image name and the pose.
    pub fn from_annotation_row(line: &str) -> Result<(String, Self), PoseError> {
        let mut fields = line.splitn(3, ':');
        let (Some(name), Some(ys), Some(xs)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(PoseError::Syntax(format!(
                "expected name:[y...]:[x...], got {line:?}"
            )));
        };
        let list = |s: &str| -> Result<Vec<f64>, PoseError> {
            let v: Vec<f64> =
                serde_json::from_str(s.trim()).map_err(|e| PoseError::Syntax(e.to_string()))?;
            if v.len() != JOINTS {
                return Err(PoseError::KeypointCount {
                    found: v.len(),
                    expected: "18",
                });
            }
            Ok(v)
        };
        let (ys, xs) = (list(ys)?, list(xs)?);
        let joints =
            std::array::from_fn(|j| (ys[j] != -1.0 && xs[j] != -1.0).then_some([xs[j], ys[j]]));
        check_finite(&joints)?;
        Ok((name.trim().to_string(), Self { joints }))
    }

    /// A plain JSON list of 18 `[x, y]` pairs; `null` or a negative coordinate = missing.
    pub fn from_points_json(text: &str) -> Result<Self, PoseError> {
        let points: Vec<Option<[f64; 2]>> =
            serde_json::from_str(text).map_err(|e| PoseError::Syntax(e.to_string()))?;
        if points.len() != JOINTS {
            return Err(PoseError::KeypointCount {
                found: points.len(),
                expected: "18 [x, y] pairs",
            });
        }
        let joints = std::array::from_fn(|j| points[j].filter(|[x, y]| *x >= 0.0 && *y >= 0.0));
        check_finite(&joints)?;
        Ok(Self { joints })
    }

    /// The 18 heat maps (`18 x height x width`, row-major) of the official loaders: each joint is
    /// scaled from its annotation `frame` (`[height, width]`) to `[height, width]`, **truncated
    /// toward zero** to integers `(x0, y0)`, and drawn as `exp(-((r - y0)^2 + (c - x0)^2) /
    /// (2 sigma^2))` with sigma = 6, peak 1, no truncation radius; a missing joint leaves its
    /// channel zero.
    pub fn heatmaps(&self, frame: [usize; 2], height: usize, width: usize) -> Vec<f32> {
        let (sy, sx) = (
            height as f64 / frame[0] as f64,
            width as f64 / frame[1] as f64,
        );
        let mut out = vec![0.0f32; JOINTS * height * width];
        for (j, joint) in self.joints.iter().enumerate() {
            let Some([x, y]) = joint else { continue };
            let (x0, y0) = ((x * sx).trunc(), (y * sy).trunc());
            let channel = &mut out[j * height * width..(j + 1) * height * width];
            for r in 0..height {
                let dy = r as f64 - y0;
                for c in 0..width {
                    let dx = c as f64 - x0;
                    channel[r * width + c] =
                        (-(dy * dy + dx * dx) / (2.0 * SIGMA * SIGMA)).exp() as f32;
                }
            }
        }
        out
    }

    /// [`Pose::heatmaps`] as a `[1, 18, height, width]` tensor.
    pub fn heatmap_tensor(
        &self,
        frame: [usize; 2],
        height: usize,
        width: usize,
        device: &Device,
    ) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(
                self.heatmaps(frame, height, width),
                [1, JOINTS, height, width],
            ),
            device,
        )
    }
}

/// The coordinate frame a pose file's keypoints are given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoseFrame {
    /// Pixels of the picture the pose was detected on (OpenPose JSON, point lists).
    Picture,
    /// The dataset's annotation frame (official annotation CSV rows: 256 x 176 for DeepFashion,
    /// 128 x 64 for Market-1501).
    Annotation,
}

/// One pose read from a file, with a name for its outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedPose {
    /// The file stem, or the image name of an annotation row.
    pub name: String,
    pub pose: Pose,
    pub frame: PoseFrame,
}

impl Pose {
    /// Reads a pose file, telling the format by its content: an OpenPose JSON object (person
    /// `person`), a JSON list of 18 `[x, y]`, or an official annotation CSV (every row, or the
    /// header-less single row). Errors name the file.
    pub fn read_file(path: &std::path::Path, person: usize) -> Result<Vec<NamedPose>, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let stem = path
            .file_stem()
            .map_or_else(|| "pose".into(), |s| s.to_string_lossy().into_owned());
        let trimmed = text.trim_start();
        let named = |pose| NamedPose {
            name: stem.clone(),
            pose,
            frame: PoseFrame::Picture,
        };
        let result = if trimmed.starts_with('{') {
            Self::from_openpose_json(&text, person).map(|p| vec![named(p)])
        } else if trimmed.starts_with('[') {
            Self::from_points_json(&text).map(|p| vec![named(p)])
        } else {
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("name:"))
                .map(|line| {
                    Self::from_annotation_row(line).map(|(name, pose)| NamedPose {
                        name: std::path::Path::new(&name)
                            .file_stem()
                            .map_or(name.clone(), |s| s.to_string_lossy().into_owned()),
                        pose,
                        frame: PoseFrame::Annotation,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        match result {
            Ok(poses) if poses.is_empty() => Err(format!("{shown}: no pose in the file")),
            Ok(poses) => Ok(poses),
            Err(e) => Err(format!("{shown}: {e}")),
        }
    }

    /// The first present joint outside a `[height, width]` frame, as `(joint, [x, y])`.
    pub fn outside(&self, frame: [usize; 2]) -> Option<(usize, [f64; 2])> {
        self.joints.iter().enumerate().find_map(|(j, p)| {
            p.filter(|[x, y]| *x < 0.0 || *y < 0.0 || *x > frame[1] as f64 || *y > frame[0] as f64)
                .map(|p| (j, p))
        })
    }

    /// The number of joints present.
    pub fn present(&self) -> usize {
        self.joints.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_peaks_at_the_truncated_point() {
        let mut joints = [None; JOINTS];
        joints[0] = Some([2.9, 1.6]);
        let maps = Pose { joints }.heatmaps([4, 4], 4, 4);
        // Truncated to (x, y) = (2, 1): peak 1 there, exp(-1/72) one pixel away.
        assert_eq!(maps[4 + 2], 1.0);
        assert!((maps[4 + 3] as f64 - (-1.0f64 / 72.0).exp()).abs() < 1e-7);
        assert!(
            maps[16..].iter().all(|v| *v == 0.0),
            "missing joints stay zero"
        );
    }

    #[test]
    fn body25_is_reordered_to_coco18() {
        let mut values = vec![0.0; 75];
        // BODY_25 joint 9 (right hip) -> COCO 8; BODY_25 8 (mid hip) has no COCO slot.
        values[27..30].copy_from_slice(&[5.0, 6.0, 0.9]);
        values[24..27].copy_from_slice(&[1.0, 1.0, 0.9]);
        let text = serde_json::json!({"people": [{"pose_keypoints_2d": values}]}).to_string();
        let pose = Pose::from_openpose_json(&text, 0).unwrap();
        assert_eq!(pose.joints[8], Some([5.0, 6.0]));
        assert_eq!(pose.joints.iter().flatten().count(), 1);
    }

    #[test]
    fn bad_pose_files_say_what_is_wrong() {
        assert_eq!(
            Pose::from_openpose_json(r#"{"people": []}"#, 0)
                .unwrap_err()
                .to_string(),
            "person 0 requested but the file has 0 people"
        );
        assert_eq!(
            Pose::from_openpose_json(r#"{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}"#, 0)
                .unwrap_err()
                .to_string(),
            "3 keypoint values, expected 54 (COCO-18) or 75 (BODY_25)"
        );
        assert!(matches!(
            Pose::from_points_json("[[1, 2]]"),
            Err(PoseError::KeypointCount { found: 1, .. })
        ));
        assert!(matches!(
            Pose::from_annotation_row("a.png: [1]"),
            Err(PoseError::Syntax(_))
        ));
    }

    #[test]
    fn pose_files_are_told_apart_by_content_and_errors_name_them() {
        let dir = std::env::temp_dir().join(format!("gfla-pose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let points = format!("[{}]", vec!["[1, 2]"; JOINTS].join(","));
        let poses = Pose::read_file(&write("a.json", &points), 0).unwrap();
        assert_eq!(
            (poses[0].name.as_str(), poses[0].frame),
            ("a", PoseFrame::Picture)
        );
        assert_eq!(poses[0].pose.joints[17], Some([1.0, 2.0]));
        let ys = format!("[{}]", vec!["3"; JOINTS].join(","));
        let csv = format!("name:keypoints_y:keypoints_x\nx.jpg:{ys}:{ys}\ny.jpg:{ys}:{ys}\n");
        let poses = Pose::read_file(&write("b.csv", &csv), 0).unwrap();
        assert_eq!(poses.len(), 2);
        assert_eq!(
            (poses[1].name.as_str(), poses[1].frame),
            ("y", PoseFrame::Annotation)
        );
        let err = Pose::read_file(&write("c.json", r#"{"people": []}"#), 0).unwrap_err();
        assert!(
            err.ends_with("c.json: person 0 requested but the file has 0 people"),
            "{err}"
        );
        let err = Pose::read_file(&dir.join("missing.json"), 0).unwrap_err();
        assert!(err.contains("missing.json: "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn joints_outside_the_frame_are_found() {
        let mut joints = [None; JOINTS];
        joints[2] = Some([10.0, 5.0]);
        joints[4] = Some([70.0, 5.0]);
        let pose = Pose { joints };
        assert_eq!(pose.outside([128, 64]), Some((4, [70.0, 5.0])));
        assert_eq!(pose.outside([128, 128]), None);
        assert_eq!(pose.present(), 2);
    }
}
