//! Shared helpers of the reference-vector tests: reading `../shared/testdata` and comparing.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// The shared test data folder: `$GFLA_TESTDATA`, or `shared/testdata` beside the checkout.
pub fn testdata_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("GFLA_TESTDATA") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
}

/// A loaded reference file: name -> (shape, values as f64).
pub struct Vectors {
    name: String,
    bytes: Vec<u8>,
}

impl Vectors {
    pub fn open(relative: &str) -> Self {
        let path = testdata_dir().join(relative);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read reference vectors {}: {e} (set GFLA_TESTDATA to the shared testdata folder)",
                path.display()
            )
        });
        Self {
            name: relative.to_string(),
            bytes,
        }
    }

    /// Shape and values of `key` (f32 or f64 storage), as f64.
    pub fn raw(&self, key: &str) -> (Vec<usize>, Vec<f64>) {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        let view = st
            .tensor(key)
            .unwrap_or_else(|e| panic!("{}: no tensor {key}: {e}", self.name));
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            other => panic!("{}: {key} has unsupported dtype {other:?}", self.name),
        };
        (view.shape().to_vec(), values)
    }

    /// `key` as a float32 tensor on `device`.
    pub fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Tensor<D> {
        let (shape, values) = self.raw(key);
        assert_eq!(shape.len(), D, "{key}: rank {} expected {D}", shape.len());
        let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
        Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
    }

    pub fn values(&self, key: &str) -> Vec<f64> {
        self.raw(key).1
    }
}

/// Values of a tensor as f64 regardless of its dtype.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.try_into_vec_as::<f64>().expect("float data")
}

/// Asserts `|got - want| <= atol + rtol * max|want|` elementwise and reports the worst element.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = atol + rtol * scale;
    let (worst, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0, 0.0f64), |acc, (i, e)| {
            if e > acc.1 || e.is_nan() { (i, e) } else { acc }
        });
    assert!(
        err <= tol,
        "{what}: max error {err:e} at {worst} (got {}, want {}) exceeds {tol:e} (max |want| {scale:e})",
        got[worst],
        want[worst]
    );
}

/// The device the op tests run on: flex (CPU) unless `GFLA_TEST_DEVICE=wgpu` in a build with
/// the `wgpu` feature (CI runs the reference tests on lavapipe that way).
pub fn device() -> Device {
    match std::env::var("GFLA_TEST_DEVICE").as_deref() {
        Ok("flex") | Err(_) => Device::flex(),
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => Device::wgpu(Default::default()),
        Ok(other) => panic!("GFLA_TEST_DEVICE={other} is not available in this build"),
    }
}

pub fn on_cpu() -> bool {
    !matches!(std::env::var("GFLA_TEST_DEVICE").as_deref(), Ok(d) if d != "flex")
}

pub fn autodiff() -> Device {
    device().autodiff()
}
