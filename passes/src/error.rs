//! Errors of the pass pipeline.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PassError {
    #[error("no pass is named `{name}` (the passes are: {})", known.join(", "))]
    UnknownPass { name: String, known: Vec<String> },
    #[error("pass `{0}` is required and cannot be disabled")]
    Required(&'static str),
    #[error("pass `{pass}` left an invalid graph: {errors}")]
    Verify { pass: &'static str, errors: kiln_ir::VerifyErrors },
    #[error("pass `{pass}`: {message}")]
    Failed { pass: &'static str, message: String },
}
