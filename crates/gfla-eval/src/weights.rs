//! Reading user-supplied PyTorch `.pth` state dicts into this crate's networks ([`crate::lpips`],
//! [`crate::inception`]) through explicit key maps (module path → file key), so that whatever
//! does not fit is reported by the file's own key names.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::burn_pack::Tensor as FileTensor;
use burn::store::{ApplyError, ModuleSnapshot, ModuleStore, PytorchStore};

/// Every tensor of a file, by its key in the file.
pub type FileTensors = BTreeMap<String, FileTensor>;

/// Reads the tensors of a PyTorch checkpoint (any container burn-store reads: the zip format of
/// PyTorch ≥ 1.6 and the legacy pickle stream before it). The error is a one-line reason.
pub fn read_pth(path: &Path) -> Result<FileTensors, String> {
    if !path.is_file() {
        return Err("no such file".into());
    }
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    store.get_all_tensors().cloned().map_err(|e| e.to_string())
}

/// What did not fit when applying a file to a network, by file key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Misfit {
    /// Parameters of the network the file lacks (their expected file keys).
    pub missing: Vec<String>,
    /// Keys of the file that belong to nothing in the network.
    pub unexpected: Vec<String>,
    /// Keys whose tensor has the wrong shape: `key (network [..], file [..])`.
    pub shapes: Vec<String>,
}

impl Misfit {
    /// Nothing missing, unexpected or mis-shaped.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }

    /// `; 2 missing: a, b; 1 unexpected: c; ...` (empty when everything fits).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (what, items) in [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("with the wrong shape", &self.shapes),
        ] {
            if !items.is_empty() {
                out.push_str(&format!("; {} {what}: {}", items.len(), items.join(", ")));
            }
        }
        out
    }
}

/// Applies the tensors of `file` named in `names` (module path → file key) to `module`.
///
/// Parameters under `prefix` that the file does not fill are `missing`; file keys outside
/// `names` are `unexpected` when `is_unexpected(key)` says so (and silently ignored
/// otherwise); tensors of the wrong shape are listed in `shapes` and left unapplied.
pub fn apply_named<M: ModuleSnapshot>(
    module: &mut M,
    file: &FileTensors,
    names: &BTreeMap<String, String>,
    prefix: &str,
    is_unexpected: impl Fn(&str) -> bool,
) -> Misfit {
    let by_key: BTreeMap<&str, &str> = names
        .iter()
        .map(|(p, k)| (k.as_str(), p.as_str()))
        .collect();
    let mut tensors = vec![];
    let mut unexpected = vec![];
    for (key, tensor) in file {
        match by_key.get(key.as_str()) {
            Some(module_path) => {
                let mut t = tensor.clone();
                t.name = (*module_path).to_string();
                tensors.push(t);
            }
            None if is_unexpected(key) => unexpected.push(key.clone()),
            None => {}
        }
    }
    let result = module.apply(tensors, None, None, false);
    let file_name = |p: &String| names.get(p).unwrap_or(p).clone();
    let missing = result
        .missing
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(prefix))
        .map(file_name)
        .collect();
    let shapes = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "{} (network {:?}, file {:?})",
                file_name(path),
                expected.as_slice(),
                found.as_slice()
            ),
            e => e.to_string(),
        })
        .collect();
    unexpected.extend(result.unused.iter().map(file_name));
    Misfit {
        missing,
        unexpected,
        shapes,
    }
}
