//! [`TrainError`]: every way setting up or running training can fail, one line each, naming the
//! file, tensor, option or step involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// An option is out of its range (`--lr -1`, `--batch 0`, ...).
    #[error("invalid training option: {0}")]
    InvalidOption(String),
    /// A tensor handed to the trainer does not have its trainable's size.
    #[error("{what} for trainable `{name}` has {found} values, but its shape {shape:?} holds {expected}")]
    WrongSize { what: &'static str, name: String, shape: Vec<usize>, expected: usize, found: usize },
    /// A list of tensors (gradients, initial values, optimizer state) does not have one per trainable.
    #[error("{what}: {found} tensors for {expected} trainables")]
    TensorCount { what: &'static str, expected: usize, found: usize },
    /// A loss or gradient that is NaN or infinite: training cannot continue from it.
    #[error("step {step}: the {what} is not finite ({value}); lower --lr or set --clip")]
    NotFinite { step: u64, what: &'static str, value: f64 },
    /// The text has characters the vocabulary does not know, or token ids beyond the model's.
    #[error("{}: {reason}", .path.display())]
    Data { path: PathBuf, reason: String },
    /// The output directory holds files from an earlier run, and neither `force` nor `resume` was given.
    #[error("{} already holds {file}; pass --resume to continue that run or --force to start over", .dir.display())]
    OutDirInUse { dir: PathBuf, file: String },
    /// `resume` was asked for, but there is no training checkpoint to resume from.
    #[error("nothing to resume: {} does not exist", .path.display())]
    NoCheckpoint { path: PathBuf },
    /// The training checkpoint is unreadable or does not belong to this run.
    #[error("{}: {reason}", .path.display())]
    BadCheckpoint { path: PathBuf, reason: String },
    /// Resuming with options or data that differ from the checkpoint's would not continue the same run.
    #[error("cannot resume: {0}")]
    ResumeMismatch(String),
    /// Writing or reading a file failed.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}
