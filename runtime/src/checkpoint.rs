//! Loading a model directory as transformers' `save_pretrained` writes it.
//!
//! A checkpoint directory holds `config.json` and the weights, either in one `model.safetensors`
//! or in shards `model-0000i-of-0000n.safetensors` listed by `model.safetensors.index.json`
//! (`weight_map`: tensor name → shard file). [`Checkpoint::open`] parses the config, memory-maps
//! every weights file and validates its header. [`Checkpoint::tensor_f32`] then returns a tensor
//! as `f32`s: borrowed straight from the mapping when it is stored as aligned little-endian F32
//! (the usual case), converted from F16, BF16 or F64 (or copied, if unaligned) otherwise. Shapes
//! are checked strictly against what the spec declares.
//!
//! [`save`] and [`save_f32`] write safetensors files atomically, and [`write_atomically`] any
//! other file. [`read_tensors_f32`] reads a whole safetensors file on its own (an adapter's).
//!
//! Tied weights are not resolved here: `save_pretrained` drops a tied `lm_head.weight`, and the
//! model spec decides what to use instead (see [`Checkpoint::contains`]).

mod error;
mod save;
mod shard;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

pub use error::CheckpointError;
pub use safetensors::Dtype;
pub use save::{save, save_f32, save_with_metadata, write_atomically, TensorData};

use shard::Shard;

/// The single-file weights name.
const SINGLE: &str = "model.safetensors";
/// The sharded weights index name.
const INDEX: &str = "model.safetensors.index.json";

/// A stored tensor's element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

/// Where one tensor lives.
#[derive(Debug)]
struct Entry {
    shard: usize,
    info: TensorInfo,
    /// Absolute byte range in the shard's mapping.
    range: Range<usize>,
}

/// An opened checkpoint directory: its config, and its weights memory-mapped.
pub struct Checkpoint {
    dir: PathBuf,
    config: serde_json::Value,
    /// `model.safetensors` or `model.safetensors.index.json`, for error messages.
    weights: &'static str,
    shards: Vec<Shard>,
    /// Sorted by name.
    index: BTreeMap<String, Entry>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.shards.iter().map(|s| &s.file_name).collect::<Vec<_>>())
            .field("tensors", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Opens the checkpoint directory `dir`: parses `config.json`, then maps and validates
    /// `model.safetensors`, or, if that does not exist, `model.safetensors.index.json` and every
    /// shard it names. With an index, its `weight_map` decides which tensors exist and where;
    /// tensors a shard holds but the index does not list are ignored, as transformers does.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(CheckpointError::NotADirectory { dir: dir.to_path_buf() }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(CheckpointError::DirMissing { dir: dir.to_path_buf() })
            }
            Err(e) => return Err(CheckpointError::Io { op: "open", path: dir.to_path_buf(), source: e }),
        }

        let config_path = dir.join("config.json");
        let config_text = match std::fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(CheckpointError::ConfigMissing { dir: dir.to_path_buf() })
            }
            Err(e) => return Err(CheckpointError::Io { op: "read", path: config_path, source: e }),
        };
        let config = parse_json(&config_path, &config_text)?;

        let single = dir.join(SINGLE);
        let index_path = dir.join(INDEX);
        let (weights, shards, index) = if single.is_file() {
            let shard = shard::open(&single, SINGLE.to_string())?;
            let index = shard
                .tensors
                .iter()
                .map(|(name, info, range)| {
                    let entry = Entry { shard: 0, info: info.clone(), range: range.clone() };
                    (name.clone(), entry)
                })
                .collect();
            (SINGLE, vec![shard], index)
        } else if index_path.is_file() {
            let (shards, index) = open_sharded(dir, &index_path)?;
            (INDEX, shards, index)
        } else {
            return Err(CheckpointError::NoWeights { dir: dir.to_path_buf(), hint: no_weights_hint(dir) });
        };

        Ok(Checkpoint { dir: dir.to_path_buf(), config, weights, shards, index })
    }

    /// A checkpoint compiled into the binary (the demo model): `name` stands for its directory
    /// in messages. Weights are validated like a file's; unaligned F32 tensors are copied.
    pub fn from_static(name: &str, config_json: &str, weights: &'static [u8]) -> Result<Checkpoint, CheckpointError> {
        let dir = PathBuf::from(name);
        let config = parse_json(&dir.join("config.json"), config_json)?;
        let shard = shard::from_static(weights, &dir.join(SINGLE), SINGLE.to_string())?;
        let index = shard
            .tensors
            .iter()
            .map(|(name, info, range)| (name.clone(), Entry { shard: 0, info: info.clone(), range: range.clone() }))
            .collect();
        Ok(Checkpoint { dir, config, weights: SINGLE, shards: vec![shard], index })
    }

    /// The directory this checkpoint was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The whole of `config.json`.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// Every tensor's name, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }

    /// Whether the checkpoint holds a tensor called `name` (e.g. an untied `lm_head.weight`).
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The stored dtype and shape of `name`, if the checkpoint holds it.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|e| &e.info)
    }

    /// The tensor `name` as `f32`s in row-major order, after checking that its stored shape is
    /// exactly `expected_shape` (no implicit squeezing: `[1, 1, H]` is not `[H]`).
    ///
    /// Aligned little-endian F32 data is borrowed from the memory mapping without copying; F16,
    /// BF16 and F64 are converted (F64 rounds to nearest), and unaligned F32 is copied.
    pub fn tensor_f32(&self, name: &str, expected_shape: &[usize]) -> Result<Cow<'_, [f32]>, CheckpointError> {
        let (entry, shard) = self.entry(name, expected_shape)?;
        decode_f32(&shard.mmap[entry.range.clone()], entry.info.dtype, name, &shard.file_name)
    }

    /// Where tensor `name` lives, after checking that its stored shape is `expected_shape`.
    fn entry(&self, name: &str, expected_shape: &[usize]) -> Result<(&Entry, &Shard), CheckpointError> {
        let Some(entry) = self.index.get(name) else {
            return Err(CheckpointError::MissingTensor {
                name: name.to_string(),
                file: self.weights.to_string(),
                suggestion: suggest(name, self.index.keys().map(String::as_str)).map(str::to_string),
            });
        };
        let shard = &self.shards[entry.shard];
        if entry.info.shape != expected_shape {
            return Err(CheckpointError::Shape {
                name: name.to_string(),
                file: shard.file_name.clone(),
                found: entry.info.shape.clone(),
                expected: expected_shape.to_vec(),
            });
        }
        Ok((entry, shard))
    }
}

