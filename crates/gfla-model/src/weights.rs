//! Loading and saving weights: official PyTorch checkpoints (`latest_net_G.pth`, legacy or zip
//! format) and native safetensors files.
//!
//! The whole correspondence between the official state-dict keys and this crate's module paths is
//! [`generator_path`]: one function, no regular expressions spread over the code base.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use burn::store::{ApplyResult, ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore};

use crate::discriminator::Discriminator;
use crate::flow::FLOW_ENCODER_LAYERS;
use crate::generator::{Generator, GeneratorConfig, RENDER_LAYERS};

/// Why a checkpoint could not be loaded.
#[derive(Debug)]
pub enum WeightsError {
    /// The file could not be read or parsed.
    Read { path: String, message: String },
    /// The checkpoint does not fit the network built from the config.
    Mismatch {
        path: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        shapes: Vec<String>,
    },
    /// Two alias keys of one tensor (`conv1.*` and `model.2.*`) hold different values.
    AliasConflict {
        path: String,
        key: String,
        alias: String,
    },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, message } => write!(f, "cannot read weights {path}: {message}"),
            Self::Mismatch {
                path,
                missing,
                unexpected,
                shapes,
            } => {
                write!(f, "weights {path} do not fit this network configuration")?;
                let mut list = |what: &str, items: &[String]| -> fmt::Result {
                    if !items.is_empty() {
                        write!(f, "; {} {what}: {}", items.len(), items.join(", "))?;
                    }
                    Ok(())
                };
                list("missing", missing)?;
                list("unexpected", unexpected)?;
                list("with the wrong shape", shapes)
            }
            Self::AliasConflict { path, key, alias } => {
                write!(
                    f,
                    "weights {path}: alias keys {key} and {alias} hold different values"
                )
            }
        }
    }
}

impl std::error::Error for WeightsError {}

/// Norm parameters are `weight`/`bias` in PyTorch and `gamma`/`beta` in Burn.
fn norm_param(param: &str) -> Option<&'static str> {
    match param {
        "weight" => Some("gamma"),
        "bias" => Some("beta"),
        _ => None,
    }
}

fn conv_param(param: &str) -> Option<&'static str> {
    match param {
        "weight" => Some("weight"),
        "bias" => Some("bias"),
        _ => None,
    }
}

/// `model.{0,2,3,5}` of the official EncoderBlock / ResBlock / ResBlockDecoder sequentials.
fn sequential_layer(index: &str, last: &'static str, param: &str) -> Option<String> {
    let (name, p) = match index {
        "0" => ("norm1", norm_param(param)?),
        "2" => ("conv1", conv_param(param)?),
        "3" => ("norm2", norm_param(param)?),
        "5" => (last, conv_param(param)?),
        _ => return None,
    };
    Some(format!("{name}.{p}"))
}

/// The official encoder block names: `block0` is the stem, `encoder{i}` is `encoders.{i}`.
fn block_path(name: &str) -> Option<String> {
    match name {
        "block0" => Some("stem".to_string()),
        name => Some(format!(
            "encoders.{}",
            name.strip_prefix("encoder")?.parse::<usize>().ok()?
        )),
    }
}

/// The encoder blocks `block0` / `encoder{i}` of an encoder at `base`.
fn encoder_path(base: &str, parts: &[&str]) -> Option<String> {
    let block = block_path(parts.first()?)?;
    match parts[1..] {
        ["model", i, p] => Some(format!(
            "{base}{block}.{}",
            sequential_layer(i, "conv2", p)?
        )),
        _ => None,
    }
}

/// Whether an official key is the redundant alias (`model.2.*`) of a `conv1.*` key.
fn alias_of(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let is_alias = matches!(parts.as_slice(), ["flow_net", j, "model", "2", _] if j.starts_with("jump"))
        || matches!(parts.as_slice(), ["target", "outconv", "model", "2", _]);
    is_alias.then(|| {
        let n = parts.len();
        format!("{}.conv1.{}", parts[..n - 3].join("."), parts[n - 1])
    })
}

