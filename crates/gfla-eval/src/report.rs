//! The evaluation report: means over all pairs, LPIPS and FID when computed, protocol notes,
//! the readable table and the JSON document.
//!
//! JSON has no infinity or NaN; `serde_json` writes both as `null`. A `null` PSNR is `+inf`
//! (identical images, counted in `counts.psnr_infinite`); `means.psnr_finite` is the mean over
//! the finite PSNRs only. A `null` SSIM-256/SSIM-11 is NaN: skimage's result when the generated
//! image is flat (data range 0).

use std::fmt::Write as _;

use serde::Serialize;

use crate::evaluate::{LpipsScores, PairMetrics};
use crate::fid::FidScores;
use crate::image_io::Resize;
use crate::inception::InceptionWeights;
use crate::pairing::PairingMode;
use crate::ssim::SsimProtocol;

/// Metrics not computed in a run without LPIPS and FID weights, and why.
pub const NOT_COMPUTED: &str = "LPIPS and mask-LPIPS need user-supplied network weights \
     (--lpips-alexnet, --lpips-lin) and were not computed; FID needs user-supplied \
     Inception-v3 weights and the real image folder (--fid-inception, --fid-real) and was not \
     computed";

/// Metrics not computed in a run with LPIPS but without FID.
pub const NOT_COMPUTED_FID: &str = "FID needs user-supplied Inception-v3 weights and the real \
     image folder (--fid-inception, --fid-real) and was not computed";

/// Metrics not computed in a run with FID but without LPIPS.
pub const NOT_COMPUTED_LPIPS: &str = "LPIPS and mask-LPIPS need user-supplied network weights \
     (--lpips-alexnet, --lpips-lin) and were not computed";

/// How FID was computed with torchvision's weights: the GFLA protocol.
pub const FID_NOTE_TORCHVISION: &str = "Frechet distance of Inception-v3 pool3 (2048-d) \
     feature statistics, every *.jpg/*.png of the generated folder vs the real folder \
     (--fid-real, the script's --fid_real_path: the training set); torchvision weights, images \
     f32/255 resized bilinearly to 299x299 (align_corners=False), then x*(s/0.5)+(m-0.5)/0.5 \
     with ImageNet m, s; real folder first, batches of 64 (lowered to a smaller folder's size), \
     remainders dropped, as the GFLA script does; no statistics.npz cache";

/// How FID was computed with pytorch-fid's weights: not the GFLA protocol.
pub const FID_NOTE_PYTORCH_FID: &str = "Frechet distance of Inception-v3 pool3 (2048-d) \
     feature statistics, generated folder vs --fid-real, with pytorch-fid's TF-Inception weights \
     and blocks, images resized bilinearly to 299x299 (align_corners=False) then 2x-1, every \
     image used: pytorch-fid's protocol, NOT the GFLA script's (torchvision weights and \
     preprocessing), so not comparable with published GFLA FIDs";

/// Protocol note of a metric key used in tables and reports.
pub fn protocol_note(key: &str) -> &'static str {
    match key {
        "ssim" => SsimProtocol::Gfla.description(),
        "ssim_256" => SsimProtocol::Gfla256.description(),
        "ssim_11" => SsimProtocol::Gaussian11.description(),
        "psnr" => "skimage compare_psnr, data range 1, images in [0,1]",
        "l1" => "mean |gt - generated| over all samples, images in [0,1]",
        "mae" => "GFLA 'mae': sum |gt - generated| / sum (gt + generated), images in [0,1]",
        "mask_ssim" => {
            "SSIM (GFLA protocol) after masking both images with the target-pose body mask \
             (background -> 0 in [-1,1], i.e. 0.5 in [0,1]); not in the GFLA script"
        }
        "mask_ssim_256" => "SSIM-256 on the masked images; not in the GFLA script",
        "mask_l1" => "L1 on the masked images; not in the GFLA script",
        "lpips" => {
            "LPIPS v0.1 net-lin AlexNet (legacy PerceptualSimilarity), images v/127.5 - 1 in \
             [-1,1]; batches of 64 pairs in pairing (file name) order, the final partial \
             batch dropped as the GFLA script does; mean of the per-pair distances"
        }
        "mask_lpips" => {
            "LPIPS as above on both [-1,1] images multiplied by the target-pose body mask \
             (GFLA --calculate_mask); same batches, partial batch dropped"
        }
        _ => "",
    }
}

