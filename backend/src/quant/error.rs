//! Everything that can go wrong when quantizing a weight or multiplying with a quantized one.
//! Every message is one line naming the offending shape, length, row or group.

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Error)]
pub enum QuantError {
    #[error("quantization group size must be at least 1, got 0")]
    ZeroGroup,
    #[error("weight of {rows} × {cols} needs {expected} values, got {actual}")]
    SizeMismatch { rows: usize, cols: usize, expected: usize, actual: usize },
    #[error("weight value at row {row}, column {col} is not finite ({value})")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("{what} of row {row}, group {group} ({value:e}) does not fit in f16 (largest 65504)")]
    F16Overflow { what: &'static str, row: usize, group: usize, value: f32 },
    #[error("{what} of a {rows} × {cols} {format} matrix (group {group}) has length {actual}, expected {expected}")]
    PartLength {
        what: &'static str,
        format: &'static str,
        rows: usize,
        cols: usize,
        group: usize,
        expected: usize,
        actual: usize,
    },
    #[error("a {rows} × {cols} q4_1 matrix needs minimums, none were given")]
    MissingMinimums { rows: usize, cols: usize },
    #[error("{what} of a {rows} × {cols} {format} matrix (group {group}) holds a non-finite value at index {index}")]
    PartNonFinite { what: &'static str, format: &'static str, rows: usize, cols: usize, group: usize, index: usize },
    #[error("product of activations with a dequantized weight tile: {0}")]
    TileProduct(String),
    #[error("product with a {rows} × {cols} quantized weight: {what} has length {actual}, expected {expected}")]
    OperandLength { what: &'static str, rows: usize, cols: usize, expected: usize, actual: usize },
}
