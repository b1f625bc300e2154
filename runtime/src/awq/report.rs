//! The comparison of AWQ against plain round-to-nearest on the calibration rows: per weight, the
//! exponent chosen and both errors relative to the product's energy `‖X·Wᵀ‖²`, and the totals.

use super::ScaledWeight;
use kiln_backend::quant::QuantScheme;
use std::fmt::Write;

/// One weight's line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportRow {
    pub name: String,
    /// `N`.
    pub rows: usize,
    /// `K`.
    pub cols: usize,
    /// Calibration rows the errors were measured on.
    pub sampled_rows: usize,
    pub alpha: f32,
    pub error_rtn: f64,
    pub error_awq: f64,
    /// `‖X·Wᵀ‖²` over the same rows.
    pub reference: f64,
}

impl ReportRow {
    /// Round-to-nearest's squared error relative to the product's (0 for a zero product).
    pub fn relative_rtn(&self) -> f64 {
        relative(self.error_rtn, self.reference)
    }

    /// AWQ's squared error relative to the product's.
    pub fn relative_awq(&self) -> f64 {
        relative(self.error_awq, self.reference)
    }
}

/// The whole comparison for one format and group size.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqReport {
    pub format: QuantScheme,
    pub group: usize,
    pub rows: Vec<ReportRow>,
}

impl AwqReport {
    /// The report of `weights`, searched for `format` with groups of `group`.
    pub fn new(format: QuantScheme, group: usize, weights: &[ScaledWeight]) -> AwqReport {
        let rows = weights
            .iter()
            .map(|w| ReportRow {
                name: w.name.clone(),
                rows: w.rows,
                cols: w.cols,
                sampled_rows: w.sampled_rows,
                alpha: w.choice.alpha,
                error_rtn: w.choice.error_rtn,
                error_awq: w.choice.error_awq,
                reference: w.choice.reference,
            })
            .collect();
        AwqReport { format, group, rows }
    }

    /// Sum of the round-to-nearest errors over all weights.
    pub fn total_rtn(&self) -> f64 {
        self.rows.iter().map(|r| r.error_rtn).sum()
    }

    /// Sum of the AWQ errors over all weights.
    pub fn total_awq(&self) -> f64 {
        self.rows.iter().map(|r| r.error_awq).sum()
    }

    /// Mean over weights of the relative errors (round-to-nearest, AWQ): every weight counts
    /// the same, however large its products.
    pub fn mean_relative(&self) -> (f64, f64) {
        let n = self.rows.len().max(1) as f64;
        let rtn = self.rows.iter().map(ReportRow::relative_rtn).sum::<f64>() / n;
        let awq = self.rows.iter().map(ReportRow::relative_awq).sum::<f64>() / n;
        (rtn, awq)
    }

    /// Weights whose chosen scale is not plain round-to-nearest (`α > 0`).
    pub fn improved(&self) -> usize {
        self.rows.iter().filter(|r| r.alpha > 0.0).count()
    }

    /// A text table: one line per weight (relative squared errors, AWQ's as a fraction of
    /// round-to-nearest's), then the totals.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.name.len()).chain(["weight".len(), "mean".len()]).max().unwrap_or(6);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "AWQ vs round-to-nearest, {} group {} (errors ‖XWᵀ − X̂Ŵᵀ‖² / ‖XWᵀ‖² on the calibration rows)",
            self.format, self.group
        );
        let _ = writeln!(
            s,
            "{:<width$}  {:>12}  {:>5}  {:>5}  {:>10}  {:>10}  {:>7}",
            "weight", "N × K", "rows", "α", "RTN", "AWQ", "AWQ/RTN"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<width$}  {:>12}  {:>5}  {:>5.2}  {:>10.3e}  {:>10.3e}  {:>7.3}",
                r.name,
                format!("{} × {}", r.rows, r.cols),
                r.sampled_rows,
                r.alpha,
                r.relative_rtn(),
                r.relative_awq(),
                ratio(r.error_awq, r.error_rtn)
            );
        }
        let (rtn, awq) = self.mean_relative();
        let _ = writeln!(
            s,
            "{:<width$}  {:>12}  {:>5}  {:>5}  {:>10.3e}  {:>10.3e}  {:>7.3}",
            "mean",
            format!("{} weights", self.rows.len()),
            "",
            "",
            rtn,
            awq,
            ratio(awq, rtn)
        );
        let _ = writeln!(
            s,
            "total squared error: RTN {:.4e}, AWQ {:.4e} (×{:.3}); {} of {} weights chose α > 0",
            self.total_rtn(),
            self.total_awq(),
            ratio(self.total_awq(), self.total_rtn()),
            self.improved(),
            self.rows.len()
        );
        s
    }
}

fn relative(error: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        error / reference
    } else {
        0.0
    }
}

/// `a / b`, or 1 when both are zero.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        1.0
    }
}
