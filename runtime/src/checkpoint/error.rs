//! [`CheckpointError`]: every way loading or saving a checkpoint can fail, one line each.

use std::fmt;
use std::path::PathBuf;

use safetensors::Dtype;

/// An error from [`Checkpoint::open`](super::Checkpoint::open), the tensor accessors or
/// [`save`](super::save). Every message is a single line that names the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint directory does not exist.
    #[error("checkpoint directory {} does not exist", .dir.display())]
    DirMissing { dir: PathBuf },

    /// The checkpoint path exists but is not a directory.
    #[error("checkpoint path {} is not a directory", .dir.display())]
    NotADirectory { dir: PathBuf },

    /// There is no `config.json` in the checkpoint directory.
    #[error("no config.json in checkpoint directory {}", .dir.display())]
    ConfigMissing { dir: PathBuf },

    /// `config.json` or `model.safetensors.index.json` is not valid JSON.
    #[error("{}:{line}:{column}: invalid JSON: {message}", .path.display())]
    InvalidJson { path: PathBuf, line: usize, column: usize, message: String },

    /// Neither `model.safetensors` nor `model.safetensors.index.json` exists.
    #[error(
        "no weights in checkpoint directory {}: looked for model.safetensors and \
         model.safetensors.index.json{hint}",
        .dir.display()
    )]
    NoWeights {
        dir: PathBuf,
        /// Empty, or `"; found ..."` describing other weight-like files in the directory.
        hint: String,
    },

    /// `model.safetensors.index.json` is valid JSON but not a valid index.
    #[error("{}: {reason}", .path.display())]
    InvalidIndex { path: PathBuf, reason: String },

    /// The index maps a tensor to a shard file that does not exist.
    #[error(
        "{} maps `{tensor}` to {shard}, which does not exist",
        .index.display()
    )]
    MissingShard { index: PathBuf, tensor: String, shard: String },

    /// A `.safetensors` file is truncated or otherwise malformed.
    #[error("{}: corrupt safetensors file: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// An I/O operation failed.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        /// What was being done: `"open"`, `"read"`, `"map"`, `"write"`, ...
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The spec asked for a tensor the checkpoint does not hold.
    #[error("tensor `{name}` not found in {file}{}", Suggestion(.suggestion.as_deref()))]
    MissingTensor {
        name: String,
        /// `model.safetensors` or `model.safetensors.index.json`.
        file: String,
        /// A stored tensor with a similar name, if there is one.
        suggestion: Option<String>,
    },

    /// The stored shape differs from the one the spec declares.
    #[error("tensor `{name}` has shape {found:?} in {file} but the spec declares {expected:?}")]
    Shape { name: String, file: String, found: Vec<usize>, expected: Vec<usize> },

    /// The stored dtype cannot be converted to the requested element type.
    #[error(
        "tensor `{name}` in {file} has dtype {dtype}, which cannot be read as f32 \
         (supported: F32, F16, BF16, F64)"
    )]
    UnsupportedDtype { name: String, file: String, dtype: Dtype },

    /// A tensor read as raw bytes is stored with another dtype.
    #[error("tensor `{name}` in {file} has dtype {found}, expected {expected}")]
    WrongDtype { name: String, file: String, found: Dtype, expected: Dtype },

    /// [`save`](super::save) was given inconsistent tensors or an unusable path.
    #[error("cannot write {}: {reason}", .path.display())]
    InvalidSave { path: PathBuf, reason: String },
}

/// Formats `"; did you mean `x`?"`, or nothing.
struct Suggestion<'a>(Option<&'a str>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None => Ok(()),
        }
    }
}