impl Checkpoint {
    /// The stored bytes of tensor `name` after checking its dtype and shape exactly (packed
    /// 4-bit weights and their f16 scales, see [`crate::quantized`]).
    pub fn tensor_bytes(&self, name: &str, dtype: Dtype, expected_shape: &[usize]) -> Result<&[u8], CheckpointError> {
        let (entry, shard) = self.entry(name, expected_shape)?;
        if entry.info.dtype != dtype {
            return Err(CheckpointError::WrongDtype {
                name: name.to_string(),
                file: shard.file_name.clone(),
                found: entry.info.dtype,
                expected: dtype,
            });
        }
        Ok(&shard.mmap[entry.range.clone()])
    }
}

/// A tensor read into memory: name, shape, values.
pub type OwnedTensor = (String, Vec<usize>, Vec<f32>);

/// Every tensor of one safetensors file (an adapter's weights), in name order, as owned `f32`s
/// with their shapes. The file is mapped and validated like a checkpoint's, and converted from
/// F16, BF16 or F64 like [`Checkpoint::tensor_f32`].
pub fn read_tensors_f32(path: &Path) -> Result<Vec<OwnedTensor>, CheckpointError> {
    let file_name = path.display().to_string();
    let shard = shard::open(path, file_name.clone())?;
    let mut out = Vec::with_capacity(shard.tensors.len());
    for (name, info, range) in &shard.tensors {
        let data = decode_f32(&shard.mmap[range.clone()], info.dtype, name, &file_name)?.into_owned();
        out.push((name.clone(), info.shape.clone(), data));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A stored tensor's bytes as `f32`s: borrowed when they are aligned little-endian F32.
fn decode_f32<'a>(bytes: &'a [u8], dtype: Dtype, name: &str, file: &str) -> Result<Cow<'a, [f32]>, CheckpointError> {
    Ok(match dtype {
        Dtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(values) if cfg!(target_endian = "little") => Cow::Borrowed(values),
            _ => convert::<4>(bytes, f32::from_le_bytes),
        },
        Dtype::F16 => convert::<2>(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => convert::<2>(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
        // Rounding to the nearest f32 is the intent.
        #[allow(clippy::cast_possible_truncation)]
        Dtype::F64 => convert::<8>(bytes, |b| f64::from_le_bytes(b) as f32),
        dtype => {
            return Err(CheckpointError::UnsupportedDtype { name: name.to_string(), file: file.to_string(), dtype })
        }
    })
}

/// Decodes little-endian `N`-byte elements.
fn convert<const N: usize>(bytes: &[u8], decode: impl Fn([u8; N]) -> f32) -> Cow<'static, [f32]> {
    let (chunks, rest) = bytes.as_chunks::<N>();
    debug_assert!(rest.is_empty(), "byte ranges are validated against the dtype");
    Cow::Owned(chunks.iter().map(|c| decode(*c)).collect())
}

/// Parses a JSON file, reporting errors as `file:line:column`.
pub(crate) fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value, CheckpointError> {
    serde_json::from_str(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        let mut message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        if python_nonfinite_at(text, line, column) {
            message.push_str(
                " (bare Infinity/NaN is Python's non-standard JSON; write \
                 {\"__float__\": \"Infinity\"} as transformers 5 does)",
            );
        }
        CheckpointError::InvalidJson { path: path.to_path_buf(), line, column, message }
    })
}