/// Where the images came from and how they were paired.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub generated_dir: String,
    pub ground_truth_dir: String,
    pub pairing: PairingMode,
    pub resize: Resize,
    /// Path of the Market annotation CSV, when masked metrics were computed.
    pub annotation: Option<String>,
}

/// Means over all pairs (`None` for masked metrics that were not computed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Means {
    pub ssim: f64,
    pub ssim_256: f64,
    pub ssim_11: f64,
    /// Mean of all PSNRs: `+inf` as soon as one pair is identical (as numpy's mean).
    pub psnr: f64,
    /// Mean of the finite PSNRs (`None` when there are none).
    pub psnr_finite: Option<f64>,
    pub l1: f64,
    pub mae: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_ssim: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_ssim_256: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_l1: Option<f64>,
}

/// Counts that qualify the means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pairs: usize,
    /// Pairs with identical images (infinite PSNR).
    pub psnr_infinite: usize,
}

/// One metric's protocol note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProtocolEntry {
    pub metric: &'static str,
    pub protocol: &'static str,
}

/// The whole report, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub generated_dir: String,
    pub ground_truth_dir: String,
    pub pairing: String,
    /// `none` or `HxW`.
    pub resize: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// Caveats that apply to this run.
    pub notes: Vec<String>,
    /// How each reported metric was computed.
    pub protocol: Vec<ProtocolEntry>,
    pub counts: Counts,
    pub means: Means,
    /// LPIPS and mask-LPIPS, when weights were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpips: Option<LpipsScores>,
    /// FID, when Inception weights were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid: Option<FidScores>,
    /// Which metrics were not computed and why (absent when all were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_computed: Option<&'static str>,
    pub images: Vec<PairMetrics>,
}

impl Report {
    /// Summarises per-pair metrics (at least one pair).
    pub fn new(info: RunInfo, images: Vec<PairMetrics>) -> Self {
        let n = images.len() as f64;
        let mean = |f: &dyn Fn(&PairMetrics) -> f64| images.iter().map(f).sum::<f64>() / n;
        let masked = images.first().is_some_and(|p| p.metrics.masked.is_some());
        let mask_mean = |f: &dyn Fn(&PairMetrics) -> Option<f64>| {
            masked.then(|| images.iter().filter_map(f).sum::<f64>() / n)
        };
        let finite: Vec<f64> = images
            .iter()
            .map(|p| p.metrics.psnr)
            .filter(|v| v.is_finite())
            .collect();
        let means = Means {
            ssim: mean(&|p| p.metrics.ssim),
            ssim_256: mean(&|p| p.metrics.ssim_256),
            ssim_11: mean(&|p| p.metrics.ssim_11),
            psnr: mean(&|p| p.metrics.psnr),
            psnr_finite: (!finite.is_empty())
                .then(|| finite.iter().sum::<f64>() / finite.len() as f64),
            l1: mean(&|p| p.metrics.l1),
            mae: mean(&|p| p.metrics.mae),
            mask_ssim: mask_mean(&|p| p.metrics.masked.map(|m| m.mask_ssim)),
            mask_ssim_256: mask_mean(&|p| p.metrics.masked.map(|m| m.mask_ssim_256)),
            mask_l1: mask_mean(&|p| p.metrics.masked.map(|m| m.mask_l1)),
        };
        let counts = Counts {
            pairs: images.len(),
            psnr_infinite: images.len() - finite.len(),
        };

        let mut notes = vec![
            "JPEG files are decoded by the Rust `image` crate, which is not bit-exact with \
             libjpeg (imageio/Pillow): some samples differ by a few levels, moving SSIM \
             around the 5th decimal and PSNR around the 3rd; PNG is exact"
                .to_string(),
        ];
        if let Resize::To { height, width } = info.resize {
            notes.push(format!(
                "both images of every pair resized to {height}x{width} (HxW, triangle filter) \
                 before scoring; the GFLA protocol compares against pre-resized ground-truth \
                 folders instead, so these values are not the published protocol"
            ));
        }
        let mut keys = vec!["ssim", "ssim_256", "ssim_11", "psnr", "l1", "mae"];
        if masked {
            keys.extend(["mask_ssim", "mask_ssim_256", "mask_l1"]);
        }
        Self {
            tool: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            generated_dir: info.generated_dir,
            ground_truth_dir: info.ground_truth_dir,
            pairing: info.pairing.to_string(),
            resize: info.resize.to_string(),
            annotation: info.annotation,
            notes,
            protocol: keys
                .into_iter()
                .map(|metric| ProtocolEntry {
                    metric,
                    protocol: protocol_note(metric),
                })
                .collect(),
            counts,
            means,
            lpips: None,
            fid: None,
            not_computed: Some(NOT_COMPUTED),
            images,
        }
    }

