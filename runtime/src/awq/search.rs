//! AWQ's grid search for per-input-channel scales of one weight.
//!
//! For a weight `W` `[N, K]` and a scale `s` `[K]` (all positive), the quantized graph computes
//! `y = (x / s) · Q(W·diag(s))ᵀ`: column `k` of the weight is multiplied by `s[k]` before
//! round-to-nearest quantization, and the activations are divided by `s` before the product.
//! Channels whose activations are large get a larger share of the weight's precision. Following
//! AWQ, the candidates are `s_k = max(mean|x_k|^α, 10⁻⁴)`, normalized by `√(max(s)·min(s))`, for
//! `α ∈ {0, 0.05, …, 1}`; the one with the smallest calibration error wins.
//!
//! The calibration error of a scale is `‖X·Wᵀ − (X/s)·Q(W·diag(s))ᵀ‖²` (sum of squares) over the
//! sampled activation rows `X`. It is evaluated as `‖(X/s)·Eᵀ‖²` with `E = W·diag(s) − Q(W·diag(s))`,
//! which is the same quantity (`(X/s)·(W·diag(s))ᵀ = X·Wᵀ`) without the cancellation of
//! subtracting two nearly equal products. The weight is processed in blocks of rows in parallel
//! (quantization works row by row, so blocks quantize exactly as the whole matrix does), each
//! block's product through the JIT's f32 product; block sums are added in block order, so the
//! result does not depend on the number of threads.
//!
//! Guarantees: `α = 0` gives `s = 1` exactly, so its error is plain round-to-nearest's and the
//! chosen error is never above it; ties keep the smaller `α`. A candidate whose scaled weight
//! does not fit the format (an f16 scale overflow) is skipped; bad shapes, non-finite weights and
//! statistics that do not match the weight are errors, never panics.

use super::stats::finite;
use super::{AwqError, ChannelStats};
use kiln_backend::jit::{product, ProductDims};
use kiln_backend::quant::{quantize, QuantError, QuantScheme};
use rayon::prelude::*;

/// Weight rows per block of the error computation: one block is one `gemm` column tile.
const BLOCK_ROWS: usize = 512;

/// Number of grid steps: `α = i / ALPHA_STEPS` for `i` in `0..=ALPHA_STEPS`.
const ALPHA_STEPS: usize = 20;

/// Smallest scale before normalization, as in AWQ.
const MIN_SCALE: f32 = 1e-4;

/// The scales chosen for one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqChoice {
    /// `s` `[K]`, all positive: store `Q(W·diag(s))` and divide the activations by `s`.
    pub scale: Vec<f32>,
    /// The exponent the scale was made with (`0` means plain round-to-nearest).
    pub alpha: f32,
    /// Calibration error of plain round-to-nearest (`α = 0`).
    pub error_rtn: f64,
    /// Calibration error of the chosen scale (`≤ error_rtn`).
    pub error_awq: f64,
    /// `‖X·Wᵀ‖²` over the same rows, to make the errors relative.
    pub reference: f64,
}

/// The grid of exponents searched, from 0 to 1.
pub fn alpha_grid() -> impl Iterator<Item = f32> {
    (0..=ALPHA_STEPS).map(|i| i as f32 / ALPHA_STEPS as f32)
}

/// AWQ's scale for exponent `alpha`: `max(mean_abs^α, 10⁻⁴)`, divided by `√(max·min)`.
pub fn awq_scales(mean_abs: &[f32], alpha: f32) -> Result<Vec<f32>, AwqError> {
    if mean_abs.is_empty() {
        return Err(AwqError::NoChannels);
    }
    finite("mean |x|", mean_abs)?;
    if let Some((channel, &value)) = mean_abs.iter().enumerate().find(|(_, &v)| v < 0.0) {
        return Err(AwqError::NegativeMean { channel, value });
    }
    let raw: Vec<f32> = mean_abs.iter().map(|&m| m.powf(alpha).max(MIN_SCALE)).collect();
    finite("the unnormalized scales", &raw)?;
    let hi = raw.iter().copied().fold(f32::MIN, f32::max);
    let lo = raw.iter().copied().fold(f32::MAX, f32::min);
    let norm = (f64::from(hi) * f64::from(lo)).sqrt() as f32;
    let scale: Vec<f32> = raw.iter().map(|&s| s / norm).collect();
    finite("the scales", &scale)?;
    Ok(scale)
}