/// Whether the JSON error at 1-based `line`:`column` sits on a bare `Infinity`, `-Infinity` or
/// `NaN`, which Python's `json` writes but JSON does not allow.
fn python_nonfinite_at(text: &str, line: usize, column: usize) -> bool {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1)) else {
        return false;
    };
    // serde_json reports the column of the offending character or the one just after it.
    let start = column.saturating_sub(2).min(line_text.len());
    let Some(around) = line_text.get(start..) else {
        return false;
    };
    let around = around.trim_start_matches([' ', ':', ',', '[', '-']);
    around.starts_with("Infinity") || around.starts_with("NaN")
}

/// What else the directory holds, when it has no safetensors weights.
fn no_weights_hint(dir: &Path) -> String {
    let mut found = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") || name.ends_with(".bin") || name.ends_with(".pt") {
                found.insert(name);
            }
        }
    }
    if found.is_empty() {
        return String::new();
    }
    let list: Vec<_> = found.iter().map(String::as_str).collect();
    let mut hint = format!("; found only {}", list.join(", "));
    if found.iter().any(|n| !n.ends_with(".safetensors")) {
        hint.push_str(" (PyTorch pickles are not supported: re-save with safe_serialization=True)");
    }
    hint
}

/// Reads `model.safetensors.index.json` and opens every shard it names.
fn open_sharded(dir: &Path, index_path: &Path) -> Result<(Vec<Shard>, BTreeMap<String, Entry>), CheckpointError> {
    let invalid = |reason: String| CheckpointError::InvalidIndex { path: index_path.to_path_buf(), reason };
    let text = std::fs::read_to_string(index_path).map_err(|e| CheckpointError::Io {
        op: "read",
        path: index_path.to_path_buf(),
        source: e,
    })?;
    let json = parse_json(index_path, &text)?;
    let Some(weight_map) = json.get("weight_map").and_then(|w| w.as_object()) else {
        return Err(invalid("no `weight_map` object".to_string()));
    };

    // Shard file name → the tensors the index puts there.
    let mut by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, file) in weight_map {
        let Some(file) = file.as_str() else {
            return Err(invalid(format!("weight_map entry for `{name}` is {file}, not a file name")));
        };
        let plain = !file.is_empty() && Path::new(file).components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(invalid(format!(
                "weight_map maps `{name}` to `{file}`, which is not a file name inside the \
                 checkpoint directory"
            )));
        }
        by_shard.entry(file).or_default().push(name);
    }

    let mut shards = Vec::with_capacity(by_shard.len());
    let mut index = BTreeMap::new();
    for (file, names) in by_shard {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(CheckpointError::MissingShard {
                index: index_path.to_path_buf(),
                tensor: names[0].to_string(),
                shard: file.to_string(),
            });
        }
        let shard = shard::open(&path, file.to_string())?;
        let held: BTreeMap<&str, (&TensorInfo, &Range<usize>)> =
            shard.tensors.iter().map(|(n, info, range)| (n.as_str(), (info, range))).collect();
        for name in names {
            let Some((info, range)) = held.get(name) else {
                return Err(invalid(format!("weight_map maps `{name}` to {file}, which does not contain it")));
            };
            let entry = Entry { shard: shards.len(), info: (*info).clone(), range: (*range).clone() };
            index.insert(name.to_string(), entry);
        }
        shards.push(shard);
    }
    Ok((shards, index))
}

/// A stored name similar to the missing `name`: one that differs only by leading dotted
/// components (`model.x.weight` vs `backbone.x.weight` vs `x.weight`), or else the closest within
/// edit distance 2 (`embedding` vs `embeddings`).
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    let is_suffix = |long: &str, short: &str| {
        short.contains('.')
            && long.len() > short.len()
            && long.ends_with(short)
            && long.as_bytes()[long.len() - short.len() - 1] == b'.'
    };
    let tail = |s: &'a str| s.split_once('.').map(|(_, t)| t).filter(|t| t.contains('.'));
    let name_tail = name.split_once('.').map(|(_, t)| t).filter(|t| t.contains('.'));
    if let Some(c) = candidates
        .clone()
        .find(|&c| is_suffix(c, name) || is_suffix(name, c) || (name_tail.is_some() && tail(c) == name_tail))
    {
        return Some(c);
    }
    // A name that differs only in its numbers is another layer's tensor, not a typo.
    let shape_of = |s: &str| s.chars().filter(|c| !c.is_ascii_digit()).collect::<String>();
    let name_shape = shape_of(name);
    candidates
        .filter(|c| c.len().abs_diff(name.len()) <= 2 && shape_of(c) != name_shape)
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