    /// Adds LPIPS (and mask-LPIPS) scores with their protocol notes.
    pub fn with_lpips(mut self, scores: LpipsScores) -> Self {
        self.protocol.push(ProtocolEntry {
            metric: "lpips",
            protocol: protocol_note("lpips"),
        });
        if scores.mask_per_pair.is_some() {
            self.protocol.push(ProtocolEntry {
                metric: "mask_lpips",
                protocol: protocol_note("mask_lpips"),
            });
        }
        if scores.pairs_dropped > 0 {
            self.notes.push(format!(
                "LPIPS used {} of {} pairs: the last {} (a partial batch of {}) were dropped \
                 as the GFLA script does",
                scores.pairs_used, self.counts.pairs, scores.pairs_dropped, scores.batch_size
            ));
        }
        self.lpips = Some(scores);
        self.update_not_computed();
        self
    }

    /// Adds FID with its protocol note and the ways this run departs from the script.
    pub fn with_fid(mut self, scores: FidScores) -> Self {
        let gfla = scores.weights == InceptionWeights::Torchvision.name();
        self.protocol.push(ProtocolEntry {
            metric: "fid",
            protocol: if gfla {
                FID_NOTE_TORCHVISION
            } else {
                FID_NOTE_PYTORCH_FID
            },
        });
        if !gfla {
            self.notes.push(
                "FID was computed with pytorch-fid's weights and protocol, not the published \
                 GFLA protocol (torchvision's Inception-v3 weights and the script's \
                 preprocessing); pytorch-fid also reads .bmp/.jpeg/.pgm/.ppm/.tif/.tiff/.webp \
                 files, gfla-eval only .jpg and .png"
                    .into(),
            );
        }
        self.notes.push(
            "FID runs Inception-v3 in f32 on Burn's CPU backend after a re-implementation of \
             PyTorch's bilinear upsampling; the script ran both on CUDA, whose fused \
             multiply-adds and convolution algorithms round differently, so features can differ \
             in the last bits; the Frechet distance takes tr sqrt(S1 S2) from a pivoted Cholesky \
             and an SVD rather than scipy's sqrtm (the same up to round-off)"
                .into(),
        );
        let (real_dropped, generated_dropped) = scores.dropped();
        if real_dropped + generated_dropped > 0 {
            let b = &scores.batches;
            self.notes.push(format!(
                "FID used {} of {} real images (batches of {}) and {} of {} generated images \
                 (batches of {}), dropping the remainders as the GFLA script does; the dropped \
                 images are the last in file-name order (.jpg before .png) while the script \
                 drops the last in directory order, so the subset used can differ",
                b.real_used,
                scores.real_images,
                b.real_batch,
                b.generated_used,
                scores.generated_images,
                b.generated_batch
            ));
        }
        if self.resize != Resize::None.to_string() {
            self.notes.push(format!(
                "--resize {} applies to the paired metrics only; FID reads both folders as they \
                 are, as the script does",
                self.resize
            ));
        }
        self.fid = Some(scores);
        self.update_not_computed();
        self
    }

