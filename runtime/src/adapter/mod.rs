//! Adapters (LoRA) as peft saves them: a directory with `adapter_config.json` and
//! `adapter_model.safetensors`.
//!
//! An [`Adapter`] is a configuration and its tensors, held in memory as `f32` (adapters are
//! small, and a trainer updates them in place). [`Adapter::open`] reads a directory: the config is
//! checked ([`AdapterConfig`]), the weights file is mapped and validated by the checkpoint reader,
//! and tensor names are normalized to the form peft saves, without the adapter name: both
//! `….lora_A.weight` and the in-memory `….lora_A.default.weight` are accepted. [`Adapter::init`]
//! makes a fresh adapter for the tensors a model needs (their initial values come from the
//! adapter spec: for LoRA, A ~ U(±1/√in) and B = 0, peft's default, seeded), and [`Adapter::save`]
//! writes a directory `PeftModel.from_pretrained` loads, atomically, never over an existing
//! adapter unless asked.
//!
//! How an adapter changes a model is not here: `models/lora.toml` describes the rewrite, and
//! [`apply`] runs it over a model's graph (see [`crate::LoadOptions::adapter`]).

pub mod apply;
mod config;
mod error;

pub use apply::{apply_adapter, apply_adapter_spec, compile_spec_adapted, lora_graph, Compiled};
pub use config::{AdapterConfig, SUPPORTED_PEFT_TYPES};
pub use error::AdapterError;
pub use kiln_frontend::{AdapterWeight, InitRule};

use crate::checkpoint::{self, TensorData};
use crate::init::{fill, Init};
use crate::Error;
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

/// The config file of an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The adapter name peft inserts in tensor names in memory (and strips when saving).
const DEFAULT_NAME: &str = ".default";

/// One adapter tensor's values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An adapter: its configuration and its tensors by name (as peft saves them).
#[derive(Clone, PartialEq)]
pub struct Adapter {
    config: AdapterConfig,
    tensors: BTreeMap<String, AdapterTensor>,
    /// Where the tensors came from, for messages (`<dir>/adapter_model.safetensors`).
    source: String,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("config", &self.config)
            .field("tensors", &self.tensors.len())
            .field("source", &self.source)
            .finish()
    }
}

impl Adapter {
    /// Reads an adapter directory as `PeftModel.save_pretrained` writes it.
    pub fn open(dir: &Path) -> Result<Adapter, Error> {
        let config = read_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        if !path.is_file() {
            return Err(AdapterError::WeightsMissing { dir: dir.to_path_buf(), hint: weights_hint(dir) }.into());
        }
        let source = path.display().to_string();
        let mut tensors = BTreeMap::new();
        for (name, shape, data) in checkpoint::read_tensors_f32(&path)? {
            let name = without_adapter_name(&name);
            if tensors.insert(name.clone(), AdapterTensor { shape, data }).is_some() {
                return Err(AdapterError::DuplicateTensor { name, file: source }.into());
            }
        }
        Ok(Adapter { config, tensors, source })
    }

    /// An adapter from values held in memory; `.default` is removed from names as in [`Adapter::open`].
    pub fn from_tensors(
        config: AdapterConfig,
        tensors: impl IntoIterator<Item = (String, AdapterTensor)>,
    ) -> Result<Adapter, Error> {
        let source = "the in-memory adapter".to_string();
        let mut map = BTreeMap::new();
        for (name, t) in tensors {
            let name = without_adapter_name(&name);
            if map.insert(name.clone(), t).is_some() {
                return Err(AdapterError::DuplicateTensor { name, file: source }.into());
            }
        }
        Ok(Adapter { config, tensors: map, source })
    }

