//! Pose transfer as an application uses it: a generator with the input size and pose frame it
//! was trained for, loaded from an official checkpoint or a self-describing native file, fed
//! pictures and pose files preprocessed exactly as the official loaders do.
//!
//! ```no_run
//! use burn::tensor::Device;
//! use gfla_model::transfer::{ModelSpec, PoseTransfer};
//! use gfla_model::{Pose, pose::PoseFrame};
//!
//! let device = Device::flex();
//! let model = PoseTransfer::open("latest_net_G.pth".as_ref(), Some(ModelSpec::market()), &device)?;
//! let source = image::open("person.jpg")?.to_rgb8();
//! let source_pose = &Pose::read_file("person.json".as_ref(), 0)?[0];
//! let target_pose = &Pose::read_file("target.json".as_ref(), 0)?[0];
//! let picture_frame = [source.height() as usize, source.width() as usize];
//! let out = model.render(
//!     &source,
//!     (&source_pose.pose, model.frame_of(source_pose.frame, picture_frame)),
//!     &[(&target_pose.pose, model.frame_of(target_pose.frame, picture_frame))],
//! );
//! gfla_model::picture::tensor_to_images(out.image)[0].save("out.png")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::{FloatCastAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::generator::{Generator, GeneratorConfig, GeneratorOutput};
use crate::picture::image_to_tensor;
use crate::pose::{Pose, PoseFrame};
use crate::weights::{self, WeightsError};

/// Metadata key of native generator files: the [`ModelSpec`] as JSON.
pub const SPEC_METADATA: &str = "gfla.model";

/// What a set of generator weights was made for: the network layout, the input size and the
/// frame of annotation-CSV poses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSpec {
    /// A short name shown to people (`market`, `fashion`, `demo-market-tiny`, ...).
    pub name: String,
    pub config: GeneratorConfig,
    /// Network input `[height, width]`: pictures are resized (stretched) to it.
    pub image_size: [usize; 2],
    /// `[height, width]` of the frame the dataset's annotation CSV rows are given in.
    pub annotation_frame: [usize; 2],
}

impl ModelSpec {
    /// The released DeepFashion model: 256 x 256 input, annotations in 256 x 176 (the
    /// originals are stretched to a square, so x is scaled by 256 / 176).
    pub fn fashion() -> Self {
        Self {
            name: "fashion".into(),
            config: GeneratorConfig::fashion(),
            image_size: [256, 256],
            annotation_frame: [256, 176],
        }
    }

    /// The released Market-1501 model: 128 x 64 input and annotations.
    pub fn market() -> Self {
        Self {
            name: "market".into(),
            config: GeneratorConfig::market(),
            image_size: [128, 64],
            annotation_frame: [128, 64],
        }
    }

    /// A preset by name (`fashion`, `market`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "fashion" | "deepfashion" => Some(Self::fashion()),
            "market" | "market1501" => Some(Self::market()),
            _ => None,
        }
    }
}

/// A generator ready to render people in new poses.
#[derive(Debug)]
pub struct PoseTransfer {
    pub generator: Generator,
    pub spec: ModelSpec,
    device: Device,
}