/// The module path of an official `PoseGenerator` (or stage-1 `PoseFlowNetGenerator`) key, or
/// `None` if the key has no place in a generator built from `config`.
///
/// This is the one place that knows both namings; for example
/// `target.decoder1.0.model.0.model.2.weight` is `renderer.decoders.1.res.conv1.weight` and
/// `flow_net.jump0.conv1.bias` is `flow.jumps.0.conv.bias`.
pub fn generator_path(key: &str, config: &GeneratorConfig) -> Option<String> {
    let key = key.strip_prefix("module.").unwrap_or(key);
    let parts: Vec<&str> = key.split('.').collect();
    let index = |name: &str, prefix: &str| name.strip_prefix(prefix)?.parse::<usize>().ok();
    match parts.as_slice() {
        ["source", rest @ ..] => encoder_path("source.", rest),
        ["target", name, ..] if *name == "block0" || name.starts_with("encoder") => {
            encoder_path("renderer.encoder.", &parts[1..])
        }
        ["target", dec, "0", "model", "0", "model", i, p] => {
            let d = index(dec, "decoder").filter(|d| *d < RENDER_LAYERS)?;
            Some(format!(
                "renderer.decoders.{d}.res.{}",
                sequential_layer(i, "conv2", p)?
            ))
        }
        ["target", dec, "1", "model", i, p] => {
            let d = index(dec, "decoder").filter(|d| *d < RENDER_LAYERS)?;
            Some(format!(
                "renderer.decoders.{d}.up.{}",
                sequential_layer(i, "up", p)?
            ))
        }
        ["target", dec, "1", "shortcut", "0", p] => {
            let d = index(dec, "decoder").filter(|d| *d < RENDER_LAYERS)?;
            Some(format!(
                "renderer.decoders.{d}.up.shortcut.{}",
                conv_param(p)?
            ))
        }
        ["target", attn, "fully_connect_layer", i, p] => {
            // attn{i} sits before renderer decoder stage i, i.e. at layer RENDER_LAYERS - i.
            let layer = RENDER_LAYERS.checked_sub(index(attn, "attn")?)?;
            let j = coarse_to_fine_rank(config, layer)?;
            let conv = match *i {
                "0" => "fuse",
                "2" => "logits",
                _ => return None,
            };
            Some(format!(
                "renderer.attention.{j}.attention.{conv}.{}",
                conv_param(p)?
            ))
        }
        ["target", "outconv", "conv1", p] => {
            Some(format!("renderer.output.conv.{}", conv_param(p)?))
        }
        ["flow_net", name, ..] if *name == "block0" || name.starts_with("encoder") => {
            encoder_path("flow.", &parts[1..])
        }
        ["flow_net", dec, "model", i, p] => {
            let d = index(dec, "decoder")?;
            Some(format!(
                "flow.decoders.{d}.{}",
                sequential_layer(i, "up", p)?
            ))
        }
        ["flow_net", dec, "shortcut", "0", p] => {
            let d = index(dec, "decoder")?;
            Some(format!("flow.decoders.{d}.shortcut.{}", conv_param(p)?))
        }
        ["flow_net", jump, "conv1", p] => Some(format!(
            "flow.jumps.{}.conv.{}",
            index(jump, "jump")?,
            conv_param(p)?
        )),
        ["flow_net", head, rest @ ..] if head.starts_with("output") || head.starts_with("mask") => {
            let (stage, field, p) = match rest {
                [p] => (index(head, "output")?, "flow", *p),
                ["0", p] => (index(head, "mask")?, "mask", *p),
                _ => return None,
            };
            // Flow decoder stage i ends at layer FLOW_ENCODER_LAYERS - 1 - i.
            let layer = (FLOW_ENCODER_LAYERS - 1).checked_sub(stage)?;
            let j = coarse_to_fine_rank(config, layer)?;
            Some(format!("flow.heads.{j}.{field}.{}", conv_param(p)?))
        }
        _ => None,
    }
}

