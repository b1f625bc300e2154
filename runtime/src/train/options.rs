//! [`TrainOptions`]: the hyperparameters of a run. They are saved in every training checkpoint,
//! and a resumed run must use the same ones except those that only change what is measured or
//! saved ([`TrainOptions::resume_conflicts`]).

use super::adamw::AdamWConfig;
use super::schedule::CosineSchedule;
use super::TrainError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Optimizer steps in the whole run (the schedule spans them).
    pub steps: u64,
    /// Sequences per step; the gradient is their mean.
    pub batch: usize,
    /// Tokens per sequence (`seq_len − 1` predictions).
    pub seq_len: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The floor the cosine decays to.
    pub min_lr: f64,
    /// Steps of linear warmup from 0.
    pub warmup: u64,
    /// AdamW's decoupled weight decay (applied to tensors of rank ≥ 2 only).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this; `None` does not clip.
    pub clip: Option<f64>,
    /// Measure the validation loss every this many steps (and after the last); 0: only after the last.
    pub val_every: u64,
    /// At most this many validation windows.
    pub val_windows: usize,
    /// Write a checkpoint every this many steps (and after the last); 0: only after the last.
    pub save_every: u64,
    /// Seeds the window sampler.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            steps: 500,
            batch: 8,
            seq_len: 128,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 20,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip: Some(1.0),
            val_every: 50,
            val_windows: 16,
            save_every: 100,
            seed: 0,
        }
    }
}

impl TrainOptions {
    /// The learning-rate schedule, checking the rates and step counts.
    pub fn schedule(&self) -> Result<CosineSchedule, TrainError> {
        if self.steps == 0 {
            return Err(TrainError::InvalidOption("a run needs at least one step".into()));
        }
        CosineSchedule::new(self.lr, self.min_lr, self.warmup, self.steps)
    }

    /// AdamW's configuration, checking its ranges.
    pub fn adamw(&self) -> Result<AdamWConfig, TrainError> {
        let bad = |what: &str, v: f64| Err(TrainError::InvalidOption(format!("{what} out of range: {v}")));
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1 (must be in [0, 1))", self.beta1);
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2 (must be in [0, 1))", self.beta2);
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps (must be ≥ 0)", self.eps);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("the weight decay (must be ≥ 0)", self.weight_decay);
        }
        Ok(AdamWConfig { beta1: self.beta1, beta2: self.beta2, eps: self.eps, weight_decay: self.weight_decay })
    }

    /// Checks every option (see [`TrainOptions::schedule`] and [`TrainOptions::adamw`]).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.schedule()?;
        self.adamw()?;
        if self.batch == 0 {
            return Err(TrainError::InvalidOption("the batch needs at least one sequence".into()));
        }
        if self.seq_len < 2 {
            return Err(TrainError::InvalidOption(format!(
                "a sequence needs at least 2 tokens (one prediction), not {}",
                self.seq_len
            )));
        }
        if let Some(c) = self.clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(TrainError::InvalidOption(format!("the clipping norm must be positive, not {c}")));
        }
        Ok(())
    }

    /// The options of `self` that differ from `saved` and would make a resumed run differ from an
    /// uninterrupted one (all but `val_every`, `val_windows` and `save_every`), as `name: saved → now`.
    pub fn resume_conflicts(&self, saved: &TrainOptions) -> Vec<String> {
        let mut now = self.clone();
        now.val_every = saved.val_every;
        now.val_windows = saved.val_windows;
        now.save_every = saved.save_every;
        let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
            (serde_json::to_value(saved), serde_json::to_value(&now))
        else {
            return vec!["the options cannot be compared".into()];
        };
        a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {v} → {}", b[k])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        TrainOptions::default().validate().unwrap();
        let bad = |o: TrainOptions| o.validate().unwrap_err().to_string();
        assert!(bad(TrainOptions { batch: 0, ..Default::default() }).contains("batch"));
        assert!(bad(TrainOptions { steps: 0, ..Default::default() }).contains("one step"));
        assert!(bad(TrainOptions { clip: Some(-1.0), ..Default::default() }).contains("clipping"));
        assert!(bad(TrainOptions { beta2: 1.0, ..Default::default() }).contains("beta2"));
        assert!(bad(TrainOptions { min_lr: 1.0, ..Default::default() }).contains("minimum learning rate"));
    }

    #[test]
    fn resume_conflicts_ignore_measurement_options() {
        let saved = TrainOptions::default();
        let now = TrainOptions { val_every: 7, save_every: 3, val_windows: 1, ..saved.clone() };
        assert!(now.resume_conflicts(&saved).is_empty());
        let now = TrainOptions { lr: 0.5, seed: 9, ..saved.clone() };
        assert_eq!(now.resume_conflicts(&saved), vec!["lr: 0.001 → 0.5", "seed: 0 → 9"]);
    }
}
