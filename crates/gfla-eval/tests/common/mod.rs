//! Test helpers shared by the integration tests that need Inception weight files: a PyTorch
//! checkpoint writer ([`pth`]) and the torchvision / pytorch-fid Inception-v3 state-dict
//! layouts, transcribed from torchvision's `Inception3` definition independently of
//! `gfla_eval::inception` so that a wrong kernel shape or width there fails to load.

#![allow(dead_code)]

pub mod pth;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use pth::{Container, Data, Entry};

/// `(name, in, out, kernel height, kernel width)` of every `BasicConv2d` of the feature
/// network, full width, in torchvision's order.
pub fn basic_convs() -> Vec<(String, usize, usize, usize, usize)> {
    let mut v: Vec<(String, usize, usize, usize, usize)> = vec![
        ("Conv2d_1a_3x3".into(), 3, 32, 3, 3),
        ("Conv2d_2a_3x3".into(), 32, 32, 3, 3),
        ("Conv2d_2b_3x3".into(), 32, 64, 3, 3),
        ("Conv2d_3b_1x1".into(), 64, 80, 1, 1),
        ("Conv2d_4a_3x3".into(), 80, 192, 3, 3),
    ];
    let mut block = |name: &str, convs: &[(&str, usize, usize, usize, usize)]| {
        for &(b, i, o, kh, kw) in convs {
            v.push((format!("{name}.{b}"), i, o, kh, kw));
        }
    };
    for (name, cin, pool) in [
        ("Mixed_5b", 192, 32),
        ("Mixed_5c", 256, 64),
        ("Mixed_5d", 288, 64),
    ] {
        block(
            name,
            &[
                ("branch1x1", cin, 64, 1, 1),
                ("branch5x5_1", cin, 48, 1, 1),
                ("branch5x5_2", 48, 64, 5, 5),
                ("branch3x3dbl_1", cin, 64, 1, 1),
                ("branch3x3dbl_2", 64, 96, 3, 3),
                ("branch3x3dbl_3", 96, 96, 3, 3),
                ("branch_pool", cin, pool, 1, 1),
            ],
        );
    }
    block(
        "Mixed_6a",
        &[
            ("branch3x3", 288, 384, 3, 3),
            ("branch3x3dbl_1", 288, 64, 1, 1),
            ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3),
        ],
    );
    for (name, c7) in [
        ("Mixed_6b", 128),
        ("Mixed_6c", 160),
        ("Mixed_6d", 160),
        ("Mixed_6e", 192),
    ] {
        block(
            name,
            &[
                ("branch1x1", 768, 192, 1, 1),
                ("branch7x7_1", 768, c7, 1, 1),
                ("branch7x7_2", c7, c7, 1, 7),
                ("branch7x7_3", c7, 192, 7, 1),
                ("branch7x7dbl_1", 768, c7, 1, 1),
                ("branch7x7dbl_2", c7, c7, 7, 1),
                ("branch7x7dbl_3", c7, c7, 1, 7),
                ("branch7x7dbl_4", c7, c7, 7, 1),
                ("branch7x7dbl_5", c7, 192, 1, 7),
                ("branch_pool", 768, 192, 1, 1),
            ],
        );
    }
    block(
        "Mixed_7a",
        &[
            ("branch3x3_1", 768, 192, 1, 1),
            ("branch3x3_2", 192, 320, 3, 3),
            ("branch7x7x3_1", 768, 192, 1, 1),
            ("branch7x7x3_2", 192, 192, 1, 7),
            ("branch7x7x3_3", 192, 192, 7, 1),
            ("branch7x7x3_4", 192, 192, 3, 3),
        ],
    );
    for (name, cin) in [("Mixed_7b", 1280), ("Mixed_7c", 2048)] {
        block(
            name,
            &[
                ("branch1x1", cin, 320, 1, 1),
                ("branch3x3_1", cin, 384, 1, 1),
                ("branch3x3_2a", 384, 384, 1, 3),
                ("branch3x3_2b", 384, 384, 3, 1),
                ("branch3x3dbl_1", cin, 448, 1, 1),
                ("branch3x3dbl_2", 448, 384, 3, 3),
                ("branch3x3dbl_3a", 384, 384, 1, 3),
                ("branch3x3dbl_3b", 384, 384, 3, 1),
                ("branch_pool", cin, 192, 1, 1),
            ],
        );
    }
    v
}