/// Position of attention layer `layer` among the configured ones ordered coarse to fine, which is
/// the order of the attention stages, flow heads, flows and masks.
fn coarse_to_fine_rank(config: &GeneratorConfig, layer: usize) -> Option<usize> {
    config
        .coarse_to_fine()
        .iter()
        .position(|a| a.layer == layer)
}

/// A tensor read from a checkpoint.
pub(crate) type StoredTensor = burn::store::burn_pack::Tensor;

/// Reads every tensor of a PyTorch checkpoint (legacy or zip format) under its own key.
pub(crate) fn read_pytorch(path: &Path) -> Result<BTreeMap<String, StoredTensor>, WeightsError> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(WeightsError::Read {
            path: shown,
            message: "no such file".into(),
        });
    }
    // Official keys keep the gaps of their nn.Sequential indices (model.0, model.2, ...).
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    store
        .get_all_tensors()
        .cloned()
        .map_err(|e| WeightsError::Read {
            path: shown,
            message: e.to_string(),
        })
}

/// Tensors renamed to module paths, with the checkpoint key each came from.
pub(crate) struct Renamed {
    pub tensors: Vec<StoredTensor>,
    /// Checkpoint keys with no place in the module.
    pub unexpected: Vec<String>,
    /// Module path -> checkpoint key, to report problems in the checkpoint's own names.
    pub origin: BTreeMap<String, String>,
}

/// Renames the stored tensors that `path_of` places, and lists the keys it does not.
pub(crate) fn rename(
    all: &BTreeMap<String, StoredTensor>,
    path_of: impl Fn(&str) -> Option<String>,
) -> Renamed {
    let mut out = Renamed {
        tensors: vec![],
        unexpected: vec![],
        origin: BTreeMap::new(),
    };
    for (key, tensor) in all {
        match path_of(key) {
            Some(module_path) => {
                let mut t = tensor.clone();
                out.origin.insert(module_path.clone(), key.clone());
                t.name = module_path;
                out.tensors.push(t);
            }
            None => out.unexpected.push(key.clone()),
        }
    }
    out
}

/// Turns an apply result into an error unless every parameter was filled (except those
/// `may_miss` accepts), every key was used (unless `renamed` is `None`) and all shapes fit.
pub(crate) fn check_applied(
    path: &Path,
    result: &ApplyResult,
    renamed: Option<Renamed>,
    may_miss: impl Fn(&str) -> bool,
) -> Result<(), WeightsError> {
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| !may_miss(p))
        .collect();
    let shapes: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
    // Keys that were placed but found no parameter are reported under their checkpoint name.
    let unexpected: Vec<String> = renamed
        .map(|r| {
            let mut u = r.unexpected;
            u.extend(
                result
                    .unused
                    .iter()
                    .map(|p| r.origin.get(p).unwrap_or(p).clone()),
            );
            u.sort();
            u
        })
        .unwrap_or_default();
    if missing.is_empty() && shapes.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    Err(WeightsError::Mismatch {
        path: path.display().to_string(),
        missing,
        unexpected,
        shapes,
    })
}

/// Loads an official generator checkpoint (`latest_net_G.pth` of a `--model=pose` run, or the
/// stage-1 `PoseFlowNetGenerator` file into [`Generator::flow`] with `partial = true`) into `g`.
///
/// Alias keys are cross-checked and dropped, a `module.` prefix is tolerated. Unless `partial`,
/// every parameter must be filled and every key used; otherwise the error lists what is missing,
/// unexpected or of the wrong shape.
pub fn load_generator_checkpoint(
    g: &mut Generator,
    config: &GeneratorConfig,
    path: impl AsRef<Path>,
    partial: bool,
) -> Result<ApplyResult, WeightsError> {
    let path = path.as_ref();
    let mut all = read_pytorch(path)?;
    let aliases: Vec<(String, String)> = all
        .keys()
        .filter_map(|key| {
            alias_of(key)
                .filter(|p| all.contains_key(p))
                .map(|p| (key.clone(), p))
        })
        .collect();
    for (alias, primary) in aliases {
        let same = match (all[&alias].to_bytes(), all[&primary].to_bytes()) {
            (Ok(a), Ok(b)) => a[..] == b[..],
            _ => false,
        };
        if !same {
            let path = path.display().to_string();
            return Err(WeightsError::AliasConflict {
                path,
                key: primary,
                alias,
            });
        }
        all.remove(&alias);
    }
    let mut renamed = rename(&all, |key| generator_path(key, config));
    let result = g.apply(std::mem::take(&mut renamed.tensors), None, None, false);
    if partial {
        check_applied(path, &result, None, |_| true)?;
    } else {
        check_applied(path, &result, Some(renamed), |_| false)?;
    }
    Ok(result)
}

