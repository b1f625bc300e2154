//! Training data: a tokenized text split into a training part and a validation tail, random
//! training windows drawn with a seeded [`SplitMix64`], and a fixed set of validation windows.
//!
//! A *window* is `seq_len` consecutive tokens; an objective predicts its tokens `1..` from the
//! ones before them (transformers' `labels = input_ids`), so a window holds `seq_len − 1`
//! predictions. Training windows start anywhere in the training part (uniformly, overlapping);
//! validation windows are non-overlapping windows of the tail, evenly spread when there are more
//! than asked for, and the same on every call.

use super::TrainError;
use crate::rng::SplitMix64;
use std::path::{Path, PathBuf};

/// Reads a UTF-8 text file.
pub fn read_text(path: &Path) -> Result<String, TrainError> {
    let bytes =
        std::fs::read(path).map_err(|source| TrainError::Io { op: "read", path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|e| TrainError::Data {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })
}

/// Where the validation tail of `len` tokens starts: the last `val_fraction` of them (rounded)
/// are held out. [`Dataset::new`] splits with it, and `kiln eval --split held-out` evaluates the
/// same tail. A fraction outside [0, 1) is an error.
pub fn validation_start(len: usize, val_fraction: f64) -> Result<usize, TrainError> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(TrainError::InvalidOption(format!(
            "the validation fraction must lie in [0, 1), not {val_fraction}"
        )));
    }
    let n_val = (len as f64 * val_fraction).round() as usize;
    Ok(len - n_val.min(len))
}

/// Checks that every id of `tokens` (read from `source`, named in the error) is below `vocab`.
pub fn check_vocab(source: &Path, tokens: &[i64], vocab: usize) -> Result<(), TrainError> {
    match tokens.iter().enumerate().find(|(_, &id)| id < 0 || id as u64 >= vocab as u64) {
        Some((i, &id)) => Err(TrainError::Data {
            path: source.to_path_buf(),
            reason: format!("token {i} has id {id}, outside the model's vocabulary of {vocab}"),
        }),
        None => Ok(()),
    }
}

/// A token sequence split into training tokens and a validation tail.
#[derive(Clone, Debug)]
pub struct Dataset {
    source: PathBuf,
    train: Vec<i64>,
    validation: Vec<i64>,
}

impl Dataset {
    /// Splits `tokens` (read from `source`, named in errors) into training tokens and the last
    /// `val_fraction` of them (rounded) for validation. Every id must be below `vocab`; both parts
    /// must hold at least one window of `seq_len` tokens (the validation part only if
    /// `val_fraction > 0`).
    pub fn new(
        source: &Path,
        tokens: Vec<i64>,
        vocab: usize,
        val_fraction: f64,
        seq_len: usize,
    ) -> Result<Dataset, TrainError> {
        let err = |reason: String| TrainError::Data { path: source.to_path_buf(), reason };
        let split = validation_start(tokens.len(), val_fraction)?;
        if seq_len < 2 {
            return Err(TrainError::InvalidOption(format!(
                "a sequence needs at least 2 tokens (one prediction), not {seq_len}"
            )));
        }
        check_vocab(source, &tokens, vocab)?;
        let n_val = tokens.len() - split;
        if split < seq_len {
            return Err(err(format!(
                "{split} training tokens cannot fill one sequence of {seq_len} (the text has {} tokens, {n_val} kept for validation)",
                tokens.len()
            )));
        }
        if val_fraction > 0.0 && n_val < seq_len {
            return Err(err(format!(
                "the validation tail has {n_val} tokens, fewer than one sequence of {seq_len}; raise the validation fraction"
            )));
        }
        let mut train = tokens;
        let validation = train.split_off(split);
        Ok(Dataset { source: source.to_path_buf(), train, validation })
    }