/// `‖X·Wᵀ − (X/s)·Q(W·diag(s))ᵀ‖²` for the weight `w` `[n, k]`, the rows `x` `[m, k]` and the
/// scale `s` `[k]` (see the module documentation). `weight` names the weight in errors.
#[allow(clippy::too_many_arguments)]
pub fn calibration_error(
    weight: &str,
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    scale: &[f32],
    format: QuantScheme,
    group: usize,
) -> Result<f64, AwqError> {
    check_weight(weight, w, n, k)?;
    check_channels("the scale", scale.len(), k)?;
    if !x.len().is_multiple_of(k) {
        return Err(AwqError::Length {
            what: "the activation rows".into(),
            expected: format!("a multiple of K = {k}"),
            actual: x.len(),
        });
    }
    let m = x.len() / k;
    let xs: Vec<f32> = x.chunks_exact(k).flat_map(|row| row.iter().zip(scale).map(|(&v, &s)| v / s)).collect();
    let blocks: Vec<f64> = w
        .par_chunks(BLOCK_ROWS * k)
        .map(|block| block_error(weight, block, k, &xs, m, scale, format, group))
        .collect::<Result<_, _>>()?;
    Ok(blocks.iter().sum())
}

/// The error of one block of weight rows (see [`calibration_error`]).
#[allow(clippy::too_many_arguments)]
fn block_error(
    weight: &str,
    block: &[f32],
    k: usize,
    xs: &[f32],
    m: usize,
    scale: &[f32],
    format: QuantScheme,
    group: usize,
) -> Result<f64, AwqError> {
    let rows = block.len() / k;
    let mut scaled: Vec<f32> =
        block.chunks_exact(k).flat_map(|row| row.iter().zip(scale).map(|(&v, &s)| v * s)).collect();
    let q = quantize(&scaled, rows, k, format, group)
        .map_err(|source| AwqError::Quant { weight: weight.into(), source })?;
    for (e, d) in scaled.iter_mut().zip(q.dequantize()) {
        *e -= d;
    }
    let mut out = vec![0.0; m * rows];
    product(ProductDims { rows: m, k, n: rows, transpose_rhs: true }, xs, &scaled, &mut out)
        .map_err(|e| AwqError::Product { weight: weight.into(), message: e.to_string() })?;
    Ok(out.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
}

/// `‖X·Wᵀ‖²` over the rows `x` (`[m, k]`).
fn reference_energy(weight: &str, w: &[f32], k: usize, x: &[f32]) -> Result<f64, AwqError> {
    let m = x.len() / k;
    let blocks: Vec<f64> = w
        .par_chunks(BLOCK_ROWS * k)
        .map(|block| {
            let rows = block.len() / k;
            let mut out = vec![0.0; m * rows];
            product(ProductDims { rows: m, k, n: rows, transpose_rhs: true }, x, block, &mut out)
                .map_err(|e| AwqError::Product { weight: weight.into(), message: e.to_string() })?;
            Ok(out.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
        })
        .collect::<Result<_, AwqError>>()?;
    Ok(blocks.iter().sum())
}

/// Searches AWQ's grid for the scale of the weight `w` `[n, k]` (named `weight` in errors)
/// that minimizes the calibration error over the sampled rows of `stats`.
pub fn search_scales(
    weight: &str,
    w: &[f32],
    n: usize,
    k: usize,
    stats: &ChannelStats,
    format: QuantScheme,
    group: usize,
) -> Result<AwqChoice, AwqError> {
    check_weight(weight, w, n, k)?;
    check_channels(&format!("the statistics of `{weight}`"), stats.channels(), k)?;
    let x = stats.rows();
    let reference = reference_energy(weight, w, k, x)?;
    let ones = awq_scales(stats.mean_abs(), 0.0)?;
    let error_rtn = calibration_error(weight, w, n, k, x, &ones, format, group)?;
    let mut best = AwqChoice { scale: ones, alpha: 0.0, error_rtn, error_awq: error_rtn, reference };
    for alpha in alpha_grid().skip(1) {
        let scale = awq_scales(stats.mean_abs(), alpha)?;
        let error = match calibration_error(weight, w, n, k, x, &scale, format, group) {
            Ok(e) => e,
            Err(AwqError::Quant { source: QuantError::F16Overflow { .. }, .. }) => continue,
            Err(e) => return Err(e),
        };
        if error < best.error_awq {
            best = AwqChoice { scale, alpha, error_rtn, error_awq: error, reference };
        }
    }
    Ok(best)
}

fn check_weight(weight: &str, w: &[f32], n: usize, k: usize) -> Result<(), AwqError> {
    if k == 0 {
        return Err(AwqError::NoChannels);
    }
    if n.checked_mul(k) != Some(w.len()) {
        return Err(AwqError::Length {
            what: format!("weight `{weight}`"),
            expected: format!("{n} × {k}"),
            actual: w.len(),
        });
    }
    finite(&format!("weight `{weight}`"), w)
}

fn check_channels(what: &str, actual: usize, k: usize) -> Result<(), AwqError> {
    if actual == k {
        Ok(())
    } else {
        Err(AwqError::ChannelMismatch { what: what.into(), expected: k, actual })
    }
}
