//! Activation-aware 4-bit quantization (AWQ): per-input-channel scales chosen from the
//! activations a model produces on calibration text.
//!
//! For a weight `W` `[N, K]` and a scale `s` `[K]`, the quantized model computes
//! `y = (x / s) · Q(W·diag(s))ᵀ`, which is `x·Wᵀ` up to the quantization error. Scaling up the
//! columns whose activations are large makes their weights lose less to rounding, at the cost of
//! the others. The steps:
//!
//! 1. [`calibrate`] runs the f32 model over calibration tokens and records, for every weight of a
//!    top-level `x · Wᵀ` product, the mean `|x|` of each input channel and a sample of rows.
//! 2. [`search_scales`] tries AWQ's grid of scales `mean|x|^α` (`α = 0` is plain
//!    round-to-nearest) and keeps the one with the smallest product error on the sampled rows;
//!    [`search_model`] does so for every calibrated weight of a checkpoint.
//! 3. [`AwqReport`] compares the chosen scales with round-to-nearest, per weight and in total.
//!
//! Guarantees: everything is deterministic (the same model, tokens and options give the same
//! scales, bit for bit, with any number of threads); the chosen error of every weight is at most
//! round-to-nearest's on the calibration rows; bad input is an [`AwqError`], never a panic.

mod calibrate;
mod error;
mod report;
mod search;
mod stats;

pub use calibrate::{calibrate, product_weights, Calibration, CalibrationOptions, ProductWeight, WeightStats};
pub use error::AwqError;
pub use report::{AwqReport, ReportRow};
pub use search::{alpha_grid, awq_scales, calibration_error, search_scales, AwqChoice};
pub use stats::ChannelStats;

use crate::checkpoint::Checkpoint;
use kiln_backend::quant::QuantScheme;

/// The scale chosen for one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledWeight {
    /// The weight's name in the checkpoint; the scale is stored beside it as `NAME.awq_scale`.
    pub name: String,
    /// `N`.
    pub rows: usize,
    /// `K`.
    pub cols: usize,
    /// Calibration rows the choice was made on.
    pub sampled_rows: usize,
    pub choice: AwqChoice,
}

/// Searches the scales of every weight `calibration` recorded, reading the weights from
/// `checkpoint` (the one calibrated), in the calibration's order.
pub fn search_model(
    checkpoint: &Checkpoint,
    calibration: &Calibration,
    format: QuantScheme,
    group: usize,
) -> Result<Vec<ScaledWeight>, AwqError> {
    calibration
        .weights
        .iter()
        .map(|w| {
            let values = checkpoint.tensor_f32(&w.name, &[w.rows, w.cols])?;
            let choice = search_scales(&w.name, &values, w.rows, w.cols, &w.stats, format, group)?;
            Ok(ScaledWeight {
                name: w.name.clone(),
                rows: w.rows,
                cols: w.cols,
                sampled_rows: w.stats.sampled_rows(),
                choice,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