    /// The file the tokens came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn train_tokens(&self) -> &[i64] {
        &self.train
    }

    pub fn validation_tokens(&self) -> &[i64] {
        &self.validation
    }

    /// `batch` training windows of `seq_len` tokens, with starts drawn from `rng` (uniform over
    /// every start that fits).
    pub(crate) fn sample_batch(&self, rng: &mut SplitMix64, batch: usize, seq_len: usize) -> Vec<&[i64]> {
        let starts = (self.train.len() + 1).saturating_sub(seq_len) as u64;
        (0..batch)
            .map(|_| {
                // Lemire's multiply-shift: uniform in [0, starts) without a division.
                let start = ((u128::from(rng.next_u64()) * u128::from(starts)) >> 64) as usize;
                &self.train[start..start + seq_len]
            })
            .collect()
    }

    /// Up to `max` non-overlapping validation windows of `seq_len` tokens, evenly spread over the
    /// tail; the same every call. Empty without a validation part.
    pub fn validation_windows(&self, seq_len: usize, max: usize) -> Vec<&[i64]> {
        let available = self.validation.len().checked_div(seq_len).unwrap_or(0);
        let count = available.min(max);
        (0..count)
            .map(|i| {
                let window = i * available / count;
                &self.validation[window * seq_len..(window + 1) * seq_len]
            })
            .collect()
    }

    /// FNV-1a over the training and validation tokens and the split point: resuming checks that
    /// it trains on the same data.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| {
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(self.train.len() as u64);
        for &t in self.train.iter().chain(&self.validation) {
            eat(t as u64);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(n: i64, val_fraction: f64, seq_len: usize) -> Result<Dataset, TrainError> {
        Dataset::new(Path::new("toy.txt"), (0..n).collect(), n as usize, val_fraction, seq_len)
    }

    #[test]
    fn splits_off_the_tail() {
        let data = dataset(100, 0.1, 4).unwrap();
        assert_eq!(data.train_tokens(), (0..90).collect::<Vec<_>>());
        assert_eq!(data.validation_tokens(), (90..100).collect::<Vec<_>>());
        assert_eq!(dataset(100, 0.0, 4).unwrap().validation_tokens().len(), 0);
    }

    #[test]
    fn batches_are_seeded_windows_of_the_training_part() {
        let data = dataset(100, 0.1, 8).unwrap();
        let batch = data.sample_batch(&mut SplitMix64(7), 64, 8);
        assert_eq!(batch, data.sample_batch(&mut SplitMix64(7), 64, 8));
        assert_ne!(batch, data.sample_batch(&mut SplitMix64(8), 64, 8));
        for w in &batch {
            assert_eq!(w.len(), 8);
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1) && w[7] < 90, "{w:?}");
        }
        let starts: std::collections::BTreeSet<i64> =
            data.sample_batch(&mut SplitMix64(1), 2000, 8).iter().map(|w| w[0]).collect();
        assert_eq!(starts, (0..=82).collect(), "every start that fits is drawn");
    }

    #[test]
    fn validation_windows_are_fixed_and_spread() {
        let data = dataset(1000, 0.2, 10).unwrap();
        let all = data.validation_windows(10, 100);
        assert_eq!(all.len(), 20);
        assert_eq!(all[0][0], 800);
        assert_eq!(all[19][9], 999);
        let some = data.validation_windows(10, 4);
        let starts: Vec<i64> = some.iter().map(|w| w[0]).collect();
        assert_eq!(starts, vec![800, 850, 900, 950]);
    }

    #[test]
    fn bad_data_is_named() {
        let err = dataset(10, 0.5, 8).unwrap_err().to_string();
        assert!(err.starts_with("toy.txt: 5 training tokens cannot fill"), "{err}");
        let err = dataset(100, 0.05, 8).unwrap_err().to_string();
        assert!(err.contains("validation tail has 5 tokens"), "{err}");
        let err = Dataset::new(Path::new("t"), vec![1, 2, 9], 5, 0.0, 2).unwrap_err().to_string();
        assert!(err.contains("token 2 has id 9"), "{err}");
        assert!(dataset(100, 1.0, 8).is_err());
        assert_ne!(dataset(100, 0.1, 8).unwrap().fingerprint(), dataset(100, 0.2, 8).unwrap().fingerprint());
    }
}
