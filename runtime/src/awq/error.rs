//! What can go wrong while calibrating a model or searching AWQ scales. Every message is one
//! line naming the weight, shape, channel or row involved.

use kiln_backend::quant::QuantError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AwqError {
    /// Loading, compiling or running the model failed.
    #[error(transparent)]
    Model(#[from] Box<crate::Error>),
    #[error("calibration needs at least one token")]
    NoTokens,
    #[error("calibration {what} must be at least 1, got 0")]
    ZeroOption { what: &'static str },
    #[error("calibration runs the base model; unset the adapter")]
    AdapterGiven,
    #[error("activation statistics need at least one channel")]
    NoChannels,
    #[error("activation statistics need at least one row (the {channels} channels saw none)")]
    NoRows { channels: usize },
    #[error("{what} has {actual} values, which is not {expected}")]
    Length { what: String, expected: String, actual: usize },
    #[error("{what} holds a non-finite value ({value}) at index {index}")]
    NonFinite { what: String, index: usize, value: f32 },
    #[error("mean |x| of channel {channel} is negative ({value})")]
    NegativeMean { channel: usize, value: f32 },
    #[error("{what} has {actual} channels, but the weight has K = {expected} columns")]
    ChannelMismatch { what: String, expected: usize, actual: usize },
    #[error("weight `{weight}` of a product has type {found}, expected a matrix of fixed size")]
    WeightShape { weight: String, found: String },
    #[error("the product input of weight `{weight}` has type {found}, expected rows of {k} channels")]
    ProductShape { weight: String, found: String, k: usize },
    #[error("graph output `{0}` (a product's input) is missing or not f32")]
    MissingCapture(String),
    #[error("quantizing weight `{weight}`: {source}")]
    Quant { weight: String, source: QuantError },
    #[error("product while measuring the error of weight `{weight}`: {message}")]
    Product { weight: String, message: String },
}

impl From<crate::Error> for AwqError {
    fn from(e: crate::Error) -> AwqError {
        AwqError::Model(Box::new(e))
    }
}

impl From<crate::checkpoint::CheckpointError> for AwqError {
    fn from(e: crate::checkpoint::CheckpointError) -> AwqError {
        AwqError::Model(Box::new(crate::Error::Checkpoint(e)))
    }
}
