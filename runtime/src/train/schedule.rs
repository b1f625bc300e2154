//! The learning-rate schedule: linear warmup from 0, then cosine decay to a floor, computed as
//! transformers' `get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total,
//! min_lr=floor)` does (which is `get_cosine_schedule_with_warmup` when the floor is 0):
//!
//! ```text
//! lr(s) = peak · s / max(1, warmup)                                  s < warmup
//! lr(s) = peak · (f · (1 − floor/peak) + floor/peak),
//!         f = ½ (1 + cos(π · (s − warmup) / max(1, total − warmup)))  otherwise
//! ```
//!
//! `s` is the 0-based index of the optimizer step the rate is used for, so with a warmup the first
//! step has rate 0, exactly as a `LambdaLR` stepped after each `optimizer.step()` gives.

use super::TrainError;

/// Warmup then cosine decay to `floor`, over `total` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub peak: f64,
    pub floor: f64,
    pub warmup: u64,
    pub total: u64,
}

impl CosineSchedule {
    /// Checks `0 ≤ floor ≤ peak` (both finite) and `warmup ≤ total`.
    pub fn new(peak: f64, floor: f64, warmup: u64, total: u64) -> Result<CosineSchedule, TrainError> {
        if !(peak.is_finite() && peak > 0.0) {
            return Err(TrainError::InvalidOption(format!("the learning rate must be positive, not {peak}")));
        }
        if !(floor.is_finite() && (0.0..=peak).contains(&floor)) {
            return Err(TrainError::InvalidOption(format!(
                "the minimum learning rate must lie in [0, {peak}], not {floor}"
            )));
        }
        if warmup > total {
            return Err(TrainError::InvalidOption(format!(
                "{warmup} warmup steps do not fit in {total} training steps"
            )));
        }
        Ok(CosineSchedule { peak, floor, warmup, total })
    }

    /// The learning rate of the 0-based optimizer step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * (step as f64 / self.warmup.max(1) as f64);
        }
        let progress = (step - self.warmup) as f64 / (self.total - self.warmup).max(1) as f64;
        let rate = self.floor / self.peak;
        let factor = 0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos());
        self.peak * (factor * (1.0 - rate) + rate).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `optimizer.param_groups[0]["lr"]` before each of 12 steps of `torch.optim.AdamW(lr=1e-3)`
    /// under transformers 5.23.0's `get_cosine_schedule_with_warmup(opt, 3, 10)` and
    /// `get_cosine_with_min_lr_schedule_with_warmup(opt, 3, 10, min_lr=1e-4)` (Python `repr`).
    const TRANSFORMERS_NO_FLOOR: [f64; 12] = [
        0.0,
        0.0003333333333333333,
        0.0006666666666666666,
        0.001,
        0.0009504844339512095,
        0.0008117449009293668,
        0.0006112604669781572,
        0.00038873953302184284,
        0.00018825509907063325,
        4.9515566048790485e-05,
        0.0,
        4.951556604879043e-05,
    ];
    const TRANSFORMERS_FLOOR: [f64; 12] = [
        0.0,
        0.0003333333333333333,
        0.0006666666666666666,
        0.001,
        0.0009554359905560886,
        0.0008305704108364302,
        0.0006501344202803415,
        0.0004498655797196586,
        0.00026942958916356994,
        0.00014456400944391147,
        0.0001,
        0.0001445640094439114,
    ];

    #[test]
    fn matches_transformers_schedules() {
        for (floor, expected) in [(0.0, TRANSFORMERS_NO_FLOOR), (1e-4, TRANSFORMERS_FLOOR)] {
            let schedule = CosineSchedule::new(1e-3, floor, 3, 10).unwrap();
            for (step, want) in expected.iter().enumerate() {
                let got = schedule.lr(step as u64);
                assert!((got - want).abs() <= 1e-18, "floor {floor}, step {step}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        let schedule = CosineSchedule::new(0.5, 0.0, 0, 4).unwrap();
        assert_eq!(schedule.lr(0), 0.5);
        assert!((schedule.lr(2) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(CosineSchedule::new(0.0, 0.0, 0, 10).is_err());
        assert!(CosineSchedule::new(1e-3, 2e-3, 0, 10).is_err());
        assert!(CosineSchedule::new(1e-3, 0.0, 11, 10).is_err());
        assert!(CosineSchedule::new(f64::NAN, 0.0, 0, 10).is_err());
    }
}