/// Which state dict to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// torchvision `inception_v3`: features, `AuxLogits.*`, `fc` with 1000 rows.
    Torchvision,
    /// pytorch-fid `pt_inception-2015-12-05`: features and `fc` with 1008 rows.
    PytorchFid,
}

/// `(key, shape)` of a whole state dict with every width divided by `d` (not the 3 input
/// channels nor the classes); with `batches_tracked`, every batch norm also has its int64
/// `num_batches_tracked` (newer torchvision files).
pub fn state_dict_shapes(
    layout: Layout,
    d: usize,
    batches_tracked: bool,
) -> Vec<(String, Vec<usize>)> {
    let c = |n: usize| if n == 3 { 3 } else { n / d };
    let mut out = vec![];
    let basic = |out: &mut Vec<(String, Vec<usize>)>, name: &str, i, o, kh, kw| {
        out.push((format!("{name}.conv.weight"), vec![c(o), c(i), kh, kw]));
        for p in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.bn.{p}"), vec![c(o)]));
        }
        if batches_tracked {
            out.push((format!("{name}.bn.num_batches_tracked"), vec![]));
        }
    };
    for (name, i, o, kh, kw) in basic_convs() {
        basic(&mut out, &name, i, o, kh, kw);
    }
    let classes = match layout {
        Layout::Torchvision => {
            basic(&mut out, "AuxLogits.conv0", 768, 128, 1, 1);
            basic(&mut out, "AuxLogits.conv1", 128, 768, 5, 5);
            out.push(("AuxLogits.fc.weight".into(), vec![1000, c(768)]));
            out.push(("AuxLogits.fc.bias".into(), vec![1000]));
            1000
        }
        Layout::PytorchFid => 1008,
    };
    out.push(("fc.weight".into(), vec![classes, c(2048)]));
    out.push(("fc.bias".into(), vec![classes]));
    out
}

/// Element `i` of the tensor stored under `key` in the generated files: with
/// `u = sin(0.37·i + φ(key))`, `φ` = FNV-1a of the key mod 100000, / 1000, running
/// variances `1 + u/2`, running means `u/10`, batch-norm weights `1 + u/5` and biases `u/10`,
/// convolution weights `u·√(4 / fan-in)` (so activations keep their scale through the
/// network) and anything else `u/100`.
pub fn value(key: &str, shape: &[usize], i: usize) -> f32 {
    let phase = key.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % 100_000;
    let u = (0.37 * i as f64 + f64::from(phase) / 1000.0).sin();
    let v = if key.ends_with(".running_var") {
        1.0 + 0.5 * u
    } else if key.ends_with(".running_mean") || key.ends_with(".bn.bias") {
        0.1 * u
    } else if key.ends_with(".bn.weight") {
        1.0 + 0.2 * u
    } else if shape.len() == 4 {
        u * (4.0 / shape[1..].iter().product::<usize>() as f64).sqrt()
    } else {
        0.01 * u
    };
    v as f32
}

/// The entries of a state dict with [`value`]s (`num_batches_tracked` = 7).
pub fn entries(shapes: &[(String, Vec<usize>)]) -> Vec<Entry> {
    shapes
        .iter()
        .map(|(key, shape)| {
            let n = shape.iter().product();
            let data = if key.ends_with("num_batches_tracked") {
                Data::I64(vec![7; n])
            } else {
                Data::F32((0..n).map(|i| value(key, shape, i)).collect())
            };
            Entry {
                key: key.clone(),
                shape: shape.clone(),
                data,
            }
        })
        .collect()
}

/// Writes an Inception state dict of `layout` and width divisor `d` to `path`.
pub fn write_inception(path: &Path, layout: Layout, d: usize, container: Container) {
    let shapes = state_dict_shapes(layout, d, container == Container::Zip);
    pth::write_pth(path, &entries(&shapes), container).unwrap();
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gfla-eval-{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