    fn update_not_computed(&mut self) {
        self.not_computed = match (self.lpips.is_some(), self.fid.is_some()) {
            (false, false) => Some(NOT_COMPUTED),
            (true, false) => Some(NOT_COMPUTED_FID),
            (false, true) => Some(NOT_COMPUTED_LPIPS),
            (true, true) => None,
        };
    }

    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> String {
        // Serialising plain data (strings, numbers, options) cannot fail.
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// A readable table of the means with one protocol note per metric, then the notes.
    pub fn table(&self) -> String {
        let m = &self.means;
        let mut rows: Vec<(&str, String, String)> = vec![
            ("SSIM", value(m.ssim), protocol_note("ssim").into()),
            (
                "SSIM-256",
                value(m.ssim_256),
                protocol_note("ssim_256").into(),
            ),
            ("SSIM-11", value(m.ssim_11), protocol_note("ssim_11").into()),
            ("PSNR", value(m.psnr), psnr_note(self)),
            ("L1", value(m.l1), protocol_note("l1").into()),
            ("MAE", value(m.mae), protocol_note("mae").into()),
        ];
        for (label, key, v) in [
            ("mask-SSIM", "mask_ssim", m.mask_ssim),
            ("mask-SSIM-256", "mask_ssim_256", m.mask_ssim_256),
            ("mask-L1", "mask_l1", m.mask_l1),
        ] {
            if let Some(v) = v {
                rows.push((label, value(v), protocol_note(key).into()));
            }
        }
        if let Some(l) = &self.lpips {
            let score = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), value);
            let note = |key: &str| {
                let mut note = protocol_note(key).to_string();
                if l.pairs_used == 0 {
                    let _ = write!(note, "; no full batch of {} pairs", l.batch_size);
                } else if l.pairs_dropped > 0 {
                    let _ = write!(note, "; {} pairs used", l.pairs_used);
                }
                note
            };
            rows.push(("LPIPS", score(l.lpips), note("lpips")));
            if l.mask_per_pair.is_some() {
                rows.push(("mask-LPIPS", score(l.mask_lpips), note("mask_lpips")));
            }
        }
        if let Some(f) = &self.fid {
            let note = self
                .protocol
                .iter()
                .find(|p| p.metric == "fid")
                .map_or("", |p| p.protocol);
            rows.push((
                "FID",
                value(f.fid),
                format!(
                    "{note}; {} real and {} generated images used",
                    f.batches.real_used, f.batches.generated_used
                ),
            ));
        }
        let label_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
        let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
        let mut out = format!(
            "{} pairs ({} pairing, resize {})\n\n",
            self.counts.pairs, self.pairing, self.resize
        );
        let _ = writeln!(
            out,
            "{:label_width$}  {:>value_width$}  protocol",
            "metric", "value"
        );
        for (label, v, note) in &rows {
            let _ = writeln!(out, "{label:label_width$}  {v:>value_width$}  {note}");
        }
        out.push('\n');
        if let Some(not_computed) = self.not_computed {
            let _ = writeln!(out, "{not_computed}.");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}.");
        }
        out
    }
}

