//! The runtime's errors. Each prints as one line that names what was wrong: the file, tensor,
//! node or token involved.

use crate::checkpoint::CheckpointError;
use kiln_backend::ExecError;
use kiln_frontend::Diagnostic;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The spec (or the config it was compiled against) is wrong; `Display` gives one line,
    /// [`Error::render`] the full diagnostic with the source excerpt.
    #[error("{}", .0.short())]
    Spec(#[from] Diagnostic),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Boxed: its variants carry several names and shapes.
    #[error(transparent)]
    Adapter(Box<crate::adapter::AdapterError>),
    /// A weight the spec declares is missing or misshaped in the checkpoint.
    #[error("{source} (declared at {declared})")]
    Weight { source: CheckpointError, declared: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("cannot compile kernels: {0}")]
    Jit(#[from] kiln_backend::jit::JitError),
    #[error(transparent)]
    Pass(#[from] kiln_passes::PassError),
    #[error(transparent)]
    Quantize(Box<kiln_passes::QuantizeError>),
    #[error(transparent)]
    Awq(Box<crate::awq::AwqError>),
    #[error("cannot build the training step: {0}")]
    Autodiff(Box<kiln_passes::AutodiffError>),
    #[error("the compiled graph is invalid (a Kiln bug): {0}")]
    Verify(#[from] kiln_ir::VerifyErrors),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config.json has no `model_type`; pass the spec with --spec")]
    NoModelType,
    #[error("no built-in spec for model_type `{model_type}` (known: {}); pass one with --spec", known.join(", "))]
    UnknownModelType { model_type: String, known: Vec<String> },
    #[error("token id {id} at position {position} is out of range: the vocabulary has {vocab} entries")]
    TokenOutOfRange { id: i64, position: usize, vocab: usize },
    #[error("no tokens given: a call needs at least one token")]
    NoTokens,
    #[error("this state belongs to {found}, but the model is {expected}")]
    WrongState { expected: String, found: String },
    #[error("the graph has no output named `{0}`")]
    MissingOutput(String),
    #[error("{0}")]
    Tokenizer(String),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error("{0}")]
    Usage(String),
}

impl From<crate::awq::AwqError> for Error {
    fn from(e: crate::awq::AwqError) -> Error {
        Error::Awq(Box::new(e))
    }
}

impl From<kiln_passes::AutodiffError> for Error {
    fn from(e: kiln_passes::AutodiffError) -> Error {
        Error::Autodiff(Box::new(e))
    }
}

impl From<crate::adapter::AdapterError> for Error {
    fn from(e: crate::adapter::AdapterError) -> Error {
        Error::Adapter(Box::new(e))
    }
}

impl Error {
    /// The full, multi-line rendering (source excerpt and notes for spec errors).
    pub fn render(&self) -> String {
        match self {
            Error::Spec(d) => d.to_string(),
            other => format!("error: {other}\n"),
        }
    }
}