/// Loads an official `PoseGenerator` checkpoint, strictly (see [`load_generator_checkpoint`]).
pub fn load_generator(
    g: &mut Generator,
    config: &GeneratorConfig,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    load_generator_checkpoint(g, config, path, false).map(|_| ())
}

/// The module path of an official `ResDiscriminator` key (spectral norm on), or `None`.
/// `block0.model.1.weight_orig` is `stem.conv1.conv.weight`, `encoder1.shortcut.1.weight_u` is
/// `encoders.1.shortcut.u`, `conv.bias` is `head.conv.bias`.
pub fn discriminator_path(key: &str) -> Option<String> {
    let key = key.strip_prefix("module.").unwrap_or(key);
    let parts: Vec<&str> = key.split('.').collect();
    let param = |p: &str| match p {
        "weight_orig" => Some("conv.weight"),
        "bias" => Some("conv.bias"),
        "weight_u" => Some("u"),
        "weight_v" => Some("v"),
        _ => None,
    };
    match parts.as_slice() {
        ["conv", p] => Some(format!("head.{}", param(p)?)),
        [block, seq, i, p] => {
            let block = block_path(block)?;
            let conv = match (*seq, *i) {
                ("model", "1") => "conv1",
                ("model", "3") => "conv2",
                ("shortcut", "1") => "shortcut",
                _ => return None,
            };
            Some(format!("{block}.{conv}.{}", param(p)?))
        }
        _ => None,
    }
}

/// Loads an official discriminator checkpoint (`latest_net_D.pth`) into `d`, strictly. A stray
/// `weight` key (written by some PyTorch versions beside `weight_orig`) is ignored and a missing
/// `weight_v` is rebuilt from `weight_u` by one power step, as PyTorch's own loader does.
pub fn load_discriminator(
    d: &mut Discriminator,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let all = read_pytorch(path)?;
    let mut renamed = rename(&all, |key| {
        if key.ends_with(".weight") && all.contains_key(&format!("{key}_orig")) {
            // A stray copy of the normalised weight; PyTorch ignores it too.
            return Some(String::new());
        }
        discriminator_path(key)
    });
    let tensors: Vec<_> = std::mem::take(&mut renamed.tensors)
        .into_iter()
        .filter(|t| !t.name.is_empty())
        .collect();
    let result = d.apply(tensors, None, None, false);
    check_applied(path, &result, Some(renamed), |p| p.ends_with(".v"))?;
    if result.missing.iter().any(|(p, _)| p.ends_with(".v")) {
        for conv in d.spectral_convs() {
            conv.recompute_v();
        }
    }
    Ok(())
}

/// Saves any module natively as safetensors, under its own module paths.
pub fn save_safetensors<M: ModuleSnapshot>(
    module: &M,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let mut store = SafetensorsStore::from_file(path);
    module
        .save_into(&mut store)
        .map_err(|e| WeightsError::Read {
            path: path.display().to_string(),
            message: format!("cannot write: {e}"),
        })
}

/// Loads a native safetensors file written by [`save_safetensors`], strictly.
pub fn load_safetensors<M: ModuleSnapshot>(
    module: &mut M,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(WeightsError::Read {
            path: shown,
            message: "no such file".into(),
        });
    }
    let mut store = SafetensorsStore::from_file(path);
    let result = module
        .load_from(&mut store)
        .map_err(|e| WeightsError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    check_native(&shown, &result)
}