fn read_error(path: &str, message: impl Into<String>) -> WeightsError {
    WeightsError::Read {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The `__metadata__` of a safetensors file, or `None` if the bytes are not safetensors.
fn safetensors_metadata(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(len)?)?;
    if header.first() != Some(&b'{') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    let meta = value.get("__metadata__").and_then(|m| m.as_object());
    Some(
        meta.map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default(),
    )
}

impl PoseTransfer {
    /// Wraps a generator built from `spec.config` on `device`.
    pub fn new(generator: Generator, spec: ModelSpec, device: &Device) -> Self {
        Self {
            generator,
            spec,
            device: device.clone(),
        }
    }

    /// A freshly initialised generator for `spec` (for training, or tests).
    pub fn init(spec: ModelSpec, device: &Device) -> Self {
        Self {
            generator: spec.config.init(device),
            spec,
            device: device.clone(),
        }
    }

    /// Loads weights from a file, telling the format by its content: a native safetensors file
    /// (which names its own [`ModelSpec`]; `expected`, if given, must agree) or an official
    /// PyTorch checkpoint (which needs `expected`: the official files do not say their preset).
    pub fn open(
        path: &Path,
        expected: Option<ModelSpec>,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| read_error(&shown, e.to_string()))?;
        if safetensors_metadata(&bytes).is_some() {
            let model = Self::from_native_bytes(bytes, &shown, device)?;
            if let Some(expected) = expected
                && (expected.image_size != model.spec.image_size
                    || expected.config.attention != model.spec.config.attention)
            {
                return Err(read_error(
                    &shown,
                    format!(
                        "made for the {} model ({}x{}), not the {} preset ({}x{})",
                        model.spec.name,
                        model.spec.image_size[0],
                        model.spec.image_size[1],
                        expected.name,
                        expected.image_size[0],
                        expected.image_size[1]
                    ),
                ));
            }
            return Ok(model);
        }
        let spec = expected.ok_or_else(|| {
            read_error(
                &shown,
                "an official checkpoint does not say which preset it is: name one (fashion or market)",
            )
        })?;
        let mut model = Self::init(spec, device);
        weights::load_generator(&mut model.generator, &model.spec.config, path)?;
        Ok(model)
    }

    /// Loads a native file written by [`PoseTransfer::save`] from memory; `origin` names it in
    /// errors.
    pub fn from_native_bytes(
        bytes: Vec<u8>,
        origin: &str,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let meta = safetensors_metadata(&bytes)
            .ok_or_else(|| read_error(origin, "not a safetensors file"))?;
        let spec_json = meta.get(SPEC_METADATA).ok_or_else(|| {
            read_error(
                origin,
                format!("no {SPEC_METADATA} metadata: not a generator file written by gfla-rs"),
            )
        })?;
        let spec: ModelSpec = serde_json::from_str(spec_json)
            .map_err(|e| read_error(origin, format!("bad {SPEC_METADATA} metadata: {e}")))?;
        let mut model = Self::init(spec, device);
        let mut store = SafetensorsStore::from_bytes(Some(bytes))
            .with_from_adapter(FloatCastAdapter::to(DType::F32));
        let result = model
            .generator
            .load_from(&mut store)
            .map_err(|e| read_error(origin, e.to_string()))?;
        weights::check_native(origin, &result)?;
        Ok(model)
    }

    /// Writes the weights with their [`ModelSpec`], in half precision if `half` (half the size;
    /// the loss is far below what 8-bit pictures show).
    pub fn save(&self, path: &Path, half: bool) -> Result<(), WeightsError> {
        let shown = path.display().to_string();
        let spec = serde_json::to_string(&self.spec).expect("a spec serialises");
        let mut store = SafetensorsStore::from_file(path)
            .overwrite(true)
            .metadata(SPEC_METADATA, spec);
        if half {
            store = store.with_to_adapter(FloatCastAdapter::to(DType::F16));
        }
        self.generator
            .save_into(&mut store)
            .map_err(|e| read_error(&shown, format!("cannot write: {e}")))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The `[height, width]` frame of a pose: the dataset's annotation frame, or the picture's.
    pub fn frame_of(&self, frame: PoseFrame, picture: [usize; 2]) -> [usize; 2] {
        match frame {
            PoseFrame::Annotation => self.spec.annotation_frame,
            PoseFrame::Picture => picture,
        }
    }

    /// The 18 heat maps of `pose` (in `frame`) at the network size, `[1, 18, H, W]`.
    pub fn pose_maps(&self, pose: &Pose, frame: [usize; 2]) -> Tensor<4> {
        let [h, w] = self.spec.image_size;
        pose.heatmap_tensor(frame, h, w, &self.device)
    }

    /// `source` in the network's input form, `[1, 3, H, W]` in [-1, 1].
    pub fn picture(&self, source: &RgbImage) -> Tensor<4> {
        let [h, w] = self.spec.image_size;
        image_to_tensor(source, h, w, &self.device)
    }

    /// Renders the person of `source` (whose pose is `source_pose` in its frame) in each of the
    /// `targets` (pose, frame), as one batch. Pictures are resized to the network size as the
    /// official loaders do; the outputs are at the network size.
    pub fn render(
        &self,
        source: &RgbImage,
        source_pose: (&Pose, [usize; 2]),
        targets: &[(&Pose, [usize; 2])],
    ) -> GeneratorOutput {
        assert!(!targets.is_empty(), "render: no target pose");
        let n = targets.len();
        let picture = self.picture(source);
        // The source pyramid is the same for every target: encode it once.
        let features = self.generator.encode_source(picture.clone());
        let image = picture.repeat_dim(0, n);
        let bp1 = self
            .pose_maps(source_pose.0, source_pose.1)
            .repeat_dim(0, n);
        let bp2 = Tensor::cat(
            targets
                .iter()
                .map(|(pose, frame)| self.pose_maps(pose, *frame))
                .collect(),
            0,
        );
        self.generator
            .forward_with_source(features, image, bp1, bp2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelSpec {
        ModelSpec {
            name: "tiny".into(),
            config: GeneratorConfig::market()
                .with_channels(4)
                .with_flow_channels(4)
                .with_attention_hidden(4),
            image_size: [64, 32],
            annotation_frame: [64, 32],
        }
    }

    #[test]
    fn native_files_describe_themselves_and_round_trip_in_half_precision() {
        let device = Device::flex();
        let model = PoseTransfer::init(tiny(), &device);
        let path =
            std::env::temp_dir().join(format!("gfla-tiny-{}.safetensors", std::process::id()));
        model.save(&path, true).unwrap();
        let loaded = PoseTransfer::open(&path, None, &device).unwrap();
        assert_eq!(loaded.spec.name, "tiny");
        assert_eq!(loaded.spec.config.channels, 4);
        // Varying inputs: InstanceNorm maps constant ones to zero, whatever the weights.
        let ramp = |c: usize| {
            Tensor::<1, burn::tensor::Int>::arange(0..(c * 64 * 32) as i64, &device)
                .float()
                .reshape([1, c, 64, 32])
                .sin()
        };
        let x = || ramp(3);
        let p = || ramp(18).abs();
        let a: Vec<f32> = model
            .generator
            .forward(x(), p(), p())
            .image
            .try_into_vec_as()
            .unwrap();
        let b: Vec<f32> = loaded
            .generator
            .forward(x(), p(), p())
            .image
            .try_into_vec_as()
            .unwrap();
        let err = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        // Half precision keeps ~3 decimal digits of the weights.
        assert!(
            err < 5e-3 && err > 0.0,
            "half-precision round trip error {err}"
        );
        let err = PoseTransfer::open(&path, Some(ModelSpec::market()), &device).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("made for the tiny model (64x32), not the market preset (128x64)"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_official_checkpoint_needs_a_preset() {
        let path = std::env::temp_dir().join(format!("gfla-fake-{}.pth", std::process::id()));
        std::fs::write(&path, b"PK\x03\x04 not really").unwrap();
        let err = PoseTransfer::open(&path, None, &Device::flex()).unwrap_err();
        assert!(
            err.to_string().contains("does not say which preset"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
