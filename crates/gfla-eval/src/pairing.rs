//! Which ground-truth file each generated image is compared with.
//!
//! GFLA's test phase writes `<P1 stem>_2_<P2 stem>_vis.jpg`; its metrics script pairs that with
//! `<ground-truth folder>/<P2 stem>.jpg`, taking the text after the last `_2_` and before the
//! following `_vis`. The script silently skips results whose ground truth is missing; here
//! that is an error, so a partial folder cannot pass for a full evaluation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};

/// Image file extensions picked up in a folder (the script globs `*.jpg` and `*.png`).
const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How many unmatched names an error message lists.
const LISTED: usize = 5;

/// Pairing rule between the generated and the ground-truth folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PairingMode {
    /// `<P1>_2_<P2>_vis.<ext>` ↔ `<P2>.jpg` (the GFLA script).
    #[default]
    Gfla,
    /// The same file name in both folders.
    SameName,
}

impl fmt::Display for PairingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gfla => "gfla",
            Self::SameName => "same-name",
        })
    }
}

impl FromStr for PairingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gfla" => Ok(Self::Gfla),
            "same-name" => Ok(Self::SameName),
            _ => Err(format!("expected `gfla` or `same-name`, got `{s}`")),
        }
    }
}

/// A generated image and its ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub generated: PathBuf,
    pub ground_truth: PathBuf,
}

/// The `<P2 stem>` of a GFLA result name: the text after the last `_2_` up to the next `_vis`.
/// `None` when the name does not have that shape.
pub fn gfla_target_stem(file_name: &str) -> Option<&str> {
    let (_, after) = file_name.rsplit_once("_2_")?;
    let (stem, _) = after.split_once("_vis")?;
    (!stem.is_empty()).then_some(stem)
}

/// The ground-truth file name a generated file pairs with, or `None` if its name has no
/// partner under `mode`.
pub fn ground_truth_name(generated_name: &str, mode: PairingMode) -> Option<String> {
    match mode {
        PairingMode::Gfla => gfla_target_stem(generated_name).map(|stem| format!("{stem}.jpg")),
        PairingMode::SameName => Some(generated_name.to_string()),
    }
}

/// The image files (`.jpg`, `.jpeg`, `.png`, any case) directly in `dir`, sorted by name.
pub fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Pairs every image of `generated_dir` with its ground truth in `ground_truth_dir`.
///
/// Errors, in one line each: a folder that cannot be listed, an empty generated folder, or
/// generated images without a ground truth (the first few names and the count).
pub fn pair_folders(
    generated_dir: &Path,
    ground_truth_dir: &Path,
    mode: PairingMode,
) -> anyhow::Result<Vec<Pair>> {
    let generated = list_images(generated_dir)?;
    if !ground_truth_dir.is_dir() {
        bail!("{} is not a folder", ground_truth_dir.display());
    }
    if generated.is_empty() {
        bail!("no .jpg or .png images in {}", generated_dir.display());
    }
    let mut pairs = Vec::with_capacity(generated.len());
    let mut unmatched = Vec::new();
    for path in generated {
        let name = file_name(&path);
        match ground_truth_name(&name, mode) {
            Some(gt) => {
                let mut ground_truth = ground_truth_dir.join(&gt);
                if mode == PairingMode::Gfla && !ground_truth.is_file() {
                    // The script's ground truth is `<P2>.jpg`; a PNG (or .jpeg) ground-truth
                    // folder of the same stems is taken too.
                    if let Some(other) = ["png", "jpeg"]
                        .iter()
                        .map(|ext| ground_truth.with_extension(ext))
                        .find(|p| p.is_file())
                    {
                        ground_truth = other;
                    }
                }
                if ground_truth.is_file() {
                    pairs.push(Pair {
                        generated: path,
                        ground_truth,
                    });
                } else if mode == PairingMode::Gfla {
                    unmatched.push(format!("{name} (wants {gt})"));
                } else {
                    unmatched.push(name);
                }
            }
            None => unmatched.push(format!("{name} (not <P1>_2_<P2>_vis.<ext>)")),
        }
    }
    if !unmatched.is_empty() {
        let total = pairs.len() + unmatched.len();
        let mut listed = unmatched[..unmatched.len().min(LISTED)].join(", ");
        if unmatched.len() > LISTED {
            listed.push_str(", ...");
        }
        bail!(
            "{} of {total} generated images have no ground truth in {} (pairing {mode}): {listed}",
            unmatched.len(),
            ground_truth_dir.display(),
        );
    }
    Ok(pairs)
}

/// The final component of a path, lossily as UTF-8.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfla_names() {
        assert_eq!(
            gfla_target_stem("0002_c1s1_000451_03_2_0002_c1s1_000776_01_vis.jpg"),
            Some("0002_c1s1_000776_01")
        );
        // The last `_2_` wins, as with Python's split('_2_')[-1].
        assert_eq!(gfla_target_stem("a_2_b_2_c_vis.png"), Some("c"));
        assert_eq!(
            gfla_target_stem(
                "fashionWOMENDressesid0000000202_1front_2_fashionMENTeesid0000000101_7additional_vis.jpg"
            ),
            Some("fashionMENTeesid0000000101_7additional")
        );
        assert_eq!(gfla_target_stem("plain.jpg"), None);
        assert_eq!(gfla_target_stem("a_2_b.jpg"), None);
        assert_eq!(
            ground_truth_name("x_2_y_vis.png", PairingMode::Gfla).as_deref(),
            Some("y.jpg")
        );
        assert_eq!(
            ground_truth_name("y.png", PairingMode::SameName).as_deref(),
            Some("y.png")
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!("gfla".parse(), Ok(PairingMode::Gfla));
        assert_eq!("same-name".parse(), Ok(PairingMode::SameName));
        assert!("other".parse::<PairingMode>().is_err());
    }
}