    /// A fresh adapter holding every tensor in `weights` (what [`lora_graph`] or
    /// [`crate::Model::adapter_weights`] lists), filled by its spec's `init` from a stream seeded
    /// by `seed` and the tensor's name.
    pub fn init(config: AdapterConfig, weights: &[AdapterWeight], seed: u64) -> Adapter {
        let tensors = weights
            .iter()
            .map(|w| {
                let init = match w.init {
                    InitRule::Constant(v) => Init::Constant(v as f32),
                    InitRule::Uniform { lo, hi } => Init::Uniform { lo: lo as f32, hi: hi as f32 },
                };
                let data = fill(init, &w.name, w.shape.iter().product(), seed);
                (w.name.clone(), AdapterTensor { shape: w.shape.clone(), data })
            })
            .collect();
        Adapter { config, tensors, source: "the in-memory adapter".into() }
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// Every tensor, by name (sorted).
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &AdapterTensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// A tensor by its name with or without `.default`.
    pub fn tensor(&self, name: &str) -> Option<&AdapterTensor> {
        self.tensors.get(&without_adapter_name(name))
    }

    /// A tensor's values to update in place (a training step).
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut AdapterTensor> {
        self.tensors.get_mut(&without_adapter_name(name))
    }

    /// Where the tensors came from, as messages name it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The values of `weight`, checked against the shape the model declares for it.
    pub(crate) fn values_for(&self, weight: &AdapterWeight) -> Result<&[f32], AdapterError> {
        let declared = weight.declared.to_string();
        let Some(t) = self.tensors.get(&weight.name) else {
            return Err(AdapterError::MissingTensor {
                name: weight.name.clone(),
                file: self.source.clone(),
                declared,
                suggestion: suggest(&weight.name, self.tensors.keys()),
            });
        };
        if t.shape != weight.shape {
            return Err(AdapterError::Shape {
                name: weight.name.clone(),
                file: self.source.clone(),
                found: t.shape.clone(),
                expected: weight.shape.clone(),
                declared,
            });
        }
        Ok(&t.data)
    }

    /// Checks that every tensor is one of `weights` (a file for another model or config is an error).
    pub(crate) fn check_all_used(&self, weights: &[AdapterWeight]) -> Result<(), AdapterError> {
        match self.tensors.keys().find(|n| !weights.iter().any(|w| &w.name == *n)) {
            Some(name) => Err(AdapterError::UnusedTensor {
                name: name.clone(),
                file: self.source.clone(),
                targets: self.config.target_modules.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Writes `dir/adapter_model.safetensors` (names without `.default`, as peft saves them) and
    /// `dir/adapter_config.json`, each atomically, creating `dir` if needed. An existing adapter in
    /// `dir` is only replaced with `force`.
    pub fn save(&self, dir: &Path, force: bool) -> Result<(), Error> {
        let (weights, config) = (dir.join(WEIGHTS_FILE), dir.join(CONFIG_FILE));
        if !force && (weights.exists() || config.exists()) {
            return Err(AdapterError::Exists { dir: dir.to_path_buf() }.into());
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let views: Vec<(&str, &[usize], TensorData<'_>)> =
            self.tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), TensorData::F32(&t.data))).collect();
        checkpoint::save(&weights, &views)?;
        let mut text = serde_json::to_string_pretty(&self.config.to_json())
            .map_err(|e| Error::Usage(format!("cannot encode {}: {e}", config.display())))?;
        text.push('\n');
        checkpoint::write_atomically(&config, text.as_bytes())?;
        Ok(())
    }
}

/// Reads and checks `dir/adapter_config.json`.
pub fn read_config(dir: &Path) -> Result<AdapterConfig, Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(AdapterError::NotADirectory { dir: dir.to_path_buf() }.into()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(AdapterError::DirMissing { dir: dir.to_path_buf() }.into())
        }
        Err(source) => return Err(Error::Io { path: dir.to_path_buf(), source }),
    }
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(AdapterError::ConfigMissing { dir: dir.to_path_buf() }.into())
        }
        Err(source) => return Err(Error::Io { path, source }),
    };
    let json = checkpoint::parse_json(&path, &text)?;
    Ok(AdapterConfig::from_json(&path, &json)?)
}

/// `….lora_A.default.weight` → `….lora_A.weight`: peft's in-memory name to its saved name.
fn without_adapter_name(name: &str) -> String {
    match name.strip_suffix(".weight").and_then(|n| n.strip_suffix(DEFAULT_NAME)) {
        Some(stem) => format!("{stem}.weight"),
        None => name.to_string(),
    }
}

/// A stored name for the same module under another prefix (`model.x.lora_A.weight` for
/// `base_model.model.x.lora_A.weight`, or the reverse), if there is one.
fn suggest<'a>(name: &str, mut names: impl Iterator<Item = &'a String>) -> Option<String> {
    let dotted_suffix = |long: &str, short: &str| {
        long.len() > short.len() && long.ends_with(short) && long.as_bytes()[long.len() - short.len() - 1] == b'.'
    };
    let key = |s: &'a str| s.strip_prefix("base_model.model.").unwrap_or(s);
    let wanted = name.strip_prefix("base_model.model.").unwrap_or(name);
    names.find(|n| key(n) == wanted || dotted_suffix(key(n), wanted) || dotted_suffix(wanted, key(n))).cloned()
}

/// What the directory holds instead of adapter_model.safetensors.
fn weights_hint(dir: &Path) -> String {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".bin") || n.ends_with(".pt"))
        .collect();
    found.sort();
    if found.is_empty() {
        return String::new();
    }
    let pickles = found.iter().any(|n| !n.ends_with(".safetensors"));
    let mut hint = format!("; found only {}", found.join(", "));
    if pickles {
        hint.push_str(" (PyTorch pickles are not supported: re-save with safe_serialization=True)");
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_names_are_stripped() {
        let n = "base_model.model.rwkv.blocks.0.attention.key.lora_A.default.weight";
        assert_eq!(without_adapter_name(n), "base_model.model.rwkv.blocks.0.attention.key.lora_A.weight");
        let saved = "base_model.model.x.lora_B.weight";
        assert_eq!(without_adapter_name(saved), saved);
    }
}