/// Strict check of a native load: every parameter filled, every tensor used.
pub(crate) fn check_native(origin: &str, result: &ApplyResult) -> Result<(), WeightsError> {
    let renamed = Renamed {
        tensors: vec![],
        unexpected: vec![],
        origin: BTreeMap::new(),
    };
    check_applied(Path::new(origin), result, Some(renamed), |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_keys_map_to_module_paths() {
        let fashion = GeneratorConfig::fashion();
        let cases = [
            ("source.block0.model.0.weight", "source.stem.norm1.gamma"),
            (
                "source.encoder1.model.5.bias",
                "source.encoders.1.conv2.bias",
            ),
            (
                "target.encoder0.model.3.bias",
                "renderer.encoder.encoders.0.norm2.beta",
            ),
            (
                "target.decoder1.0.model.0.model.2.weight",
                "renderer.decoders.1.res.conv1.weight",
            ),
            (
                "target.decoder2.1.model.5.weight",
                "renderer.decoders.2.up.up.weight",
            ),
            (
                "target.decoder0.1.shortcut.0.bias",
                "renderer.decoders.0.up.shortcut.bias",
            ),
            (
                "target.attn0.fully_connect_layer.0.weight",
                "renderer.attention.0.attention.fuse.weight",
            ),
            (
                "target.attn1.fully_connect_layer.2.bias",
                "renderer.attention.1.attention.logits.bias",
            ),
            ("target.outconv.conv1.weight", "renderer.output.conv.weight"),
            (
                "flow_net.encoder3.model.2.weight",
                "flow.encoders.3.conv1.weight",
            ),
            (
                "flow_net.decoder2.shortcut.0.weight",
                "flow.decoders.2.shortcut.weight",
            ),
            ("flow_net.jump0.conv1.bias", "flow.jumps.0.conv.bias"),
            ("flow_net.output1.weight", "flow.heads.0.flow.weight"),
            ("flow_net.mask2.0.bias", "flow.heads.1.mask.bias"),
            (
                "module.flow_net.block0.model.0.bias",
                "flow.stem.norm1.beta",
            ),
        ];
        for (key, path) in cases {
            assert_eq!(
                generator_path(key, &fashion).as_deref(),
                Some(path),
                "{key}"
            );
        }
        let market = GeneratorConfig::market();
        assert_eq!(
            generator_path("target.attn1.fully_connect_layer.0.weight", &market).as_deref(),
            Some("renderer.attention.0.attention.fuse.weight")
        );
        assert_eq!(
            generator_path("flow_net.output2.weight", &market).as_deref(),
            Some("flow.heads.0.flow.weight")
        );
        assert_eq!(generator_path("flow_net.output1.weight", &market), None);
        assert_eq!(
            generator_path("target.attn0.fully_connect_layer.0.weight", &market),
            None
        );
        assert_eq!(
            alias_of("flow_net.jump2.model.2.weight").as_deref(),
            Some("flow_net.jump2.conv1.weight")
        );
        assert_eq!(
            alias_of("target.outconv.model.2.bias").as_deref(),
            Some("target.outconv.conv1.bias")
        );
        assert_eq!(alias_of("target.outconv.conv1.bias"), None);
    }

    #[test]
    fn discriminator_keys_map_to_module_paths() {
        let cases = [
            ("block0.model.1.weight_orig", "stem.conv1.conv.weight"),
            ("block0.model.3.bias", "stem.conv2.conv.bias"),
            ("encoder1.shortcut.1.weight_u", "encoders.1.shortcut.u"),
            ("encoder2.model.1.weight_v", "encoders.2.conv1.v"),
            ("conv.weight_orig", "head.conv.weight"),
        ];
        for (key, path) in cases {
            assert_eq!(discriminator_path(key).as_deref(), Some(path), "{key}");
        }
        assert_eq!(discriminator_path("block0.model.2.weight"), None);
    }
}