fn psnr_note(report: &Report) -> String {
    let mut note = protocol_note("psnr").to_string();
    let inf = report.counts.psnr_infinite;
    if inf > 0 {
        let _ = write!(note, "; {inf} identical pair(s) give inf");
        if let Some(f) = report.means.psnr_finite {
            let _ = write!(note, ", mean of the finite ones {}", value(f));
        }
    }
    note
}

/// Four decimals as the GFLA script prints, `inf`/`nan` spelled out.
fn value(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{MaskedMetrics, Metrics};

    fn pair(name: &str, psnr: f64, masked: bool) -> PairMetrics {
        PairMetrics {
            generated: name.into(),
            ground_truth: name.into(),
            metrics: Metrics {
                ssim: 0.5,
                ssim_256: 0.25,
                ssim_11: 0.75,
                psnr,
                l1: 0.1,
                mae: 0.2,
                masked: masked.then_some(MaskedMetrics {
                    mask_ssim: 0.9,
                    mask_ssim_256: 0.8,
                    mask_l1: 0.05,
                }),
            },
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            generated_dir: "gen".into(),
            ground_truth_dir: "gt".into(),
            pairing: PairingMode::Gfla,
            resize: Resize::None,
            annotation: None,
        }
    }

    #[test]
    fn means_counts_and_json_nulls() {
        let report = Report::new(
            info(),
            vec![pair("a", 20.0, false), pair("b", f64::INFINITY, false)],
        );
        assert_eq!(report.means.psnr, f64::INFINITY);
        assert_eq!(report.means.psnr_finite, Some(20.0));
        assert_eq!(report.counts.psnr_infinite, 1);
        assert_eq!(report.means.ssim, 0.5);
        assert_eq!(report.means.mask_l1, None);

        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["means"]["psnr"], serde_json::Value::Null);
        assert_eq!(json["means"]["psnr_finite"], 20.0);
        assert_eq!(json["images"][1]["psnr"], serde_json::Value::Null);
        assert_eq!(json["images"][0]["generated"], "a");
        assert!(json["means"].get("mask_ssim").is_none());
        assert!(json["images"][0].get("mask_l1").is_none());

        let table = report.table();
        assert!(table.contains("PSNR"), "{table}");
        assert!(table.contains("inf"), "{table}");
        assert!(table.contains("1 identical pair(s)"), "{table}");
        assert!(
            table.contains("FID needs user-supplied Inception-v3"),
            "{table}"
        );
        assert_eq!(json["not_computed"], NOT_COMPUTED);
    }

    #[test]
    fn lpips_rows_notes_and_json() {
        let scores = LpipsScores {
            batch_size: 2,
            pairs_used: 2,
            pairs_dropped: 1,
            lpips: Some(0.25),
            mask_lpips: Some(0.125),
            per_pair: vec![0.2, 0.3],
            mask_per_pair: Some(vec![0.1, 0.15]),
        };
        let images = vec![
            pair("a", 20.0, true),
            pair("b", 20.0, true),
            pair("c", 20.0, true),
        ];
        let report = Report::new(info(), images).with_lpips(scores);
        let table = report.table();
        assert!(table.contains("LPIPS"), "{table}");
        assert!(table.contains("mask-LPIPS      0.1250"), "{table}");
        assert!(table.contains("FID needs"), "{table}");
        assert!(!table.contains("LPIPS and mask-LPIPS need"), "{table}");
        assert!(
            table.contains("the last 1 (a partial batch of 2) were dropped"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["lpips"]["lpips"], 0.25);
        assert_eq!(json["lpips"]["mask_lpips"], 0.125);
        assert_eq!(json["lpips"]["pairs_dropped"], 1);
        assert_eq!(json["not_computed"], NOT_COMPUTED_FID);
        let metrics: Vec<&str> = report.protocol.iter().map(|p| p.metric).collect();
        assert!(metrics.ends_with(&["lpips", "mask_lpips"]), "{metrics:?}");

        // No full batch: n/a.
        let none = LpipsScores {
            batch_size: 64,
            pairs_used: 0,
            pairs_dropped: 1,
            lpips: None,
            mask_lpips: None,
            per_pair: vec![],
            mask_per_pair: None,
        };
        let table = Report::new(info(), vec![pair("a", 20.0, false)])
            .with_lpips(none)
            .table();
        assert!(table.contains("n/a"), "{table}");
        assert!(table.contains("no full batch of 64 pairs"), "{table}");
        assert!(!table.contains("mask-LPIPS"), "{table}");
    }

    fn fid_scores(weights: InceptionWeights, real: usize, generated: usize) -> FidScores {
        FidScores {
            fid: 12.5,
            weights: weights.name(),
            weights_file: "inception.pth".into(),
            real_dir: "train".into(),
            real_images: real,
            generated_images: generated,
            batches: crate::fid::FidBatches::new(weights, real, generated),
        }
    }

    #[test]
    fn fid_row_notes_and_json() {
        let report = Report::new(info(), vec![pair("a", 20.0, false)]).with_fid(fid_scores(
            InceptionWeights::Torchvision,
            130,
            70,
        ));
        let table = report.table();
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("FID ") && l.contains(" 12.5000  Frechet")),
            "{table}"
        );
        assert!(table.contains("torchvision weights"), "{table}");
        assert!(
            table.contains("128 real and 64 generated images used"),
            "{table}"
        );
        assert!(
            table.contains("FID used 128 of 130 real images (batches of 64) and 64 of 70"),
            "{table}"
        );
        assert!(table.contains("LPIPS and mask-LPIPS need"), "{table}");
        assert!(!table.contains("FID needs"), "{table}");
        assert!(!table.contains("pytorch-fid's protocol"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["fid"]["fid"], 12.5);
        assert_eq!(json["fid"]["weights"], "torchvision");
        assert_eq!(json["fid"]["real_used"], 128);
        assert_eq!(json["fid"]["generated_batch"], 64);
        assert_eq!(json["not_computed"], NOT_COMPUTED_LPIPS);
        assert_eq!(
            report.protocol.last().unwrap().protocol,
            FID_NOTE_TORCHVISION
        );

        // Both LPIPS and FID: nothing left out; pytorch-fid weights and --resize are stated.
        let lpips = LpipsScores {
            batch_size: 64,
            pairs_used: 0,
            pairs_dropped: 1,
            lpips: None,
            mask_lpips: None,
            per_pair: vec![],
            mask_per_pair: None,
        };
        let mut i = info();
        i.resize = Resize::To {
            height: 128,
            width: 64,
        };
        let report = Report::new(i, vec![pair("a", 20.0, false)])
            .with_fid(fid_scores(InceptionWeights::PytorchFid, 130, 70))
            .with_lpips(lpips);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert!(json.get("not_computed").is_none(), "{json}");
        let table = report.table();
        assert!(table.contains("NOT the GFLA script's"), "{table}");
        assert!(table.contains("not the published GFLA protocol"), "{table}");
        assert!(
            table.contains("130 real and 70 generated images used"),
            "{table}"
        );
        assert!(!table.contains("FID used"), "{table}");
        assert!(
            table.contains("--resize 128x64 applies to the paired metrics only"),
            "{table}"
        );
        assert!(!table.contains("need"), "{table}");
    }

    #[test]
    fn masked_means_and_resize_note() {
        let mut i = info();
        i.resize = Resize::To {
            height: 128,
            width: 64,
        };
        let report = Report::new(i, vec![pair("a", 30.0, true)]);
        assert_eq!(report.means.mask_ssim, Some(0.9));
        assert_eq!(report.means.mask_l1, Some(0.05));
        assert!(report.notes.iter().any(|n| n.contains("128x64")));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["images"][0]["mask_ssim"], 0.9);
        assert_eq!(json["resize"], "128x64");
        assert!(report.table().contains("mask-SSIM"));
    }
}
